"""Kernel benchmark driver: every ``benchmarks/kbench_*.py`` module's cases, each impl against "eager".

Each module exposes ``cases(device) -> [{"op", "shape", "impls": {name: fn}, "bytes", ...}]``; optional
keys: ``peak_bytes`` {impl: bytes} (analytic accounting, used on CPU where no allocator counts torch's
and native scratch together) and ``target`` (the PERFORMANCE.md row). For every case this times the impls
interleaved (one call of each per round, after a warm-up), so drift on a shared CPU hits all alike, and
prints median, p20/p80, GB/s of ``bytes``, peak memory, the fraction of HBM bandwidth on a GPU (CUDA
events) and the time / memory ratios against "eager". On CPU it ends with ``# bound`` lines: the most any
kernel could reach against eager on this machine, measured in the same run (see _fusion_head_bounds).

    python benchmarks/kernels.py [--device cpu|cuda] [--ops cross_attn,...] [--repeats N] [--json-out F]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import run_metadata  # noqa: E402

# Peak HBM bandwidth by device-name fragment (bytes/s), for the roofline fraction.
HBM = {"H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def _modules() -> list:
    mods = []
    for path in sorted(HERE.glob("kbench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


def _time_one(fn, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _measure(case: dict, device: torch.device, repeats: int) -> dict:
    impls = case["impls"]
    samples = {name: [] for name in impls}
    peaks = {}
    with torch.no_grad():
        for name, fn in impls.items():  # warm-up (JIT, allocator, caches) and peak memory
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peaks[name] = torch.cuda.max_memory_allocated(device) - base
            else:
                peaks[name] = case.get("peak_bytes", {}).get(name)
        for _ in range(repeats):
            for name, fn in impls.items():
                samples[name].append(_time_one(fn, device))
    hbm = next(
        (bw for k, bw in HBM.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)),
        None,
    )
    rows = {}
    for name, ts in samples.items():
        a = np.asarray(ts)
        med = float(np.median(a))
        rows[name] = {
            "median_ms": med,
            "p20_ms": float(np.percentile(a, 20)),
            "p80_ms": float(np.percentile(a, 80)),
            "gb_s": case["bytes"] / med / 1e6,
            "hbm_fraction": case["bytes"] / (med * 1e-3) / hbm if hbm else None,
            "peak_bytes": peaks[name],
        }
    if "eager" in rows:
        for r in rows.values():
            r["speedup_vs_eager"] = rows["eager"]["median_ms"] / r["median_ms"]
            pe, p = rows["eager"]["peak_bytes"], r["peak_bytes"]
            r["peak_vs_eager"] = p / pe if (p is not None and pe) else None
    return rows


def _median_ms(fn, repeats: int = 15) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def _fusion_head_bounds(mod, eager_ms: dict[str, float]) -> list[str]:
    """What this CPU can do at best for the fusion head (PERFORMANCE target 3), measured now.

    B=1 is a GEMV: every weight is read once, so the floor is their bytes at the rate torch reads the same
    bytes (``torch.sum`` over them: cache-resident like the benchmark's weights). B=64 is a GEMM: the floor
    is the folded head's FLOPs (2·B·Σ matrix elements) at MKL's sgemm rate (2048³ ``torch.mm``). Each
    line gives the eager / floor ratio, the most any kernel could reach against eager on this machine.
    """
    head = mod._head(torch.device("cpu"))
    w = head.fused_weights()
    names = ("video_proj_w", "audio_proj_w", "multi_video_w", "multi_audio_w", "multi_proj_w")
    mats = [getattr(w, n) for n in names]  # the five projections (the folded gate is 2 rows: left out)
    weights = torch.cat([t.detach().reshape(-1) for t in mats])
    nbytes = weights.numel() * weights.element_size()
    read_ms = _median_ms(lambda: weights.sum())
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gflops = 2 * 2048**3 / _median_ms(lambda: a @ b, 5) / 1e6
    lines = []
    if "B=1" in eager_ms:
        e = eager_ms["B=1"]
        lines.append(
            f"# bound fusion_head B=1: torch.sum reads the {nbytes / 1e6:.1f} MB of weights in {read_ms:.3f} ms "
            f"({nbytes / read_ms / 1e6:.1f} GB/s) -> at best {e / read_ms:.2f}x eager ({e:.3f} ms); target 5x"
        )
    if "B=64" in eager_ms:
        e = eager_ms["B=64"]
        flops = 2 * 64 * weights.numel()
        floor = flops / gflops / 1e6
        lines.append(
            f"# bound fusion_head B=64: {flops / 1e9:.2f} GFLOP at sgemm {gflops:.0f} GFLOP/s (2048^3 torch.mm) "
            f"= {floor:.3f} ms -> at best {e / floor:.2f}x eager ({e:.3f} ms); target 2x"
        )
    return lines


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    wanted = {o for o in args.ops.split(",") if o}
    results = {"meta": run_metadata(device), "cases": []}
    print(
        f"# {results['meta']['device_name']}  threads={results['meta']['threads']}  commit={results['meta']['commit']}"
    )
    head = f"{'op':<12} {'shape':<52} {'impl':<8} {'median ms':>10} {'p20-p80':>16} {'GB/s':>7} {'HBM%':>5}"
    print(head + f" {'peak MB':>8} {'x eager':>8} {'mem/eager':>9} target")
    bounds = []
    for mod in _modules():
        eager_ms = {}
        for case in mod.cases(device):
            if wanted and case["op"] not in wanted:
                continue
            rows = _measure(case, device, args.repeats)
            if "eager" in rows:
                eager_ms[case["shape"]] = rows["eager"]["median_ms"]
            for name, r in rows.items():
                peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 1e6
                hbm = None if r["hbm_fraction"] is None else 100 * r["hbm_fraction"]
                print(
                    f"{case['op']:<12} {case['shape']:<52} {name:<8} {r['median_ms']:>10.3f} "
                    f"{r['p20_ms']:>7.3f}-{r['p80_ms']:<8.3f} {r['gb_s']:>7.2f} {_fmt(hbm, '>5.1f')} "
                    f"{_fmt(peak, '>8.1f')} {_fmt(r.get('speedup_vs_eager'), '>8.2f')} "
                    f"{_fmt(r.get('peak_vs_eager'), '>9.3f')} {case.get('target', '')}"
                )
            results["cases"].append(
                {k: v for k, v in case.items() if k not in ("impls",)} | {"results": rows}
            )
        if device.type == "cpu" and eager_ms and hasattr(mod, "_head"):  # kbench_fusion_head
            bounds += _fusion_head_bounds(mod, eager_ms)
    for line in bounds:
        print(line)
    results["bounds"] = bounds
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
