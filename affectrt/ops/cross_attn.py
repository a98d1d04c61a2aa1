"""Few-query multi-head cross-attention (Q-Former pre-fusion §1.5b, Q-Former token compression §1.4).

For projected queries q [B, Nq, H], encoder tokens x [B, Nk, E], heads of width d = H / num_heads:

    K = x W_kᵀ + b_k,  V = x W_vᵀ + b_v                                   (W_k, W_v [H, E])
    out[:, :, h] = softmax(q_h K_hᵀ / √d + mask) V_h     per head h        -> [B, Nq, H]

The query and output projections stay outside (plain matmuls in the caller). Padded keys (key_mask 0/False)
are left out; a row whose keys are ALL padded attends uniformly to all Nk keys (out = mean of V), which is
what the release's BERT gives by adding the dtype minimum to every padded score, and has no gradient through
its scores. Nk must be >= 1.

The fused backends never form K or V. They absorb the projections (as DeepSeek's MLA does):
q̃_{h,i} = q_{h,i} W_k,h / √d [E] per (head, query) row, so that s = q̃ · x_j (b_k shifts a whole row of
scores, which softmax ignores: the output does not depend on b_k and its gradient is 0), the kernel computes
A_{h,i} = Σ_j softmax_j(s) x_j [E] with x as both keys and values, and out_{h,i} = A_{h,i} W_v,hᵀ + b_v,h.
That reads x once for all heads and costs 4·heads·Nq·E FLOPs per key instead of the 4·H·E of projecting
K and V (a factor Nq / d: 8× less at Nq = 8, d = 64). The two tiny matmuls around the kernel run in float32.

Backends (DESIGN §3), in "auto" order:

- ``cuda``: ``affectrt._C_cuda`` (csrc/cross_attn_cuda.cu), split-K + combine kernels; forward only.
- ``triton``: ``affectrt.kernels.cross_attn`` forward and backward through an ``autograd.Function``.
- ``cpu``: ``affectrt._C`` (csrc/cross_attn_cpu.cpp), OpenMP over (batch, key split); forward only.
  From R = heads·Nq >= ``_BLAS_MIN_ROWS`` (48) the same absorbed form runs as two BLAS GEMMs per
  key chunk with an online-softmax combine (:func:`_core_blas`): MKL's sgemm outruns the kernel there.
- ``eager``: :func:`cross_attn_ref` (K, V and the scores materialised), differentiable.

Triton on CPU follows the one rule of :mod:`affectrt.ops._backends`: under ``TRITON_INTERPRET=1`` the
``triton`` backend takes CPU tensors when asked for by name; "auto" never picks it there.

The kernel core runs through the torch.library ops ``affectrt::cross_attn_native``,
``affectrt::cross_attn_triton`` and ``affectrt::cross_attn_triton_bwd`` (fake impls registered) so
``torch.compile`` / ``torch.export`` see single ops.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectrt.ops import _backends
from affectrt.ops._ext import DTYPE_CODES, cpu_ext, cuda_ext

OP = "cross_attn"
_NATIVE_DTYPES = tuple(DTYPE_CODES)
_CUDA_MAX_E = 3040  # four float accumulators of width E in 48 KiB of shared memory
_NATIVE_BLOCK_N = 32  # keys per block of the C++ kernels (splits are whole blocks)
_MASKED_SCORE = -1.0e30  # a padded key's score, replaced not added (csrc/cross_attn.h kCrossAttnMaskedScore)


def cross_attn_ref(
    q: Tensor,
    x: Tensor,
    w_k: Tensor,
    b_k: Tensor,
    w_v: Tensor,
    b_v: Tensor,
    key_mask: Tensor | None = None,
    num_heads: int = 1,
    upcast: bool = False,
) -> Tensor:
    """The definition in plain PyTorch (K, V and the [B, heads, Nq, Nk] scores materialised).

    ``upcast=True`` computes in float64 and returns q's dtype. Padded scores are replaced by the dtype
    minimum (masked_fill), so a fully padded row is uniform and carries no score gradient.
    """
    out_dtype = q.dtype
    if upcast:
        q, x, w_k, b_k, w_v, b_v = (t.double() for t in (q, x, w_k, b_k, w_v, b_v))
    B, Nq, H = q.shape
    Nk = x.shape[1]
    d = H // num_heads
    k = F.linear(x, w_k, b_k).view(B, Nk, num_heads, d).transpose(1, 2)
    v = F.linear(x, w_v, b_v).view(B, Nk, num_heads, d).transpose(1, 2)
    qh = q.view(B, Nq, num_heads, d).transpose(1, 2)
    s = (qh @ k.transpose(-1, -2)) / math.sqrt(d)  # [B, heads, Nq, Nk]
    if key_mask is not None:
        s = s.masked_fill(~key_mask.to(torch.bool)[:, None, None, :], torch.finfo(s.dtype).min)
    out = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, Nq, H)
    return out.to(out_dtype) if upcast else out


def _check_inputs(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads) -> None:
    named = (("q", q), ("x", x), ("w_k", w_k), ("b_k", b_k), ("w_v", w_v), ("b_v", b_v))
    for name, t in named + (("key_mask", key_mask),):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"cross_attn: {name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 3 or x.dim() != 3:
        bad, t = ("q", q) if q.dim() != 3 else ("x", x)
        want = "[B, Nq, H]" if bad == "q" else "[B, Nk, E]"
        raise ValueError(f"cross_attn: {bad} must be 3-D {want}, got shape {tuple(t.shape)}")
    B, Nq, H = q.shape
    _, Nk, E = x.shape
    if x.shape[0] != B:
        raise ValueError(f"cross_attn: x has batch {x.shape[0]} but q has {B}; they must match")
    if Nk < 1:
        raise ValueError("cross_attn: x has no keys (Nk = 0); attention needs at least one key")
    if not isinstance(num_heads, int) or num_heads < 1 or H % num_heads != 0:
        raise ValueError(f"cross_attn: num_heads={num_heads!r} must be a positive int dividing H = {H}")
    for name, t, shape in (
        ("w_k", w_k, (H, E)),
        ("b_k", b_k, (H,)),
        ("w_v", w_v, (H, E)),
        ("b_v", b_v, (H,)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(
                f"cross_attn: {name} must have shape {shape} (H = q.shape[2], E = x.shape[2]), "
                f"got {tuple(t.shape)}"
            )
    if not q.is_floating_point():
        raise TypeError(f"cross_attn: q must be a floating-point tensor, got {q.dtype}")
    for name, t in named[1:]:
        if t.device != q.device:
            raise ValueError(
                f"cross_attn: {name} is on {t.device} but q is on {q.device}; move them to one device"
            )
        if t.dtype != q.dtype:
            raise TypeError(
                f"cross_attn: {name} has dtype {t.dtype} but q has {q.dtype}; cast it with .to({q.dtype})"
            )
    if key_mask is not None:
        if tuple(key_mask.shape) != (B, Nk):
            raise ValueError(
                f"cross_attn: key_mask must be [B, Nk] = {(B, Nk)} (nonzero = attend), got {tuple(key_mask.shape)}"
            )
        if key_mask.device != q.device:
            raise ValueError(f"cross_attn: key_mask is on {key_mask.device} but q is on {q.device}")


# ------------------------------------------------------------------------------ absorbed-projection helpers


def _float32_math(device: torch.device):
    """The helpers' matmuls are float32 by design: an enclosing autocast must not lower them."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext()


def _absorb_queries(q: Tensor, w_k: Tensor, num_heads: int) -> Tensor:
    """q̃ [B, heads·Nq, E] float32: row h·Nq + i is q[:, i, h·d:(h+1)·d] W_k[h·d:(h+1)·d] / √d."""
    B, Nq, H = q.shape
    d = H // num_heads
    with _float32_math(q.device):
        qh = q.float().view(B, Nq, num_heads, d).transpose(1, 2)  # [B, h, Nq, d]
        qt = torch.matmul(qh, w_k.float().view(num_heads, d, -1)) * (1.0 / math.sqrt(d))
    return qt.reshape(B, num_heads * Nq, -1)


def _project_out(a: Tensor, w_v: Tensor, b_v: Tensor, num_heads: int, Nq: int) -> Tensor:
    """out [B, Nq, H] float32 from A [B, heads·Nq, E]: A_{h,i} W_v,hᵀ + b_v,h."""
    B, _, E = a.shape
    H = w_v.shape[0]
    d = H // num_heads
    with _float32_math(a.device):
        wv = w_v.float().view(num_heads, d, E)
        out = torch.matmul(a.view(B, num_heads, Nq, E), wv.transpose(1, 2))  # [B, h, Nq, d]
        return out.transpose(1, 2).reshape(B, Nq, H) + b_v.float()


def _keep_u8(key_mask: Tensor | None) -> Tensor | None:
    return None if key_mask is None else (key_mask != 0).to(torch.uint8)


# --------------------------------------------------------------------------------------- native kernels


def _native_splits(B: int, R: int, Nk: int, device: torch.device) -> int:
    blocks = -(-Nk // _NATIVE_BLOCK_N)
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = -(-2 * sms // max(1, B * -(-R // 4)))
    else:
        ext = cpu_ext()
        want = -(-(ext.num_threads() if ext is not None else 1) // B)
    return max(1, min(want, blocks, 65535))


@torch.library.custom_op("affectrt::cross_attn_native", mutates_args=())
def _core_native(qt: Tensor, x: Tensor, keep: Tensor | None, split_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """A, m, log l = the C++/CUDA kernel for x's device (forward only); qt float32 [B,R,E], keep uint8."""
    B, R, E = qt.shape
    Nk = x.shape[1]
    qt = qt.float().contiguous()
    a = torch.empty((B, R, E), dtype=torch.float32, device=x.device)
    m = torch.empty((B, R), dtype=torch.float32, device=x.device)
    logl = torch.empty_like(m)
    if a.numel() == 0:
        return a, m.fill_(float("-inf")), logl.zero_()
    splits = split_k if split_k > 0 else _native_splits(B, R, Nk, x.device)
    splits = max(1, min(splits, -(-Nk // _NATIVE_BLOCK_N)))
    work = torch.empty(B * splits * R * (E + 2), dtype=torch.float32, device=x.device)
    keep_ptr, keep_sb, keep_sn = (0, 0, 0) if keep is None else (keep.data_ptr(), *keep.stride())
    args = (
        qt.data_ptr(), x.data_ptr(), keep_ptr, a.data_ptr(), m.data_ptr(), logl.data_ptr(), work.data_ptr(),
        B, R, Nk, E, splits, *x.stride(), keep_sb, keep_sn, DTYPE_CODES[x.dtype],
    )  # fmt: skip
    if x.device.type == "cuda":
        with torch.cuda.device(x.device):
            cuda_ext().cross_attn(*args, torch.cuda.current_stream().cuda_stream)
    else:
        cpu_ext().cross_attn(*args)
    return a, m, logl


@_core_native.register_fake
def _(qt, x, keep, split_k):
    B, R, E = qt.shape
    return qt.new_empty((B, R, E)), qt.new_empty((B, R)), qt.new_empty((B, R))


# The CPU backend's BLAS path: R = heads·Nq rows at or above which the absorbed attention runs as two
# BLAS GEMMs per key chunk (_core_blas) instead of the C++ kernel. Measured on a 2-core Xeon with AMX
# (fp32, B=1, Nk=4096, E=1024; _core_native vs _core_blas interleaved, medians of 7 calls):
#     R        12     24     48     96    192    384
#     C++     1.6    2.7    6.0   11.6   22.7   44.5  ms   (≈ 140 GFLOP/s, register-blocked, one pass)
#     BLAS    3.0    3.2    5.1    8.6   16.3   25.4  ms   (MKL sgemm, up to ≈ 250 GFLOP/s with softmax)
# so BLAS wins from R = 48 on; below it the kernel's single pass over x without an [R, Nk] score matrix
# is faster.
_BLAS_MIN_ROWS = 48
_BLAS_SCORE_FLOATS = 1 << 21  # scores the BLAS path holds at once: 8 MB of float32 per step


def _core_blas(qt: Tensor, x: Tensor, keep: Tensor | None, split_k: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A [B,R,E], m, log l [B,R] (float32) as ``_core_native`` returns them, computed with BLAS GEMMs.

    Per step of bc batch rows and kc keys (bc·R·kc <= ``_BLAS_SCORE_FLOATS``, so the scores never exceed
    8 MB whatever Nk is), with s = q̃ x_cᵀ (padded keys replaced by -1e30, as the kernels do):

        m' = max(m, max_j s),  acc = e^(m - m') acc + e^(s - m') x_c,  l = e^(m - m') l + Σ_j e^(s - m')

    then A = acc / l, log l. ``split_k > 0`` caps kc at ceil(Nk / split_k) (more, smaller key chunks;
    the tests use it to exercise the combine). Plain torch ops: traceable, and differentiable if needed.
    """
    B, R, E = qt.shape
    Nk = x.shape[1]
    qt = qt.float()
    a = qt.new_empty((B, R, E))
    m = qt.new_empty((B, R))
    logl = qt.new_empty((B, R))
    if a.numel() == 0:
        return a, m.fill_(float("-inf")), logl.zero_()
    kc = min(Nk, max(_NATIVE_BLOCK_N, _BLAS_SCORE_FLOATS // R))
    if split_k > 0:
        kc = min(kc, -(-Nk // split_k))
    bc = max(1, min(B, _BLAS_SCORE_FLOATS // (R * kc)))
    with _float32_math(x.device):
        for b0 in range(0, B, bc):
            qb = qt[b0 : b0 + bc]
            acc = mb = lb = None
            for k0 in range(0, Nk, kc):
                xc = x[b0 : b0 + bc, k0 : k0 + kc].float()  # a view for float32 x
                s = torch.matmul(qb, xc.transpose(1, 2))  # [bc, R, kc]
                if keep is not None:
                    pad = keep[b0 : b0 + bc, None, k0 : k0 + kc] == 0
                    s.masked_fill_(pad, _MASKED_SCORE)
                m_new = s.amax(dim=-1) if mb is None else torch.maximum(mb, s.amax(dim=-1))
                p = s.sub_(m_new[..., None]).exp_()  # in place: S is the one big temporary
                if acc is None:
                    acc, lb = torch.matmul(p, xc), p.sum(dim=-1)
                else:
                    alpha = (mb - m_new).exp_()
                    acc = torch.baddbmm(acc.mul_(alpha[..., None]), p, xc)
                    lb = lb.mul_(alpha).add_(p.sum(dim=-1))
                mb = m_new
            torch.div(acc, lb[..., None], out=a[b0 : b0 + bc])
            m[b0 : b0 + bc] = mb
            torch.log(lb, out=logl[b0 : b0 + bc])
    return a, m, logl


def _native(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads, split_k=None):
    qt = _absorb_queries(q, w_k, num_heads)
    keep = _keep_u8(key_mask)
    if x.device.type == "cpu" and qt.shape[1] >= _BLAS_MIN_ROWS:
        a, _, _ = _core_blas(qt, x, keep, split_k or 0)
    else:
        a, _, _ = _core_native(qt, x, keep, split_k or 0)
    return _project_out(a, w_v, b_v, num_heads, q.shape[1]).to(q.dtype)


# ---------------------------------------------------------------------------------------- Triton kernels


@torch.library.custom_op("affectrt::cross_attn_triton", mutates_args=())
def _core_triton(qt: Tensor, x: Tensor, keep: Tensor | None, split_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """A [B,R,E], m, log l [B,R] (float32) from the Triton forward; qt in x's dtype, keep uint8."""
    from affectrt.kernels.cross_attn import cross_attn_forward

    return cross_attn_forward(qt.contiguous(), x, keep, split_k or None)


@_core_triton.register_fake
def _(qt, x, keep, split_k):
    B, R, E = qt.shape
    f32 = torch.float32
    return (
        qt.new_empty((B, R, E), dtype=f32),
        qt.new_empty((B, R), dtype=f32),
        qt.new_empty((B, R), dtype=f32),
    )


@torch.library.custom_op("affectrt::cross_attn_triton_bwd", mutates_args=())
def _core_triton_bwd(
    qt: Tensor,
    x: Tensor,
    keep: Tensor | None,
    m: Tensor,
    logl: Tensor,
    da: Tensor,
    delta: Tensor,
    split_k: int,
) -> tuple[Tensor, Tensor]:
    """(dq̃ [B,R,E], dx [B,Nk,E]) float32 from the Triton backward kernels."""
    from affectrt.kernels.cross_attn import cross_attn_backward

    return cross_attn_backward(qt.contiguous(), x, keep, m, logl, da, delta, split_k or None)


@_core_triton_bwd.register_fake
def _(qt, x, keep, m, logl, da, delta, split_k):
    return qt.new_empty(qt.shape, dtype=torch.float32), x.new_empty(x.shape, dtype=torch.float32)


class _CrossAttnTriton(torch.autograd.Function):
    """Triton forward/backward; saves for backward only what the required gradients need."""

    @staticmethod
    def forward(ctx, q, x, w_k, b_k, w_v, b_v, keep, num_heads, split_k):
        Nq = q.shape[1]
        qt = _absorb_queries(q, w_k, num_heads).to(x.dtype)
        a, m, logl = _core_triton(qt, x, keep, split_k)
        out = _project_out(a, w_v, b_v, num_heads, Nq).to(q.dtype)
        g_q, g_x, g_wk, _, g_wv, _ = ctx.needs_input_grad[:6]
        through_kernel = g_q or g_x or g_wk
        ctx.num_heads, ctx.split_k = num_heads, split_k
        ctx.shapes = (q.shape, x.shape, q.dtype, w_k.dtype)
        ctx.save_for_backward(
            q if (g_wk or g_q) else None,
            x if through_kernel else None,
            w_k if g_q else None,
            w_v if through_kernel else None,
            qt if through_kernel else None,
            a if (through_kernel or g_wv) else None,
            m if through_kernel else None,
            logl if through_kernel else None,
            keep if through_kernel else None,
        )
        return out

    @staticmethod
    def backward(ctx, dout):
        with _float32_math(dout.device):
            return _CrossAttnTriton._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        q, x, w_k, w_v, qt, a, m, logl, keep = ctx.saved_tensors
        (B, Nq, H), (_, _, E), q_dtype, w_dtype = ctx.shapes
        h = ctx.num_heads
        d = H // h
        g_q, g_x, g_wk, g_bk, g_wv, g_bv = ctx.needs_input_grad[:6]
        do = dout.float().view(B, Nq, h, d).transpose(1, 2)  # [B, h, Nq, d]
        dq = dx = dwk = dbk = dwv = dbv = None
        if g_bv:
            dbv = do.sum(dim=(0, 2)).reshape(H).to(w_dtype)
        if g_wv:
            dwv = torch.einsum("bhid,bhie->hde", do, a.view(B, h, Nq, E)).reshape(H, E).to(w_dtype)
        if g_bk:  # softmax ignores a per-row shift: the output does not depend on b_k
            dbk = torch.zeros(H, dtype=w_dtype, device=dout.device)
        if g_q or g_x or g_wk:
            da = torch.einsum("bhid,hde->bhie", do, w_v.float().view(h, d, E)).reshape(B, h * Nq, E)
            delta = (da * a).sum(dim=-1)
            dqt, dxf = _core_triton_bwd(qt, x, keep, m, logl, da.contiguous(), delta, ctx.split_k)
            dqt = dqt.view(B, h, Nq, E) * (1.0 / math.sqrt(d))
            if g_x:
                dx = dxf.to(x.dtype)
            if g_q:
                dqh = torch.einsum("bhie,hde->bhid", dqt, w_k.float().view(h, d, E))
                dq = dqh.transpose(1, 2).reshape(B, Nq, H).to(q_dtype)
            if g_wk:
                qh = q.float().view(B, Nq, h, d).transpose(1, 2)
                dwk = torch.einsum("bhid,bhie->hde", qh, dqt).reshape(H, E).to(w_dtype)
        return dq, dx, dwk, dbk, dwv, dbv, None, None, None


def _triton(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads, split_k=None):
    return _CrossAttnTriton.apply(q, x, w_k, b_k, w_v, b_v, _keep_u8(key_mask), num_heads, split_k or 0)


def _eager(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads, split_k=None):
    return cross_attn_ref(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads)


# ------------------------------------------------------------------------------------------------ backends


def _cuda_limits(inputs: _backends.Inputs) -> list[str]:
    E = inputs["x"].shape[2]
    return (
        [f"x has width E={E}; the CUDA kernel keeps accumulators for E <= {_CUDA_MAX_E}"]
        if E > _CUDA_MAX_E
        else []
    )


def _triton_limits(inputs: _backends.Inputs) -> list[str]:
    from affectrt.kernels._launch import DoesNotFit
    from affectrt.kernels.cross_attn import choose_config

    x = inputs["x"]
    if x.device.type == "cpu" and x.dtype == torch.bfloat16:
        return [
            "the Triton interpreter computes tl.dot on bfloat16 operands wrongly (use float16/float32 on CPU)"
        ]
    try:  # the kernels' resource model: no configuration fits this width on this GPU
        choose_config(x.shape[2], x.dtype, x.device, kinds=("fwd", "dq", "dx"))
    except DoesNotFit as e:
        return [str(e)]
    return []


_HALF_AND_FLOAT = (torch.float16, torch.bfloat16, torch.float32)
_backends.register(
    OP,
    [
        _backends.Backend(
            "cuda", ("cuda",), _NATIVE_DTYPES, has_backward=False,
            available=_backends.cuda_ext_available("cross_attn"), run=_native,
            supports=_cuda_limits, about="affectrt._C_cuda, absorbed K/V, split keys + log-sum-exp combine",
        ),
        _backends.Backend(
            "triton", _backends.triton_devices(), _HALF_AND_FLOAT, has_backward=True,
            available=_backends.triton_reason,
            run=_triton, supports=_triton_limits,
            about="affectrt.kernels.cross_attn, absorbed K/V, flash-decoding forward, recomputing backward",
        ),
        _backends.Backend(
            "cpu", ("cpu",), _NATIVE_DTYPES, has_backward=False,
            available=_backends.cpu_ext_available("cross_attn"), run=_native,
            about="affectrt._C, absorbed K/V, OpenMP over (batch, key split), online softmax; BLAS GEMMs from R >= 48",
        ),
        _backends.Backend(
            "eager", ("cpu", "cuda"), (*_HALF_AND_FLOAT, torch.float64), has_backward=True,
            available=_backends.always, run=_eager, about="plain PyTorch reference (K, V, scores materialised)",
        ),
    ],
)  # fmt: skip


def cross_attn(
    q: Tensor,
    x: Tensor,
    w_k: Tensor,
    b_k: Tensor,
    w_v: Tensor,
    b_v: Tensor,
    key_mask: Tensor | None = None,
    num_heads: int = 1,
    backend: str = "auto",
    split_k: int | None = None,
) -> Tensor:
    """softmax(q Kᵀ/√d + mask) V per head, K/V = x W_{k,v}ᵀ + b_{k,v}; see the module docstring.

    q [B, Nq, H], x [B, Nk, E], w_k / w_v [H, E], b_k / b_v [H], key_mask [B, Nk] (nonzero = attend) or None
    -> [B, Nq, H] in q's dtype. ``backend``: "auto", "cuda", "triton", "cpu" or "eager"; an explicit backend that cannot run the inputs raises
    :class:`affectrt.ops._backends.BackendError` saying why. ``split_k``: key splits of the fused kernels
    (None: enough programs to fill the device).
    """
    _check_inputs(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads)
    inputs = {"q": q, "x": x, "w_k": w_k, "b_k": b_k, "w_v": w_v, "b_v": b_v}
    needs_grad = _backends.needs_grad(q, x, w_k, b_k, w_v, b_v)
    return _backends.dispatch(
        OP,
        inputs,
        backend,
        needs_grad,
        lambda b: b.run(q, x, w_k, b_k, w_v, b_v, key_mask, num_heads, split_k),
    )


class CrossAttention(nn.Module):
    """``key`` / ``value`` = ``nn.Linear(kv_width, hidden)`` + :func:`cross_attn` on already-projected queries.

    forward(q [B, Nq, hidden], x [B, Nk, kv_width], key_mask [B, Nk] | None) -> [B, Nq, hidden].
    """

    def __init__(
        self, hidden: int, kv_width: int, num_heads: int, backend: str = "auto", device=None, dtype=None
    ):
        super().__init__()
        if hidden % num_heads != 0:
            raise ValueError(f"CrossAttention: hidden {hidden} is not a multiple of num_heads {num_heads}")
        self.key = nn.Linear(kv_width, hidden, device=device, dtype=dtype)
        self.value = nn.Linear(kv_width, hidden, device=device, dtype=dtype)
        self.num_heads = num_heads
        self.backend = backend

    def forward(self, q: Tensor, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        k, v = self.key, self.value
        return cross_attn(q, x, k.weight, k.bias, v.weight, v.bias, key_mask, self.num_heads, self.backend)
