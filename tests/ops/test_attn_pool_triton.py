"""attn_pool's Triton backend (forward + backward) against the float64 reference, under TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest
import torch

from affectrt.ops._backends import BackendError
from affectrt.ops.attn_pool import attn_pool, attn_pool_ref, triton_interpreted, triton_reason
from tests.ops._tolerance import assert_close_to_ref

pytestmark = pytest.mark.skipif(
    not triton_interpreted() or triton_reason() is not None,
    reason="Triton kernels run on CPU only under TRITON_INTERPRET=1 (set it to run these tests)",
)


def _inputs(B, T, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, D, generator=g)
    w = torch.randn(D, generator=g) / D**0.5
    b = torch.randn(1, generator=g)
    return z.to(dtype), w.to(dtype), b.to(dtype)


def _grads(fn, z, w, b, g):
    z, w, b = (t.detach().clone().requires_grad_(True) for t in (z, w, b))
    out = fn(z, w, b)
    out.backward(g.to(out.dtype))
    return out.detach(), z.grad, w.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 7, 13), (3, 8, 40), (2, 33, 300)])
def test_forward_and_grads_match_float64(shape, dtype):
    z, w, b = _inputs(*shape, dtype)
    g = torch.randn(shape[0], shape[2], generator=torch.Generator().manual_seed(3)).to(dtype)
    ref = _grads(attn_pool_ref, z.double(), w.double(), b.double(), g.double())
    plain = _grads(attn_pool_ref, z, w, b, g)
    ours = _grads(lambda *a: attn_pool(*a, backend="triton"), z, w, b, g)
    for i, name in enumerate(("out", "dz", "dw", "db")):
        assert ours[i].dtype == dtype
        assert_close_to_ref(f"{name} {shape}", ours[i], ref[i], plain[i], dtype, grad=i > 0)


def test_gradcheck_float64():
    z, w, b = (t.requires_grad_(True) for t in _inputs(2, 3, 5, torch.float64))
    assert torch.autograd.gradcheck(lambda *a: attn_pool(*a, backend="triton"), (z, w, b))


def test_strided_inputs_and_partial_grads():
    base = torch.randn(2, 9, 14)
    z = base.transpose(1, 2)[:, ::2]  # [2, 7, 9], non-contiguous
    w = torch.randn(1, 18)[:, ::2].requires_grad_(True)  # only w needs a gradient
    b = torch.randn(1)
    out = attn_pool(z, w, b, backend="triton")
    out.sum().backward()
    w2 = w.detach().clone().requires_grad_(True)
    attn_pool_ref(z, w2, b).sum().backward()
    torch.testing.assert_close(out, attn_pool_ref(z, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-5, atol=1e-5)


def test_auto_on_cpu_never_picks_the_interpreter():
    z, w, b = _inputs(2, 4, 8, torch.float32)
    z.requires_grad_(True)
    out = attn_pool(z, w, b)  # eager: "auto" keeps to the C++ kernel and the reference on CPU
    assert out.grad_fn is not None and "AttnPoolTriton" not in type(out.grad_fn).__name__
    with pytest.raises(BackendError, match="unknown backend"):
        attn_pool(z, w, b, backend="trition")
