"""cross_attn: Triton (interpreter) forward/backward and the C++ CPU kernel against the float64 reference."""

from __future__ import annotations

import os

import pytest
import torch

from affectrt.ops._backends import BackendError, select
from affectrt.ops._ext import cpu_ext, cpu_ext_reason
from affectrt.ops.cross_attn import CrossAttention, cross_attn, cross_attn_ref
from tests.ops._tolerance import assert_close_to_ref

needs_cpu_ext = pytest.mark.skipif(cpu_ext() is None, reason=f"affectrt._C not built: {cpu_ext_reason()}")
interpret = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), reason="Triton on CPU needs TRITON_INTERPRET=1"
)

HEADS, HEAD_DIM, E = 2, 8, 12


def _inputs(B, Nq, Nk, dtype, seed=0, requires_grad=False, e=E):
    g = torch.Generator().manual_seed(seed)
    H = HEADS * HEAD_DIM
    ts = [
        torch.randn(B, Nq, H, generator=g),
        torch.randn(B, Nk, e, generator=g),
        torch.randn(H, e, generator=g) / e**0.5,
        torch.randn(H, generator=g),
        torch.randn(H, e, generator=g) / e**0.5,
        torch.randn(H, generator=g),
    ]
    return [t.to(dtype).requires_grad_(requires_grad) for t in ts]


def _mask(kind, B, Nk):
    if kind is None:
        return None
    m = torch.ones(B, Nk, dtype=torch.bool)
    m[1, Nk // 2 + 1 :] = False  # some keys padded (row 1 keeps at least one)
    m[2] = False  # every key padded
    return m


def _err(a, b):
    return (a.double() - b).abs().max().item()


def _check(got, ins, mask):
    """Forward and (when got requires grad) every input gradient against float64."""
    dtype = ins[0].dtype
    ref_in = [t.detach().double().requires_grad_() for t in ins]
    same_in = [t.detach().clone().requires_grad_() for t in ins]
    ref = cross_attn_ref(*ref_in, mask, HEADS)
    same = cross_attn_ref(*same_in, mask, HEADS)
    assert got.dtype == dtype
    assert_close_to_ref("forward", got, ref, same, dtype)
    if not got.requires_grad:
        return
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = torch.autograd.grad(got, ins, g.to(dtype))
    ref_g = torch.autograd.grad(ref, ref_in, g)
    same_g = torch.autograd.grad(same, same_in, g.to(dtype))
    for name, a, r, s in zip(("q", "x", "w_k", "b_k", "w_v", "b_v"), grads, ref_g, same_g):
        assert_close_to_ref(f"grad {name}", a, r, s, dtype, grad=True)


@interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("nq", [1, 8])
@pytest.mark.parametrize("nk,split_k", [(1, None), (7, None), (33, 2), (50, 3)])  # key block 16 on CPU
@pytest.mark.parametrize("mask_kind", [None, "padded"])
def test_triton_forward_and_grads(dtype, nq, nk, split_k, mask_kind):
    B = 3
    ins = _inputs(B, nq, nk, dtype, seed=nk + nq, requires_grad=True)
    mask = _mask(mask_kind, B, nk)
    got = cross_attn(*ins, mask, HEADS, backend="triton", split_k=split_k)
    _check(got, ins, mask)


def test_reference_gradients_match_finite_differences():
    """The eager reference (the definition the kernels' backward passes are checked against, in
    test_triton_forward_and_grads) differentiates correctly: autograd vs finite differences in float64,
    including a fully masked row. Explicitly the eager backend: nothing else runs float64."""
    ins = _inputs(2, 3, 5, torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda *t: cross_attn(*t, mask, HEADS, backend="eager"), ins)
    assert torch.autograd.gradcheck(lambda *t: cross_attn(*t, None, HEADS, backend="eager"), ins)


@interpret
def test_triton_saves_only_what_is_needed():
    q, x, wk, bk, wv, bv = _inputs(1, 2, 9, torch.float32)
    wv.requires_grad_()  # only the value weight: no kernel backward, so only A is saved
    out = cross_attn(q, x, wk, bk, wv, bv, None, HEADS, backend="triton")
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 1 and saved[0].shape == (1, HEADS * 2, E)
    (gwv,) = torch.autograd.grad(out.sum(), wv)
    wv_ref = wv.detach().double().requires_grad_()
    ref = cross_attn_ref(q.double(), x.double(), wk.double(), bk.double(), wv_ref, bv.double(), None, HEADS)
    torch.testing.assert_close(gwv.double(), torch.autograd.grad(ref.sum(), wv_ref)[0], atol=1e-5, rtol=1e-5)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("nq,nk,split_k", [(1, 1, None), (8, 7, None), (3, 33, 2), (8, 100, 3), (5, 70, 9)])
@pytest.mark.parametrize("mask_kind", [None, "padded"])
def test_cpu_kernel_matches_float64_reference(dtype, nq, nk, split_k, mask_kind):
    ins = _inputs(3, nq, nk, dtype, seed=nk)
    mask = _mask(mask_kind, 3, nk)
    _check(cross_attn(*ins, mask, HEADS, backend="cpu", split_k=split_k), ins, mask)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("nq,e", [(3, 72), (17, 200), (20, 1000)])
def test_cpu_kernel_vector_paths(dtype, nq, e):
    # E spans whole register blocks, single vectors and a scalar tail (8- and 16-float vectors); rows
    # R = 2·nq cover both x read in place (R <= 32, float32) and the converted tile, and a partial row block
    ins = _inputs(3, nq, 45, dtype, seed=e, e=e)
    mask = _mask("padded", 3, 45)
    _check(cross_attn(*ins, mask, HEADS, backend="cpu", split_k=2), ins, mask)


@needs_cpu_ext
def test_cpu_kernel_reads_strides_and_int_masks():
    q, x, wk, bk, wv, bv = _inputs(2, 4, 40, torch.float32)
    xs = torch.randn(2, E, 80)[:, :, ::2].transpose(1, 2)  # [2, 40, E], strides (E*80, 2, 80)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[0, 30:] = 0
    mask_s = torch.stack([mask, mask], dim=2)[:, :, 0]  # non-contiguous long mask
    got = cross_attn(q, xs, wk, bk, wv, bv, mask_s, HEADS, backend="cpu")
    _check(got, [q, xs, wk, bk, wv, bv], mask.bool())


@needs_cpu_ext
def test_fully_padded_row_is_mean_of_values():
    q, x, wk, bk, wv, bv = _inputs(1, 3, 20, torch.float32)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    want = (x @ wv.T + bv).mean(dim=1, keepdim=True).expand(1, 3, -1)
    for backend in ("cpu", "eager"):
        torch.testing.assert_close(cross_attn(q, x, wk, bk, wv, bv, mask, HEADS, backend=backend), want)


@needs_cpu_ext
def test_opcheck_native():
    q, x, *_ = _inputs(2, 3, 40, torch.float32)
    qt = torch.randn(2, 6, E)
    keep = torch.ones(2, 40, dtype=torch.uint8)
    keep[1, 7:] = 0
    for k in (keep, None):
        torch.library.opcheck(torch.ops.affectrt.cross_attn_native.default, (qt, x, k, 2))


@interpret
def test_opcheck_triton():
    x = torch.randn(2, 20, E)
    qt = torch.randn(2, 6, E)
    keep = torch.ones(2, 20, dtype=torch.uint8)
    keep[0, 3:] = 0
    torch.library.opcheck(torch.ops.affectrt.cross_attn_triton.default, (qt, x, keep, 2))
    a, m, logl = torch.ops.affectrt.cross_attn_triton(qt, x, keep, 2)
    da, delta = torch.randn(2, 6, E), torch.randn(2, 6)
    torch.library.opcheck(
        torch.ops.affectrt.cross_attn_triton_bwd.default, (qt, x, keep, m, logl, da, delta, 2)
    )


def test_auto_selection():
    q, x, wk, bk, wv, bv = _inputs(1, 2, 9, torch.float32)
    inputs = {"q": q, "x": x, "w_k": wk, "b_k": bk, "w_v": wv, "b_v": bv}
    expected = "cpu" if cpu_ext() is not None else "eager"
    assert select("cross_attn", inputs, "auto", needs_grad=False).name == expected
    assert select("cross_attn", inputs, "auto", needs_grad=True).name == "eager"
    with pytest.raises(BackendError, match="forward only"):
        select("cross_attn", inputs, "cpu", needs_grad=True)
    with pytest.raises(BackendError, match="runs on cuda"):
        select("cross_attn", inputs, "cuda")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):  # by name only: "auto" never interprets
        assert select("cross_attn", inputs, "triton", needs_grad=True).name == "triton"


def test_input_errors_name_the_argument():
    q, x, wk, bk, wv, bv = _inputs(2, 3, 5, torch.float32)
    with pytest.raises(ValueError, match="q must be 3-D"):
        cross_attn(q[0], x, wk, bk, wv, bv, None, HEADS)
    with pytest.raises(ValueError, match="x has batch"):
        cross_attn(q, x[:1], wk, bk, wv, bv, None, HEADS)
    with pytest.raises(ValueError, match="no keys"):
        cross_attn(q, x[:, :0], wk, bk, wv, bv, None, HEADS)
    with pytest.raises(ValueError, match="w_k must have shape"):
        cross_attn(q, x, wk[:, 1:], bk, wv, bv, None, HEADS)
    with pytest.raises(ValueError, match="b_v must have shape"):
        cross_attn(q, x, wk, bk, wv, bv[1:], None, HEADS)
    with pytest.raises(ValueError, match="num_heads"):
        cross_attn(q, x, wk, bk, wv, bv, None, 3)
    with pytest.raises(TypeError, match="w_v has dtype"):
        cross_attn(q, x, wk, bk, wv.double(), bv, None, HEADS)
    with pytest.raises(ValueError, match="key_mask must be"):
        cross_attn(q, x, wk, bk, wv, bv, torch.ones(2, 4), HEADS)


def test_module_matches_reference():
    torch.manual_seed(0)
    m = CrossAttention(HEADS * HEAD_DIM, E, HEADS)
    q, x = torch.randn(2, 3, HEADS * HEAD_DIM), torch.randn(2, 11, E)
    with torch.no_grad():
        want = cross_attn_ref(q, x, m.key.weight, m.key.bias, m.value.weight, m.value.bias, None, HEADS)
        torch.testing.assert_close(m(q, x), want, atol=1e-5, rtol=1e-5)


@interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_tiles_e(monkeypatch, dtype):
    # The released widths (E = 768-1024) run as several output tiles, each forming its scores over E in
    # chunks; small tiles here give the same structure at a size the interpreter runs quickly:
    # E = 40 -> 3 output tiles of 16 (the last partial), scores over 3 chunks of 16.
    from affectrt.kernels import cross_attn as kernels

    tiny = kernels.Config(BLOCK_N=16, BLOCK_K=16, BLOCK_EO=16, num_warps=4, num_stages=1)
    monkeypatch.setattr(kernels, "choose_config", lambda *a, **k: tiny)
    ins = _inputs(3, 5, 37, dtype, seed=11, requires_grad=True, e=40)
    mask = _mask("padded", 3, 37)
    _check(cross_attn(*ins, mask, HEADS, backend="triton", split_k=2), ins, mask)


def test_triton_declares_what_does_not_fit(monkeypatch):
    # A width no configuration fits is a reason, so "auto" moves on instead of crashing at launch.
    from affectrt.kernels import _launch
    from affectrt.kernels import cross_attn as kernels

    monkeypatch.setattr(kernels, "target_limits", lambda device=None: _launch.Limits("tiny", 90, 1024))
    from affectrt.ops.cross_attn import _triton_limits

    q, x, *_ = _inputs(1, 2, 9, torch.float32)
    (reason,) = _triton_limits({"q": q, "x": x})
    assert "no cross_attn Triton configuration fits tiny" in reason


# ------------------------------------------------------------------------------ the CPU backend's BLAS path


def _scores_ref(qt, x, keep):
    """m, log l of the absorbed scores s = q̃ xᵀ (padded keys replaced by -1e30), in float64."""
    s = qt.double() @ x.double().transpose(1, 2)
    if keep is not None:
        s = s.masked_fill(keep[:, None, :] == 0, -1e30)
    m = s.amax(dim=-1)
    return m, (s - m[..., None]).exp().sum(dim=-1).log()


@pytest.fixture
def blas_path(monkeypatch):
    """Force the cpu backend's BLAS path at test sizes (R >= 1) with a tiny score budget, so the
    batch-row and key chunking and the online combine all run; counts the calls to make sure."""
    from affectrt.ops import cross_attn as ca

    calls = []
    real = ca._core_blas

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(ca, "_BLAS_MIN_ROWS", 1)
    monkeypatch.setattr(ca, "_BLAS_SCORE_FLOATS", 64)
    monkeypatch.setattr(ca, "_core_blas", spy)
    return calls


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("nq,nk,split_k", [(1, 1, None), (8, 7, None), (3, 33, 2), (8, 100, 3), (5, 70, 9)])
@pytest.mark.parametrize("mask_kind", [None, "padded"])
def test_cpu_blas_path_matches_float64_reference(blas_path, dtype, nq, nk, split_k, mask_kind):
    ins = _inputs(3, nq, nk, dtype, seed=nk)
    mask = _mask(mask_kind, 3, nk)
    _check(cross_attn(*ins, mask, HEADS, backend="cpu", split_k=split_k), ins, mask)
    assert blas_path, "the BLAS path did not run"


@needs_cpu_ext
def test_cpu_blas_path_fully_padded_row_is_mean_of_values(blas_path):
    q, x, wk, bk, wv, bv = _inputs(2, 3, 70, torch.float32)
    mask = torch.ones(2, 70, dtype=torch.bool)
    mask[1] = False
    want = (x[1:] @ wv.T + bv).mean(dim=1, keepdim=True).expand(1, 3, -1)
    got = cross_attn(q, x, wk, bk, wv, bv, mask, HEADS, backend="cpu", split_k=3)
    torch.testing.assert_close(got[1:], want)
    assert blas_path


@needs_cpu_ext
@pytest.mark.parametrize("budget,split_k", [(1 << 21, 0), (64, 0), (64, 4), (1000, 2)])
def test_cpu_blas_core_returns_kernel_statistics(monkeypatch, budget, split_k):
    # A, m and log l of _core_blas are those of the C++ kernel (what a backward would need), and m, log l
    # match the formula, for one step and for batch-row / key chunks with the online combine.
    from affectrt.ops import cross_attn as ca

    monkeypatch.setattr(ca, "_BLAS_SCORE_FLOATS", budget)
    g = torch.Generator().manual_seed(3)
    qt, x = torch.randn(3, 10, E, generator=g), torch.randn(3, 90, E, generator=g)
    keep = torch.ones(3, 90, dtype=torch.uint8)
    keep[0, 40:] = 0
    keep[2] = 0
    a, m, logl = ca._core_blas(qt, x, keep, split_k)
    a_k, m_k, logl_k = ca._core_native(qt, x, keep, 2)
    m_ref, logl_ref = _scores_ref(qt, x, keep)
    torch.testing.assert_close(m.double(), m_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logl.double(), logl_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, a_k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m, m_k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logl, logl_k, rtol=1e-5, atol=1e-5)


@needs_cpu_ext
def test_cpu_picks_blas_by_rows(monkeypatch):
    from affectrt.ops import cross_attn as ca

    used = []
    monkeypatch.setattr(ca, "_core_blas", lambda *a: used.append("blas") or ca._core_native(*a))
    small = _inputs(1, 2, 9, torch.float32)  # R = 4 rows
    cross_attn(*small, None, HEADS, backend="cpu")
    assert used == []
    big = _inputs(1, ca._BLAS_MIN_ROWS // HEADS, 9, torch.float32)  # R = _BLAS_MIN_ROWS
    cross_attn(*big, None, HEADS, backend="cpu")
    assert used == ["blas"]
