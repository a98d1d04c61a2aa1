"""Training recipes: one YAML (or JSON) file listing stages (DESIGN §8).

    name: affectgpt-2025                 # run name (output folder)
    output_dir: output/affectgpt-2025
    device: cuda                         # cpu | cuda
    amp: fp16                            # fp16 (autocast + GradScaler, the release) | bf16 | none
    seed: 42
    model: {model_dir: models, variant: face, llm_dtype: float16}      # see ModelSpec
    features: {mode: cached, cache: cache/features}                   # cached (default) | release-exact
    stages:
      - name: mercaptionplus
        dataset: {root: dataset/mer2025-dataset, layout: mercaptionplus, label_type: hybird}
        max_epoch: 60
        iters_per_epoch: 5000
        batch_size: 3                    # global batch per iteration (split over ranks)
        accum_grad_iters: 1
        init_lr: 1.0e-5
        min_lr: 1.0e-5
        warmup_lr: 1.0e-6
        warmup_steps: 5000
        weight_decay: 0.05
        max_length: 1024
        clip_grad: null                  # the release has no clipping
        save_every: 1000                 # iterations between resumable checkpoints (and each epoch end)

A later stage starts from the previous stage's final trainable tensors (fresh optimizer and schedule).
Unknown keys raise, naming them. The example recipes ship in ``affectrt/train/recipes/`` (and ``configs/``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from affectrt.train.model import ModelSpec


class RecipeError(ValueError):
    """The recipe file is malformed; the message names the key and what is expected."""


@dataclass
class DatasetSpec:
    """``root`` folder, release ``layout`` (see ``affectrt.train.data.LAYOUTS``), label type, optional
    ``limit`` (first N rows, for smoke runs) and the subtitle CSV name."""

    root: str
    layout: str = "mercaptionplus"
    label_type: str = "hybird"
    subtitle_csv: str = "subtitle_chieng.csv"
    limit: int | None = None


@dataclass
class StageSpec:
    name: str
    dataset: DatasetSpec
    max_epoch: int = 1
    iters_per_epoch: int = 100
    batch_size: int = 3
    accum_grad_iters: int = 1
    init_lr: float = 1e-5
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    max_length: int = 1024
    clip_grad: float | None = None
    save_every: int = 1000
    export: bool = True


@dataclass
class FeatureSpec:
    """``mode``: "cached" (default) or "release-exact"; ``cache``: the cache folder; ``encoder_weights``:
    which encoder weights' features to use when the cache holds several."""

    mode: str = "cached"
    cache: str | None = None
    encoder_weights: str | None = None


@dataclass
class Recipe:
    name: str
    stages: list[StageSpec]
    output_dir: str = "output"
    device: str = "cpu"
    amp: str = "none"
    seed: int = 42
    model: ModelSpec = field(default_factory=ModelSpec)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    plot: bool = True
    nan: str = "stop"


def _build(cls: type, data: object, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        if cls is StageSpec and key == "dataset":
            value = _build(DatasetSpec, value, f"{where}.dataset")
        elif cls is Recipe and key == "model":
            value = _build(ModelSpec, value, f"{where}.model")
        elif cls is Recipe and key == "features":
            value = _build(FeatureSpec, value, f"{where}.features")
        elif cls is Recipe and key == "stages":
            if not isinstance(value, list) or not value:
                raise RecipeError(f"{where}.stages: expected a non-empty list of stages")
            value = [_build(StageSpec, s, f"{where}.stages[{i}]") for i, s in enumerate(value)]
        elif key == "betas":
            value = tuple(value)
        kwargs[key] = value
    missing = [
        n
        for n, f in names.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in kwargs
    ]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {missing}")
    return cls(**kwargs)


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    r = _build(Recipe, data, source)
    if r.amp not in ("fp16", "bf16", "none"):
        raise RecipeError(f"{source}: amp={r.amp!r}; use fp16, bf16 or none")
    if r.features.mode not in ("cached", "release-exact"):
        raise RecipeError(f"{source}: features.mode={r.features.mode!r}; use cached or release-exact")
    if r.nan not in ("stop", "skip"):
        raise RecipeError(f"{source}: nan={r.nan!r}; use stop or skip")
    names = [s.name for s in r.stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"{source}: stage names must be unique, got {names}")
    return r


def read_recipe_dict(path: str | Path) -> dict:
    """The raw mapping of a YAML (``.yaml``/``.yml``) or JSON recipe; a bare name reads a shipped example."""
    p = Path(path)
    if not p.is_file() and p.suffix == "" and str(path) in example_recipes():
        text, suffix = resources.files("affectrt.train.recipes").joinpath(f"{path}.yaml").read_text(), ".yaml"
    elif not p.is_file():
        raise RecipeError(f"{path}: recipe file not found; shipped examples: {', '.join(example_recipes())}")
    else:
        text, suffix = p.read_text(), p.suffix
    if suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping (name, stages, ...), got {type(data).__name__}")
    return data


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file (see :func:`read_recipe_dict`)."""
    return recipe_from_dict(read_recipe_dict(path), str(path))


def example_recipes() -> list[str]:
    """Names of the example recipes shipped with the package."""
    folder = resources.files("affectrt.train.recipes")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
