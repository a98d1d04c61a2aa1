"""Kernel benchmark cases of the fused fusion head (PERFORMANCE.md targets 3 and 9).

``cases(device)`` is what ``benchmarks/kernels.py`` imports: the released dims (d_v 768, d_a 1024, D 3584,
T 8) in float32 at B=1 and B=64, each with

- ``eager``: the release's per-module path (``FusionHead.backend = "module"``: attention pooling,
  projections, the unfolded gate, stack + matmul, ``multi_llama_proj``: ~20 small ops);
- ``cpu`` / ``cuda`` / ``triton``: the fused op with the cached folded gate, where it can run.

``bytes``: the least that must move: the inputs Z_v, Z_a, the weights of the folded head once and the
[B,3,D] output. Run this file directly for a quick interleaved A/B on this machine:
``python benchmarks/kbench_fusion_head.py [--device cpu] [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from affectrt.config import get_preset
from affectrt.models.fusion import FusionHead
from affectrt.ops._backends import backends
from affectrt.ops.fusion_head import fold_gate, fusion_head


def _head(device: torch.device) -> FusionHead:
    torch.manual_seed(0)
    head = FusionHead(get_preset("affectgpt-7b-face")).to(device).eval()
    assert head.fused, "the released preset should use the fused head"
    return head


def cases(device: torch.device) -> list[dict]:
    """One case per batch size; see the module docstring."""
    device = torch.device(device)
    head = _head(device)
    weights = head.fused_weights()
    folded = fold_gate(weights)
    folded_bytes = sum(t.numel() * t.element_size() for t in (*weights[:12], *folded, *weights[16:]))
    out = []
    for B in (1, 64):
        g = torch.Generator().manual_seed(B)
        zv = torch.randn(B, 8, head.video_dim, generator=g).to(device)
        za = torch.randn(B, 8, head.audio_dim, generator=g).to(device)

        def eager(zv=zv, za=za):
            head.backend = "module"
            with torch.no_grad():
                return head(zv, za)

        impls = {"eager": eager}
        inputs = {"z_video": zv, "z_audio": za}
        for b in backends("fusion_head"):
            if b.name == "eager" or b.not_supported_reasons(inputs, needs_grad=False):
                continue
            if b.name == "triton" and device.type == "cpu":
                continue  # the interpreter is a test device, not a benchmark

            def fused(zv=zv, za=za, name=b.name):
                with torch.no_grad():
                    return fusion_head(zv, za, weights, folded_gate=folded, backend=name)

            impls[b.name] = fused
        io = (zv.numel() + za.numel() + 3 * B * weights.video_proj_w.shape[0]) * zv.element_size()
        out.append({"op": "fusion_head", "shape": f"B={B}", "impls": impls, "bytes": folded_bytes + io})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    device = torch.device(args.device)
    for case in cases(device):
        impls = case["impls"]
        for fn in impls.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(args.repeats):  # interleaved A/B: drift hits every impl alike
            for name, fn in impls.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append((time.perf_counter() - t0) * 1e3)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        for name, m in med.items():
            gbs = case["bytes"] / (m * 1e-3) / 1e9
            ratio = med["eager"] / m
            print(
                f"{case['shape']:6s} {name:7s} median {m:8.3f} ms  {gbs:6.1f} GB/s  eager/this {ratio:5.2f}x"
            )


if __name__ == "__main__":
    main()
