"""Triton kernels of attention pooling (MODEL_SPEC §1.4), forward and backward.

    s[b,t]   = z[b,t,:]·w + bias                     raw linear scores, no softmax
    out[b,:] = Σ_t s[b,t] z[b,t,:]

Backward, with g = dL/dout [B, D] and c[b,t] = g[b]·z[b,t]:

    dz[b,t,:] = s[b,t] g[b] + c[b,t] w
    dw        = Σ_{b,t} c[b,t] z[b,t,:]
    dbias     = Σ_{b,t} c[b,t]

One program per (batch row, tile of BLOCK_D columns). Each program recomputes the T scores over the full
row (T·D elements of z[b], an L2 hit after the first tile) so no score tensor is written between kernels.
The backward writes dw and dbias as per-row partials [B, D] / [B] that the launcher sums over B: no
atomics, so the result is deterministic. Accumulation is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import Launch, launch


@triton.jit
def _row_scores(z_row, w_ptr, offs_t, mask_t, D, z_st, z_sd, w_sd, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Σ_d z[t, d] w[d] for the BLOCK_T rows offs_t of one batch row: [BLOCK_T]."""
    s = tl.zeros([offs_t.shape[0]], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        z = tl.load(
            z_row + offs_t[:, None] * z_st + offs_d[None, :] * z_sd,
            mask=mask_t[:, None] & mask_d[None, :],
            other=0.0,
        ).to(ACC)
        w = tl.load(w_ptr + offs_d * w_sd, mask=mask_d, other=0.0).to(ACC)
        s += tl.sum(z * w[None, :], axis=1)
    return s


@triton.jit
def _attn_pool_fwd_kernel(
    z_ptr, w_ptr, b_ptr, out_ptr,
    T, D, z_sb, z_st, z_sd, w_sd,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_n = offs_n < D
    z_row = z_ptr + pid_b * z_sb
    bias = tl.load(b_ptr).to(ACC)
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask_t = offs_t < T
        s = _row_scores(z_row, w_ptr, offs_t, mask_t, D, z_st, z_sd, w_sd, ACC, BLOCK_D)
        s = tl.where(mask_t, s + bias, 0.0)
        z = tl.load(
            z_row + offs_t[:, None] * z_st + offs_n[None, :] * z_sd,
            mask=mask_t[:, None] & mask_n[None, :],
            other=0.0,
        ).to(ACC)
        acc += tl.sum(s[:, None] * z, axis=0)
    tl.store(out_ptr + pid_b * D + offs_n, acc.to(out_ptr.dtype.element_ty), mask=mask_n)


@triton.jit
def _attn_pool_bwd_kernel(
    z_ptr, w_ptr, b_ptr, g_ptr, dz_ptr, dw_part_ptr, db_part_ptr,
    T, D, z_sb, z_st, z_sd, w_sd, g_sb, g_sd,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    offs_n = pid_n * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_n = offs_n < D
    z_row = z_ptr + pid_b * z_sb
    g_row = g_ptr + pid_b * g_sb
    bias = tl.load(b_ptr).to(ACC)
    g_n = tl.load(g_row + offs_n * g_sd, mask=mask_n, other=0.0).to(ACC)
    w_n = tl.load(w_ptr + offs_n * w_sd, mask=mask_n, other=0.0).to(ACC)
    dw = tl.zeros([BLOCK_D], dtype=ACC)
    db = tl.zeros([BLOCK_T], dtype=ACC)
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask_t = offs_t < T
        # s[t] = z_t·w + bias and c[t] = g·z_t, both over the full row.
        s = tl.zeros([BLOCK_T], dtype=ACC)
        c = tl.zeros([BLOCK_T], dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            z = tl.load(
                z_row + offs_t[:, None] * z_st + offs_d[None, :] * z_sd,
                mask=mask_t[:, None] & mask_d[None, :],
                other=0.0,
            ).to(ACC)
            w = tl.load(w_ptr + offs_d * w_sd, mask=mask_d, other=0.0).to(ACC)
            g = tl.load(g_row + offs_d * g_sd, mask=mask_d, other=0.0).to(ACC)
            s += tl.sum(z * w[None, :], axis=1)
            c += tl.sum(z * g[None, :], axis=1)
        s = tl.where(mask_t, s + bias, 0.0)
        c = tl.where(mask_t, c, 0.0)
        mask = mask_t[:, None] & mask_n[None, :]
        z = tl.load(z_row + offs_t[:, None] * z_st + offs_n[None, :] * z_sd, mask=mask, other=0.0).to(ACC)
        dz = s[:, None] * g_n[None, :] + c[:, None] * w_n[None, :]
        dz_ptrs = dz_ptr + pid_b * T * D + offs_t[:, None] * D + offs_n[None, :]
        tl.store(dz_ptrs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
        dw += tl.sum(c[:, None] * z, axis=0)
        db += c
    tl.store(dw_part_ptr + pid_b * D + offs_n, dw, mask=mask_n)
    if pid_n == 0:
        tl.store(db_part_ptr + pid_b, tl.sum(db, axis=0))


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


NUM_WARPS = 4


def _blocks(T: int, D: int) -> tuple[int, int]:
    # A [16, 256] tile is 32 float32 registers per thread at 4 warps: no spills on sm_80/sm_90 (AOT test).
    return min(triton.next_power_of_2(max(T, 1)), 16), min(triton.next_power_of_2(max(D, 1)), 256)


def attn_pool_forward(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """z [B,T,D] (any strides), weight [D] or [1,D], bias [1] -> out [B,D] contiguous, z's dtype."""
    B, T, D = z.shape
    out = torch.empty((B, D), dtype=z.dtype, device=z.device)
    if out.numel() == 0:
        return out
    if T == 0:
        return out.zero_()
    block_t, block_d = _blocks(T, D)
    grid = (B, triton.cdiv(D, block_d))
    launch(
        Launch(
            _attn_pool_fwd_kernel,
            grid,
            (z, weight, bias, out, T, D, *z.stride(), weight.stride(-1)),
            {"ACC": _acc_dtype(z.dtype), "BLOCK_T": block_t, "BLOCK_D": block_d, "num_warps": NUM_WARPS},
            "attn_pool.fwd",
        )
    )
    return out


def attn_pool_backward(
    grad_out: Tensor, z: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dz [B,T,D], dweight shaped like weight, dbias [1]) for out = attn_pool(z, weight, bias)."""
    B, T, D = z.shape
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    dz = torch.empty((B, T, D), dtype=z.dtype, device=z.device)
    dw_part = torch.zeros((B, D), dtype=acc, device=z.device)
    db_part = torch.zeros((B,), dtype=acc, device=z.device)
    if B and T and D:
        block_t, block_d = _blocks(T, D)
        grid = (B, triton.cdiv(D, block_d))
        launch(
            Launch(
                _attn_pool_bwd_kernel,
                grid,
                (
                    z,
                    weight,
                    bias,
                    grad_out,
                    dz,
                    dw_part,
                    db_part,
                    T,
                    D,
                    *z.stride(),
                    weight.stride(-1),
                    *grad_out.stride(),
                ),  # fmt: skip
                {"ACC": _acc_dtype(z.dtype), "BLOCK_T": block_t, "BLOCK_D": block_d, "num_warps": NUM_WARPS},
                "attn_pool.bwd",
            )
        )
    else:
        dz.zero_()
    dw = dw_part.sum(0).to(weight.dtype).reshape(weight.shape)
    db = db_part.sum().to(bias.dtype).reshape(bias.shape)
    return dz, dw, db
