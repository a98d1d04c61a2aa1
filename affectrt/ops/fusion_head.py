"""The fused fusion head (MODEL_SPEC §1.4-1.5a, §7 item 1): Z_v, Z_a -> the three LLM embeddings at once.

For the released "attention" configuration, from Z_v [B,Tv,dv] and Z_a [B,Ta,da] to out [B,3,D] whose
rows are, in this order, **0 = multi** (``<MultiHere>``), **1 = audio**, **2 = video** (face or frame):

    H_v = W_v (Σ_t (Z_v,t·w_v + b_v) Z_v,t) + c_v          per-modality attention pooling (raw scores)
    H_a = W_a (Σ_t (Z_a,t·w_a + b_a) Z_a,t) + c_a          and projection to the LLM width D
    u_v = W_mv mean_t Z_v + b_mv,  u_a = W_ma mean_t Z_a + b_ma
    g   = W2 (W1 [u_v; u_a] + b1) + b2                      [B,2]: no activation, no softmax
    H_m = W_mp (g_0 u_v + g_1 u_a) + b_mp

At inference W2·W1 folds into one 2×2·dm affine map (:func:`fold_gate`); when a gradient is needed the
gate stays unfolded so W1, b1, W2, b2 get their own exact gradients.

Backends (DESIGN §3), in "auto" order:

- ``cuda``: ``affectrt._C_cuda`` (csrc/fusion_head_cuda.cu); forward only, folded gate.
- ``triton``: ``affectrt.kernels.fusion_head``, two launches; forward and backward (autograd.Function whose
  backward composes torch GEMMs with the attention-pooling Triton kernels). CUDA, and CPU tensors under
  ``TRITON_INTERPRET=1`` only when asked for by name.
- ``cpu``: ``affectrt._C`` (csrc/fusion_head_cpu.cpp), one OpenMP region; forward only, folded gate.
- ``eager``: :func:`fusion_head_ref`, plain differentiable PyTorch.

The native and Triton forwards run through the ``affectrt::fusion_head_fwd`` /
``affectrt::fusion_head_fwd_into`` torch.library ops (the latter writes the rows of a preallocated
``inputs_embeds`` in place), so ``torch.compile`` / ``torch.export`` see one op.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from affectrt.ops import _backends
from affectrt.ops._ext import DTYPE_CODES, cpu_ext, cpu_ext_reason, cuda_ext, cuda_ext_reason
from affectrt.ops.attn_pool import select_backend, triton_devices, triton_reason

OP = "fusion_head"
ROWS = ("multi", "audio", "video")  # the order of out[:, j]
_NATIVE_DTYPES = tuple(DTYPE_CODES)
_ALL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_T_TRITON = 64


class FusionHeadWeights(NamedTuple):
    """The head's parameters (release module names in brackets). Attention weights may be [d] or [1, d]."""

    video_att_w: Tensor  # [dv]        video_attention_mlp.weight
    video_att_b: Tensor  # [1]         video_attention_mlp.bias
    video_proj_w: Tensor  # [D, dv]    affectgpt_proj.weight
    video_proj_b: Tensor  # [D]
    audio_att_w: Tensor  # [da]        audio_attention_mlp.weight
    audio_att_b: Tensor  # [1]
    audio_proj_w: Tensor  # [D, da]    audio_llama_proj.weight
    audio_proj_b: Tensor  # [D]
    multi_video_w: Tensor  # [dm, dv]  multi_video_embs.weight
    multi_video_b: Tensor  # [dm]
    multi_audio_w: Tensor  # [dm, da]  multi_audio_embs.weight
    multi_audio_b: Tensor  # [dm]
    gate_w1: Tensor  # [dm, 2dm]       attention_mlp.weight
    gate_b1: Tensor  # [dm]
    gate_w2: Tensor  # [2, dm]         fc_att.weight
    gate_b2: Tensor  # [2]
    multi_proj_w: Tensor  # [D, dm]    multi_llama_proj.weight
    multi_proj_b: Tensor  # [D]


def fold_gate(w: FusionHeadWeights) -> tuple[Tensor, Tensor]:
    """(W2·W1 [2, 2dm], W2·b1 + b2 [2]) computed in float64, returned in W2's dtype, without autograd."""
    with torch.no_grad(), torch.autocast(w.gate_w1.device.type, enabled=False):
        w1, b1, w2, b2 = (t.double() for t in (w.gate_w1, w.gate_b1, w.gate_w2, w.gate_b2))
        return (w2 @ w1).to(w.gate_w2.dtype), (w2 @ b1 + b2).to(w.gate_w2.dtype)


def fusion_head_ref(
    z_video: Tensor,
    z_audio: Tensor,
    w: FusionHeadWeights,
    folded_gate: tuple[Tensor, Tensor] | None = None,
    upcast: bool = False,
) -> Tensor:
    """The definition in plain PyTorch: [B,Tv,dv], [B,Ta,da] -> [B,3,D] (multi, audio, video).

    ``folded_gate``: (W_g, b_g) to use instead of W1, b1, W2, b2. ``upcast=True`` computes in float64.
    """
    out_dtype = z_video.dtype
    if upcast:
        z_video, z_audio = z_video.double(), z_audio.double()
        w = FusionHeadWeights(*(t.double() for t in w))
        folded_gate = None if folded_gate is None else tuple(t.double() for t in folded_gate)
    lin = torch.nn.functional.linear

    def pool(z: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return (lin(z, a.reshape(1, -1), b.reshape(1)) * z).sum(dim=1)

    h_v = lin(pool(z_video, w.video_att_w, w.video_att_b), w.video_proj_w, w.video_proj_b)
    h_a = lin(pool(z_audio, w.audio_att_w, w.audio_att_b), w.audio_proj_w, w.audio_proj_b)
    u_v = lin(z_video.mean(dim=1), w.multi_video_w, w.multi_video_b)
    u_a = lin(z_audio.mean(dim=1), w.multi_audio_w, w.multi_audio_b)
    u = torch.cat([u_v, u_a], dim=-1)
    if folded_gate is None:
        g = lin(lin(u, w.gate_w1, w.gate_b1), w.gate_w2, w.gate_b2)
    else:
        g = lin(u, *folded_gate)
    h_m = lin(g[:, :1] * u_v + g[:, 1:] * u_a, w.multi_proj_w, w.multi_proj_b)
    out = torch.stack([h_m, h_a, h_v], dim=1)
    return out.to(out_dtype) if upcast else out


# ----------------------------------------------------------------------------------------------- checks


def _check_inputs(
    z_video: Tensor,
    z_audio: Tensor,
    w: FusionHeadWeights,
    folded_gate: tuple[Tensor, Tensor] | None,
) -> None:
    named = [("z_video", z_video), ("z_audio", z_audio), *zip(FusionHeadWeights._fields, w)]
    if folded_gate is not None:
        named += [("folded_gate[0]", folded_gate[0]), ("folded_gate[1]", folded_gate[1])]
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f"fusion_head: {name} must be a torch.Tensor, got {type(t).__name__}")
    for name, z in (("z_video", z_video), ("z_audio", z_audio)):
        if z.dim() != 3 or z.shape[1] == 0:
            raise ValueError(f"fusion_head: {name} must be 3-D [B, T>=1, d], got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"fusion_head: {name} must be a floating-point tensor, got {z.dtype}")
    if z_video.shape[0] != z_audio.shape[0]:
        raise ValueError(
            f"fusion_head: batch sizes differ: z_video has B={z_video.shape[0]}, z_audio {z_audio.shape[0]}"
        )
    dv, da = z_video.shape[2], z_audio.shape[2]
    dm, D = w.multi_video_w.shape[0], w.video_proj_w.shape[0]
    expected = {
        "video_att_w": [(dv,), (1, dv)],
        "video_att_b": [(1,)],
        "video_proj_w": [(D, dv)],
        "video_proj_b": [(D,)],
        "audio_att_w": [(da,), (1, da)],
        "audio_att_b": [(1,)],
        "audio_proj_w": [(D, da)],
        "audio_proj_b": [(D,)],
        "multi_video_w": [(dm, dv)],
        "multi_video_b": [(dm,)],
        "multi_audio_w": [(dm, da)],
        "multi_audio_b": [(dm,)],
        "gate_w1": [(dm, 2 * dm)],
        "gate_b1": [(dm,)],
        "gate_w2": [(2, dm)],
        "gate_b2": [(2,)],
        "multi_proj_w": [(D, dm)],
        "multi_proj_b": [(D,)],
        "folded_gate[0]": [(2, 2 * dm)],
        "folded_gate[1]": [(2,)],
    }
    for name, t in named[2:]:
        if tuple(t.shape) not in expected[name]:
            want = " or ".join(str(list(s)) for s in expected[name])
            raise ValueError(
                f"fusion_head: {name} must have shape {want} (dv={dv}, da={da}, dm={dm}, D={D}), "
                f"got {list(t.shape)}"
            )
    for name, t in named[1:]:
        if t.device != z_video.device:
            raise ValueError(
                f"fusion_head: {name} is on {t.device} but z_video is on {z_video.device}; "
                "move everything to one device"
            )
        if t.dtype != z_video.dtype:
            raise TypeError(
                f"fusion_head: {name} has dtype {t.dtype} but z_video has {z_video.dtype}; "
                f"cast it with .to({z_video.dtype})"
            )


def _check_out(out: Tensor, rows: Tensor | None, B: int, D: int, z: Tensor) -> Tensor:
    """Validate out [B,L,D] and rows ([3] or [B,3] indices into L); return rows as int64 [B,3]."""
    if not isinstance(out, Tensor) or out.dim() != 3 or out.shape[0] != B or out.shape[2] != D:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"fusion_head: out must be [B={B}, L, D={D}], got {shape}")
    if out.dtype != z.dtype or out.device != z.device:
        raise TypeError(
            f"fusion_head: out is {out.dtype} on {out.device} but z_video is {z.dtype} on {z.device}"
        )
    if rows is None:
        if out.shape[1] != 3:
            raise ValueError("fusion_head: pass rows= (where multi, audio, video go) when out has L != 3")
        rows = torch.arange(3, device=out.device)
    if not isinstance(rows, Tensor) or rows.dtype not in (torch.int32, torch.int64):
        raise TypeError("fusion_head: rows must be an int32/int64 tensor of shape [3] or [B, 3]")
    if tuple(rows.shape) not in ((3,), (B, 3)):
        raise ValueError(f"fusion_head: rows must have shape [3] or [B={B}, 3], got {list(rows.shape)}")
    rows = rows.to(device=out.device, dtype=torch.int64).expand(B, 3).contiguous()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= out.shape[1]):
        raise ValueError(f"fusion_head: rows must lie in [0, L={out.shape[1]}), got {rows.tolist()}")
    return rows


# -------------------------------------------------------------------------------- fused forward launchers


def _native_launch(
    z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor
) -> None:
    wva, bva, Wv, cv, waa, baa, Wa, ca, Wmv, bmv, Wma, bma, Wg, bg, Wmp, bmp = weights
    B, Tv, dv = z_video.shape
    Ta, da = z_audio.shape[1:]
    D, dm = Wmp.shape
    if B == 0:
        return
    # float32 scratch: pooled and mean vectors [B, 2dv+2da], u [B, 2dm], z_f [B, dm]
    work = torch.empty(B * (2 * dv + 2 * da + 3 * dm), dtype=torch.float32, device=z_video.device)
    ptrs = [t.data_ptr() for t in (z_video, z_audio, *weights, out, rows, work)]
    dims = [B, Tv, Ta, dv, da, dm, D]
    strides = [
        *z_video.stride(), *z_audio.stride(), wva.stride(-1), waa.stride(-1),
        *Wv.stride(), *Wa.stride(), *Wmv.stride(), *Wma.stride(), *Wg.stride(), *Wmp.stride(),
        *out.stride(),
    ]  # fmt: skip
    args = (ptrs, dims, strides, DTYPE_CODES[z_video.dtype])
    if z_video.device.type == "cuda":
        with torch.cuda.device(z_video.device):
            cuda_ext().fusion_head(*args, torch.cuda.current_stream().cuda_stream)
    else:
        cpu_ext().fusion_head(*args)


def _triton_launch(
    z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor
) -> None:
    from affectrt.kernels.fusion_head import fusion_head_forward

    fusion_head_forward(z_video, z_audio, weights, out, rows)


def _launch(z_video, z_audio, weights, out, rows, backend: str) -> None:
    weights = [t.reshape(-1).contiguous() if t.dim() < 2 or t.shape[0] == 1 else t for t in weights]
    weights = [
        t if t.dim() == 1 or t.stride(-1) == 1 or t.stride(0) == 1 else t.contiguous() for t in weights
    ]
    if backend == "triton":
        _triton_launch(z_video, z_audio, weights, out, rows)
    elif backend in ("cuda", "cpu"):
        _native_launch(z_video, z_audio, weights, out, rows)
    else:
        raise ValueError(f"fusion_head_fwd: backend must be 'cuda', 'triton' or 'cpu', got {backend!r}")


@torch.library.custom_op("affectrt::fusion_head_fwd", mutates_args=())
def _fusion_head_fwd(z_video: Tensor, z_audio: Tensor, weights: list[Tensor], backend: str) -> Tensor:
    """Forward of the fused head with the folded gate (16 weights): a new [B, 3, D] tensor."""
    B, D = z_video.shape[0], weights[2].shape[0]
    out = torch.empty((B, 3, D), dtype=z_video.dtype, device=z_video.device)
    rows = torch.arange(3, device=z_video.device).expand(B, 3).contiguous()
    _launch(z_video, z_audio, weights, out, rows, backend)
    return out


@_fusion_head_fwd.register_fake
def _(z_video: Tensor, z_audio: Tensor, weights: list[Tensor], backend: str) -> Tensor:
    return z_video.new_empty((z_video.shape[0], 3, weights[2].shape[0]))


@torch.library.custom_op("affectrt::fusion_head_fwd_into", mutates_args=("out",))
def _fusion_head_fwd_into(
    z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor, backend: str
) -> None:
    """As ``fusion_head_fwd`` but writes out[b, rows[b, j], :] of a preallocated out [B, L, D]."""
    _launch(z_video, z_audio, weights, out, rows, backend)


@_fusion_head_fwd_into.register_fake
def _(
    z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor, backend: str
) -> None:
    return None


# ---------------------------------------------------------------------------------- training (Triton)


class _FusionHeadTriton(torch.autograd.Function):
    """Triton forward with the gate unfolded (g = W2 (W1 u + b1) + b2, computed by torch between the two
    launches) and the composed backward of :func:`affectrt.kernels.fusion_head.fusion_head_backward`.
    Saves for backward only when some input needs a gradient."""

    @staticmethod
    def forward(ctx, z_video: Tensor, z_audio: Tensor, *weights: Tensor) -> Tensor:
        from affectrt.kernels.fusion_head import fusion_head_forward

        w = FusionHeadWeights(*weights)
        kw = [t.reshape(-1).contiguous() if t.dim() < 2 or t.shape[0] == 1 else t for t in weights]
        B, D = z_video.shape[0], w.video_proj_w.shape[0]
        dm = w.multi_proj_w.shape[1]
        out = torch.empty((B, 3, D), dtype=z_video.dtype, device=z_video.device)
        rows = torch.arange(3, device=z_video.device).expand(B, 3).contiguous()
        acc = torch.float64 if z_video.dtype == torch.float64 else torch.float32
        # Launch 1 writes u (and H_a, H_v); the unfolded gate runs between the launches.
        folded_shape = [*kw[:12], kw[0].new_zeros(2, 2 * dm), kw[0].new_zeros(2), *kw[16:]]

        def gate(u: Tensor) -> Tensor:  # unfolded: W2 (W1 u + b1) + b2
            h = u @ w.gate_w1.to(acc).T + w.gate_b1.to(acc)
            return h @ w.gate_w2.to(acc).T + w.gate_b2.to(acc)

        u, g = fusion_head_forward(z_video, z_audio, folded_shape, out, rows, gate_fn=gate)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(z_video, z_audio, u, g, *weights)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        from affectrt.kernels.fusion_head import fusion_head_backward

        z_video, z_audio, u, g, *weights = ctx.saved_tensors
        grads = fusion_head_backward(grad, z_video, z_audio, weights, u, g)
        return tuple(d if need else None for d, need in zip(grads, ctx.needs_input_grad))


# -------------------------------------------------------------------------------------------- backends


def _folded_weights(w: FusionHeadWeights, folded_gate: tuple[Tensor, Tensor] | None) -> list[Tensor]:
    wg, bg = folded_gate if folded_gate is not None else fold_gate(w)
    return [*w[:12], wg, bg, *w[16:]]


def _scatter_rows(res: Tensor, out: Tensor | None, rows: Tensor | None) -> Tensor:
    if out is None:
        return res
    out[torch.arange(res.shape[0], device=out.device)[:, None], rows] = res
    return out


def _fused_runner(name: str):
    def run(z_video, z_audio, w, folded_gate, out, rows, needs_grad):
        if needs_grad:  # only "triton" gets here: the others declare no backward
            if out is not None:
                raise ValueError(
                    "fusion_head: out= writes in place and cannot be used when a gradient is required"
                )
            return _FusionHeadTriton.apply(z_video, z_audio, *w)
        weights = _folded_weights(w, folded_gate)
        if out is None:
            return torch.ops.affectrt.fusion_head_fwd(z_video, z_audio, weights, name)
        torch.ops.affectrt.fusion_head_fwd_into(z_video, z_audio, weights, out, rows, name)
        return out

    return run


def _eager(z_video, z_audio, w, folded_gate, out, rows, needs_grad):
    if needs_grad:
        if out is not None:
            raise ValueError(
                "fusion_head: out= writes in place and cannot be used when a gradient is required"
            )
        return fusion_head_ref(z_video, z_audio, w)
    return _scatter_rows(fusion_head_ref(z_video, z_audio, w, folded_gate), out, rows)


def _cuda_available() -> str | None:
    reason = cuda_ext_reason()
    if reason is None and not torch.cuda.is_available():
        return "affectrt._C_cuda is built, but torch sees no CUDA device"
    if reason is None and not hasattr(cuda_ext(), "fusion_head"):
        return "affectrt._C_cuda has no fusion_head: rebuild it (pip install -e .)"
    return reason


def _cpu_available() -> str | None:
    reason = cpu_ext_reason()
    if reason is None and not hasattr(cpu_ext(), "fusion_head"):
        return "affectrt._C has no fusion_head: rebuild it (pip install -e .)"
    return reason


def _triton_limits(inputs: _backends.Inputs) -> list[str]:
    t = max(inputs["z_video"].shape[1], inputs["z_audio"].shape[1])
    if t > MAX_T_TRITON:
        return [
            f"T={t} time steps; the Triton kernel keeps at most {MAX_T_TRITON} scores per row in registers"
        ]
    return []


_backends.register(
    OP,
    [
        _backends.Backend(
            "cuda",
            ("cuda",),
            _NATIVE_DTYPES,
            has_backward=False,
            available=_cuda_available,
            run=_fused_runner("cuda"),
            about="affectrt._C_cuda: 3 launches (pool, 4 GEMVs, gate + output GEMV), folded gate",
        ),
        _backends.Backend(
            "triton",
            triton_devices(),
            _ALL_DTYPES,
            has_backward=True,
            available=triton_reason,
            run=_fused_runner("triton"),
            supports=_triton_limits,
            about="Triton, 2 launches; backward = torch GEMMs + attn_pool Triton kernels",
        ),
        _backends.Backend(
            "cpu",
            ("cpu",),
            _NATIVE_DTYPES,
            has_backward=False,
            available=_cpu_available,
            run=_fused_runner("cpu"),
            about="affectrt._C: one OpenMP region, each weight read once, folded gate",
        ),
        _backends.Backend(
            "eager",
            ("cpu", "cuda"),
            _ALL_DTYPES,
            has_backward=True,
            available=lambda: None,
            run=_eager,
            about="plain PyTorch reference (fusion_head_ref), differentiable",
        ),
    ],
)


def fusion_head(
    z_video: Tensor,
    z_audio: Tensor,
    weights: FusionHeadWeights,
    *,
    folded_gate: tuple[Tensor, Tensor] | None = None,
    backend: str = "auto",
    out: Tensor | None = None,
    rows: Tensor | None = None,
) -> Tensor:
    """The fused head: Z_v [B,Tv,dv], Z_a [B,Ta,da] -> [B,3,D] with rows (multi, audio, video).

    ``folded_gate``: (W2·W1, W2·b1 + b2) from :func:`fold_gate`, used when no gradient is needed (folded
    here otherwise, which costs one 2×dm×2dm matmul: cache it). When a gradient is needed the gate is
    computed unfolded and ``folded_gate`` is ignored.
    ``out`` + ``rows``: write H[b, j] into out[b, rows[b, j], :] of a preallocated out [B,L,D] (e.g. the
    prompt's ``inputs_embeds``; rows [3] or [B,3] in the order multi, audio, video) and return ``out``;
    inference only.
    ``backend``: "auto" (default), "cuda", "triton", "cpu" or "eager"; an explicit backend that cannot run
    the inputs raises :class:`affectrt.ops._backends.BackendError` saying why.
    """
    weights = FusionHeadWeights(*weights)
    _check_inputs(z_video, z_audio, weights, folded_gate)
    needs_grad = _backends.needs_grad(z_video, z_audio, *weights)
    if out is not None:
        rows = _check_out(out, rows, z_video.shape[0], weights.video_proj_w.shape[0], z_video)
    elif rows is not None:
        raise ValueError("fusion_head: rows= needs out= (the tensor whose rows are written)")
    inputs = {"z_video": z_video, "z_audio": z_audio}
    chosen = select_backend(OP, inputs, backend, needs_grad=needs_grad)
    return chosen.run(z_video, z_audio, weights, folded_gate, out, rows, needs_grad)
