"""A linear layer on a few rows, streaming the weights once: the LLM's projections in a decode step (CPU).

For x [M, K] (M: one row per sequence being decoded), W [N, K] (nn.Linear's layout) and bias [N]:

    y = x Wᵀ + bias                                                   [M, N]

A decode step is bound by reading the weights: every weight element is used M times and read once. MKL's sgemm
runs these shapes well below the rate a core can read memory (``medium`` preset, batch 16, its 1.4 GB of
projections: 129.7 ms per step against 53.9 ms for ``torch.sum`` over the same bytes, and 96.5 ms for this
kernel, 2-core Xeon: ``python benchmarks/cpu_parts.py --only rows_linear``). The C++
kernel (csrc/rows_linear*.{h,cpp} on csrc/cpu_gemm.h, the fusion head's GEMV/GEMM blocks) hands each thread
a contiguous range of weight rows, read once: dot products with software prefetch for one row, from two an
outer-product micro-kernel over xᵀ (up to 16 rows, a [12 weight rows × 16] tile in AVX-512 registers).

bfloat16 and float16 (x, weight, bias and y all of the one dtype): products are summed in float32 and y is
rounded once, as torch's CPU linear does for these dtypes (in another order of the sums), reading half the bytes
of float32. One row is dotted straight from the 16-bit weights, each vector widened in registers; from two rows
each tile's weight rows are widened into a buffer the caches hold. torch's own bf16/fp16 linear reads them
below the kernel's rate on one row (2-core Xeon, the `medium` shapes' 0.69 GB, ``python benchmarks/cpu_parts.py
--only rows_linear --dtype bfloat16 --rows 1``: bf16 15.9 GB/s, fp16 12.5, the kernel 18.5, ``torch.sum``
23-28). From two rows the kernel's tile reads 16-bit weights slower than torch's AMX path (16 rows: 7.3
against 13.8 GB/s), which is why packed.py routes them here for one row only.

Backends (DESIGN §3), in "auto" order: ``cpu`` (``affectrt._C.rows_linear``: float32, bfloat16 or float16 CPU
tensors, unit column stride, forward only) and ``eager`` (:func:`rows_linear_ref`, ``F.linear``). No CUDA or
Triton layer: on a GPU the decode GEMMs are cuBLAS's in the release's fp16, at HBM bandwidth. Used by
:mod:`affectrt.models.packed` for a decode step's stacked projections (up to :data:`MAX_ROWS` rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from affectrt.ops import _backends
from affectrt.ops._cpu_only import register_cpu_and_eager
from affectrt.ops._ext import DTYPE_CODES, cpu_ext

OP = "rows_linear"

# Up to this many rows the kernel beats MKL on the `small` and `medium` decode shapes (2-core Xeon); past
# it (prefill: a whole prompt at once) MKL's blocking wins.
MAX_ROWS = 64


def rows_linear_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The definition: x [M, K] @ weight [N, K]ᵀ + bias -> [M, N]."""
    return F.linear(x, weight, bias)


def _check(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"rows_linear: x must be [M, K] and weight [N, K] with the same K, got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"rows_linear: bias must be [{weight.shape[0]}], got shape {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(
                f"rows_linear: {name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}"
            )


def _cpu_limits(inputs: _backends.Inputs) -> list[str]:
    reasons = []
    for name in ("x", "weight"):
        if inputs[name].stride(1) != 1:
            reasons.append(f"{name} has column stride {inputs[name].stride(1)} (needs 1)")
    bias = inputs.get("bias")
    if bias is not None and not bias.is_contiguous():
        reasons.append("bias is not contiguous")
    return reasons


def _run_cpu(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    m, k = x.shape
    n = weight.shape[0]
    y = torch.empty((m, n), dtype=x.dtype)
    b = 0 if bias is None else bias.data_ptr()
    cpu_ext().rows_linear(x.data_ptr(), weight.data_ptr(), b, y.data_ptr(), m, n, k, x.stride(0),
                          weight.stride(0), n, DTYPE_CODES[x.dtype])  # fmt: skip
    return y


register_cpu_and_eager(
    OP,
    "rows_linear",
    _run_cpu,
    _cpu_limits,
    rows_linear_ref,
    "affectrt._C (csrc/rows_linear_cpu.cpp): each weight row streamed once, OpenMP over rows; 16-bit "
    "weights summed in float32",
    "rows_linear_ref: F.linear",
    cpu_dtypes=tuple(DTYPE_CODES),
)


def rows_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, backend: str = "auto") -> Tensor:
    """x [M, K] @ weight [N, K]ᵀ + bias [N] -> [M, N] (module docstring)."""
    _check(x, weight, bias)
    inputs = {"x": x, "weight": weight} if bias is None else {"x": x, "weight": weight, "bias": bias}
    grad = _backends.needs_grad(*inputs.values())
    return _backends.select(OP, inputs, backend, needs_grad=grad).run(x, weight, bias)


def cpu_kernel_available() -> bool:
    """Whether ``affectrt._C.rows_linear`` is built."""
    return _backends.cpu_ext_available("rows_linear")() is None
