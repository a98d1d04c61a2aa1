"""``affectrt eval``: MER-UniBench end to end (answer, judge, score, report) or score-only."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

DESCRIPTION = """\
Score AffectGPT on MER-UniBench as the paper does: the nine test sets in the release's layouts under
--data-root, answered with the label question, labels extracted by an instruct LLM judge (a Qwen2.5-Instruct
folder, run on affectrt's own Qwen2 runtime), scored with the release's emotion-wheel metrics (HIT, WAF, F_s).

  full run       affectrt eval --data-root ROOT --model-dir M --checkpoint C [C2 ...] --judge-dir J --out DIR
  sharded        affectrt eval ... --shard 0/4  (one process or machine per shard; same --out), then
                 affectrt eval ... --merge      (merges the shards' answers, judges, scores)
  torchrun       torchrun --nproc-per-node N -m affectrt.cli eval ... --device cuda
                 (rank r answers shard r/N on cuda:r; the ranks share the judging; rank 0 reports)
  score-only     affectrt eval --score-only --results-root output/ --data-root ROOT [--out DIR]
                 (the release's output/results-<dataset>/<run>/checkpoint_*.npz with their *-openset.npz and
                 *-openset-sentiment.npz judge outputs, or affectrt's own results; no GPU needed)

Answers, judge outputs and reports are written as they are produced; a rerun resumes. The table shows the
paper's protocol (best checkpoint per dataset) and one fixed checkpoint for every dataset (the honest number;
--fixed-checkpoint, default the last), next to the paper's AffectGPT row; report.json, report.csv and
report.png (with matplotlib) go to --out.
"""


class UsageError(Exception):
    """A user mistake: printed as one ``affectrt: ...`` line, exit status 2."""


def add_eval_parser(subparsers) -> None:
    """Add the ``eval`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "eval",
        help="score AffectGPT on MER-UniBench (answer, judge, metrics, report), or score existing answers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data and output")
    g.add_argument("--data-root", required=True, help="folder holding the *-process dataset folders")
    g.add_argument(
        "--datasets", default=None, help="comma-separated subset, e.g. mer2023,meld (default all nine)"
    )
    g.add_argument("--out", default=None, help="results and reports (score-only default: --results-root)")
    g.add_argument(
        "--run",
        default=None,
        help="run folder name under results-<dataset>/ (default 'affectrt'; score-only: the folder with the "
        "most checkpoint files, as the release picks it; a prefix works too)",
    )
    g = p.add_argument_group("model (answering)")
    g.add_argument(
        "--model-dir", default=None, help="vision/, audio/, llm/ folders (default: random --preset)"
    )
    g.add_argument(
        "--checkpoint", nargs="+", default=None, help="one or more AffectGPT checkpoints (.pth/.safetensors)"
    )
    g.add_argument(
        "--variant", choices=("face", "frame"), default="face", help="face or frame model (default face)"
    )
    g.add_argument("--preset", default="tiny", help="preset for random weights without --model-dir")
    g.add_argument("--seed", type=int, default=0, help="seed of random weights and of sampling")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="LLM weights"
    )
    g.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    g.add_argument(
        "--feature-cache",
        default=None,
        help="the frozen encoders' feature cache (as `affectrt features` writes it): clips found there are not "
        "encoded again, and the ones encoded are added (other checkpoints or reruns then skip the encoders)",
    )
    g.add_argument("--max-new-tokens", type=int, default=1200, help="answer length cap (the release: 1200)")
    g.add_argument(
        "--sample",
        action="store_true",
        help="the release's sampling (T=1, top-p 0.9, top-k) instead of greedy",
    )
    g.add_argument("--shard", default=None, help="i/n: answer only clips i, i+n, ... (merge with --merge)")
    g.add_argument("--merge", action="store_true", help="no answering: merge shard results, judge, score")
    g = p.add_argument_group("judge (label extraction)")
    g.add_argument(
        "--judge-dir", default=None, help="Qwen2.5-Instruct folder (needed unless judge outputs exist)"
    )
    g.add_argument(
        "--judge",
        choices=("sample", "greedy"),
        default="sample",
        help="the release's sampling (T 0.7, top-p 0.8, rep. 1.05) or deterministic greedy",
    )
    g.add_argument("--judge-batch-size", type=int, default=8, help="judge prompts per batch (the release: 8)")
    g.add_argument(
        "--judge-max-new-tokens", type=int, default=512, help="judge tokens at most (the release: 512)"
    )
    g.add_argument(
        "--judge-dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="judge weights dtype (auto: as stored)",
    )
    g = p.add_argument_group("scoring")
    g.add_argument("--score-only", action="store_true", help="score answers already produced (no AffectGPT)")
    g.add_argument("--results-root", default=None, help="folder with results-<dataset>/ (default --out)")
    g.add_argument(
        "--fixed-checkpoint", default=None, help="stem, prefix or epoch of the fixed row (default last)"
    )
    g.add_argument("--no-chart", action="store_true", help="skip report.png")


def _dtype(name: str):
    import torch

    return None if name == "auto" else getattr(torch, name)


def _build_model(args: argparse.Namespace):
    """(model, tokenizer) without a checkpoint loaded: a model folder, or random weights of --preset."""
    import torch

    if args.model_dir is None:
        from affectrt.config import get_preset
        from affectrt.models.affectgpt import AffectGPT
        from affectrt.text.tokenizer import byte_level_tokenizer

        print(
            f"affectrt: no --model-dir: the '{args.preset}' preset on RANDOM weights (scores are meaningless)",
            file=sys.stderr,
        )
        torch.manual_seed(args.seed)
        return AffectGPT(
            get_preset(args.preset).replace(visual_input=args.variant)
        ).eval(), byte_level_tokenizer()
    from affectrt.checkpoint import load_model

    return load_model(args.model_dir, None, variant=args.variant, llm_dtype=_dtype(args.dtype))


def _answer(args: argparse.Namespace, datasets: list, shard) -> None:
    """Answer every open (checkpoint, dataset) pair; encoders run once per clip for all checkpoints."""
    import torch

    from affectrt.checkpoint import generation_top_k, load_checkpoint
    from affectrt.eval.runner import Checkpoint, answer_datasets, checkpoint_stem
    from affectrt.pipeline import AffectGPTPipeline, default_generation

    model, tokenizer = _build_model(args)
    pipe = AffectGPTPipeline(model, tokenizer, device=args.device)
    top_k = generation_top_k(args.model_dir) if args.model_dir else 20
    gen = default_generation(
        tokenizer, args.max_new_tokens, greedy=not args.sample, seed=args.seed, top_k=top_k
    )
    paths = args.checkpoint or [None]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    snapshots: dict[str, dict] = {}
    for path in paths:  # each checkpoint is read once; its trainable tensors are kept on the CPU
        if path is not None:
            load_checkpoint(model, path)
        if len(paths) > 1:
            snapshots[checkpoint_stem(path)] = {
                n: p.detach().to("cpu", copy=True) for n, p in trainable.items()
            }
    current = [checkpoint_stem(paths[-1])]

    def applier(stem: str):
        def apply() -> None:
            if current[0] != stem:
                with torch.no_grad():
                    for n, p in trainable.items():
                        p.copy_(snapshots[stem][n])
                current[0] = stem

        return apply

    checkpoints = [Checkpoint(checkpoint_stem(p), applier(checkpoint_stem(p))) for p in paths]
    cache = None
    if args.feature_cache:
        from affectrt.features import FeatureCache

        cache = FeatureCache(args.feature_cache)
    failed = answer_datasets(
        pipe, datasets, checkpoints, args.out, args.run, gen, shard, args.batch_size, cache=cache
    )
    for (key, stem), n in failed.items():
        if n:
            print(f'affectrt: {key} / {stem}: {n} clips failed (answered "")', file=sys.stderr)
    snapshots.clear()
    del pipe, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _merge(args: argparse.Namespace, datasets: list, stems: list[str] | None) -> None:
    from affectrt.eval.runner import merge_answers, run_dir
    from affectrt.eval.scoreonly import answer_stems

    for spec, samples in datasets:
        directory = run_dir(args.out, spec, args.run)
        if not directory.is_dir():
            raise UsageError(f"{directory}: no answers to merge; run the shards first (same --out and --run)")
        for stem in stems or answer_stems(directory):
            if (directory / f"{stem}.npz").is_file():
                continue
            missing, _ = merge_answers(directory, stem, samples)
            if missing:
                raise UsageError(
                    f"{directory / stem}*.jsonl: {missing} of {len(samples)} {spec.title} clips unanswered; "
                    "finish every shard (rerun the missing ones), then --merge again"
                )


def _torchrun_shard(args: argparse.Namespace):
    """Under ``torchrun`` (WORLD_SIZE > 1), rank r of n answers shard r/n on ``cuda:LOCAL_RANK`` if on CUDA."""
    import os

    from affectrt.eval.runner import Shard

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if args.device == "cuda":
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return Shard(int(os.environ["RANK"]), world)


def _barrier() -> None:
    """Wait for every torchrun rank (gloo, so it works without GPUs; a shard may take hours)."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=2))
    dist.barrier()


def _judge_share(args: argparse.Namespace, datasets: list, stems: list[str], shard) -> None:
    """Under torchrun: rank r writes the missing judge outputs of answer files r, r+n, ... (one judge per rank)."""
    from affectrt.eval.runner import run_dir
    from affectrt.eval.scoreonly import OPENSET_SUFFIX, SENTIMENT_SUFFIX

    hook = _judge_hook(args)
    if hook is None:
        return
    jobs = [(run_dir(args.out, spec, args.run), stem, spec.task) for spec, _ in datasets for stem in stems]
    for directory, stem, task in jobs[shard.index :: shard.count]:
        needed = [OPENSET_SUFFIX] + ([SENTIMENT_SUFFIX] if task == "sentiment" else [])
        if any(not (directory / f"{stem}{suffix}").is_file() for suffix in needed):
            hook(directory, stem, task)


def _judge_hook(args: argparse.Namespace):
    """A lazily loaded judge: nothing is loaded unless a judge output is missing."""
    if args.judge_dir is None:
        return None
    from affectrt.eval.judge import Judge, JudgeSettings, judge_hook

    state: dict = {}

    def fill(directory: Path, stem: str, task: str) -> None:
        if "hook" not in state:
            settings = JudgeSettings(args.judge, args.judge_batch_size, args.judge_max_new_tokens, args.seed)
            judge = Judge.from_folder(
                args.judge_dir, settings, device=args.device, dtype=_dtype(args.judge_dtype)
            )
            state["hook"] = judge_hook(judge)
        state["hook"](directory, stem, task)

    return fill


def _run(args: argparse.Namespace) -> int:
    from affectrt.eval.datasets import resolve_datasets
    from affectrt.eval.report import format_table, write_reports
    from affectrt.eval.runner import Shard, checkpoint_stem
    from affectrt.eval.scoreonly import find_run_dir, score_dataset

    if args.score_only:
        if args.results_root is None and args.out is None:
            raise UsageError("--score-only: no --results-root; pass the folder holding results-<dataset>/")
        args.results_root = args.results_root or args.out
        args.out = args.out or args.results_root
        args.run = "" if args.run is None else args.run
    else:
        if args.out is None:
            raise UsageError("eval: no --out; pass the folder for answers, judge outputs and reports")
        args.run = args.run or "affectrt"
        args.results_root = args.results_root or args.out
    shard = Shard.parse(args.shard) if args.shard else Shard()
    launched = _torchrun_shard(args) if not (args.shard or args.merge or args.score_only) else None
    shard = launched or shard
    if shard.sharded and (args.merge or args.score_only):
        raise UsageError(f"--shard {args.shard}: answers one shard; run --merge (or --score-only) without it")
    datasets = []
    for spec in resolve_datasets(args.datasets):
        samples = spec.read(args.data_root)
        if len(samples) != spec.expected:
            print(
                f"affectrt: note: {spec.title} has {len(samples)} test clips here; the release's split has "
                f"{spec.expected}",
                file=sys.stderr,
            )
        datasets.append((spec, samples))

    stems = [checkpoint_stem(c) for c in args.checkpoint] if args.checkpoint else None
    if not args.score_only:
        if not args.merge:
            _answer(args, datasets, shard)
            if launched is None and shard.sharded:
                print(
                    f"affectrt: shard {args.shard} answered; when every shard is done, run the same command "
                    "with --merge instead of --shard",
                    file=sys.stderr,
                )
                return 0
        stems = stems or ([checkpoint_stem(None)] if not args.merge else None)
        if launched is not None:
            # torchrun: every rank answered its shard; rank 0 merges, the ranks share the judging, rank 0 scores.
            _barrier()
            if launched.index == 0:
                _merge(args, datasets, stems)
            _barrier()
            _judge_share(args, datasets, stems, launched)
            _barrier()
            if launched.index != 0:
                return 0
        else:
            _merge(args, datasets, stems)

    hook = _judge_hook(args)
    results = []
    for spec, samples in datasets:
        directory = find_run_dir(args.results_root, spec.key, args.run)
        results.append(
            score_dataset(spec, samples, directory, args.fixed_checkpoint, judge=hook, stems=stems)
        )
        best = results[-1]
        if math.isnan(best.value("best")):
            print(
                f"affectrt: note: {spec.title}: {best.best} scores NaN and is taken as the best checkpoint, as "
                "the release's np.argmax does (F_s is NaN when precision and recall average to 0)",
                file=sys.stderr,
            )
    print(format_table(results))
    paths = write_reports(results, args.out, chart=not args.no_chart)
    print(f"affectrt: reports: {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Run ``affectrt eval``; user mistakes (bad paths, layouts, options) are one line on stderr, exit 2."""
    from affectrt.eval.datasets import DatasetError
    from affectrt.eval.scoreonly import ScoreError

    try:
        return _run(args)
    except (UsageError, DatasetError, ScoreError, FileNotFoundError) as err:
        # a bug (any other exception) keeps its traceback; the CLI's own handler reports model/media mistakes
        print(f"affectrt: {err}", file=sys.stderr)
        return 2
