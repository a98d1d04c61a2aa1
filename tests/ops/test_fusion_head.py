"""fusion_head: C++ CPU kernel and Triton (under TRITON_INTERPRET=1) against the float64 reference,
gradients, torch.library registration, backend selection, input checks and the FusionHead wiring."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from affectrt.config import get_preset
from affectrt.models.fusion import FusionHead
from affectrt.ops._backends import BackendError, backends
from affectrt.ops._ext import cpu_ext
from affectrt.ops.attn_pool import triton_interpreted, triton_reason
from affectrt.ops.fusion_head import FusionHeadWeights, fold_gate, fusion_head, fusion_head_ref
from tests.ops._tolerance import assert_close_to_ref

needs_cpu_kernel = pytest.mark.skipif(
    cpu_ext() is None or not hasattr(cpu_ext(), "fusion_head"), reason="affectrt._C has no fusion_head"
)
needs_triton = pytest.mark.skipif(
    not triton_interpreted() or triton_reason() is not None,
    reason="Triton kernels run on CPU only under TRITON_INTERPRET=1",
)


def _make(B, Tv, Ta, dv, da, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    dm = max(dv, da)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    w = FusionHeadWeights(
        r(1, dv, scale=dv**-0.5), r(1), r(D, dv, scale=dv**-0.5), r(D),
        r(1, da, scale=da**-0.5), r(1), r(D, da, scale=da**-0.5), r(D),
        r(dm, dv, scale=dv**-0.5), r(dm), r(dm, da, scale=da**-0.5), r(dm),
        r(dm, 2 * dm, scale=(2 * dm) ** -0.5), r(dm), r(2, dm, scale=dm**-0.5), r(2),
        r(D, dm, scale=dm**-0.5), r(D),
    )  # fmt: skip
    return r(B, Tv, dv), r(B, Ta, da), w


def _f64(t):
    return t.detach().double()


def _check(name, ours, ref, plain, factor, dtype):
    assert_close_to_ref(name, ours, ref, plain, dtype, grad=factor != 2)


def _assert_rows_written(emb: torch.Tensor, rows: torch.Tensor, ref: torch.Tensor) -> None:
    """emb [B, L, D] (filled with 7.0 before the call) holds ref[b] at rows[b] and nothing else changed."""
    for b in range(emb.shape[0]):
        torch.testing.assert_close(emb[b, rows[b]], ref[b], rtol=1e-5, atol=1e-5)
        untouched = [i for i in range(emb.shape[1]) if i not in rows[b].tolist()]
        assert (emb[b, untouched] == 7.0).all()


SHAPES = [(1, 1, 1, 5, 9, 7), (2, 7, 8, 13, 20, 33), (3, 8, 8, 24, 40, 70), (2, 33, 7, 16, 9, 65)]
# The CPU kernel's GEMM form (csrc/fusion_head_cpu.cpp, B >= kGemmMinB = 8): batch sizes that fill a
# partial vector (8 of 16), several register tiles with a partial one (21), and more than one 64-column
# block (70); D, dm not multiples of the 6-row tile; D and dm over several 48-row chunks, the last one
# partial (101 = 2·48 + 5, 61 = 48 + 13); small widths so it runs in a moment.
GEMM_SHAPES = [(8, 3, 5, 13, 20, 33), (21, 8, 8, 24, 40, 70), (70, 2, 3, 16, 9, 65), (16, 4, 4, 50, 61, 101)]


@needs_cpu_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES + GEMM_SHAPES)  # both forms: GEMV (B < 8) and GEMM
def test_cpu_kernel_matches_float64_reference(shape, dtype):
    zv, za, w = _make(*shape, dtype=dtype, seed=shape[0])
    ref = fusion_head_ref(_f64(zv), _f64(za), FusionHeadWeights(*map(_f64, w)))
    out = fusion_head(zv, za, w, backend="cpu")
    assert out.dtype == dtype
    _check("out", out, ref, fusion_head_ref(zv, za, w), 2, dtype)


@needs_cpu_kernel
def test_cpu_kernel_writes_rows_of_inputs_embeds_and_reads_strides():
    B, D = 3, 33
    zv, za, w = _make(B, 8, 8, 13, 20, D)
    zv = zv.transpose(1, 2).contiguous().transpose(1, 2)  # [B,T,d] with d-stride T
    w = w._replace(video_proj_w=w.video_proj_w.T.contiguous().T)  # column-major weight
    emb = torch.full((B, 10, D), 7.0)
    rows = torch.tensor([[0, 4, 9], [2, 3, 5], [9, 1, 0]])
    assert fusion_head(zv, za, w, backend="cpu", out=emb, rows=rows) is emb
    _assert_rows_written(emb, rows, fusion_head_ref(zv, za, w, upcast=True))


@needs_cpu_kernel
def test_folded_gate_is_used_and_equal():
    zv, za, w = _make(2, 8, 8, 13, 20, 17)
    folded = fold_gate(w)
    assert folded[0].shape == (2, 40) and folded[1].shape == (2,)
    ref = fusion_head_ref(zv, za, w, upcast=True)
    torch.testing.assert_close(
        fusion_head(zv, za, w, folded_gate=folded, backend="cpu"), ref, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(fusion_head_ref(zv, za, w, folded), ref, rtol=1e-5, atol=1e-5)


@needs_cpu_kernel
def test_opcheck():
    zv, za, w = _make(2, 3, 4, 5, 6, 7)
    flat = [*w[:12], *fold_gate(w), *w[16:]]
    flat = [t.reshape(-1) if t.shape[0] == 1 else t for t in flat]
    torch.library.opcheck(torch.ops.affectrt.fusion_head_native.default, (zv, za, flat))
    out = torch.zeros(2, 5, 7)
    rows = torch.tensor([[0, 1, 2], [4, 3, 1]])
    torch.library.opcheck(torch.ops.affectrt.fusion_head_native_into.default, (zv, za, flat, out, rows))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[3]])
def test_triton_forward_and_grads_match_float64(shape, dtype):
    zv, za, w = _make(*shape, dtype=dtype)
    grad = torch.randn(shape[0], 3, shape[-1], generator=torch.Generator().manual_seed(5)).to(dtype)

    def run(fn, tensors):
        leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
        out = fn(leaves[0], leaves[1], FusionHeadWeights(*leaves[2:]))
        out.backward(grad.to(out.dtype))
        return [out.detach()] + [t.grad for t in leaves]

    inputs = [zv, za, *w]
    ref = run(fusion_head_ref, [_f64(t) for t in inputs])
    plain = run(fusion_head_ref, inputs)
    ours = run(lambda a, b, c: fusion_head(a, b, c, backend="triton"), inputs)
    names = ["out", "z_video", "z_audio", *FusionHeadWeights._fields]
    for name, o, r, p in zip(names, ours, ref, plain):
        _check(name, o, r, p, 2 if name == "out" else 3, dtype)
    with torch.no_grad():  # inference: folded gate, the torch.library op
        _check("out (no grad)", fusion_head(zv, za, w, backend="triton"), ref[0], plain[0], 2, dtype)


@needs_triton
def test_opcheck_triton():
    zv, za, w = _make(2, 3, 4, 5, 6, 7)
    flat = [t.reshape(-1) if t.shape[0] == 1 else t for t in w.folded(fold_gate(w))]
    torch.library.opcheck(torch.ops.affectrt.fusion_head_triton.default, (zv, za, flat))
    out, rows = torch.zeros(2, 5, 7), torch.tensor([[0, 1, 2], [4, 3, 1]])
    torch.library.opcheck(torch.ops.affectrt.fusion_head_triton_into.default, (zv, za, flat, out, rows))


@needs_triton
def test_triton_gradcheck_float64():
    # Every numerical perturbation runs the interpreter: check the inputs and a few weights (each kind of
    # path: pooling, the unfolded gate, the output projection); the float64 comparison above covers all.
    zv, za, w = _make(1, 2, 3, 3, 4, 5, dtype=torch.float64)
    names = ("video_att_w", "audio_att_b", "gate_w1", "gate_b2", "multi_video_w", "multi_proj_b")
    leaves = [zv.requires_grad_(True), za.requires_grad_(True)] + [
        getattr(w, n).requires_grad_(True) for n in names
    ]

    def fn(zv, za, *ws):
        weights = w._replace(**dict(zip(names, ws)))
        return fusion_head(zv, za, weights, backend="triton")

    assert torch.autograd.gradcheck(fn, leaves)


@needs_triton
def test_triton_writes_rows():
    zv, za, w = _make(2, 8, 8, 13, 20, 33)
    emb = torch.zeros(2, 6, 33)
    rows = torch.tensor([5, 0, 2])
    fusion_head(zv, za, w, backend="triton", out=emb, rows=rows)
    torch.testing.assert_close(
        emb[:, [5, 0, 2]], fusion_head_ref(zv, za, w, upcast=True), rtol=1e-5, atol=1e-5
    )


def test_backend_selection_and_errors():
    assert [b.name for b in backends("fusion_head")] == ["cuda", "triton", "cpu", "eager"]
    zv, za, w = _make(2, 4, 4, 5, 6, 7)
    with pytest.raises(BackendError, match="runs on cuda"):
        fusion_head(zv, za, w, backend="cuda")
    with pytest.raises(BackendError, match="unknown backend 'fast'"):
        fusion_head(zv, za, w, backend="fast")
    w64 = FusionHeadWeights(*(t.double() for t in w))
    with pytest.raises(BackendError, match="dtype float64"):
        fusion_head(zv.double(), za.double(), w64, backend="cpu")
    with pytest.raises(BackendError, match="forward only"):
        fusion_head(zv.requires_grad_(True), za, w, backend="cpu")
    out = fusion_head(zv, za, w)  # "auto" with a gradient on CPU: the differentiable reference
    assert out.grad_fn is not None
    with pytest.raises(ValueError, match="out= writes in place"):
        fusion_head(zv, za, w, out=torch.zeros(2, 3, 7))


def test_input_checks_name_the_argument():
    zv, za, w = _make(2, 4, 4, 5, 6, 7)
    with pytest.raises(ValueError, match="z_video must be 3-D"):
        fusion_head(zv[0], za, w)
    with pytest.raises(ValueError, match="batch sizes differ"):
        fusion_head(zv, za[:1], w)
    with pytest.raises(ValueError, match="gate_w2 must have shape"):
        fusion_head(zv, za, w._replace(gate_w2=torch.zeros(3, 6)))
    with pytest.raises(TypeError, match="multi_proj_b has dtype"):
        fusion_head(zv, za, w._replace(multi_proj_b=w.multi_proj_b.double()))
    with pytest.raises(ValueError, match="rows must lie in"):
        fusion_head(zv, za, w, out=torch.zeros(2, 4, 7), rows=torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="pass rows="):
        fusion_head(zv, za, w, out=torch.zeros(2, 4, 7))
    with pytest.raises(ValueError, match="out must be"):
        fusion_head(zv, za, w, out=torch.zeros(2, 3, 8))


def _released_head(dtype=torch.float32):
    cfg = get_preset("tiny")
    cfg = cfg.replace(
        fusion=dataclasses.replace(
            cfg.fusion, video_fusion="attention", audio_fusion="attention", multi_fusion="attention"
        )
    )
    torch.manual_seed(0)
    return FusionHead(cfg).to(dtype).eval(), cfg


def test_module_fused_equals_module_path():
    head, cfg = _released_head()
    g = torch.Generator().manual_seed(1)
    zv, za = torch.randn(3, 8, cfg.video_dim, generator=g), torch.randn(3, 8, cfg.audio_dim, generator=g)
    assert head.fused
    with torch.no_grad():
        fused = head(zv, za)
        head.backend = "module"
        assert not head.fused
        eager = head(zv, za)
    for a, b in zip(fused, eager):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    head.backend = "auto"  # training: gradients reach every parameter through the fused op
    out = head(zv, za)
    sum(t.sum() for t in out).backward()
    assert head.attention_mlp.weight.grad is not None and head.fc_att.weight.grad is not None
    with torch.no_grad():  # the cached fold follows in-place weight updates
        head.fc_att.weight.mul_(2)
        fused2 = head(zv, za)
        head.backend = "module"
        torch.testing.assert_close(fused2.multi, head(zv, za).multi, rtol=1e-5, atol=1e-5)


def test_module_under_autocast_runs_in_the_autocast_dtype():
    head, cfg = _released_head()
    zv, za = torch.randn(2, 8, cfg.video_dim), torch.randn(2, 8, cfg.audio_dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = head(zv, za)
        head.backend = "module"
        eager = head(zv, za)
    ref = fusion_head_ref(zv, za, head.fused_weights(), upcast=True)
    assert fused.audio.dtype == eager.audio.dtype == torch.bfloat16
    for j, (a, b) in enumerate(zip(fused, eager)):
        scale = ref[:, j].abs().max().item()
        assert (a[:, 0].double() - ref[:, j]).abs().max() <= 2 * (
            b[:, 0].double() - ref[:, j]
        ).abs().max() + 0.02 * scale


def test_autocast_weights_are_kept_at_inference_and_follow_changes():
    # Under autocast the head runs on its weights cast to the autocast dtype; at inference the cast is kept
    # (it cost 4x the head itself at B = 1) and must give exactly what a fresh cast gives, follow an in-place
    # update and a replaced weight, and stay out of autograd.
    head, cfg = _released_head()
    zv, za = torch.randn(2, 8, cfg.video_dim), torch.randn(2, 8, cfg.audio_dim)

    def fresh():  # what casting every call gives
        weights = [t.to(torch.bfloat16) for t in head.fused_weights()]
        gate = tuple(t.to(torch.bfloat16) for t in head._cached_gate())
        return fusion_head(zv.bfloat16(), za.bfloat16(), weights, folded_gate=gate, backend="cpu")

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        first = head.forward_fused(zv, za)
        kept = head._cast_cache[2]
        assert torch.equal(head.forward_fused(zv, za), first) and head._cast_cache[2] is kept
        assert kept.video_proj_w.dtype == torch.bfloat16
        head.affectgpt_proj.weight.mul_(2)  # in place: the version moves
        changed = head.forward_fused(zv, za)
        assert head._cast_cache[2] is not kept
        assert torch.equal(changed, fresh())
        head.fc_att.weight.add_(0.5)  # the folded gate is refolded, the cast follows it
        assert torch.equal(head.forward_fused(zv, za), fresh())
        head.audio_llama_proj.weight = torch.nn.Parameter(head.audio_llama_proj.weight * 3)  # replaced
        assert torch.equal(head.forward_fused(zv, za), fresh())
        gate = tuple(t * 0.5 for t in head._cached_gate())  # a gate passed in: its cast, not the kept one
        weights = [t.to(torch.bfloat16) for t in head.fused_weights()]
        want = fusion_head(
            zv.bfloat16(),
            za.bfloat16(),
            weights,
            folded_gate=tuple(t.bfloat16() for t in gate),
            backend="cpu",
        )
        assert torch.equal(head.forward_fused(zv, za, gate=gate), want)
    assert not torch.equal(changed, first)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training: casts in the graph, gradients flow
        head.forward_fused(zv, za).float().sum().backward()
    assert head.affectgpt_proj.weight.grad is not None


def test_ops_module_matches_reference():
    from affectrt.ops.fusion_head import FusedFusionHead

    torch.manual_seed(0)
    head = FusedFusionHead(5, 6, 6, 7)
    zv, za = torch.randn(2, 3, 5), torch.randn(2, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(
            head(zv, za), fusion_head_ref(zv, za, head.weights()), rtol=1e-5, atol=1e-5
        )
    head(zv, za).sum().backward()  # "auto" with a gradient: every parameter gets one
    assert all(p.grad is not None for p in head.parameters())


@needs_cpu_kernel
def test_cpu_kernel_gemm_form_writes_rows_and_reads_strides():
    B, D = 19, 101  # D over three 48-row chunks: each one's rows land in the right place
    zv, za, w = _make(B, 8, 8, 13, 20, D, seed=4)
    zv = zv.transpose(1, 2).contiguous().transpose(1, 2)  # [B,T,d] with d-stride T
    w = w._replace(
        video_proj_w=w.video_proj_w.T.contiguous().T,  # column-major: converted row copies
        multi_proj_w=w.multi_proj_w.T.contiguous().T,
    )
    emb = torch.full((B, 10, D), 7.0)
    rows = torch.randperm(10, generator=torch.Generator().manual_seed(1))[:3].expand(B, 3).contiguous()
    rows[::2] = rows[::2].flip(-1)
    assert fusion_head(zv, za, w, backend="cpu", out=emb, rows=rows) is emb
    _assert_rows_written(emb, rows, fusion_head_ref(zv, za, w, upcast=True))


# The CPU kernel's GEMV form (B < 8): each weight row against groups of 4 batch rows and a remainder of
# 1-3 (B = 5, 6, 7), rows long enough for the unrolled vector loop plus a scalar tail (K = 80, 72, 83).
GEMV_SHAPES = [(5, 3, 4, 80, 72, 50), (6, 2, 5, 72, 83, 41), (7, 8, 1, 83, 80, 64)]


@needs_cpu_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", GEMV_SHAPES)
def test_cpu_kernel_gemv_form_matches_float64_reference(shape, dtype):
    zv, za, w = _make(*shape, dtype=dtype, seed=shape[0])
    ref = fusion_head_ref(_f64(zv), _f64(za), FusionHeadWeights(*map(_f64, w)))
    out = fusion_head(zv, za, w, backend="cpu")
    _check("out", out, ref, fusion_head_ref(zv, za, w), 2, dtype)


@needs_cpu_kernel
def test_cpu_kernel_scratch_reuse_across_shapes():
    # The kernel keeps its scratch (and the identity rows of a fresh [B, 3, D]) across calls, growing it
    # when needed: larger, smaller and differently shaped calls in turn, both forms, each against the
    # reference (stale values or padding left from the previous call would show).
    for shape in [(70, 2, 3, 16, 9, 65), (3, 8, 8, 24, 40, 70), (21, 8, 8, 24, 40, 70), (9, 4, 4, 40, 8, 33)]:
        zv, za, w = _make(*shape, seed=shape[0])
        ref = fusion_head_ref(_f64(zv), _f64(za), FusionHeadWeights(*map(_f64, w)))
        _check(
            "out", fusion_head(zv, za, w, backend="cpu"), ref, fusion_head_ref(zv, za, w), 2, torch.float32
        )


@needs_cpu_kernel
@pytest.mark.parametrize("B", [9, 12, 15, 20, 31, 33, 50, 57, 63])
def test_cpu_gemm_form_computes_every_batch_column(B):
    # The GEMM form's last column block holds 1 .. MV vectors of the ISA: every count on AVX-512 (16-float
    # vectors, 4 per block) and, under tests/ops/test_isa.py, on AVX2 (8, 2) and the baseline (4, 2).
    # Counts equal to MV in a partial block were once skipped: B = 9-15 on AVX2, 49-63 on AVX-512.
    zv, za, w = _make(B, 3, 2, 24, 16, 40, seed=B)
    ref = fusion_head_ref(_f64(zv), _f64(za), FusionHeadWeights(*map(_f64, w)))
    _check("out", fusion_head(zv, za, w, backend="cpu"), ref, fusion_head_ref(zv, za, w), 2, torch.float32)


@needs_cpu_kernel
def test_cpu_backend_under_fake_tensors_goes_through_the_op():
    # Eager calls skip the torch.library dispatch; anything that traces (here FakeTensorMode) must still
    # reach the op (its fake kernel), never the C++ kernel with fake data pointers.
    from torch._subclasses.fake_tensor import FakeTensorMode

    zv, za, w = _make(2, 3, 4, 5, 6, 7)
    with FakeTensorMode() as mode:
        fzv, fza = mode.from_tensor(zv), mode.from_tensor(za)
        fw = FusionHeadWeights(*(mode.from_tensor(t) for t in w))
        out = fusion_head(fzv, fza, fw, folded_gate=fold_gate(fw), backend="cpu")
    assert type(out) is not torch.Tensor and out.shape == (2, 3, 7)


@needs_cpu_kernel
def test_cpu_into_form_runs_the_kernel_directly_in_plain_eager(monkeypatch):
    # The production call (out= + rows=, the prompt's inputs_embeds) skips the torch.library dispatch in plain
    # eager (the guard, _plain_eager, is the one test_cpu_backend_under_fake_tensors_goes_through_the_op
    # checks) and writes exactly the rows the op writes; with the guard off it goes through the op.
    from affectrt.ops import fusion_head as fh

    zv, za, w = _make(2, 3, 4, 5, 6, 7)
    rows = torch.tensor([[1, 3, 4], [0, 2, 5]])
    want = torch.zeros(2, 6, 7)
    fh._scatter_rows(fusion_head(zv, za, w, backend="cpu"), want, rows)
    for plain in (True, False):
        monkeypatch.setattr(fh, "_plain_eager", lambda *t, plain=plain: plain)
        out = torch.zeros(2, 6, 7)
        assert fusion_head(zv, za, w, backend="cpu", out=out, rows=rows) is out
        torch.testing.assert_close(out, want, rtol=0, atol=0)
