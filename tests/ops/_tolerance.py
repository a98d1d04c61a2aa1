"""The one tolerance rule of the kernel tests (DESIGN §6, after flash-attention's).

A fused kernel's error against the float64 reference may be at most ``factor`` times the error of the plain
PyTorch op in the same dtype (2 for outputs, 3 for gradients), plus a floor relative to the largest reference
magnitude (at least 1):

    max |got − ref|  ≤  factor · max |plain − ref|  +  floor(dtype) · max(max |ref|, 1)

The floors, and why: the kernels accumulate in float32 but in another order than PyTorch, and round their
result (and, in half precision, their dot operands) once more.

- float32 1e-5: reordered float32 sums of up to a few thousand terms differ by ≈ √K · 2⁻²⁴ ≈ 4e-6 relative.
- float16 2e-3: two units in the last place of fp16 (2⁻¹⁰ ≈ 9.8e-4): the output's rounding plus one operand's.
- bfloat16 1.6e-2: two units in the last place of bf16 (2⁻⁷ ≈ 7.8e-3), for the same reason.
- float64 1e-12: reordering alone.

Gradients get ``GRAD_FLOOR`` times the floor: they pass through two low-precision products (dS is rounded to
the input dtype before it multiplies x or q̃), so their rounding compounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}
GRAD_FLOOR = 5


def bound(ref: Tensor, plain: Tensor | None, dtype: torch.dtype, grad: bool = False) -> float:
    """The largest allowed max-abs error of a kernel in ``dtype`` against ``ref`` (float64)."""
    torch_err = 0.0 if plain is None else (plain.double() - ref).abs().max().item() if ref.numel() else 0.0
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1.0)
    factor, floor = (3.0, GRAD_FLOOR * FLOOR[dtype]) if grad else (2.0, FLOOR[dtype])
    return factor * torch_err + floor * scale


def assert_close_to_ref(
    name: str, got: Tensor, ref: Tensor, plain: Tensor | None, dtype: torch.dtype, grad: bool = False
) -> None:
    """Assert the rule above; on failure name the worst element (index, value, reference) and the bound."""
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    if ref.numel() == 0:
        return
    diff = (got.double() - ref).abs()
    assert not torch.isnan(got).any(), f"{name}: NaN at {tuple(torch.nonzero(torch.isnan(got))[0].tolist())}"
    limit = bound(ref, plain, dtype, grad)
    worst = diff.max().item()
    if worst > limit:
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise AssertionError(
            f"{name} ({str(dtype).removeprefix('torch.')}): max error {worst:.3g} > bound {limit:.3g} at index "
            f"{idx}: got {got[idx].item():.6g}, float64 reference {ref[idx].item():.6g}"
        )
