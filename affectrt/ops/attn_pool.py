"""Attention-pooling token compression (MODEL_SPEC §1.4): the per-modality "attention" fusion.

Given features Z [B, T, D], a score vector w [D] and a bias b [1]:

    s_t   = Z[:, t, :] · w + b            (B, T)   -- raw linear scores: no softmax
    out   = Σ_t s_t · Z[:, t, :]          (B, D)

The release computes exactly this (``video_attention_mlp`` / ``audio_attention_mlp`` = ``nn.Linear(D, 1)``
followed by a weighted sum); the output scale grows with T.

Backends (DESIGN §3), in "auto" order:

- ``cuda``: ``affectrt._C_cuda`` (csrc/attn_pool_cuda.cu), one block per batch row; forward only.
- ``triton``: ``affectrt.kernels.attn_pool`` forward and backward kernels through an ``autograd.Function``;
  CUDA devices, and CPU tensors under ``TRITON_INTERPRET=1`` (how the tests run it). What "auto" uses on
  a GPU when a gradient is required.
- ``cpu``: ``affectrt._C`` (csrc/attn_pool_cpu.cpp), OpenMP over batch rows; forward only.
- ``eager``: :func:`attn_pool_ref`, differentiable; what "auto" uses when a gradient is required.

The native kernels read any strides, accumulate in float32 for float32/float16/bfloat16 inputs and
return a contiguous [B, D] tensor of z's dtype. They run through the ``affectrt::attn_pool_native``
torch.library op so ``torch.compile`` / ``torch.export`` trace through them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from affectrt.ops import _backends
from affectrt.ops._ext import DTYPE_CODES, cpu_ext, cuda_ext

OP = "attn_pool"


# The shared availability checks and the selection rule live in _backends; re-exported for older imports.
triton_interpreted = _backends.triton_interpreted
triton_devices = _backends.triton_devices
triton_reason = _backends.triton_reason
select_backend = _backends.select

_NATIVE_DTYPES = tuple(DTYPE_CODES)
_CUDA_MAX_T = 12288  # scores live in 48 KiB of shared memory


def attn_pool_ref(z: Tensor, weight: Tensor, bias: Tensor, upcast: bool = False) -> Tensor:
    """The definition in plain PyTorch. ``upcast=True`` computes in float64.

    Shapes: z [B, T, D], weight [D] or [1, D], bias [1] -> [B, D].
    """
    out_dtype = z.dtype
    if upcast:
        z, weight, bias = z.double(), weight.double(), bias.double()
    scores = torch.nn.functional.linear(z, weight.reshape(1, -1), bias.reshape(1))  # [B, T, 1]
    out = (scores * z).sum(dim=1)
    return out.to(out_dtype) if upcast else out


def _check_inputs(z: Tensor, weight: Tensor, bias: Tensor) -> None:
    for name, t in (("z", z), ("weight", weight), ("bias", bias)):
        if not isinstance(t, Tensor):
            raise TypeError(f"attn_pool: {name} must be a torch.Tensor, got {type(t).__name__}")
    if z.dim() != 3:
        raise ValueError(f"attn_pool: z must be 3-D [B, T, D], got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"attn_pool: z must be a floating-point tensor, got {z.dtype}")
    D = z.shape[2]
    if tuple(weight.shape) not in ((D,), (1, D)):
        raise ValueError(
            f"attn_pool: weight must be [D] or [1, D] with D = z.shape[2] = {D}, "
            f"got shape {tuple(weight.shape)}"
        )
    if bias.numel() != 1:
        raise ValueError(f"attn_pool: bias must hold exactly one element, got shape {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t.device != z.device:
            raise ValueError(
                f"attn_pool: {name} is on {t.device} but z is on {z.device}; move them to one device"
            )
        if t.dtype != z.dtype:
            raise TypeError(
                f"attn_pool: {name} has dtype {t.dtype} but z has {z.dtype}; cast it with .to({z.dtype})"
            )


# --------------------------------------------------------------------------------------- native kernels


def _launch(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    B, T, D = z.shape
    out = torch.empty((B, D), dtype=z.dtype, device=z.device)
    if out.numel() == 0:
        return out
    if T == 0:  # an empty sum
        return out.zero_()
    args = (
        z.data_ptr(),
        weight.data_ptr(),
        bias.data_ptr(),
        out.data_ptr(),
        B,
        T,
        D,
        *z.stride(),
        weight.stride(-1),
        DTYPE_CODES[z.dtype],
    )
    if z.device.type == "cuda":
        with torch.cuda.device(z.device):
            cuda_ext().attn_pool(*args, torch.cuda.current_stream().cuda_stream)
    else:
        cpu_ext().attn_pool(*args)
    return out


@torch.library.custom_op("affectrt::attn_pool_native", mutates_args=())
def _attn_pool_native(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The C++/CUDA kernel for z's device, as a torch op (forward only)."""
    return _launch(z, weight, bias)


@_attn_pool_native.register_fake
def _(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return z.new_empty((z.shape[0], z.shape[2]))


def _native(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return _attn_pool_native(z, weight, bias)


def _cuda_limits(inputs: _backends.Inputs) -> list[str]:
    z = inputs["z"]
    reasons = []
    if z.shape[1] > _CUDA_MAX_T:
        reasons.append(f"z has T={z.shape[1]} tokens; the CUDA kernel keeps at most {_CUDA_MAX_T} scores")
    if z.shape[0] > 2**31 - 1:
        reasons.append(f"z has B={z.shape[0]} rows; the CUDA grid takes at most 2^31-1")
    return reasons


# ------------------------------------------------------------------------------------------------ triton


@torch.library.custom_op("affectrt::attn_pool_triton", mutates_args=())
def _attn_pool_triton(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The Triton forward kernel as a torch op: [B, D] in z's dtype."""
    from affectrt.kernels.attn_pool import attn_pool_forward

    return attn_pool_forward(z, weight, bias)


@_attn_pool_triton.register_fake
def _(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return z.new_empty((z.shape[0], z.shape[2]))


@torch.library.custom_op("affectrt::attn_pool_triton_bwd", mutates_args=())
def _attn_pool_triton_bwd(
    grad_out: Tensor, z: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The Triton backward kernel as a torch op: (dz [B,T,D], dweight like weight, dbias [1])."""
    from affectrt.kernels.attn_pool import attn_pool_backward

    return attn_pool_backward(grad_out, z, weight, bias)


@_attn_pool_triton_bwd.register_fake
def _(grad_out: Tensor, z: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return z.new_empty(z.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape)


class _AttnPoolTriton(torch.autograd.Function):
    """The Triton torch ops forward and backward; saves z, weight, bias only when a gradient is needed."""

    @staticmethod
    def forward(ctx, z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(z, weight, bias)
        return torch.ops.affectrt.attn_pool_triton(z, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        z, weight, bias = ctx.saved_tensors
        dz, dw, db = torch.ops.affectrt.attn_pool_triton_bwd(grad_out, z, weight, bias)
        need = ctx.needs_input_grad
        return (dz if need[0] else None, dw if need[1] else None, db if need[2] else None)


def _triton(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return _AttnPoolTriton.apply(z, weight, bias)


_backends.register(
    OP,
    [
        _backends.Backend(
            "cuda",
            ("cuda",),
            _NATIVE_DTYPES,
            has_backward=False,
            available=_backends.cuda_ext_available("attn_pool"),
            run=_native,
            supports=_cuda_limits,
            about="affectrt._C_cuda, one block per row",
        ),
        _backends.Backend(
            "triton",
            triton_devices(),
            (torch.float16, torch.bfloat16, torch.float32, torch.float64),
            has_backward=True,
            available=triton_reason,
            run=_triton,
            about="Triton forward + backward (kernels/attn_pool.py); CPU only under TRITON_INTERPRET=1",
        ),
        _backends.Backend(
            "cpu",
            ("cpu",),
            _NATIVE_DTYPES,
            has_backward=False,
            available=_backends.cpu_ext_available("attn_pool"),
            run=_native,
            about="affectrt._C, OpenMP over rows",
        ),
        _backends.Backend(
            "eager",
            ("cpu", "cuda"),
            (torch.float16, torch.bfloat16, torch.float32, torch.float64),
            has_backward=True,
            available=_backends.always,
            run=attn_pool_ref,
            about="plain PyTorch reference, differentiable",
        ),
    ],
)


def attn_pool(z: Tensor, weight: Tensor, bias: Tensor, backend: str = "auto") -> Tensor:
    """Attention pooling Σ_t (Z_t·w + b) Z_t; see the module docstring. [B,T,D] -> [B,D].

    ``backend``: "auto" (default), "cuda", "triton", "cpu" or "eager". An explicit backend that cannot run the
    inputs raises :class:`affectrt.ops._backends.BackendError` saying why.
    """
    _check_inputs(z, weight, bias)
    inputs = {"z": z, "weight": weight, "bias": bias}
    needs_grad = _backends.needs_grad(z, weight, bias)
    return _backends.dispatch(OP, inputs, backend, needs_grad, lambda b: b.run(z, weight, bias))


class AttnPool(nn.Module):
    """``nn.Linear(D, 1)``-shaped parameters (``weight`` [1, D], ``bias`` [1]) + :func:`attn_pool`.

    The parameter names match the release's ``video_attention_mlp`` / ``audio_attention_mlp``.
    """

    def __init__(self, dim: int, backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        lin = nn.Linear(dim, 1, device=device, dtype=dtype)  # same init as the release
        self.weight, self.bias = lin.weight, lin.bias
        self.backend = backend

    def forward(self, z: Tensor) -> Tensor:
        """z [B, T, D] -> [B, D]."""
        return attn_pool(z, self.weight, self.bias, self.backend)
