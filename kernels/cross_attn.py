"""Triton kernels of few-query cross-attention (Q-Former pre-fusion and token compression), fwd and bwd.

The op is MHA(q, X W_kᵀ + b_k, X W_vᵀ + b_v) with few queries. With the K/V projections absorbed into the
queries and the output (as in DeepSeek's MLA), per head h (d = head dim, rows r = (h, i)):

    q̃_r   = q[i, h·d:(h+1)·d] W_k[h·d:(h+1)·d, :] / √d          [E]   (the launcher, a tiny matmul)
    s_rj  = q̃_r · x_j            (b_k adds q_r·b_k to a whole row: softmax ignores it)
    A_r   = Σ_j softmax_j(s_r) x_j                               [E]   <- these kernels
    out_i = A_r W_v[h·d:(h+1)·d, :]ᵀ + b_v[h·d:(h+1)·d]                (the launcher)

So the kernels are single-head attention with R = heads·Nq query rows over keys = values = x itself: K and
V are never formed, let alone written. Per key this costs 4·R·E FLOPs instead of the 4·H·E of projecting
K and V, i.e. Nq/d of the work (fewer whenever Nq < d), and x is read once for all heads.

Padded keys (keep[b, j] == 0) get the score -1e30 instead of s_rj (not added to it), so a row with some
keys left attends only to those, and a fully padded row attends uniformly to all Nk keys (what the
release's BERT does by adding the dtype minimum), with no gradient through its scores.

Forward: grid (B, splits, row blocks); each program runs an online softmax over its split of the keys and
writes (acc, m, l); the launcher combines the splits with a log-sum-exp reduction (flash-decoding), so a
small grid still fills the GPU. It returns A (float32) and the row statistics m and log l for backward.

Backward, with dA_r given and δ_r = dA_r · A_r, P the probabilities, dP_rj = dA_r · x_j:

    dS_rj = P_rj (dP_rj − δ_r)        (0 at padded keys)
    dq̃_r  = Σ_j dS_rj x_j             _cross_attn_bwd_dq_kernel, split over keys like the forward
    dx_j  = Σ_r dS_rj q̃_r + P_rj dA_r  _cross_attn_bwd_dx_kernel, one program per key block
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MASKED_SCORE = -1.0e30  # the score of a padded key (see the module docstring)
BLOCK_M = 16  # query rows per program (tl.dot needs >= 16)


@triton.jit
def _masked_scores(s, offs_n, in_range, keep_row, keep_sn, HAS_MASK: tl.constexpr):
    """Scores of a [BLOCK_M, BLOCK_N] tile: -1e30 at padded keys, -inf past the end of the keys."""
    if HAS_MASK:
        keep = tl.load(keep_row + offs_n * keep_sn, mask=in_range, other=0)
        s = tl.where(keep[None, :] != 0, s, -1.0e30)
    return tl.where(in_range[None, :], s, float("-inf"))


@triton.jit
def _cross_attn_fwd_kernel(
    qt_ptr, x_ptr, keep_ptr, acc_ptr, m_ptr, l_ptr,
    R, Nk, E, keys_per_split,
    qt_sb, qt_sr, x_sb, x_sn, x_se, keep_sb, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    mask_m, mask_e = offs_m < R, offs_e < E
    qt = tl.load(
        qt_ptr + b * qt_sb + offs_m[:, None] * qt_sr + offs_e[None, :],
        mask=mask_m[:, None] & mask_e[None, :],
        other=0.0,
    )
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    lo = split * keys_per_split
    hi = tl.minimum(lo + keys_per_split, Nk)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        in_range = offs_n < hi
        xb = tl.load(
            x_ptr + b * x_sb + offs_n[:, None] * x_sn + offs_e[None, :] * x_se,
            mask=in_range[:, None] & mask_e[None, :],
            other=0.0,
        )
        s = tl.dot(qt, tl.trans(xb), input_precision=PRECISION)
        s = _masked_scores(s, offs_n, in_range, keep_ptr + b * keep_sb, keep_sn, HAS_MASK)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every block has a key in range
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(xb.dtype), xb, input_precision=PRECISION)
        m_i = m_new
    row = (b * n_splits + split) * R + offs_m
    tl.store(acc_ptr + row[:, None] * E + offs_e[None, :], acc, mask=mask_m[:, None] & mask_e[None, :])
    tl.store(m_ptr + row, m_i, mask=mask_m)
    tl.store(l_ptr + row, l_i, mask=mask_m)


@triton.jit
def _load_rows(
    qt_ptr, da_ptr, m_ptr, logl_ptr, delta_ptr, b, offs_m, offs_e, mask_m, mask_e, R, E, qt_sb, qt_sr
):
    """The backward's per-row inputs: q̃ and dA tiles, m, log l and δ (row-major [B, R(, E)] buffers)."""
    mask = mask_m[:, None] & mask_e[None, :]
    qt = tl.load(qt_ptr + b * qt_sb + offs_m[:, None] * qt_sr + offs_e[None, :], mask=mask, other=0.0)
    da = tl.load(da_ptr + (b * R + offs_m)[:, None] * E + offs_e[None, :], mask=mask, other=0.0)
    m = tl.load(m_ptr + b * R + offs_m, mask=mask_m, other=0.0)
    logl = tl.load(logl_ptr + b * R + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(delta_ptr + b * R + offs_m, mask=mask_m, other=0.0)
    return qt, da.to(qt.dtype), m, logl, delta


@triton.jit
def _cross_attn_bwd_dq_kernel(
    qt_ptr, x_ptr, keep_ptr, m_ptr, logl_ptr, da_ptr, delta_ptr, dqt_ptr,
    R, Nk, E, keys_per_split,
    qt_sb, qt_sr, x_sb, x_sn, x_se, keep_sb, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    mask_m, mask_e = offs_m < R, offs_e < E
    qt, da, m, logl, delta = _load_rows(
        qt_ptr, da_ptr, m_ptr, logl_ptr, delta_ptr, b, offs_m, offs_e, mask_m, mask_e, R, E, qt_sb, qt_sr
    )
    dq = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    lo = split * keys_per_split
    hi = tl.minimum(lo + keys_per_split, Nk)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        in_range = offs_n < hi
        xb = tl.load(
            x_ptr + b * x_sb + offs_n[:, None] * x_sn + offs_e[None, :] * x_se,
            mask=in_range[:, None] & mask_e[None, :],
            other=0.0,
        )
        s = tl.dot(qt, tl.trans(xb), input_precision=PRECISION)
        s = _masked_scores(s, offs_n, in_range, keep_ptr + b * keep_sb, keep_sn, HAS_MASK)
        p = tl.exp(s - m[:, None] - logl[:, None])
        dp = tl.dot(da, tl.trans(xb), input_precision=PRECISION)
        ds = tl.where(s > -1.0e30, p * (dp - delta[:, None]), 0.0)  # no gradient at padded keys
        dq += tl.dot(ds.to(xb.dtype), xb, input_precision=PRECISION)
    row = (b * n_splits + split) * R + offs_m
    tl.store(dqt_ptr + row[:, None] * E + offs_e[None, :], dq, mask=mask_m[:, None] & mask_e[None, :])


@triton.jit
def _cross_attn_bwd_dx_kernel(
    qt_ptr, x_ptr, keep_ptr, m_ptr, logl_ptr, da_ptr, delta_ptr, dx_ptr,
    R, Nk, E,
    qt_sb, qt_sr, x_sb, x_sn, x_se, keep_sb, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_e = tl.arange(0, BLOCK_E)
    in_range, mask_e = offs_n < Nk, offs_e < E
    xb = tl.load(
        x_ptr + b * x_sb + offs_n[:, None] * x_sn + offs_e[None, :] * x_se,
        mask=in_range[:, None] & mask_e[None, :],
        other=0.0,
    )
    dx = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    for m0 in range(0, R, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < R
        qt, da, m, logl, delta = _load_rows(
            qt_ptr, da_ptr, m_ptr, logl_ptr, delta_ptr, b, offs_m, offs_e, mask_m, mask_e, R, E, qt_sb, qt_sr
        )
        s = tl.dot(qt, tl.trans(xb), input_precision=PRECISION)
        s = _masked_scores(s, offs_n, in_range, keep_ptr + b * keep_sb, keep_sn, HAS_MASK)
        p = tl.where(mask_m[:, None], tl.exp(s - m[:, None] - logl[:, None]), 0.0)
        dp = tl.dot(da, tl.trans(xb), input_precision=PRECISION)
        ds = tl.where(s > -1.0e30, p * (dp - delta[:, None]), 0.0)
        dx += tl.dot(tl.trans(ds).to(qt.dtype), qt, input_precision=PRECISION)
        dx += tl.dot(tl.trans(p).to(da.dtype), da, input_precision=PRECISION)
    tl.store(
        dx_ptr + (b * Nk + offs_n)[:, None] * E + offs_e[None, :],
        dx,
        mask=in_range[:, None] & mask_e[None, :],
    )


# ------------------------------------------------------------------------------------------------ launchers


def _meta(x: Tensor, block_n: int | None) -> dict:
    E = x.shape[2]
    # fp32 inputs: exact fp32 dots (tf32 would lose ~3 digits); halves use the tensor cores as they are.
    precision = "ieee" if x.dtype in (torch.float32, torch.float64) else "tf32"
    return {
        "BLOCK_M": BLOCK_M,
        "BLOCK_N": block_n or (16 if x.device.type == "cpu" else 32),
        "BLOCK_E": max(16, triton.next_power_of_2(E)),
        "PRECISION": precision,
    }


def _n_splits(B: int, R: int, Nk: int, block_n: int, device: torch.device, split_k: int | None) -> int:
    n_blocks = triton.cdiv(Nk, block_n)
    if split_k is None:  # enough programs for ~2 waves of SMs, each with a few key blocks
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        split_k = max(1, 2 * sms // max(1, B * triton.cdiv(R, BLOCK_M)))
    return max(1, min(split_k, n_blocks))


def _keep_args(keep: Tensor | None, x: Tensor) -> tuple[Tensor, int, int]:
    if keep is None:
        return x, 0, 0  # a dummy pointer, never read (HAS_MASK=False)
    return keep, keep.stride(0), keep.stride(1)


def cross_attn_forward(
    qt: Tensor, x: Tensor, keep: Tensor | None, split_k: int | None = None, block_n: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """A = softmax(q̃ xᵀ, padded keys masked) x per batch row; see the module docstring.

    qt [B, R, E] (contiguous along E), x [B, Nk, E] (any strides, Nk >= 1), keep [B, Nk] uint8 or None.
    Returns A [B, R, E] float32 and the row statistics m, log l [B, R] float32 (for the backward).
    """
    B, R, E = qt.shape
    Nk = x.shape[1]
    meta = _meta(x, block_n)
    splits = _n_splits(B, R, Nk, meta["BLOCK_N"], x.device, split_k)
    per_split = triton.cdiv(triton.cdiv(Nk, meta["BLOCK_N"]), splits) * meta["BLOCK_N"]
    splits = triton.cdiv(Nk, per_split)  # no empty split
    acc = torch.empty((B, splits, R, E), device=x.device, dtype=torch.float32)
    m = torch.empty((B, splits, R), device=x.device, dtype=torch.float32)
    l = torch.empty_like(m)  # noqa: E741
    keep_t, keep_sb, keep_sn = _keep_args(keep, x)
    grid = (B, splits, triton.cdiv(R, BLOCK_M))
    _cross_attn_fwd_kernel[grid](
        qt, x, keep_t, acc, m, l, R, Nk, E, per_split,
        qt.stride(0), qt.stride(1), *x.stride(), keep_sb, keep_sn,
        HAS_MASK=keep is not None, **meta,
    )  # fmt: skip
    if splits == 1:
        return acc[:, 0] / l[:, 0, :, None], m[:, 0], l[:, 0].log()
    # log-sum-exp combine of the splits
    m_all = m.amax(dim=1)
    w = torch.exp(m - m_all[:, None])
    l_all = (w * l).sum(dim=1)
    a = torch.einsum("bsr,bsre->bre", w, acc) / l_all[..., None]
    return a, m_all, l_all.log()


def cross_attn_backward(
    qt: Tensor,
    x: Tensor,
    keep: Tensor | None,
    m: Tensor,
    logl: Tensor,
    da: Tensor,
    delta: Tensor,
    split_k: int | None = None,
    block_n: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(dq̃ [B, R, E], dx [B, Nk, E]) in float32, from dA [B, R, E] and δ = Σ_e dA·A [B, R] (float32)."""
    B, R, E = qt.shape
    Nk = x.shape[1]
    meta = _meta(x, block_n)
    da, delta, m, logl = da.contiguous(), delta.contiguous(), m.contiguous(), logl.contiguous()
    keep_t, keep_sb, keep_sn = _keep_args(keep, x)
    splits = _n_splits(B, R, Nk, meta["BLOCK_N"], x.device, split_k)
    per_split = triton.cdiv(triton.cdiv(Nk, meta["BLOCK_N"]), splits) * meta["BLOCK_N"]
    splits = triton.cdiv(Nk, per_split)
    dqt = torch.empty((B, splits, R, E), device=x.device, dtype=torch.float32)
    common = (qt.stride(0), qt.stride(1), *x.stride(), keep_sb, keep_sn)
    _cross_attn_bwd_dq_kernel[(B, splits, triton.cdiv(R, BLOCK_M))](
        qt, x, keep_t, m, logl, da, delta, dqt, R, Nk, E, per_split, *common,
        HAS_MASK=keep is not None, **meta,
    )  # fmt: skip
    dx = torch.empty((B, Nk, E), device=x.device, dtype=torch.float32)
    _cross_attn_bwd_dx_kernel[(B, triton.cdiv(Nk, meta["BLOCK_N"]))](
        qt, x, keep_t, m, logl, da, delta, dx, R, Nk, E, *common,
        HAS_MASK=keep is not None, **meta,
    )  # fmt: skip
    return dqt.sum(dim=1), dx
