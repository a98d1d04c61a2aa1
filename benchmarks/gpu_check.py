"""The one-command GPU check: everything in affectrt that needs a CUDA GPU, in at most 8 minutes, one report.

    python benchmarks/gpu_check.py [--out DIR] [--budget-s 480] [--skip STEP,...]

Steps, in order, each with its share of the time budget (a step that runs out is stopped and reported as
such; later steps still run):

1. ``tests``: ``pytest -m "gpu or dali_gpu or tensorrt" tests/gpu tests/media tests/export tests/ops`` — the
   op matrix (op × backend cuda/triton/eager × fp32/fp16/bf16 × contiguous/strided × release/odd shapes
   against float64, forward and backward), ONNX Runtime's CUDA provider (``session.get_providers()``), the
   DALI loader on the GPU, CUDA greedy generation = CPU greedy (tiny Qwen2), TensorRT engines when
   ``tensorrt`` is installed.
2. ``kernels``: ``benchmarks/kernels.py --device cuda``: median time, GB/s and % of the HBM roofline of
   every fused op (the memory-roofline targets of the fused ops).
3. ``latency``: ``benchmarks/latency.py --device cuda``: end to end and per stage against the reference.
4. ``train``: ``benchmarks/train.py --device cuda``: a cached-feature training step against re-encoding, and
   training samples/s at the released sizes.

It installs nothing: whatever is missing in the environment (triton, DALI, onnxruntime-gpu, tensorrt) shows
up as skipped tests with their reasons. Output: ``DIR/gpu_check.json`` (every step's command, return code,
seconds, tail of its output, the pytest summary and the kernel table) and ``DIR/gpu_check.md`` (the same as
Markdown, to quote in an issue), by default under ``bench_results/gpu_check/``. Exit status 0 when every step
passed, 1 when one failed or ran out of time, 2 when torch sees no CUDA device (the tests then only skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = ("tests", "kernels", "latency", "train")
SHARES = {"tests": 0.45, "kernels": 0.2, "latency": 0.2, "train": 0.15}  # of the budget


def _device() -> dict:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"cuda": False}
        p = torch.cuda.get_device_properties(0)
        return {
            "cuda": True,
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
            "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda,
        }
    except Exception as e:  # noqa: BLE001 - the report says what went wrong
        return {"cuda": False, "error": f"{type(e).__name__}: {e}"}


def _run(name: str, cmd: list[str], timeout: float, env: dict) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    seconds = time.perf_counter() - t0
    print(f"== {name}: rc={rc} in {seconds:.0f}s", flush=True)
    return {
        "step": name,
        "command": " ".join(cmd),
        "rc": rc,
        "seconds": round(seconds, 1),
        "tail": out[-6000:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))  # fmt: skip
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("bench_results/gpu_check"),
        help="report folder (created; default bench_results/gpu_check, git-ignored)",
    )
    ap.add_argument(
        "--budget-s", type=float, default=480.0, help="total time budget in seconds (default 480)"
    )
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: " + ",".join(STEPS))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    skip = {s for s in args.skip.split(",") if s}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONUNBUFFERED": "1"}
    report = {"device": _device(), "python": platform.python_version(), "steps": []}
    cuda = bool(report["device"].get("cuda"))
    if not cuda:
        print(
            "no CUDA device: the GPU tests skip and the benchmarks do not run (exit status 2)",
            file=sys.stderr,
        )
    py = sys.executable
    junit = args.out / "gpu_tests.xml"
    kernels_json = args.out / "kernels.json"
    commands = {
        "tests": [
            py, "-m", "pytest", "-q", "-rs", "-m", "gpu or dali_gpu or tensorrt", f"--junitxml={junit}",
            "tests/gpu", "tests/media", "tests/export", "tests/ops",
        ],
        "kernels": [py, "benchmarks/kernels.py", "--device", "cuda", "--repeats", "20", "--json-out", str(kernels_json)],
        "latency": [py, "benchmarks/latency.py", "--device", "cuda"],
        "train": [py, "benchmarks/train.py", "--device", "cuda", "--repeats", "5", "--batches", "3", "16", "32"],
    }  # fmt: skip
    for step in STEPS:
        if step in skip or (step in ("latency", "train") and not (HERE / f"{step}.py").exists()):
            continue
        if step != "tests" and not cuda:
            report["steps"].append({"step": step, "command": " ".join(commands[step]), "rc": "skipped", "seconds": 0,
                                    "tail": "skipped: torch sees no CUDA device"})  # fmt: skip
            continue
        report["steps"].append(_run(step, commands[step], SHARES[step] * args.budget_s, env))
    if kernels_json.exists():
        report["kernels"] = json.loads(kernels_json.read_text())
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# affectrt GPU check: {report['device'].get('name', 'no CUDA device')}", ""]
    lines += ["| step | rc | seconds |", "|---|---|---:|"]
    lines += [f"| {s['step']} | {s['rc']} | {s['seconds']} |" for s in report["steps"]]
    for s in report["steps"]:
        lines += [
            "",
            f"## {s['step']}",
            "",
            f"`{s['command']}`",
            "",
            "```",
            s["tail"][-3000:].rstrip(),
            "```",
        ]
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print(f"report: {args.out / 'gpu_check.md'}, {args.out / 'gpu_check.json'}")
    if not cuda:
        return 2
    return 0 if all(s["rc"] == 0 for s in report["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
