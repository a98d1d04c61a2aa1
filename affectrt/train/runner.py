"""Running a recipe: model, features and data for each stage, stages in order, resume (DESIGN §8)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from affectrt.train.data import TrainingSet, read_samples
from affectrt.train.distributed import DistInfo, init_distributed, shutdown
from affectrt.train.loop import StageResult, run_stage
from affectrt.train.model import build_model
from affectrt.train.recipe import Recipe

log = logging.getLogger("affectrt.train")


def _feature_dtype(recipe: Recipe) -> str:
    """The dtype ``affectrt features`` stored: float16 under autocast on a GPU, else the fusion dtype."""
    return "float16" if recipe.device.startswith("cuda") else "float32"


def make_source(recipe: Recipe, model, device: torch.device):
    from affectrt.train.sources import CachedSource, ReleaseExactSource

    if recipe.features.mode == "cached":
        if recipe.features.cache is None:
            raise ValueError(
                "recipe features.cache: set the feature cache folder (filled by `affectrt features`)"
            )
        return CachedSource(
            recipe.features.cache, model.cfg, _feature_dtype(recipe), recipe.features.encoder_weights
        )
    if recipe.model.model_dir is None:
        raise ValueError("features.mode release-exact needs model.model_dir (the CLIP and HuBERT folders)")
    return ReleaseExactSource(
        recipe.model.model_dir, model.cfg, device, autocast=recipe.device.startswith("cuda")
    )


def run_recipe(
    recipe: Recipe, resume: bool = False, progress: bool = True, dist: DistInfo | None = None
) -> list[StageResult]:
    """Train every stage of ``recipe``; a stage already finished (``final.safetensors``) is skipped on resume.

    Stage k > 0 starts from stage k-1's final trainable tensors.
    """
    owns_dist = dist is None
    dist = dist or init_distributed(recipe.device)
    device = torch.device(
        recipe.device if not recipe.device.startswith("cuda") else f"cuda:{dist.local_rank}"
    )
    try:
        model, tokenizer = build_model(recipe.model, with_encoders=False)
        source = make_source(recipe, model, device)
        results: list[StageResult] = []
        previous: Path | None = None
        for stage in recipe.stages:
            out = Path(recipe.output_dir) / stage.name
            final = out / "final.safetensors"
            if resume and final.is_file():
                log.info("stage %s already done (%s)", stage.name, final)
                previous = final
                continue
            if previous is not None:
                from affectrt.checkpoint import load_checkpoint

                load_checkpoint(model, previous)
            samples = read_samples(stage.dataset.root, stage.dataset.layout, stage.dataset.subtitle_csv)
            if stage.dataset.limit:
                samples = samples[: stage.dataset.limit]
            data = TrainingSet(
                samples, model.cfg, tokenizer, stage.dataset.label_type, stage.max_length, source.fetch
            )
            res = run_stage(
                recipe, stage, model, tokenizer, data, source, out, dist, resume=resume, progress=progress
            )
            results.append(res)
            previous = res.final
        return results
    finally:
        if owns_dist and dist.world > 1:
            shutdown()
