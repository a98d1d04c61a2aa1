"""Bias + activation epilogue of a bias-free GEMM, in place: the encoders' MLP activation on CPU.

For y [..., N] (the output of ``x @ W^T`` without its bias) and bias b [N]:

    y ← act(y + b)          act ∈ {identity, gelu (erf form), quick_gelu: x · σ(1.702x)}

``act(linear(x))`` in torch is ``addmm`` (which first broadcasts the bias into the output) and one to three
elementwise passes over the result: CLIP's quick GELU alone reads and writes its [N·257, 4d] activation three
times. The C++ kernel (csrc/bias_act*.{h,cpp}) makes that one read-modify-write pass after the GEMM, with
vectorised float32 exp/erf (csrc/vec_math.h: within 8 float32 units of float64, where torch's own GELU is
within 7.4; tests/ops/test_epilogues.py). On a 2-core Xeon CLIP's fc1 + quick GELU of the `small` preset
([2056, 256] -> 1024, 8 frames) took 3.6-3.8 against 4.5-4.8 ms; erf-GELU (HuBERT) is compute-bound in both
and gains only the bias broadcast.

Under CPU autocast the GEMM's output is bfloat16 (or float16) while the bias stays a float32 parameter: y of
that dtype with a float32 bias is computed in float32 and rounded once (y + bias promotes, as the reference
does). torch's path there, ``act(linear(x))``, took a bfloat16 addmm and up to three bfloat16 passes.

Backends (DESIGN §3), in "auto" order: ``cpu`` (``affectrt._C.bias_act``: CPU tensors, y float32, bfloat16 or
float16 with a bias of y's dtype or float32 (float32 for a 16-bit y), forward only) and ``eager``
(:func:`bias_act_ref`, differentiable). There is no CUDA or Triton layer on purpose: on a GPU
the release runs these layers under fp16 autocast, where cuBLAS and the export path (TensorRT) fuse the
epilogue themselves; this op exists for CPU inference. Models reach it through
:func:`affectrt.models.activations.linear_act`, which uses it only where nothing can observe the in-place
write (no autograd, tracing, export or compilation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from affectrt.ops import _backends
from affectrt.ops._cpu_only import matrix_rows, register_cpu_and_eager
from affectrt.ops._ext import DTYPE_CODES, cpu_ext

OP = "bias_act"

# Must match enum Activation in csrc/vec_math.h.
ACTIVATIONS: dict[str, int] = {"identity": 0, "gelu": 1, "quick_gelu": 2}


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


_REF_ACT = {"identity": lambda x: x, "gelu": F.gelu, "quick_gelu": _quick_gelu}


def bias_act_ref(y: Tensor, bias: Tensor | None, act: str, upcast: bool = False) -> Tensor:
    """The definition, out of place: act(y + bias). ``upcast=True`` computes in float64."""
    _check_act(act)
    dtype = y.dtype
    if upcast:
        y = y.double()
        bias = None if bias is None else bias.double()
    out = _REF_ACT[act](y if bias is None else y + bias)
    return out.to(dtype)


def _check_act(act: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")


def _check_inputs(y: Tensor, bias: Tensor | None, act: str) -> None:
    _check_act(act)
    if y.dim() < 1 or y.shape[-1] == 0:
        raise ValueError(f"bias_act: y must have a non-empty last dimension, got shape {tuple(y.shape)}")
    if bias is not None:
        if tuple(bias.shape) != (y.shape[-1],):
            raise ValueError(
                f"bias_act: bias must be [{y.shape[-1]}] (y's last dimension), got shape {tuple(bias.shape)}"
            )
        widened = bias.dtype == torch.float32 and y.dtype in (torch.bfloat16, torch.float16)
        if bias.device != y.device or (bias.dtype != y.dtype and not widened):
            raise ValueError(
                f"bias_act: bias is {bias.dtype} on {bias.device} but y is {y.dtype} on {y.device}; give a bias "
                "of y's dtype (or float32 for a bfloat16 / float16 y) on y's device"
            )


def _cpu_limits(inputs: _backends.Inputs) -> list[str]:
    y, bias = inputs["y"], inputs.get("bias")
    reasons = []
    if matrix_rows(y) is None:
        reasons.append("y is neither contiguous nor a matrix with unit column stride (make it contiguous)")
    if bias is not None and not bias.is_contiguous():
        reasons.append("bias is not contiguous")
    if bias is not None and bias.dtype != torch.float32:
        reasons.append(f"bias is {bias.dtype} (the kernel reads a float32 bias)")
    return reasons


def _run_cpu(y: Tensor, act: str, bias: Tensor | None = None) -> Tensor:
    rows, stride = matrix_rows(y)
    if rows:
        b = 0 if bias is None else bias.data_ptr()
        cpu_ext().bias_act(y.data_ptr(), b, rows, y.shape[-1], stride, ACTIVATIONS[act], DTYPE_CODES[y.dtype])
    return y


def _run_eager(y: Tensor, act: str, bias: Tensor | None = None) -> Tensor:
    return y.copy_(bias_act_ref(y.clone(), bias, act))  # a clone: autograd keeps the input it saw


register_cpu_and_eager(
    OP,
    "bias_act",
    _run_cpu,
    _cpu_limits,
    _run_eager,
    "affectrt._C (csrc/bias_act_cpu.cpp): one vectorised pass per row, OpenMP over rows",
    "bias_act_ref: torch's add and activation ops",
    cpu_dtypes=(torch.float32, torch.bfloat16, torch.float16),
)


def bias_act_(y: Tensor, bias: Tensor | None, act: str, backend: str = "auto") -> Tensor:
    """y ← act(y + bias) in place; returns y. Shapes: y [..., N], bias [N] or None."""
    _check_inputs(y, bias, act)
    inputs = {"y": y} if bias is None else {"y": y, "bias": bias}
    grad = _backends.needs_grad(y, *([] if bias is None else [bias]))
    chosen = _backends.select(OP, inputs, backend, needs_grad=grad)
    return chosen.run(y, act, bias=bias)


def cpu_kernel_fits(x: Tensor, weight: Tensor) -> bool:
    """Whether ``act(x @ weight^T + b)`` (b: a float32 parameter) would run its epilogue in the C++ kernel: on
    the CPU with the extension built, float32 x and weight, or under CPU autocast to bfloat16 / float16 (the
    GEMM's output dtype, which the kernel takes with the float32 bias)."""
    if x.device.type != "cpu" or weight.dtype != torch.float32 or _backends.cpu_ext_available("bias_act")():
        return False
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)
    return x.dtype == torch.float32
