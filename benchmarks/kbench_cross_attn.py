"""Kernel benchmark cases of few-query cross-attention (PERFORMANCE.md targets 4 and 8).

Shapes: the Q-Former over many encoder tokens, H = 768 (12 heads × 64), E = 1024, B = 1. Impls:
``eager`` (K, V and the scores materialised: :func:`cross_attn_ref`), ``sdpa`` (K, V projected, then
PyTorch's scaled_dot_product_attention) and the fused backends that can run here (``cpu``; on a GPU
``cuda`` and ``triton``). ``bytes`` is what the fused kernel must read/write at least: x, W_k, W_v, q, out.

CPU peak memory is accounted analytically (the largest live intermediates each impl allocates, listed in
``peak_bytes``); on CUDA the driver measures torch.cuda.max_memory_allocated instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from affectrt.ops._backends import backends
from affectrt.ops.cross_attn import _BLAS_MIN_ROWS, _BLAS_SCORE_FLOATS, cross_attn, cross_attn_ref

H, HEADS, E, B = 768, 12, 1024, 1


def _sdpa(q, x, wk, bk, wv, bv):
    d = H // HEADS
    k = F.linear(x, wk, bk).view(B, -1, HEADS, d).transpose(1, 2)
    v = F.linear(x, wv, bv).view(B, -1, HEADS, d).transpose(1, 2)
    qh = q.view(B, -1, HEADS, d).transpose(1, 2)
    return F.scaled_dot_product_attention(qh, k, v).transpose(1, 2).reshape(B, -1, H)


def _threads() -> int:
    from affectrt.ops._ext import cpu_ext

    ext = cpu_ext()
    return ext.num_threads() if ext is not None else torch.get_num_threads()


def cases(device: torch.device) -> list[dict]:
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    el = torch.finfo(dtype).bits // 8
    shapes = [(1, 4096), (8, 4096), (32, 4096)] if device.type == "cpu" else [
        (8, 2048), (32, 2048), (8, 8192), (32, 8192)
    ]  # fmt: skip
    available = {b.name for b in backends("cross_attn") if b.available() is None}
    out = []
    for nq, nk in shapes:
        g = torch.Generator(device="cpu").manual_seed(nq + nk)
        args = [
            torch.randn(B, nq, H, generator=g),
            torch.randn(B, nk, E, generator=g),
            torch.randn(H, E, generator=g) / E**0.5,
            torch.randn(H, generator=g),
            torch.randn(H, E, generator=g) / E**0.5,
            torch.randn(H, generator=g),
        ]
        args = [a.to(device=device, dtype=dtype) for a in args]
        impls = {
            "eager": lambda a=args: cross_attn_ref(*a, None, HEADS),
            "sdpa": lambda a=args: _sdpa(*a),
        }
        for name in ("cuda", "triton", "cpu"):
            if name in available and device.type in ("cuda" if name != "cpu" else "cpu"):
                impls[name] = lambda a=args, n=name: cross_attn(*a, None, HEADS, backend=n)
        r = HEADS * nq
        splits = max(1, min(-(-_threads() // B), -(-nk // 32)))
        kv = 2 * B * nk * H * el
        scores = B * HEADS * nq * nk * el
        io = B * nq * H * el
        peak = {
            "eager": kv + 2 * scores + io,  # K, V, scores, probabilities, out
            "sdpa": kv + io,  # K, V (the CPU flash kernel keeps scores in tiles)
            "cpu": 4 * (2 * B * r * E + B * splits * r * (E + 2) + _threads() * 32 * E) + io,
        }
        if r >= _BLAS_MIN_ROWS:  # the BLAS path: q̃, A, the accumulator, and one chunk of scores at most
            kc = min(nk, max(32, _BLAS_SCORE_FLOATS // r))
            bc = max(1, min(B, _BLAS_SCORE_FLOATS // (r * kc)))
            peak["cpu"] = 4 * (3 * B * r * E + bc * r * kc) + io
        out.append(
            {
                "op": "cross_attn",
                "shape": f"B={B} Nq={nq} Nk={nk} H={H} heads={HEADS} E={E} {str(dtype).removeprefix('torch.')}",
                "impls": impls,
                "bytes": (B * nk * E + 2 * H * E + 2 * B * nq * H) * el,
                "flops": {"eager": 4 * B * nk * E * H + 4 * B * HEADS * nq * nk * (H // HEADS)},
                "peak_bytes": {k: v for k, v in peak.items() if k in impls},
                "target": "4" if device.type == "cpu" else "8",
            }
        )
    return out
