"""The ``affectrt`` command (thin: it parses, checks inputs, then calls the library).

A user mistake prints one line ``affectrt: <input>: <what is wrong>; <what to do>`` on stderr and exits 2;
``--debug`` (or ``AFFECTRT_DEBUG=1``) adds the traceback. Ctrl-C exits 130. Results go to stdout, notices
and progress bars to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import traceback
from importlib import metadata, util

_CORE = ("torch", "numpy", "safetensors", "tokenizers", "av", "tqdm")
_OPTIONAL = {
    "triton": "triton",
    "nvidia-dali-cuda130": "nvidia.dali",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime",
    "onnx": "onnx",
    "tensorrt": "tensorrt",
    "flash-attn": "flash_attn",
    "transformers": "transformers",
    "peft": "peft",
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def info() -> dict:
    """Versions, devices, native extensions, op backends and build metadata (nothing optional is imported)."""
    import torch

    from affectrt import __version__
    from affectrt.build_info import build_info
    from affectrt.cpu_features import cpu_bf16_units, cpu_name
    from affectrt.models.affectgpt import cpu_encoder_rows
    from affectrt.ops._backends import describe_all

    try:
        rows = str(cpu_encoder_rows())
    except ValueError as e:
        rows = f"invalid ({e})"
    devices = [
        f"cpu ({cpu_name()}; bf16 matrix units: {cpu_bf16_units() or 'none'}; encoder rows per call: {rows})"
    ]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    optional = {}
    for dist, module in _OPTIONAL.items():
        version = _version(dist)
        if version is not None or dist == module:
            optional[dist] = version if version and util.find_spec(module.split(".")[0]) else None
    return {
        "affectrt": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "core": {d: _version(d) for d in _CORE},
        "optional": optional,
        "torch_cuda": torch.version.cuda,
        "devices": devices,
        "build": build_info(),
        "ops": _group_by_op(describe_all()),
    }


def _group_by_op(rows: list[dict]) -> list[dict]:
    ops: dict[str, list[dict]] = {}
    for row in rows:
        ops.setdefault(row["op"], []).append({k: v for k, v in row.items() if k != "op"})
    return [{"op": op, "backends": backends} for op, backends in ops.items()]


def _print_info(data: dict, verbose: bool = False) -> None:
    print(f"affectrt {data['affectrt']}  (python {data['python']}, {data['platform']})")
    print("core:     " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in data["core"].items()))
    print("optional: " + ", ".join(f"{k} {v or '-'}" for k, v in data["optional"].items()))
    print(f"devices:  {', '.join(data['devices'])}  (torch CUDA: {data['torch_cuda'] or 'none'})")
    build = data["build"]
    if not build.get("built", False) and "extensions" not in build:
        print(f"build:    not built ({build.get('reason', 'no build metadata')})")
    else:
        print(
            f"build:    affectrt {build.get('affectrt_version')} on {build.get('date')} (commit {build.get('git_commit')})"
        )
        for ext, state in build.get("extensions", {}).items():
            print(f"  {ext}: {'built' if state.get('built') else 'not built: ' + str(state.get('reason'))}")
        cuda = build.get("cuda") or {}
        if cuda.get("nvcc_version"):
            print(
                f"  nvcc {cuda['nvcc_version']}, archs sm_{', sm_'.join(cuda.get('archs', []))}, cudart from {cuda.get('cudart_from')}"
            )
            for k in cuda.get("kernels", []) if verbose else []:
                print(
                    f"    {k['kernel']:<26} {k['arch']}: {k['registers']} registers, "
                    f"spills {k['spill_stores']}/{k['spill_loads']} bytes (store/load)"
                )
    print("ops:")
    for op in data["ops"]:
        print(f"  {op['op']}:")
        for b in op["backends"]:
            state = "available" if b["available"] else f"unavailable: {b['reason']}"
            print(
                f"    {b['backend']:<8} [{', '.join(b['devices'])}; {', '.join(b['dtypes'])}; backward={b['has_backward']}] {state}"
            )


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error style (usage stays behind ``--help``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # noqa: D401 - argparse's hook
        print(f"affectrt: {message}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; descriptions keep their line breaks."""


def build_parser() -> argparse.ArgumentParser:
    from affectrt import __version__
    from affectrt.cli_serve import add_batch_parser, add_infer_parser

    parser = _Parser(prog="affectrt", description="Fast runtime for AffectGPT emotion models")
    parser.add_argument("--version", action="version", version=f"affectrt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also AFFECTRT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_info = sub.add_parser("info", help="versions, devices, extensions, op backends, build metadata")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_info.add_argument(
        "--verbose", action="store_true", help="also the ptxas register report per CUDA kernel"
    )
    add_infer_parser(sub)
    add_batch_parser(sub)
    p_init = sub.add_parser(
        "init-random",
        help="write a model folder with RANDOM weights in the real formats (vision/, audio/, llm/, checkpoint)",
        description="Write DIR/vision, DIR/audio, DIR/llm (Hugging Face folders: config.json, model.safetensors; "
        "tokenizer.json and generation_config.json in llm/) and DIR/checkpoint.pth (release format), all random, "
        "so that `affectrt infer --model-dir DIR --checkpoint DIR/checkpoint.pth` runs on a machine without "
        "weights. Needs no transformers.",
    )
    p_init.add_argument("dir", help="a new or empty folder")
    p_init.add_argument("--preset", choices=("tiny", "small"), default="tiny", help="model size")
    p_init.add_argument("--init-seed", type=int, default=0, help="seed of the random weights")

    from affectrt.export.cli import add_export_parser

    add_export_parser(sub)
    from affectrt.eval.cli import add_eval_parser

    add_eval_parser(sub)

    from affectrt.train.cli import add_train_parsers

    add_train_parsers(sub)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "info":
        data = info()
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            _print_info(data, verbose=args.verbose)
        return 0
    if args.command == "init-random":
        from affectrt.init_random import write_random_model_dir

        root = write_random_model_dir(args.dir, args.preset, args.init_seed)
        print(root)
        print(
            f"affectrt: wrote a RANDOM '{args.preset}' model; try: affectrt infer CLIP.mp4 --model-dir {root} "
            f"--checkpoint {root / 'checkpoint.pth'}",
            file=sys.stderr,
        )
        return 0
    if args.command in ("infer", "batch", "eval", "features"):
        from affectrt.cpu_alloc import keep_freed_memory

        keep_freed_memory()  # batches re-allocate the same activations: keep them off fresh mmap pages
    if args.command in ("infer", "batch"):
        from affectrt import cli_serve

        return cli_serve.infer(args) if args.command == "infer" else cli_serve.batch(args)
    if args.command == "export":
        from affectrt.export.cli import run_export

        return run_export(args)
    if args.command == "eval":
        from affectrt.eval.cli import run_eval

        return run_eval(args)
    if args.command in ("train", "features"):
        from affectrt.train.cli import run_features, run_train

        return run_train(args) if args.command == "train" else run_features(args)
    return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a user mistake (a bad input), printed without a traceback."""
    from affectrt.errors import UsageError
    from affectrt.media.errors import MediaError
    from affectrt.models.hf_io import WeightsError

    errors: list[type[BaseException]] = [
        UsageError,
        MediaError,
        WeightsError,
        FileNotFoundError,
        NotADirectoryError,
    ]
    try:
        from affectrt.export.sidecar import StaleArtifactError

        errors.append(StaleArtifactError)
    except ImportError:  # pragma: no cover - export ships with the package
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("AFFECTRT_DEBUG", "") not in ("", "0")
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("affectrt: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if debug:
            traceback.print_exc()
        print(f"affectrt: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
