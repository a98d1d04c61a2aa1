"""The ``affectrt`` command: ``info`` and ``infer`` (thin: it parses, then calls the library)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata, util
from pathlib import Path

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
    from affectrt.ops._backends import describe_all

    devices = ["cpu"]
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


def _print_info(data: dict) -> None:
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
            for k in cuda.get("kernels", []):
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


def _build_random_model(variant: str, preset: str, seed: int):
    import torch

    from affectrt.config import get_preset
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.text.tokenizer import byte_level_tokenizer

    torch.manual_seed(seed)
    cfg = get_preset(preset).replace(visual_input=variant)
    return AffectGPT(cfg).eval(), byte_level_tokenizer()


def _model_and_tokenizer(args: argparse.Namespace, variant: str):
    import torch

    from affectrt.checkpoint import load_model

    if args.model_dir is None:
        print(
            f"affectrt: no --model-dir given: running the '{args.preset}' preset on RANDOM weights "
            "(the answer is noise; this checks the path end to end)",
            file=sys.stderr,
        )
        model, tokenizer = _build_random_model(variant, args.preset, args.seed)
    else:
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
        model, tokenizer = load_model(args.model_dir, args.checkpoint, variant=variant, llm_dtype=dtype)
        if args.checkpoint is None:
            print("affectrt: no --checkpoint: fusion head and LoRA are untrained", file=sys.stderr)
    if args.merge_lora:
        from affectrt.models.lora import merge_lora

        merge_lora(model.llm)
    return model, tokenizer


def _pipeline(args: argparse.Namespace, variant: str):
    """(pipeline, None), or (None, exit code) after a clear message."""
    from affectrt.pipeline import AffectGPTPipeline

    model, tokenizer = _model_and_tokenizer(args, variant)
    encoders = None
    if args.encoders != "torch":
        from affectrt.export.runners import load_encoders
        from affectrt.export.sidecar import StaleArtifactError

        if args.artifacts is None:
            print(
                f"affectrt: --encoders {args.encoders} needs --artifacts DIR (from `affectrt export`)",
                file=sys.stderr,
            )
            return None, 2
        try:
            encoders = load_encoders(args.encoders, args.artifacts, model, args.device)
        except (StaleArtifactError, FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"affectrt: {err}", file=sys.stderr)
            return None, 2
    return AffectGPTPipeline(model, tokenizer, device=args.device, encoders=encoders), None


def _generation(args: argparse.Namespace, pipe):
    from affectrt.checkpoint import generation_top_k
    from affectrt.pipeline import default_generation

    top_k = generation_top_k(args.model_dir) if args.model_dir else 20
    return default_generation(
        pipe.tokenizer, args.max_new_tokens, greedy=not args.sample, seed=args.seed, top_k=top_k
    )


def infer(args: argparse.Namespace) -> int:
    from affectrt.media.errors import MediaError
    from affectrt.pipeline import ClipInput

    variant = args.variant or ("face" if args.face_npy else "frame")
    pipe, code = _pipeline(args, variant)
    if pipe is None:
        return code
    gen = _generation(args, pipe)
    clip = ClipInput(video=args.video, subtitle=args.subtitle, face_npy=args.face_npy, audio=args.audio)
    try:
        (answer,) = pipe.answer([clip], question=args.question, gen=gen)
    except (MediaError, FileNotFoundError) as err:
        print(f"affectrt: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"video": str(args.video), "question": args.question, "answer": answer}))
    else:
        print(answer)
    return 0


def batch(args: argparse.Namespace) -> int:
    """Answer every clip of a CSV list, writing JSON lines as it goes (a rerun resumes)."""
    import csv

    from affectrt.pipeline import ClipInput, run_batch_job

    with open(args.clips, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "name" not in rows[0]:
        print(
            f"affectrt: {args.clips}: expected a CSV with a header: name,video,face_npy,audio,subtitle",
            file=sys.stderr,
        )
        return 2
    base = Path(args.clips).parent

    def path(value: str | None) -> Path | None:
        return (base / value) if value else None

    clips = [
        ClipInput(
            video=path(r.get("video")),
            subtitle=r.get("subtitle") or "",
            face_npy=path(r.get("face_npy")),
            audio=path(r.get("audio")),
            name=r["name"],
        )
        for r in rows
    ]
    variant = args.variant or ("face" if any(c.face_npy for c in clips) else "frame")
    pipe, code = _pipeline(args, variant)
    if pipe is None:
        return code
    gen = _generation(args, pipe)
    results = run_batch_job(
        pipe, clips, args.out, question=args.question, gen=gen, batch_size=args.batch_size
    )
    failed = sum(r.error is not None for r in results.values())
    print(
        f"affectrt: {len(results) - failed} answered, {failed} failed; results in {args.out}", file=sys.stderr
    )
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", default=None, help="folder with vision/, audio/, llm/ HF model folders")
    p.add_argument("--checkpoint", default=None, help="AffectGPT .pth (release) or affectrt .safetensors")
    p.add_argument(
        "--variant", choices=("face", "frame"), default=None, help="default: face if faces are given"
    )
    p.add_argument("--preset", default="tiny", help="preset for random weights without --model-dir")
    p.add_argument(
        "--question",
        default="ovlabel",
        help="'ovlabel' (label question), 'description' (reasoning question) or any question text",
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--sample", action="store_true", help="sample (T=1, top-p 0.9, top-k 20) instead of greedy"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="LLM base-weight dtype (the release: float16 on a GPU); adapters stay float32",
    )
    p.add_argument(
        "--encoders",
        choices=("torch", "onnx", "trt"),
        default="torch",
        help="serve the encoders and fusion head with PyTorch, ONNX Runtime or TensorRT (see `affectrt export`)",
    )
    p.add_argument("--artifacts", default=None, help="folder written by `affectrt export` (with --encoders)")
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="fold LoRA into the base weights (faster; the release keeps it unmerged in fp32, so numerics differ slightly)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectrt", description="Fast runtime for AffectGPT emotion models")
    sub = parser.add_subparsers(dest="command", required=True)

    p_info = sub.add_parser("info", help="versions, devices, extensions, op backends, build metadata")
    p_info.add_argument("--json", action="store_true", help="print JSON")

    p_inf = sub.add_parser("infer", help="describe the emotional state of the person in one clip")
    p_inf.add_argument("video", help="video file (frames and, unless --audio is given, the audio track)")
    p_inf.add_argument("--subtitle", default="", help="the clip's subtitle text")
    p_inf.add_argument("--face-npy", default=None, help="OpenFace faces [N,112,112,3] uint8 BGR (face model)")
    p_inf.add_argument("--audio", default=None, help="separate .wav (default: the video's audio track)")
    _model_args(p_inf)
    p_inf.add_argument("--json", action="store_true", help="print a JSON line")

    p_batch = sub.add_parser("batch", help="answer a list of clips (CSV), writing JSON lines as it goes")
    p_batch.add_argument(
        "clips", help="CSV with columns name,video,face_npy,audio,subtitle (paths relative to it)"
    )
    p_batch.add_argument("--out", required=True, help="JSON-lines results; clips already in it are skipped")
    p_batch.add_argument("--batch-size", type=int, default=8)
    _model_args(p_batch)

    from affectrt.export.cli import add_export_parser

    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        data = info()
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            _print_info(data)
        return 0
    if args.command == "infer":
        return infer(args)
    if args.command == "batch":
        return batch(args)
    if args.command == "export":
        from affectrt.export.cli import run_export

        return run_export(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
