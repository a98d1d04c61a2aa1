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

The native and Triton forwards run through the torch.library ops ``affectrt::fusion_head_native`` and
``affectrt::fusion_head_triton`` (and their ``*_into`` forms, which write the rows of a preallocated
``inputs_embeds`` in place), so ``torch.compile`` / ``torch.export`` see one op.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from affectrt.kernels._weights import FusedWeights
from affectrt.ops import _backends
from affectrt.ops._ext import DTYPE_CODES, cpu_ext, cuda_ext

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

    def folded(self, gate: tuple[Tensor, Tensor]) -> list[Tensor]:
        """The 16 tensors of the kernels' folded form (``FusedWeights`` order): W1, b1, W2, b2 -> (W_g, b_g)."""
        keep = [getattr(self, n) for n in self._fields if not n.startswith("gate_")]
        return [*keep[:12], gate[0], gate[1], *keep[12:]]


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
    z_video: Tensor, z_audio: Tensor, w: FusedWeights, out: Tensor, rows: Tensor | None
) -> None:
    """Run the C++ / CUDA kernel into out[b, rows[b, j], :]; ``rows=None`` (CPU only): out is [B, 3, D]."""
    B, Tv, dv = z_video.shape
    Ta, da = z_audio.shape[1:]
    D, dm = w.multi_proj_w.shape
    if B == 0:
        return
    cuda = z_video.device.type == "cuda"
    # float32 scratch for CUDA: pooled and mean vectors [B, 2dv+2da], u [B, 2dm], z_f [B, dm]. The CPU
    # kernel keeps its own, reused across calls (a fresh MB-sized tensor page-faults on every call).
    work = (
        torch.empty(B * (2 * dv + 2 * da + 3 * dm), dtype=torch.float32, device=z_video.device)
        if cuda
        else None
    )
    ptrs = [t.data_ptr() for t in (z_video, z_audio, *w, out)]  # csrc/fusion_head_bind.h order
    ptrs += [0 if rows is None else rows.data_ptr(), work.data_ptr() if cuda else 0]
    dims = [B, Tv, Ta, dv, da, dm, D]
    strides = [
        *z_video.stride(), *z_audio.stride(), w.video_att_w.stride(-1), w.audio_att_w.stride(-1),
        *w.video_proj_w.stride(), *w.audio_proj_w.stride(), *w.multi_video_w.stride(),
        *w.multi_audio_w.stride(), *w.gate_w.stride(), *w.multi_proj_w.stride(), *out.stride(),
    ]  # fmt: skip
    args = (ptrs, dims, strides, DTYPE_CODES[z_video.dtype])
    if cuda:
        with torch.cuda.device(z_video.device):
            cuda_ext().fusion_head(*args, torch.cuda.current_stream().cuda_stream)
    else:
        cpu_ext().fusion_head(*args)


def _kernel_weights(weights: list[Tensor]) -> FusedWeights:
    """The kernels' form: vectors ([d], [1, d], biases) flat and contiguous; matrices with a unit stride."""
    return FusedWeights(*map(_kernel_tensor, weights))


def _kernel_tensor(t: Tensor) -> Tensor:
    # Already in the kernels' form (the usual case) costs two stride reads: this runs on every call.
    if t.dim() == 1:
        return t if t.stride(0) == 1 else t.contiguous()
    if t.shape[0] == 1:
        return t.reshape(-1).contiguous()
    return t if t.stride(-1) == 1 or t.stride(0) == 1 else t.contiguous()


def _triton_launch(z_video: Tensor, z_audio: Tensor, w: FusedWeights, out: Tensor, rows: Tensor) -> None:
    from affectrt.kernels.fusion_head import fusion_head_forward

    fusion_head_forward(z_video, z_audio, w, out, rows)


def _new_out(z_video: Tensor, weights: list[Tensor]) -> tuple[Tensor, Tensor]:
    """A fresh out [B, 3, D] and the identity rows [B, 3]."""
    B, D = z_video.shape[0], FusedWeights(*weights).video_proj_w.shape[0]
    out = torch.empty((B, 3, D), dtype=z_video.dtype, device=z_video.device)
    return out, torch.arange(3, device=z_video.device).expand(B, 3).contiguous()


# The torch.library ops, one pair per kernel family (the same names as every op: <op>_native for the C++ /
# CUDA extension by the tensors' device, <op>_triton for the Triton kernels); *_into writes the rows of a
# preallocated out [B, L, D] in place. Weights: the 16 tensors of the folded form (``FusedWeights`` order).


def _native_new(z_video: Tensor, z_audio: Tensor, weights: list[Tensor]) -> Tensor:
    """The body of ``fusion_head_native``: a new [B, 3, D] from the C++ (CPU) or CUDA kernel."""
    if z_video.device.type == "cpu":  # the CPU kernel writes rows 0, 1, 2 without an index tensor
        out = torch.empty((z_video.shape[0], 3, weights[2].shape[0]), dtype=z_video.dtype)
        _native_launch(z_video, z_audio, _kernel_weights(weights), out, None)
        return out
    out, rows = _new_out(z_video, weights)
    _native_launch(z_video, z_audio, _kernel_weights(weights), out, rows)
    return out


@torch.library.custom_op("affectrt::fusion_head_native", mutates_args=())
def _fusion_head_native(z_video: Tensor, z_audio: Tensor, weights: list[Tensor]) -> Tensor:
    """The C++ (CPU) or CUDA kernel, folded gate: a new [B, 3, D]."""
    return _native_new(z_video, z_audio, weights)


@torch.library.custom_op("affectrt::fusion_head_native_into", mutates_args=("out",))
def _fusion_head_native_into(
    z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor
) -> None:
    """As ``fusion_head_native`` into out[b, rows[b, j], :]."""
    _native_launch(z_video, z_audio, _kernel_weights(weights), out, rows)


@torch.library.custom_op("affectrt::fusion_head_triton", mutates_args=())
def _fusion_head_triton(z_video: Tensor, z_audio: Tensor, weights: list[Tensor]) -> Tensor:
    """The Triton kernels (two launches), folded gate: a new [B, 3, D]."""
    out, rows = _new_out(z_video, weights)
    _triton_launch(z_video, z_audio, _kernel_weights(weights), out, rows)
    return out


@torch.library.custom_op("affectrt::fusion_head_triton_into", mutates_args=("out",))
def _fusion_head_triton_into(
    z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor
) -> None:
    """As ``fusion_head_triton`` into out[b, rows[b, j], :]."""
    _triton_launch(z_video, z_audio, _kernel_weights(weights), out, rows)


for _op in (_fusion_head_native, _fusion_head_triton):

    @_op.register_fake
    def _(z_video: Tensor, z_audio: Tensor, weights: list[Tensor]) -> Tensor:
        return z_video.new_empty((z_video.shape[0], 3, FusedWeights(*weights).video_proj_w.shape[0]))


for _op in (_fusion_head_native_into, _fusion_head_triton_into):

    @_op.register_fake
    def _(z_video: Tensor, z_audio: Tensor, weights: list[Tensor], out: Tensor, rows: Tensor) -> None:
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
        B, D = z_video.shape[0], w.video_proj_w.shape[0]
        dm = w.multi_proj_w.shape[1]
        out = torch.empty((B, 3, D), dtype=z_video.dtype, device=z_video.device)
        rows = torch.arange(3, device=z_video.device).expand(B, 3).contiguous()
        acc = torch.float64 if z_video.dtype == torch.float64 else torch.float32
        # Launch 1 writes u (and H_a, H_v); the unfolded gate runs between the launches, so the folded
        # gate the kernel would read is a placeholder.
        unused = (w.gate_w2.new_zeros(2, 2 * dm), w.gate_w2.new_zeros(2))
        kernel_w = _kernel_weights(w.folded(unused))

        def gate(u: Tensor) -> Tensor:  # unfolded: W2 (W1 u + b1) + b2
            h = u @ w.gate_w1.to(acc).T + w.gate_b1.to(acc)
            return h @ w.gate_w2.to(acc).T + w.gate_b2.to(acc)

        u, g = fusion_head_forward(z_video, z_audio, kernel_w, out, rows, gate_fn=gate)
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
    return w.folded(folded_gate if folded_gate is not None else fold_gate(w))


def _scatter_rows(res: Tensor, out: Tensor | None, rows: Tensor | None) -> Tensor:
    if out is None:
        return res
    out[torch.arange(res.shape[0], device=out.device)[:, None], rows] = res
    return out


def _plain_eager(*tensors: Tensor) -> bool:
    """True when nothing traces or intercepts the call: plain tensors, no torch.compile / export, no
    dispatch or function mode (FakeTensorMode, make_fx, ...)."""
    # private torch hooks: when a torch release renames them, every call simply goes through the op
    dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
    function_mode = getattr(torch._C, "_is_torch_function_mode_enabled", None)
    return (
        dispatch_depth is not None
        and function_mode is not None
        and all(type(t) is Tensor for t in tensors)
        and not torch.compiler.is_compiling()
        and dispatch_depth() == 0
        and not function_mode()
    )


def _fused_runner(kind: str):
    """``run`` of the ``cuda``/``cpu`` (kind "native") and ``triton`` backends."""
    fwd = getattr(torch.ops.affectrt, f"fusion_head_{kind}")
    fwd_into = getattr(torch.ops.affectrt, f"fusion_head_{kind}_into")
    native = kind == "native"

    def run(z_video, z_audio, w, folded_gate, out, rows, needs_grad):
        if needs_grad:  # only "triton" gets here: the others declare no backward
            if out is not None:
                raise ValueError(
                    "fusion_head: out= writes in place and cannot be used when a gradient is required"
                )
            return _FusionHeadTriton.apply(z_video, z_audio, *w)
        weights = _folded_weights(w, folded_gate)
        plain = native and z_video.device.type == "cpu"
        if out is None and plain and _plain_eager(z_video, z_audio):
            # The op's own body without the torch.library dispatch (~45 µs a call, 4% of the B=1 head);
            # anything that traces still sees the one op.
            return _native_new(z_video, z_audio, weights)
        if out is not None and plain and _plain_eager(z_video, z_audio, out, rows):
            _native_launch(z_video, z_audio, _kernel_weights(weights), out, rows)  # the _into op's body
            return out
        if out is None:
            return fwd(z_video, z_audio, weights)
        fwd_into(z_video, z_audio, weights, out, rows)
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


def _triton_limits(inputs: _backends.Inputs) -> list[str]:
    t = max(inputs["z_video"].shape[1], inputs["z_audio"].shape[1])
    if (
        t > MAX_T_TRITON
    ):  # the kernels' own check (kernels.fusion_head.choose_config), without importing triton
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
            available=_backends.cuda_ext_available("fusion_head"),
            run=_fused_runner("native"),
            about="affectrt._C_cuda: 3 launches (pool, 4 GEMVs, gate + output GEMV), folded gate",
        ),
        _backends.Backend(
            "triton",
            _backends.triton_devices(),
            _ALL_DTYPES,
            has_backward=True,
            available=_backends.triton_reason,
            run=_fused_runner("triton"),
            supports=_triton_limits,
            about="Triton, 2 launches; backward = torch GEMMs + attn_pool Triton kernels",
        ),
        _backends.Backend(
            "cpu",
            ("cpu",),
            _NATIVE_DTYPES,
            has_backward=False,
            available=_backends.cpu_ext_available("fusion_head"),
            run=_fused_runner("native"),
            about="affectrt._C: one OpenMP region, each weight read once, folded gate",
        ),
        _backends.Backend(
            "eager",
            ("cpu", "cuda"),
            _ALL_DTYPES,
            has_backward=True,
            available=_backends.always,
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
    return _backends.dispatch(
        OP,
        inputs,
        backend,
        needs_grad,
        lambda b: b.run(z_video, z_audio, weights, folded_gate, out, rows, needs_grad),
    )


class FusedFusionHead(torch.nn.Module):
    """The op's ``nn.Module``: the 18 parameters of :class:`FusionHeadWeights` (same names) + :func:`fusion_head`.

    forward(z_video [B,Tv,dv], z_audio [B,Ta,da], out=None, rows=None) -> [B,3,D] (multi, audio, video), or
    ``out`` with its rows written. The folded gate is computed per call when no gradient is needed (one
    2×dm×2dm matmul); :class:`affectrt.models.fusion.FusionHead`, which keeps the release's module names,
    caches it.
    """

    def __init__(self, dv: int, da: int, dm: int, D: int, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        shapes = {
            "video_att_w": (1, dv), "video_att_b": (1,), "video_proj_w": (D, dv), "video_proj_b": (D,),
            "audio_att_w": (1, da), "audio_att_b": (1,), "audio_proj_w": (D, da), "audio_proj_b": (D,),
            "multi_video_w": (dm, dv), "multi_video_b": (dm,), "multi_audio_w": (dm, da), "multi_audio_b": (dm,),
            "gate_w1": (dm, 2 * dm), "gate_b1": (dm,), "gate_w2": (2, dm), "gate_b2": (2,),
            "multi_proj_w": (D, dm), "multi_proj_b": (D,),
        }  # fmt: skip
        for name in FusionHeadWeights._fields:
            shape = shapes[name]
            fan_in = shape[-1] if len(shape) == 2 else 1
            bound = fan_in**-0.5  # nn.Linear's default range
            t = torch.empty(shape, device=device, dtype=dtype).uniform_(-bound, bound)
            self.register_parameter(name, torch.nn.Parameter(t))
        self.backend = backend

    def weights(self) -> FusionHeadWeights:
        return FusionHeadWeights(*(getattr(self, n) for n in FusionHeadWeights._fields))

    def forward(
        self, z_video: Tensor, z_audio: Tensor, out: Tensor | None = None, rows: Tensor | None = None
    ) -> Tensor:
        return fusion_head(z_video, z_audio, self.weights(), backend=self.backend, out=out, rows=rows)
