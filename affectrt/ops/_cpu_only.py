"""What the CPU-only kernels (bias_act, ln_gelu / conv0_ln_gelu, rows_linear) share: their backend pair and
the row view of a tensor they take.

Each such op declares two backends (DESIGN §3): ``cpu`` (the ``affectrt._C`` function, CPU tensors of its
dtypes, float32 unless it says otherwise, forward only) and ``eager`` (its plain-PyTorch reference, any float
dtype, differentiable).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from affectrt.ops import _backends

_EAGER_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def register_cpu_and_eager(
    op: str,
    function: str,
    run_cpu: Callable,
    limits: Callable[[_backends.Inputs], list[str]],
    run_eager: Callable,
    about_cpu: str,
    about_eager: str,
    cpu_dtypes: tuple[torch.dtype, ...] = (torch.float32,),
) -> None:
    """Declare ``op``'s ``cpu`` backend (``affectrt._C.<function>``, ``cpu_dtypes``) and its ``eager`` reference."""
    _backends.register(
        op,
        [
            _backends.Backend(
                name="cpu",
                devices=("cpu",),
                dtypes=cpu_dtypes,
                has_backward=False,
                available=_backends.cpu_ext_available(function),
                run=run_cpu,
                supports=limits,
                about=about_cpu,
            ),
            _backends.Backend(
                name="eager",
                devices=("cpu", "cuda"),
                dtypes=_EAGER_DTYPES,
                has_backward=True,
                available=_backends.always,
                run=run_eager,
                about=about_eager,
            ),
        ],
    )


def matrix_rows(y: Tensor) -> tuple[int, int] | None:
    """(rows, row stride) of y [..., C] seen as rows of C with unit column stride, or None when it is not:
    any contiguous tensor, or a 2-D one with unit column stride."""
    if y.is_contiguous():
        return y.numel() // y.shape[-1], y.shape[-1]
    if y.dim() == 2 and y.stride(1) == 1:
        return y.shape[0], y.stride(0)
    return None
