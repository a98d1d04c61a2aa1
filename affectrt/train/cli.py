"""``affectrt train`` and ``affectrt features``: parsers and runners (hooked into :mod:`affectrt.cli`)."""

from __future__ import annotations

import argparse
import logging
import sys

TRAIN_EPILOG = """\
A recipe is one YAML file listing stages (dataset, epochs x iterations, batch size, accumulation, lr and
schedule); a later stage starts from the previous stage's final weights. Shipped examples (pass the name
or copy the file from affectrt/train/recipes/ or configs/):
  affectgpt-2025   one stage on MER-Caption+ (the released model's recipe: lr 1e-5 constant, batch 3,
                   60 epochs x 5000 iterations, fp16 autocast + GradScaler, AdamW wd 0.05)
  affectgpt-2024   two stages: EMER-Coarse (MER-Caption), then EMER-Fine (OV-MERD) from its result
  smoke            the tiny preset on random weights (checks the path end to end in a minute)

Encoder features (recipe key features.mode):
  cached (default)  Z_v/Z_a read from the feature cache filled by `affectrt features RECIPE`: computed
                    once, encoders in eval mode, audio normalised per clip (the inference rule).
                    Deterministic and several times faster per step; the model is built without the
                    CLIP/HuBERT weights. It differs on purpose from the release, whose model.train() also
                    runs the frozen encoders in train mode (HuBERT dropout/LayerDrop/SpecAugment) and
                    normalises audio jointly over the batch: accidental noise, not a recipe choice.
  release-exact     encoders on the fly in train mode with the batch-joint HuBERT normalisation, as the
                    release trains (needs transformers and the CLIP/HuBERT folders).

Outputs in OUTPUT_DIR/STAGE/: last.pt (resumable full state, written atomically), metrics.jsonl,
checkpoint_<epoch>_loss_<L>.pth per epoch (the release's layout: `affectrt infer --checkpoint` loads it),
final.safetensors, curve.png (with matplotlib: pip install 'affectrt[plot]').

Several GPUs / nodes (DDP; same global batch = the recipe's batch_size split over the ranks):
  torchrun --nproc_per_node=8 -m affectrt.cli train RECIPE
  torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=29500 --nproc_per_node=8 \\
      -m affectrt.cli train RECIPE
  AFFECTRT_FSDP=1 torchrun ...   shard the LLM with FSDP instead of replicating it
"""


def _set_value(text: str):
    import yaml

    return yaml.safe_load(text)


def apply_overrides(data: dict, pairs: list[str]) -> dict:
    """``key.sub=value`` pairs (YAML values) into a recipe dict; ``stages.0.batch_size=2`` indexes lists."""
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(
                f"affectrt train: --set {pair!r}: expected KEY=VALUE (e.g. stages.0.batch_size=2)"
            )
        key, value = pair.split("=", 1)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = _set_value(value)
        else:
            node[last] = _set_value(value)
    return data


def _load(args: argparse.Namespace):
    from affectrt.train.recipe import read_recipe_dict, recipe_from_dict

    data = apply_overrides(read_recipe_dict(args.recipe), args.set or [])
    if getattr(args, "output_dir", None):
        data["output_dir"] = args.output_dir
    if getattr(args, "device", None):
        data["device"] = args.device
    return recipe_from_dict(data, args.recipe)


def add_train_parsers(sub) -> None:
    """Register ``train`` and ``features`` on the ``affectrt`` sub-command parser."""
    p = sub.add_parser(
        "train",
        help="train AffectGPT (fusion head + LoRA) from a recipe YAML",
        description="Train AffectGPT's fusion head and LoRA with affectrt's fused modules.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe YAML/JSON file, or the name of a shipped example")
    p.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT_DIR/STAGE/last.pt (same loss curve)"
    )
    p.add_argument("--output-dir", default=None, help="override the recipe's output_dir")
    p.add_argument("--device", default=None, help="override the recipe's device (cpu, cuda)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. stages.0.batch_size=2",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (metrics.jsonl is still written)"
    )

    f = sub.add_parser(
        "features",
        help="precompute the frozen encoders' features of a recipe's datasets into its cache",
        description=(
            "Run CLIP and HuBERT (eval mode, per-clip audio normalisation) once per clip of every stage's dataset "
            "and store Z_v/Z_a in the recipe's feature cache (content-addressed: media hash + preprocessing "
            "settings + encoder weights hash; safetensors shards; safe for several concurrent writers; rerun to "
            "resume). Unreadable clips are skipped and listed in CACHE/failures.jsonl."
        ),
    )
    f.add_argument("recipe", help="recipe YAML/JSON file, or the name of a shipped example")
    f.add_argument("--batch-size", type=int, default=8, help="clips per encoder call")
    f.add_argument("--device", default=None, help="override the recipe's device")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    from affectrt.train.loop import TrainingError
    from affectrt.train.recipe import RecipeError
    from affectrt.train.runner import run_recipe

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        recipe = _load(args)
        results = run_recipe(recipe, resume=args.resume, progress=not args.no_progress)
    except (RecipeError, TrainingError, LookupError, FileNotFoundError, ValueError) as e:
        print(f"affectrt train: {e}", file=sys.stderr)
        return 2
    for stage, r in zip(recipe.stages, results):
        print(f"{stage.name}: {r.iterations} iterations, final weights {r.final}, "
              f"{r.skipped_samples} sample attempt(s) skipped, {r.skipped_steps} step(s) skipped")  # fmt: skip
    return 0


def run_features(args: argparse.Namespace) -> int:
    import torch

    from affectrt.features import FeatureCache, compute_features
    from affectrt.train.data import read_samples
    from affectrt.train.model import build_model
    from affectrt.train.recipe import RecipeError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        recipe = _load(args)
        if recipe.features.cache is None:
            raise RecipeError(f"{args.recipe}: set features.cache (the folder to fill)")
        model, _ = build_model(recipe.model, with_encoders=True)
        cache = FeatureCache(recipe.features.cache)
        seen: set[str] = set()
        samples = []
        for stage in recipe.stages:
            rows = read_samples(stage.dataset.root, stage.dataset.layout, stage.dataset.subtitle_csv)
            for s in rows[: stage.dataset.limit] if stage.dataset.limit else rows:
                if s.name not in seen:
                    seen.add(s.name)
                    samples.append(s)
        report = compute_features(
            model, samples, cache, batch_size=args.batch_size, device=torch.device(recipe.device),
            progress=not args.no_progress,
        )  # fmt: skip
    except (RecipeError, LookupError, FileNotFoundError, ValueError) as e:
        print(f"affectrt features: {e}", file=sys.stderr)
        return 2
    print(f"features: {report.computed} computed, {report.cached} already cached, {len(report.failed)} skipped "
          f"(unreadable media; see {cache.root / 'failures.jsonl'})")  # fmt: skip
    return 0
