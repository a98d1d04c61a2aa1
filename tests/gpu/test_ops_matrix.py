"""The GPU matrix of the fused ops: op × backend (cuda, triton, eager) × dtype × layout × shape against the
float64 reference, forward and (where the backend has one) backward, by the one tolerance rule.

Marked ``gpu``; on a machine without CUDA every case skips with the reason. ``python benchmarks/gpu_check.py``
runs it as part of the one-command GPU check.
"""

from __future__ import annotations

import pytest
import torch

from affectrt.ops._backends import backends
from affectrt.ops.attn_pool import attn_pool, attn_pool_ref
from affectrt.ops.cross_attn import cross_attn, cross_attn_ref
from affectrt.ops.fusion_head import FusionHeadWeights, fusion_head, fusion_head_ref
from tests.ops._tolerance import assert_close_to_ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BACKENDS = ["cuda", "triton", "eager"]
LAYOUTS = ["contiguous", "strided"]


def _strided(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values with the last two axes stored transposed (a non-contiguous view)."""
    if layout == "contiguous" or t.dim() < 3:
        return t
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def _rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, device="cuda", dtype=torch.float64) * scale


def _run_and_check(fn, ref_fn, ins, dtype, backend, op):
    """Forward against float64 (and the plain op in dtype); backward when the backend has one."""
    has_bwd = next(b for b in backends(op) if b.name == backend).has_backward
    avail = next(b for b in backends(op) if b.name == backend).available()
    if avail:
        pytest.skip(f"{op}/{backend}: {avail}")
    # The reference takes the inputs as rounded to dtype, so only the computation's error is measured.
    ref_in = [t.detach().to(dtype).double().requires_grad_(has_bwd) for t in ins]
    low = [t.detach().to(dtype).requires_grad_(has_bwd) for t in ins]
    plain_in = [t.detach().to(dtype).requires_grad_(has_bwd) for t in ins]
    with torch.set_grad_enabled(has_bwd):
        got = fn(low, backend)
        ref = ref_fn(ref_in)
        plain = ref_fn(plain_in)
    assert_close_to_ref(f"{op}/{backend} forward", got, ref.detach(), plain.detach(), dtype)
    if not has_bwd:
        return
    g = torch.randn(
        ref.shape, generator=torch.Generator("cuda").manual_seed(7), device="cuda", dtype=torch.float64
    )
    grads = torch.autograd.grad(got, low, g.to(dtype), allow_unused=True)
    ref_g = torch.autograd.grad(ref, ref_in, g, allow_unused=True)
    plain_g = torch.autograd.grad(plain, plain_in, g.to(dtype), allow_unused=True)
    for i, (a, r, p) in enumerate(zip(grads, ref_g, plain_g)):
        if r is None:
            continue
        assert_close_to_ref(f"{op}/{backend} grad[{i}]", a, r, p, dtype, grad=True)


@pytest.mark.parametrize("shape", [(4, 8, 1024), (3, 7, 13)], ids=["release", "odd"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_attn_pool(backend, dtype, layout, shape):
    B, T, D = shape
    g = torch.Generator("cuda").manual_seed(B * T + D)
    ins = [_strided(_rand(g, B, T, D), layout), _rand(g, D, scale=D**-0.5), _rand(g, 1)]
    _run_and_check(
        lambda t, be: attn_pool(*t, backend=be), lambda t: attn_pool_ref(*t), ins, dtype, backend, "attn_pool"
    )


@pytest.mark.parametrize(
    "shape",
    [(2, 32, 4096, 768, 12, 1024), (3, 5, 37, 24, 3, 40), (1, 1, 1, 64, 1, 768)],
    ids=["release", "odd", "one"],
)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_attn(backend, dtype, layout, masked, shape):
    B, Nq, Nk, H, heads, E = shape
    g = torch.Generator("cuda").manual_seed(Nq + Nk)
    ins = [
        _rand(g, B, Nq, H), _strided(_rand(g, B, Nk, E), layout), _rand(g, H, E, scale=E**-0.5), _rand(g, H),
        _rand(g, H, E, scale=E**-0.5), _rand(g, H),
    ]  # fmt: skip
    mask = None
    if masked:
        mask = torch.ones(B, Nk, dtype=torch.bool, device="cuda")
        mask[0, Nk // 2 + 1 :] = False
        if B > 2:
            mask[2] = False
    _run_and_check(
        lambda t, be: cross_attn(*t, mask, heads, backend=be),
        lambda t: cross_attn_ref(*t, mask, heads),
        ins, dtype, backend, "cross_attn",
    )  # fmt: skip


@pytest.mark.parametrize(
    "shape", [(2, 8, 8, 768, 1024, 3584), (64, 8, 8, 768, 1024, 3584), (2, 7, 33, 13, 20, 33)],
    ids=["release-b2", "release-b64", "odd"],
)  # fmt: skip
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fusion_head(backend, dtype, layout, shape):
    B, Tv, Ta, dv, da, D = shape
    dm = max(dv, da)
    g = torch.Generator("cuda").manual_seed(B + D)
    weights = [
        _rand(g, 1, dv, scale=dv**-0.5), _rand(g, 1), _rand(g, D, dv, scale=dv**-0.5), _rand(g, D),
        _rand(g, 1, da, scale=da**-0.5), _rand(g, 1), _rand(g, D, da, scale=da**-0.5), _rand(g, D),
        _rand(g, dm, dv, scale=dv**-0.5), _rand(g, dm), _rand(g, dm, da, scale=da**-0.5), _rand(g, dm),
        _rand(g, dm, 2 * dm, scale=(2 * dm) ** -0.5), _rand(g, dm), _rand(g, 2, dm, scale=dm**-0.5), _rand(g, 2),
        _rand(g, D, dm, scale=dm**-0.5), _rand(g, D),
    ]  # fmt: skip
    ins = [_strided(_rand(g, B, Tv, dv), layout), _strided(_rand(g, B, Ta, da), layout), *weights]
    _run_and_check(
        lambda t, be: fusion_head(t[0], t[1], FusionHeadWeights(*t[2:]), backend=be),
        lambda t: fusion_head_ref(t[0], t[1], FusionHeadWeights(*t[2:])),
        ins, dtype, backend, "fusion_head",
    )  # fmt: skip
