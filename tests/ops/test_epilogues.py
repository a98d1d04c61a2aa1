"""The CPU encoder epilogues (bias_act, ln_gelu, conv0_ln_gelu): the C++ kernels against float64, the
vectorised exp/erf over their whole useful range, backend selection and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from affectrt.ops._backends import BackendError
from affectrt.ops._ext import cpu_ext, cpu_ext_reason
from affectrt.ops.bias_act import bias_act_, bias_act_ref
from affectrt.ops.feat_conv import conv0_ln_gelu, conv0_ln_gelu_ref, ln_gelu_, ln_gelu_ref

needs_cpu_ext = pytest.mark.skipif(cpu_ext() is None, reason=f"affectrt._C not built: {cpu_ext_reason()}")


def _gelu64(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _quick64(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x / (1 + torch.exp(-1.702 * x))


@needs_cpu_ext
@pytest.mark.parametrize("act, ref, lim", [("gelu", _gelu64, 10.0), ("quick_gelu", _quick64, 90.0)])
def test_activations_are_accurate_over_their_range(act, ref, lim):
    # Every 2^-10 step from -lim to lim (past where exp over/underflows for quick GELU), plus extremes.
    x = torch.cat([torch.arange(-lim, lim, 2.0**-10), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4])])
    got = bias_act_(x.clone()[None], None, act, backend="cpu")[0].double()
    want = ref(x)
    err = (got - want).abs()
    # A few float32 ulps of the result, or of min(|x|, 1) where the result is tiny: in GELU's left tail
    # 1 + erf cancels in float32 (torch's F.gelu errs by up to 7.4 such units there, this kernel by 6.1).
    tol = 8 * 2.0**-23 * torch.maximum(want.abs(), x.double().abs().clamp(max=1.0))
    assert bool((err <= tol + 1e-30).all()), f"worst {act} error {err.max():.3g} at x={x[err.argmax()]:.6g}"
    # ... and as close to torch's float32 ops as those are to float64.
    torch_err = (bias_act_ref(x, None, act).double() - want).abs().max()
    assert err.max() <= 4 * torch_err + 1e-12


@needs_cpu_ext
def test_nan_propagates():
    for act in ("gelu", "quick_gelu"):
        y = bias_act_(torch.tensor([[float("nan"), 1.0]]), None, act, backend="cpu")
        assert math.isnan(y[0, 0]) and not math.isnan(y[0, 1])


@needs_cpu_ext
@pytest.mark.parametrize("act", ["identity", "gelu", "quick_gelu"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_bias_act_matches_the_reference(act, with_bias):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 17, 70, generator=g) * 4  # 70 columns: a vector remainder on every width
    b = torch.randn(70, generator=g) if with_bias else None
    want = bias_act_ref(y, b, act, upcast=True)
    out = y.clone()
    got = bias_act_(out, b, act)
    assert got.data_ptr() == out.data_ptr()  # in place
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-6)


@needs_cpu_ext
def test_bias_act_on_a_strided_matrix_leaves_the_gaps_alone():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(9, 48, generator=g)
    y, b = base[:, :40], torch.randn(40, generator=g)  # row stride 48, 40 columns
    want_rows, want_gap = bias_act_ref(y, b, "quick_gelu", upcast=True), base[:, 40:].clone()
    bias_act_(y, b, "quick_gelu", backend="cpu")
    torch.testing.assert_close(base[:, :40], want_rows, atol=2e-6, rtol=1e-6)
    assert torch.equal(base[:, 40:], want_gap)


def test_bias_act_selection_and_checks():
    y = torch.randn(4, 8, dtype=torch.float64)
    bias_act_(y, None, "gelu")  # float64: auto falls back to the reference
    with pytest.raises(BackendError, match="float64"):
        bias_act_(y, None, "gelu", backend="cpu")
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        bias_act_(y, None, "relu")
    with pytest.raises(ValueError, match=r"bias must be \[8\]"):
        bias_act_(y, torch.zeros(7, dtype=torch.float64), "gelu")
    x = torch.randn(4, 8, requires_grad=True)
    with pytest.raises(BackendError, match="gradient"):
        bias_act_(x * 1, None, "gelu", backend="cpu")
    out = bias_act_(x * 1, None, "gelu")  # auto: the differentiable reference
    out.sum().backward()
    assert x.grad is not None


@needs_cpu_ext
@pytest.mark.parametrize("C", [128, 100, 3])
def test_ln_gelu_matches_the_reference(C):
    g = torch.Generator().manual_seed(C)
    y = torch.randn(5, 37, C, generator=g) * 3 + 50  # a large mean: the variance must not cancel
    w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
    want = ln_gelu_ref(y.double(), w.double(), b.double(), 1e-5)
    got = ln_gelu_(y.clone(), w, b, 1e-5, backend="cpu")
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)
    # eps is the one given
    tiny = torch.full((2, C), 3.0)
    tiny[:, 0] += 1e-3
    torch.testing.assert_close(
        ln_gelu_(tiny.clone(), w, b, 1e-2, backend="cpu"), ln_gelu_ref(tiny, w, b, 1e-2), atol=1e-5, rtol=1e-5
    )


@needs_cpu_ext
def test_ln_gelu_on_a_strided_matrix():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 40, generator=g)
    w, b = torch.randn(32, generator=g), torch.randn(32, generator=g)
    want, gap = ln_gelu_ref(base[:, :32].double(), w.double(), b.double(), 1e-5), base[:, 32:].clone()
    ln_gelu_(base[:, :32], w, b, 1e-5, backend="cpu")
    torch.testing.assert_close(base[:, :32], want.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(base[:, 32:], gap)


@needs_cpu_ext
@pytest.mark.parametrize(
    "S, K, stride, C, bias, strided",
    [
        (3203, 10, 5, 128, False, False),
        (401, 3, 2, 36, True, False),
        (61, 10, 5, 16, False, True),
        (10, 10, 5, 16, False, False),
    ],
    ids=["release-layer0", "bias-odd", "strided-x", "one-frame"],
)
def test_conv0_matches_the_reference(S, K, stride, C, bias, strided):
    g = torch.Generator().manual_seed(S)
    x = torch.randn(3, 2 * S if strided else S, generator=g)
    x = x[:, ::2] if strided else x
    w = torch.randn(C, 1, K, generator=g) * 0.3
    cb = torch.randn(C, generator=g) if bias else None
    lw, lb = torch.randn(C, generator=g), torch.randn(C, generator=g)
    want = conv0_ln_gelu_ref(x.double(), w.double(), None if cb is None else cb.double(), lw.double(),
                             lb.double(), stride, 1e-5)  # fmt: skip
    got = conv0_ln_gelu(x, w, cb, lw, lb, stride, 1e-5, backend="cpu")
    assert got.shape == (3, (S - K) // stride + 1, C) == want.shape
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)


def test_conv0_checks():
    x, w, n = torch.randn(2, 100), torch.randn(8, 1, 10), torch.ones(8)
    with pytest.raises(ValueError, match="one input channel"):
        conv0_ln_gelu(x, torch.randn(8, 2, 10), None, n, n, 5, 1e-5)
    with pytest.raises(ValueError, match="at least 10 samples"):
        conv0_ln_gelu(x[:, :9], w, None, n, n, 5, 1e-5)
    with pytest.raises(ValueError, match=r"weight must be \[8\]"):
        conv0_ln_gelu(x, w, None, torch.ones(7), n, 5, 1e-5)
    got = conv0_ln_gelu(x.double(), w.double(), None, n.double(), n.double(), 5, 1e-5)  # eager
    want = F.gelu(F.layer_norm(F.conv1d(x.double()[:, None], w.double(), stride=5).transpose(1, 2), (8,)) + 1)
    torch.testing.assert_close(got, want)


# Under CPU autocast a GEMM's or conv's output is bfloat16 (or float16) while the bias and LayerNorm parameters
# stay float32: the kernels compute such rows in float32 and round once.
HALF = [torch.bfloat16, torch.float16]


def _within_half_ulp(got: torch.Tensor, want64: torch.Tensor) -> None:
    """got (16-bit) is want64 rounded to got's dtype, give or take the one ulp a float32 computation near a
    rounding boundary may move it."""
    eps = torch.finfo(got.dtype).eps
    torch.testing.assert_close(got.double(), want64, rtol=eps, atol=eps * 1e-3 * want64.abs().max().item())


@needs_cpu_ext
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_bias_act_on_16_bit_rows_with_a_float32_bias(dtype, act):
    g = torch.Generator().manual_seed(4)
    y = (torch.randn(3, 17, 70, generator=g) * 3).to(dtype)
    b = torch.randn(70, generator=g)
    want = bias_act_ref(y.double(), b.double(), act)  # the exact value of the 16-bit inputs' computation
    got = bias_act_(y.clone(), b, act, backend="cpu")
    assert got.dtype == dtype
    _within_half_ulp(got, want)
    assert torch.equal(bias_act_(y.clone(), b, act), got)  # auto picks the kernel
    ref = bias_act_ref(y, b, act)  # the eager backend: float32 (y + b promotes), rounded once
    _within_half_ulp(ref, want)
    with pytest.raises(BackendError, match="float32 bias"):  # a 16-bit bias: the reference only
        bias_act_(y.clone(), b.to(dtype), act, backend="cpu")
    with pytest.raises(ValueError, match="float32 for a bfloat16 / float16 y"):
        bias_act_(y.float(), b.to(dtype), act)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_ln_gelu_on_16_bit_rows_with_float32_parameters(dtype):
    g = torch.Generator().manual_seed(5)
    y = (torch.randn(5, 37, 100, generator=g) * 3 + 20).to(dtype)
    w, b = torch.randn(100, generator=g), torch.randn(100, generator=g)
    want = ln_gelu_ref(y.double(), w.double(), b.double(), 1e-5)
    got = ln_gelu_(y.clone(), w, b, 1e-5, backend="cpu")
    assert got.dtype == dtype
    _within_half_ulp(got, want)
    _within_half_ulp(ln_gelu_ref(y, w, b, 1e-5), want)  # the eager backend computes in float32 too
    with pytest.raises(BackendError, match="not float32"):
        ln_gelu_(y.clone(), w.to(dtype), b.to(dtype), 1e-5, backend="cpu")


@needs_cpu_ext
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_conv0_rounds_its_float32_result_to_out_dtype(dtype):
    g = torch.Generator().manual_seed(6)
    x, w = torch.randn(3, 801, generator=g), torch.randn(36, 1, 10, generator=g) * 0.3
    lw, lb = torch.randn(36, generator=g), torch.randn(36, generator=g)
    full = conv0_ln_gelu(x, w, None, lw, lb, 5, 1e-5, backend="cpu")
    got = conv0_ln_gelu(x, w, None, lw, lb, 5, 1e-5, backend="cpu", out_dtype=dtype)
    assert got.dtype == dtype and torch.equal(got, full.to(dtype))  # the same rows, rounded to nearest even
    eager = conv0_ln_gelu(x, w, None, lw, lb, 5, 1e-5, backend="eager", out_dtype=dtype)
    assert eager.dtype == dtype
    torch.testing.assert_close(eager.float(), got.float(), rtol=torch.finfo(dtype).eps, atol=1e-3)
    with pytest.raises(ValueError, match="out_dtype"):
        conv0_ln_gelu(x, w, None, lw, lb, 5, 1e-5, out_dtype=torch.float64)
