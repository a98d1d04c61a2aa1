"""attn_pool: the C++ CPU kernel against the float64 reference, backend selection and input checks."""

from __future__ import annotations

import pytest
import torch

from affectrt.ops._backends import BackendError, backends, select
from affectrt.ops._ext import cpu_ext, cpu_ext_reason
from affectrt.ops.attn_pool import AttnPool, attn_pool, attn_pool_ref, select_backend
from tests.ops._tolerance import assert_close_to_ref

needs_cpu_ext = pytest.mark.skipif(cpu_ext() is None, reason=f"affectrt._C not built: {cpu_ext_reason()}")


def _inputs(B, T, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, D, generator=g)
    w = torch.randn(D, generator=g) / D**0.5
    b = torch.randn(1, generator=g)
    return z.to(dtype), w.to(dtype), b.to(dtype)


def _assert_close_to_ref(out, z, w, b):
    ref = attn_pool_ref(z.double(), w.double(), b.double())  # float64 math on the inputs as given
    assert out.dtype == z.dtype and out.shape == (z.shape[0], z.shape[2])
    assert_close_to_ref(f"attn_pool {tuple(z.shape)}", out, ref, attn_pool_ref(z, w, b), z.dtype)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 5), (3, 7, 13), (1, 8, 768), (3, 33, 101), (2, 8, 1)])
def test_cpu_kernel_matches_float64_reference(shape, dtype):
    z, w, b = _inputs(*shape, dtype)
    _assert_close_to_ref(attn_pool(z, w, b, backend="cpu"), z, w, b)


@needs_cpu_ext
def test_cpu_kernel_reads_strides():
    B, T, D = 3, 7, 29
    base = torch.randn(B, D, 2 * T)
    z = base.transpose(1, 2)[:, ::2]  # [B, T, D], strides (2TD, 2, 2T)
    w = torch.randn(1, 2 * D)[:, ::2]  # [1, D], stride 2
    b = torch.randn(4)[2:3]  # storage offset
    assert not z.is_contiguous() and w.stride(-1) == 2
    _assert_close_to_ref(attn_pool(z, w, b, backend="cpu"), z, w, b)
    zb = torch.randn(1, T, D).expand(B, T, D)  # zero batch stride
    _assert_close_to_ref(attn_pool(zb, w, b, backend="cpu"), zb, w, b)


@needs_cpu_ext
@pytest.mark.parametrize("shape", [(0, 8, 16), (2, 0, 16), (2, 8, 0)])
def test_cpu_kernel_empty(shape):
    z, w, b = _inputs(*shape, torch.float32)
    torch.testing.assert_close(attn_pool(z, w, b, backend="cpu"), attn_pool_ref(z, w, b))


@needs_cpu_ext
def test_fake_tensor_registration():
    z, w, b = _inputs(2, 8, 16, torch.float32)
    torch.library.opcheck(
        torch.ops.affectrt.attn_pool_native.default, (z, w, b), test_utils=("test_schema", "test_faketensor")
    )


def test_auto_selection():
    z, w, b = _inputs(2, 8, 16, torch.float32)
    inputs = {"z": z, "weight": w, "bias": b}
    expected = "cpu" if cpu_ext() is not None else "eager"
    # select_backend: "auto" never picks the Triton interpreter for CPU tensors.
    assert select_backend("attn_pool", inputs, "auto", needs_grad=False).name == expected
    assert select_backend("attn_pool", inputs, "auto", needs_grad=True).name == "eager"
    z64 = {"z": z.double(), "weight": w.double(), "bias": b.double()}
    assert select_backend("attn_pool", z64, "auto", needs_grad=False).name == "eager"
    assert select("attn_pool", inputs, "eager").name == "eager"
    assert [x.name for x in backends("attn_pool")] == ["cuda", "triton", "cpu", "eager"]


def test_auto_with_gradients_uses_eager():
    z, w, b = _inputs(2, 5, 12, torch.float32)
    z.requires_grad_(True)
    w.requires_grad_(True)
    inputs = {"z": z, "weight": w, "bias": b}
    assert (
        select("attn_pool", inputs, "auto", needs_grad=True).name == "eager"
    )  # the CPU kernel: forward only
    out = attn_pool(z, w, b)
    out.square().sum().backward()
    # expected, written out here rather than taken from attn_pool_ref: y = Σ_t (z_t·w + b) z_t, and for
    # L = Σ y², dL/dz_t = s_t·g + (z_t·g) w and dL/dw = Σ_t (z_t·g) z_t, with g = 2y and s_t = z_t·w + b
    zd, wd, bd = z.detach().double(), w.detach().double().reshape(-1), b.double()
    s_t = zd @ wd + bd
    y = (s_t[..., None] * zd).sum(1)
    g = 2 * y
    zg = torch.einsum("btd,bd->bt", zd, g)
    torch.testing.assert_close(out.double(), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        z.grad.double(), s_t[..., None] * g[:, None] + zg[..., None] * wd, rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        w.grad.double().reshape(-1), (zg[..., None] * zd).sum((0, 1)), rtol=1e-4, atol=1e-5
    )
    with torch.no_grad():  # no graph needed: the native kernel may run
        torch.testing.assert_close(attn_pool(z, w, b).double(), y, rtol=1e-5, atol=1e-5)


def test_explicit_backend_errors():
    z, w, b = _inputs(2, 8, 16, torch.float32)
    with pytest.raises(BackendError, match="runs on cuda"):
        attn_pool(z, w, b, backend="cuda")
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        attn_pool(z, w, b, backend="nope")
    with pytest.raises(BackendError, match="dtype float64"):
        attn_pool(z.double(), w.double(), b.double(), backend="cpu")
    with pytest.raises(BackendError, match="forward only"):
        attn_pool(z.requires_grad_(True), w, b, backend="cpu")


def test_input_checks_name_the_argument():
    z, w, b = _inputs(2, 8, 16, torch.float32)
    with pytest.raises(ValueError, match="z must be 3-D"):
        attn_pool(z[0], w, b)
    with pytest.raises(ValueError, match="weight must be"):
        attn_pool(z, w[:-1], b)
    with pytest.raises(ValueError, match="bias must hold exactly one"):
        attn_pool(z, w, torch.zeros(2))
    with pytest.raises(TypeError, match="weight has dtype"):
        attn_pool(z, w.half(), b)
    with pytest.raises(TypeError, match="z must be a floating-point"):
        attn_pool(z.long(), w, b)


def test_module_matches_linear_layout():
    torch.manual_seed(0)
    m = AttnPool(24)
    assert set(m.state_dict()) == {"weight", "bias"} and m.weight.shape == (1, 24)
    z = torch.randn(3, 8, 24)
    with torch.no_grad():
        torch.testing.assert_close(m(z), attn_pool_ref(z, m.weight, m.bias), rtol=1e-5, atol=1e-5)
