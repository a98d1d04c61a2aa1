"""Triton kernels of the fused fusion head (MODEL_SPEC §1.4-1.5a, the released "attention" configuration).

From Z_v [B,Tv,dv] and Z_a [B,Ta,da] to the three LLM embeddings out [B,3,D], rows in the order
(0 multi, 1 audio, 2 video):

    H_v = W_v (Σ_t (Z_v,t·w_v + b_v) Z_v,t) + c_v            attention pooling + ``affectgpt_proj``
    H_a = W_a (Σ_t (Z_a,t·w_a + b_a) Z_a,t) + c_a            attention pooling + ``audio_llama_proj``
    u   = [W_mv mean_t Z_v + b_mv ; W_ma mean_t Z_a + b_ma]   [B, 2·dm]
    g   = W_g u + b_g                                          [B, 2]; W_g = W2·W1 folded (no act, no softmax)
    H_m = W_mp (g_0 u_v + g_1 u_a) + b_mp                      ``multi_llama_proj``

Two launches, the fewest the dependencies allow (g needs all of u, H_m needs g):

1. ``_fusion_head_fwd_kernel``: one program per (tile of BLOCK_N output features of one of the four
   GEMVs H_v, H_a, u_v, u_a; block of BLOCK_B batch rows). It pools Z on the fly per K-block (the scores
   first, over the full row; Z is a few KiB per row and stays in L1/L2) and multiplies by its weight tile:
   every weight element is read from memory once per batch block. u goes to a float32 scratch [B, 2·dm].
2. ``_fusion_head_gate_kernel``: one program per (tile of D, batch block): g from u and the 2×2·dm folded
   gate (recomputed per program: 4·dm MACs per row, cheaper than a third launch), then the W_mp tile.
   Program 0 stores g [B, 2] for the backward. With ``gate_fn`` given (training: g computed unfolded as
   W2 (W1 u + b1) + b2 by the caller) it reads g instead.

Outputs go to ``out[b, rows[b, j], :]``: a fresh [B,3,D] tensor, or the placeholder rows of a
preallocated ``inputs_embeds`` [B,L,D]. Accumulation is float32 (float64 for float64 inputs).
``fusion_head_backward`` composes the gradient from torch GEMMs and the attention-pooling Triton kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import DoesNotFit, Launch, launch
from ._weights import FusedWeights
from .attn_pool import attn_pool_backward, attn_pool_forward

MAX_T = 64  # the scores of a batch block live in registers: [BLOCK_B, next_pow2(T)]


class Pooled(NamedTuple):
    """One modality's input Z [B, T, d] (any strides) and its attention-pooling weights w [d], b [1]."""

    z: Tensor
    sb: int
    st: int
    sd: int
    T: int
    d: int
    att_w: Tensor
    att_w_sd: int
    att_b: Tensor


class Linear(NamedTuple):
    """y = W x + c with W [N, K] (any strides) and c [N] contiguous."""

    w: Tensor
    sn: int
    sk: int
    b: Tensor


class RowsOut(NamedTuple):
    """Where results go: out[b, rows[b, j], :] of out [B, L, D] (strides sb, sl, sd), rows [B, 3]."""

    out: Tensor
    sb: int
    sl: int
    sd: int
    rows: Tensor
    r_sb: int
    r_sj: int


def _linear(w: Tensor, b: Tensor) -> Linear:
    return Linear(w, w.stride(0), w.stride(1), b)


def _pooled(z: Tensor, att_w: Tensor, att_b: Tensor) -> Pooled:
    return Pooled(z, *z.stride(), z.shape[1], z.shape[2], att_w, att_w.stride(-1), att_b)


@triton.jit
def _pool_proj_tile(
    src, lin, N, offs_b, mask_b, n0,
    ATTENTION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """acc[b, n] = Σ_k W[n, k] x[b, k] + c[n] with x = Σ_t s[b,t] Z[b,t,:]: [BLOCK_B, BLOCK_N].

    s = Z·w + b (``ATTENTION``) or 1/T (mean pooling). ``src``: :class:`Pooled`, ``lin``: :class:`Linear`.
    """
    offs_t = tl.arange(0, BLOCK_T)
    mask_t = offs_t < src.T
    z_bt = src.z + offs_b[:, None, None] * src.sb + offs_t[None, :, None] * src.st
    mask_bt = mask_b[:, None, None] & mask_t[None, :, None]
    if ATTENTION:  # s = Z·w + b over the full row, before any x block can be formed
        s = tl.zeros([BLOCK_B, BLOCK_T], dtype=ACC)
        for k0 in range(0, src.d, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < src.d
            z = tl.load(
                z_bt + offs_k[None, None, :] * src.sd, mask=mask_bt & mask_k[None, None, :], other=0.0
            )
            w = tl.load(src.att_w + offs_k * src.att_w_sd, mask=mask_k, other=0.0).to(ACC)
            s += tl.sum(z.to(ACC) * w[None, None, :], axis=2)
        s += tl.load(src.att_b).to(ACC)
    else:  # mean over T
        s = tl.full([BLOCK_B, BLOCK_T], 1.0, ACC) / src.T
    s = tl.where(mask_t[None, :], s, 0.0)

    offs_n = n0 + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=ACC)
    for k0 in range(0, src.d, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < src.d
        z = tl.load(z_bt + offs_k[None, None, :] * src.sd, mask=mask_bt & mask_k[None, None, :], other=0.0)
        x = tl.sum(s[:, :, None] * z.to(ACC), axis=1)  # [BLOCK_B, BLOCK_K]
        W = tl.load(
            lin.w + offs_n[:, None] * lin.sn + offs_k[None, :] * lin.sk,
            mask=mask_n[:, None] & mask_k[None, :],
            other=0.0,
        ).to(ACC)
        acc += tl.sum(x[:, None, :] * W[None, :, :], axis=2)
    acc += tl.load(lin.b + offs_n, mask=mask_n, other=0.0).to(ACC)[None, :]
    return acc


@triton.jit
def _store_rows(dst, j, acc, offs_b, mask_b, offs_n, mask_n):
    """out[b, rows[b, j], n] = acc[b, n] (``dst``: :class:`RowsOut`)."""
    r = tl.load(dst.rows + offs_b * dst.r_sb + j * dst.r_sj, mask=mask_b, other=0).to(tl.int64)
    ptrs = dst.out + offs_b[:, None] * dst.sb + r[:, None] * dst.sl + offs_n[None, :] * dst.sd
    tl.store(ptrs, acc.to(dst.out.dtype.element_ty), mask=mask_b[:, None] & mask_n[None, :])


@triton.jit
def _fusion_head_fwd_kernel(
    video, audio, proj_v, proj_a, multi_v, multi_a, dst, u_ptr,
    B, D, dm, tiles_d, tiles_m,
    ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Launch 1 (module docstring): ``video``/``audio`` :class:`Pooled`, the four :class:`Linear` maps
    (H_v, H_a, u_v, u_a), ``dst`` :class:`RowsOut`, ``u_ptr`` the float scratch [B, 2·dm]."""
    pid = tl.program_id(0)
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    mask_b = offs_b < B
    if pid < 2 * tiles_d:  # H_v (pid < tiles_d) or H_a: attention pooling + projection to D
        n0 = (pid % tiles_d) * BLOCK_N
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < D
        if pid < tiles_d:
            acc = _pool_proj_tile(
                video, proj_v, D, offs_b, mask_b, n0, True, ACC, BLOCK_B, BLOCK_T, BLOCK_N, BLOCK_K
            )
            _store_rows(dst, 2, acc, offs_b, mask_b, offs_n, mask_n)
        else:
            acc = _pool_proj_tile(
                audio, proj_a, D, offs_b, mask_b, n0, True, ACC, BLOCK_B, BLOCK_T, BLOCK_N, BLOCK_K
            )
            _store_rows(dst, 1, acc, offs_b, mask_b, offs_n, mask_n)
    else:  # u_v or u_a: mean pooling + the pre-fusion input projections, into the float scratch
        q = pid - 2 * tiles_d
        n0 = (q % tiles_m) * BLOCK_N
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < dm
        if q < tiles_m:
            acc = _pool_proj_tile(
                video, multi_v, dm, offs_b, mask_b, n0, False, ACC, BLOCK_B, BLOCK_T, BLOCK_N, BLOCK_K
            )
            col = offs_n
        else:
            acc = _pool_proj_tile(
                audio, multi_a, dm, offs_b, mask_b, n0, False, ACC, BLOCK_B, BLOCK_T, BLOCK_N, BLOCK_K
            )
            col = dm + offs_n
        ptrs = u_ptr + offs_b[:, None] * (2 * dm) + col[None, :]
        tl.store(ptrs, acc.to(u_ptr.dtype.element_ty), mask=mask_b[:, None] & mask_n[None, :])


@triton.jit
def _fusion_head_gate_kernel(
    u_ptr, gate, g_ptr, proj_m, dst,
    B, D, dm,
    G_GIVEN: tl.constexpr, ACC: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Launch 2: g = W_g u + b_g (``gate`` :class:`Linear` [2, 2dm]; read from g_ptr when ``G_GIVEN``),
    then H_m = W_mp (g_0 u_v + g_1 u_a) + b_mp (``proj_m``) into row 0 of ``dst``."""
    pid_n = tl.program_id(0)
    offs_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    mask_b = offs_b < B
    u_row = u_ptr + offs_b[:, None] * (2 * dm)
    if G_GIVEN:
        g0 = tl.load(g_ptr + offs_b * 2, mask=mask_b, other=0.0).to(ACC)
        g1 = tl.load(g_ptr + offs_b * 2 + 1, mask=mask_b, other=0.0).to(ACC)
    else:
        g0 = tl.zeros([BLOCK_B], dtype=ACC)
        g1 = tl.zeros([BLOCK_B], dtype=ACC)
        for k0 in range(0, 2 * dm, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < 2 * dm
            u = tl.load(u_row + offs_k[None, :], mask=mask_b[:, None] & mask_k[None, :], other=0.0).to(ACC)
            w0 = tl.load(gate.w + offs_k * gate.sk, mask=mask_k, other=0.0).to(ACC)
            w1 = tl.load(gate.w + gate.sn + offs_k * gate.sk, mask=mask_k, other=0.0).to(ACC)
            g0 += tl.sum(u * w0[None, :], axis=1)
            g1 += tl.sum(u * w1[None, :], axis=1)
        g0 += tl.load(gate.b).to(ACC)
        g1 += tl.load(gate.b + 1).to(ACC)
        if pid_n == 0:
            tl.store(g_ptr + offs_b * 2, g0.to(g_ptr.dtype.element_ty), mask=mask_b)
            tl.store(g_ptr + offs_b * 2 + 1, g1.to(g_ptr.dtype.element_ty), mask=mask_b)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < D
    acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=ACC)
    for k0 in range(0, dm, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < dm
        m = mask_b[:, None] & mask_k[None, :]
        uv = tl.load(u_row + offs_k[None, :], mask=m, other=0.0).to(ACC)
        ua = tl.load(u_row + dm + offs_k[None, :], mask=m, other=0.0).to(ACC)
        x = g0[:, None] * uv + g1[:, None] * ua  # the gated sum z_f, formed per K-block
        W = tl.load(
            proj_m.w + offs_n[:, None] * proj_m.sn + offs_k[None, :] * proj_m.sk,
            mask=mask_n[:, None] & mask_k[None, :],
            other=0.0,
        ).to(ACC)
        acc += tl.sum(x[:, None, :] * W[None, :, :], axis=2)
    acc += tl.load(proj_m.b + offs_n, mask=mask_n, other=0.0).to(ACC)[None, :]
    _store_rows(dst, 0, acc, offs_b, mask_b, offs_n, mask_n)


def _acc(dtype: torch.dtype) -> tuple[torch.dtype, object]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


# Register budget of one program: the Z tile [BLOCK_B, BLOCK_T, BLOCK_K] and the W product
# [BLOCK_B, BLOCK_N, BLOCK_K] are float32 (float64) register tensors; at most TILE_ELEMS elements each keeps
# them at <= 32 (64) registers per thread with NUM_WARPS warps, so T = 64, B >= 4 compiles without spills.
NUM_WARPS = 4
TILE_ELEMS = 4096


@dataclass(frozen=True)
class Config:
    """Block sizes of the two launches."""

    BLOCK_B: int
    BLOCK_T: int
    BLOCK_N: int
    BLOCK_K: int
    num_warps: int = NUM_WARPS


def choose_config(B: int, T: int) -> Config:
    """Batch block ≤ 4, T padded to a power of two (≤ MAX_T), K block shrunk to keep the tiles in budget."""
    if T > MAX_T:
        raise DoesNotFit(f"T={T} time steps; the Triton fusion head keeps at most {MAX_T} scores per row")
    block_b = min(triton.next_power_of_2(max(B, 1)), 4)
    block_t = triton.next_power_of_2(max(T, 1))
    block_n = 32
    block_k = max(16, min(64, TILE_ELEMS // (block_b * block_t), TILE_ELEMS // (block_b * block_n)))
    return Config(block_b, block_t, block_n, block_k)


def fusion_head_forward(
    z_video: Tensor,
    z_audio: Tensor,
    weights: FusedWeights,
    out: Tensor,
    rows: Tensor,
    gate_fn: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the two kernels; write out[b, rows[b, j], :] for j = 0 multi, 1 audio, 2 video.

    ``weights``: :class:`FusedWeights` (biases contiguous, attention weights [d]). ``gate_fn``: u -> g [B,2]
    (float32/64), run between the two launches (training: the unfolded gate); then the folded gate is not
    read. Returns (u [B, 2·dm], g [B, 2]) in the accumulation dtype, for the backward.
    """
    w = FusedWeights(*weights)
    B, Tv, _ = z_video.shape
    Ta = z_audio.shape[1]
    D, dm = w.multi_proj_w.shape
    acc_t, acc_tl = _acc(z_video.dtype)
    u = torch.empty((B, 2 * dm), dtype=acc_t, device=z_video.device)
    g = torch.empty((B, 2), dtype=acc_t, device=z_video.device)
    if B == 0:
        return u, g
    cfg = choose_config(B, max(Tv, Ta))
    tiles_d, tiles_m = triton.cdiv(D, cfg.BLOCK_N), triton.cdiv(dm, cfg.BLOCK_N)
    grid_b = triton.cdiv(B, cfg.BLOCK_B)
    dst = RowsOut(out, *out.stride(), rows, *rows.stride())
    meta = {"ACC": acc_tl, **asdict(cfg)}
    launch(
        Launch(
            _fusion_head_fwd_kernel,
            (2 * tiles_d + 2 * tiles_m, grid_b),
            (
                _pooled(z_video, w.video_att_w, w.video_att_b),
                _pooled(z_audio, w.audio_att_w, w.audio_att_b),
                _linear(w.video_proj_w, w.video_proj_b),
                _linear(w.audio_proj_w, w.audio_proj_b),
                _linear(w.multi_video_w, w.multi_video_b),
                _linear(w.multi_audio_w, w.multi_audio_b),
                dst,
                u,
                B,
                D,
                dm,
                tiles_d,
                tiles_m,
            ),  # fmt: skip
            meta,
            "fusion_head.pool_proj",
        )
    )
    if gate_fn is not None:
        g = gate_fn(u).to(acc_t).contiguous()
    meta = {k: v for k, v in meta.items() if k != "BLOCK_T"}  # a new dict: the first Launch keeps its own
    launch(
        Launch(
            _fusion_head_gate_kernel,
            (tiles_d, grid_b),
            (u, _linear(w.gate_w, w.gate_b), g, _linear(w.multi_proj_w, w.multi_proj_b), dst, B, D, dm),
            {"G_GIVEN": gate_fn is not None, **meta},
            "fusion_head.gate_proj",
        )
    )
    return u, g


def fusion_head_backward(
    grad: Tensor,
    z_video: Tensor,
    z_audio: Tensor,
    weights: Sequence[Tensor],
    u: Tensor,
    g: Tensor,
) -> tuple[Tensor, ...]:
    """Gradients of out [B,3,D] w.r.t. (z_video, z_audio, *weights) with the UNFOLDED gate.

    ``weights``: the 18 tensors of the training form (as :func:`fusion_head_forward` but W1 [dm,2dm], b1 [dm],
    W2 [2,dm], b2 [2] instead of W_g, b_g). ``u``, ``g``: what the forward returned. The GEMMs run in the
    accumulation dtype through torch; the pooling backward is the Triton attention-pooling kernel.
    With h = W1 u + b1:  dW2 = dgᵀh, db2 = Σ dg, dh = dg W2, dW1 = dhᵀu, db1 = Σ dh, du += dh W1.
    """
    wva, bva, Wv, cv, waa, baa, Wa, ca, Wmv, bmv, Wma, bma, W1, b1, W2, b2, Wmp, bmp = weights
    acc_t, _ = _acc(z_video.dtype)
    f = [t.to(acc_t) for t in weights]
    _, _, Wv_, _, _, _, Wa_, _, Wmv_, _, Wma_, _, W1_, b1_, W2_, _, Wmp_, _ = f
    dm = Wmp.shape[1]
    gm, ga, gv = (grad[:, j].to(acc_t) for j in range(3))
    u_v, u_a = u[:, :dm], u[:, dm:]
    z_f = g[:, :1] * u_v + g[:, 1:] * u_a

    pooled_v = attn_pool_forward(z_video, wva, bva).to(acc_t)
    pooled_a = attn_pool_forward(z_audio, waa, baa).to(acc_t)
    dpool_v, dpool_a = gv @ Wv_, ga @ Wa_
    dz_f = gm @ Wmp_
    dg = torch.stack([(dz_f * u_v).sum(1), (dz_f * u_a).sum(1)], dim=1)
    h = u @ W1_.T + b1_
    dh = dg @ W2_
    du = dh @ W1_
    du_v = g[:, :1] * dz_f + du[:, :dm]
    du_a = g[:, 1:] * dz_f + du[:, dm:]

    dz_v, dwva, dbva = attn_pool_backward(dpool_v, z_video, wva, bva)
    dz_a, dwaa, dbaa = attn_pool_backward(dpool_a, z_audio, waa, baa)
    dz_v = (dz_v.to(acc_t) + (du_v @ Wmv_).unsqueeze(1) / z_video.shape[1]).to(z_video.dtype)
    dz_a = (dz_a.to(acc_t) + (du_a @ Wma_).unsqueeze(1) / z_audio.shape[1]).to(z_audio.dtype)
    mean_v, mean_a = z_video.to(acc_t).mean(1), z_audio.to(acc_t).mean(1)
    grads = (
        dwva, dbva, gv.T @ pooled_v, gv.sum(0),
        dwaa, dbaa, ga.T @ pooled_a, ga.sum(0),
        du_v.T @ mean_v, du_v.sum(0), du_a.T @ mean_a, du_a.sum(0),
        dh.T @ u, dh.sum(0), dg.T @ h, dg.sum(0),
        gm.T @ z_f, gm.sum(0),
    )  # fmt: skip
    return (dz_v, dz_a, *(d.to(w.dtype).reshape(w.shape) for d, w in zip(grads, weights)))
