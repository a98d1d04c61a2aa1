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

**Tiling E.** E is 768-1024 at the released shapes: a [rows, E] accumulator plus [keys, E] operand tiles
do not fit one program (the first version held whole rows, BLOCK_E = next_pow2(E): 200-400 KB of shared
memory and spills). Every kernel therefore works on one output tile of BLOCK_EO columns (a grid axis) and
forms each [BLOCK_M, BLOCK_N] score tile by a loop over E in BLOCK_K chunks:

    s_tile = Σ_k q̃[rows, k-chunk] · x[keys, k-chunk]ᵀ        (and dP the same way from dA)
    acc[rows, e-tile] += P_tile · x[keys, e-tile]

Scores are recomputed once per output tile (E / BLOCK_EO times); the resource model below makes BLOCK_EO
as wide as the target allows, so at fp16 E = 1024 that is 2 tiles.

Forward: grid (B, splits, row blocks × E tiles); each program runs an online softmax over its split of the
keys and writes (acc, m, l); the launcher combines the splits with a log-sum-exp reduction (flash-decoding),
so a small grid still fills the GPU. It returns A (float32) and the row statistics m and log l.

Backward, with dA_r given and δ_r = dA_r · A_r, P the probabilities, dP_rj = dA_r · x_j:

    dS_rj = P_rj (dP_rj − δ_r)        (0 at padded keys)
    dq̃_r  = Σ_j dS_rj x_j             _cross_attn_bwd_dq_kernel, split over keys like the forward
    dx_j  = Σ_r dS_rj q̃_r + P_rj dA_r  _cross_attn_bwd_dx_kernel, one program per (key block, E tile)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import DoesNotFit, Estimate, Launch, Limits, launch, sm_count, target_limits

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
def _score_tile(
    q_rows, mask_m, x_keys, x_se, in_range, E,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Σ_k q[rows, k] x[keys, k] over all of E in BLOCK_K chunks: [BLOCK_M, BLOCK_N] float32.

    ``q_rows`` [BLOCK_M] row pointers (E contiguous), ``x_keys`` [BLOCK_N] key pointers (E stride x_se).
    """
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, E, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < E
        q = tl.load(q_rows[:, None] + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        xk = tl.load(
            x_keys[:, None] + offs_k[None, :] * x_se, mask=in_range[:, None] & mask_k[None, :], other=0.0
        )
        s += tl.dot(q.to(xk.dtype), tl.trans(xk), input_precision=PRECISION)
    return s


@triton.jit
def _cross_attn_fwd_kernel(
    qt_ptr, x_ptr, keep_ptr, acc_ptr, m_ptr, l_ptr,
    R, Nk, E, keys_per_split, e_tiles,
    qt_sb, qt_sr, x_sb, x_sn, x_se, keep_sb, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_EO: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    row_block = tl.program_id(2) // e_tiles
    e_tile = tl.program_id(2) % e_tiles
    offs_m = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = e_tile * BLOCK_EO + tl.arange(0, BLOCK_EO)
    mask_m, mask_e = offs_m < R, offs_e < E
    q_rows = qt_ptr + b * qt_sb + offs_m * qt_sr
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_EO], dtype=tl.float32)
    lo = split * keys_per_split
    hi = tl.minimum(lo + keys_per_split, Nk)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        in_range = offs_n < hi
        x_keys = x_ptr + b * x_sb + offs_n.to(tl.int64) * x_sn
        s = _score_tile(q_rows, mask_m, x_keys, x_se, in_range, E, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        s = _masked_scores(s, offs_n, in_range, keep_ptr + b * keep_sb, keep_sn, HAS_MASK)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every block has a key in range
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        xo = tl.load(
            x_keys[:, None] + offs_e[None, :] * x_se, mask=in_range[:, None] & mask_e[None, :], other=0.0
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(xo.dtype), xo, input_precision=PRECISION)
        m_i = m_new
    row = (b * n_splits + split) * R + offs_m
    tl.store(acc_ptr + row[:, None] * E + offs_e[None, :], acc, mask=mask_m[:, None] & mask_e[None, :])
    if e_tile == 0:  # every E tile computed the same statistics
        tl.store(m_ptr + row, m_i, mask=mask_m)
        tl.store(l_ptr + row, l_i, mask=mask_m)


@triton.jit
def _probs_and_ds(
    qt_ptr, da_ptr, m_ptr, logl_ptr, delta_ptr, b, offs_m, mask_m, R, E, qt_sb, qt_sr,
    x_keys, x_se, offs_n, in_range, keep_row, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """(P, dS) of one [BLOCK_M, BLOCK_N] tile, both float32; P is 0 on rows past R, dS 0 at padded keys."""
    q_rows = qt_ptr + b * qt_sb + offs_m * qt_sr
    da_rows = da_ptr + (b * R + offs_m) * E
    s = _score_tile(q_rows, mask_m, x_keys, x_se, in_range, E, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    dp = _score_tile(da_rows, mask_m, x_keys, x_se, in_range, E, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    s = _masked_scores(s, offs_n, in_range, keep_row, keep_sn, HAS_MASK)
    m = tl.load(m_ptr + b * R + offs_m, mask=mask_m, other=0.0)
    logl = tl.load(logl_ptr + b * R + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(delta_ptr + b * R + offs_m, mask=mask_m, other=0.0)
    p = tl.where(mask_m[:, None], tl.exp(s - m[:, None] - logl[:, None]), 0.0)
    ds = tl.where(s > -1.0e30, p * (dp - delta[:, None]), 0.0)  # no gradient at padded keys
    return p, ds


@triton.jit
def _cross_attn_bwd_dq_kernel(
    qt_ptr, x_ptr, keep_ptr, m_ptr, logl_ptr, da_ptr, delta_ptr, dqt_ptr,
    R, Nk, E, keys_per_split, e_tiles,
    qt_sb, qt_sr, x_sb, x_sn, x_se, keep_sb, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_EO: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    row_block = tl.program_id(2) // e_tiles
    e_tile = tl.program_id(2) % e_tiles
    offs_m = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = e_tile * BLOCK_EO + tl.arange(0, BLOCK_EO)
    mask_m, mask_e = offs_m < R, offs_e < E
    dq = tl.zeros([BLOCK_M, BLOCK_EO], dtype=tl.float32)
    lo = split * keys_per_split
    hi = tl.minimum(lo + keys_per_split, Nk)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        in_range = offs_n < hi
        x_keys = x_ptr + b * x_sb + offs_n.to(tl.int64) * x_sn
        _, ds = _probs_and_ds(
            qt_ptr, da_ptr, m_ptr, logl_ptr, delta_ptr, b, offs_m, mask_m, R, E, qt_sb, qt_sr,
            x_keys, x_se, offs_n, in_range, keep_ptr + b * keep_sb, keep_sn,
            HAS_MASK, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION,
        )  # fmt: skip
        xo = tl.load(
            x_keys[:, None] + offs_e[None, :] * x_se, mask=in_range[:, None] & mask_e[None, :], other=0.0
        )
        dq += tl.dot(ds.to(xo.dtype), xo, input_precision=PRECISION)
    row = (b * n_splits + split) * R + offs_m
    tl.store(dqt_ptr + row[:, None] * E + offs_e[None, :], dq, mask=mask_m[:, None] & mask_e[None, :])


@triton.jit
def _cross_attn_bwd_dx_kernel(
    qt_ptr, x_ptr, keep_ptr, m_ptr, logl_ptr, da_ptr, delta_ptr, dx_ptr,
    R, Nk, E,
    qt_sb, qt_sr, x_sb, x_sn, x_se, keep_sb, keep_sn,
    HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_EO: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_e = tl.program_id(2) * BLOCK_EO + tl.arange(0, BLOCK_EO)
    in_range, mask_e = offs_n < Nk, offs_e < E
    x_keys = x_ptr + b * x_sb + offs_n.to(tl.int64) * x_sn
    dx = tl.zeros([BLOCK_N, BLOCK_EO], dtype=tl.float32)
    for m0 in range(0, R, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < R
        p, ds = _probs_and_ds(
            qt_ptr, da_ptr, m_ptr, logl_ptr, delta_ptr, b, offs_m, mask_m, R, E, qt_sb, qt_sr,
            x_keys, x_se, offs_n, in_range, keep_ptr + b * keep_sb, keep_sn,
            HAS_MASK, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION,
        )  # fmt: skip
        mask = mask_m[:, None] & mask_e[None, :]
        qt = tl.load(qt_ptr + b * qt_sb + offs_m[:, None] * qt_sr + offs_e[None, :], mask=mask, other=0.0)
        da = tl.load(da_ptr + (b * R + offs_m)[:, None] * E + offs_e[None, :], mask=mask, other=0.0)
        dx += tl.dot(tl.trans(ds).to(qt.dtype), qt, input_precision=PRECISION)
        dx += tl.dot(tl.trans(p).to(qt.dtype), da.to(qt.dtype), input_precision=PRECISION)
    tl.store(
        dx_ptr + (b * Nk + offs_n)[:, None] * E + offs_e[None, :],
        dx,
        mask=in_range[:, None] & mask_e[None, :],
    )


# ------------------------------------------------------------------------------------ configuration model


@dataclass(frozen=True)
class Config:
    """Block sizes and launch shape shared by the three kernels of one call."""

    BLOCK_N: int  # keys per tile
    BLOCK_K: int  # E chunk of the score loop
    BLOCK_EO: int  # output columns per program
    num_warps: int
    num_stages: int

    def meta(self) -> dict:
        return {
            "BLOCK_M": BLOCK_M,
            "BLOCK_N": self.BLOCK_N,
            "BLOCK_K": self.BLOCK_K,
            "BLOCK_EO": self.BLOCK_EO,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
        }


def estimate(cfg: Config, el: int, kind: str) -> Estimate:
    """Shared memory and registers of one program, ``kind`` in fwd / dq / dx, elements of ``el`` bytes.

    Calibrated on ptxas' reports (sm_80/sm_90, Triton 3.9): the loops here are not software-pipelined,
    so shared memory is the output tile's dot operand (x [BLOCK_N, BLOCK_EO] for fwd/dq; q̃ and dA
    [BLOCK_M, BLOCK_EO] for dx) plus a few KiB of layout conversions, and registers grow with the float32
    accumulator elements per thread (a) as ≈ 80 + 2a (half precision; 2.5a for fp32's FMA dots).
    """
    threads = 32 * cfg.num_warps
    eo = cfg.BLOCK_EO
    if kind == "dx":
        shared = 3 * BLOCK_M * eo * el + 4096
        acc = cfg.BLOCK_N * eo // threads
    else:
        shared = cfg.BLOCK_N * eo * el + (BLOCK_M + cfg.BLOCK_N) * cfg.BLOCK_K * el + 4096
        acc = BLOCK_M * eo // threads
    regs = 80 + (5 * acc) // 2 if el == 4 else 80 + 2 * acc
    return Estimate(shared, regs)


def _candidates(E: int, dtype: torch.dtype, device: torch.device):
    e2 = max(16, triton.next_power_of_2(E))
    half = dtype in (torch.float16, torch.bfloat16)
    block_n = 16 if device.type == "cpu" else 32  # the interpreter runs every element: small tiles there
    block_k = min(e2, 64 if half else 32)
    # fp32 at 512 columns: ptxas caps sm_80 at 128 registers and spills; 256 is the widest that is clean
    widest = 1024 if half else 256
    for eo in (w for w in (1024, 512, 256, 128, 64, 32, 16) if w <= min(e2, widest)):
        for warps in (8, 4):
            # fp32 dots run on FMA units from registers: a second stage buys nothing and costs registers
            yield Config(block_n, block_k, eo, warps, 2 if half else 1)


def choose_config(E: int, dtype: torch.dtype, device: torch.device, kinds=("fwd",)) -> Config:
    """The widest output tile (fewest score recomputations) whose every kernel in ``kinds`` fits.

    Raises :class:`DoesNotFit` when nothing does (then the op declares the shape unsupported).
    """
    limits: Limits = target_limits(device)
    el = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    for cfg in _candidates(E, dtype, device):
        if all(estimate(cfg, el, k).fits(limits, margin=0.8) for k in kinds):
            return cfg
    raise DoesNotFit(f"no cross_attn Triton configuration fits {limits.name} for E={E} {dtype}")


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 dots (tf32 would lose ~3 digits); halves use the tensor cores as they are.
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def _n_splits(
    B: int, R: int, Nk: int, tiles: int, block_n: int, device: torch.device, split_k: int | None
) -> int:
    n_blocks = triton.cdiv(Nk, block_n)
    if split_k is None:  # enough programs for ~2 waves of SMs, each with a few key blocks
        split_k = max(1, 2 * sm_count(device) // max(1, B * triton.cdiv(R, BLOCK_M) * tiles))
    return max(1, min(split_k, n_blocks, 65535))


def _keep_args(keep: Tensor | None, x: Tensor) -> tuple[Tensor, int, int]:
    if keep is None:
        return x, 0, 0  # a dummy pointer, never read (HAS_MASK=False)
    return keep, keep.stride(0), keep.stride(1)


# ------------------------------------------------------------------------------------------------ launchers


def cross_attn_forward(
    qt: Tensor, x: Tensor, keep: Tensor | None, split_k: int | None = None, config: Config | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """A = softmax(q̃ xᵀ, padded keys masked) x per batch row; see the module docstring.

    qt [B, R, E] (contiguous along E), x [B, Nk, E] (any strides, Nk >= 1), keep [B, Nk] uint8 or None.
    Returns A [B, R, E] float32 and the row statistics m, log l [B, R] float32 (for the backward).
    ``config``: block sizes (default :func:`choose_config` for x's device).
    """
    B, R, E = qt.shape
    Nk = x.shape[1]
    cfg = config or choose_config(E, x.dtype, x.device)
    e_tiles = triton.cdiv(E, cfg.BLOCK_EO)
    splits = _n_splits(B, R, Nk, e_tiles, cfg.BLOCK_N, x.device, split_k)
    per_split = triton.cdiv(triton.cdiv(Nk, cfg.BLOCK_N), splits) * cfg.BLOCK_N
    splits = triton.cdiv(Nk, per_split)  # no empty split
    acc = torch.empty((B, splits, R, E), device=x.device, dtype=torch.float32)
    m = torch.empty((B, splits, R), device=x.device, dtype=torch.float32)
    l = torch.empty_like(m)  # noqa: E741
    keep_t, keep_sb, keep_sn = _keep_args(keep, x)
    launch(
        Launch(
            _cross_attn_fwd_kernel,
            (B, splits, triton.cdiv(R, BLOCK_M) * e_tiles),
            (
                qt,
                x,
                keep_t,
                acc,
                m,
                l,
                R,
                Nk,
                E,
                per_split,
                e_tiles,
                qt.stride(0),
                qt.stride(1),
                *x.stride(),
                keep_sb,
                keep_sn,
            ),  # fmt: skip
            {"HAS_MASK": keep is not None, "PRECISION": _precision(x.dtype), **cfg.meta()},
            "cross_attn.fwd",
        )
    )
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
    config: Config | None = None,
) -> tuple[Tensor, Tensor]:
    """(dq̃ [B, R, E], dx [B, Nk, E]) in float32, from dA [B, R, E] and δ = Σ_e dA·A [B, R] (float32)."""
    B, R, E = qt.shape
    Nk = x.shape[1]
    cfg = config or choose_config(E, x.dtype, x.device, kinds=("dq", "dx"))
    meta = {"HAS_MASK": keep is not None, "PRECISION": _precision(x.dtype), **cfg.meta()}
    da, delta, m, logl = da.contiguous(), delta.contiguous(), m.contiguous(), logl.contiguous()
    keep_t, keep_sb, keep_sn = _keep_args(keep, x)
    e_tiles = triton.cdiv(E, cfg.BLOCK_EO)
    splits = _n_splits(B, R, Nk, e_tiles, cfg.BLOCK_N, x.device, split_k)
    per_split = triton.cdiv(triton.cdiv(Nk, cfg.BLOCK_N), splits) * cfg.BLOCK_N
    splits = triton.cdiv(Nk, per_split)
    dqt = torch.empty((B, splits, R, E), device=x.device, dtype=torch.float32)
    common = (qt.stride(0), qt.stride(1), *x.stride(), keep_sb, keep_sn)
    launch(
        Launch(
            _cross_attn_bwd_dq_kernel,
            (B, splits, triton.cdiv(R, BLOCK_M) * e_tiles),
            (qt, x, keep_t, m, logl, da, delta, dqt, R, Nk, E, per_split, e_tiles, *common),
            meta,
            "cross_attn.bwd_dq",
        )
    )
    dx = torch.empty((B, Nk, E), device=x.device, dtype=torch.float32)
    launch(
        Launch(
            _cross_attn_bwd_dx_kernel,
            (B, triton.cdiv(Nk, cfg.BLOCK_N), e_tiles),
            (qt, x, keep_t, m, logl, da, delta, dx, R, Nk, E, *common),
            meta,
            "cross_attn.bwd_dx",
        )
    )
    return dqt.sum(dim=1), dx
