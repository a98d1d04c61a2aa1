"""rows_linear: the few-rows CPU GEMM against float64, its tiles' edges, backend selection and checks; and the
packed LLM projections running through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectrt.ops._backends import BackendError
from affectrt.ops._ext import cpu_ext, cpu_ext_reason
from affectrt.ops.rows_linear import rows_linear, rows_linear_ref

needs_cpu_ext = pytest.mark.skipif(cpu_ext() is None, reason=f"affectrt._C not built: {cpu_ext_reason()}")


def _close(got: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    # float32 sums of K products in some order: within K·eps·Σ|x·w| of the exact value
    scale = F.linear(x.double().abs(), w.double().abs()) + (0 if b is None else b.double().abs())
    err = (got.double() - want).abs()
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert bool((err <= x.shape[1] * 2.0**-23 * scale + 1e-6).all()), f"max error {err.max():.3g}"


@needs_cpu_ext
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33, 64, 65])
@pytest.mark.parametrize("N, K", [(97, 300), (13, 7), (1, 1), (12, 64)])
def test_matches_float64_at_every_tile_edge(M, N, K):
    g = torch.Generator().manual_seed(M * 1000 + N)
    x, w, b = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(N, generator=g)
    _close(rows_linear(x, w, b, backend="cpu"), x, w, b)
    _close(rows_linear(x, w, None, backend="cpu"), x, w, None)


@needs_cpu_ext
def test_strided_rows():
    g = torch.Generator().manual_seed(5)
    xs, ws = torch.randn(20, 80, generator=g), torch.randn(30, 100, generator=g)
    x, w = xs[::2, :64], ws[:, 10:74]  # row strides 160 and 100, unit column stride
    _close(rows_linear(x, w, backend="cpu"), x, w, None)


# Unit roundoff of the 16-bit dtypes: y is rounded once from a float32 sum.
_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _close16(got: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    scale = F.linear(x.double().abs(), w.double().abs()) + (0 if b is None else b.double().abs())
    err = (got.double() - want).abs()
    # one rounding to the dtype + float32 sums of K products
    bound = _ROUNDOFF[x.dtype] * want.abs() + x.shape[1] * 2.0**-23 * scale + 1e-6
    assert got.dtype == x.dtype and got.shape == want.shape
    assert bool((err <= bound).all()), f"max error {err.max():.3g}"


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 2, 5, 16, 17, 64])
@pytest.mark.parametrize("N, K", [(97, 300), (13, 7), (1, 1), (40, 1100)])
def test_16bit_weights_sum_in_float32_and_round_once(dtype, M, N, K):
    # K = 1100: the dot product's 64-wide steps, its 16 (8 on AVX2) wide steps and its scalar tail
    g = torch.Generator().manual_seed(M * 1000 + N + K)
    x, w, b = (torch.randn(*s, generator=g).to(dtype) for s in ((M, K), (N, K), (N,)))
    _close16(rows_linear(x, w, b, backend="cpu"), x, w, b)
    _close16(rows_linear(x, w, None, backend="cpu"), x, w, None)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_strided_rows_and_overflow(dtype):
    g = torch.Generator().manual_seed(6)
    xs, ws = torch.randn(20, 300, generator=g).to(dtype), torch.randn(30, 330, generator=g).to(dtype)
    for m in (1, 3):
        x, w = xs[: 2 * m : 2, :290], ws[:, 10:300]  # row strides 600 and 330 elements
        _close16(rows_linear(x, w, backend="cpu"), x, w, None)
    # float16 overflows past 65504 as torch's linear does (bfloat16 has float32's range)
    big = torch.full((1, 64), 100.0, dtype=dtype)
    got = rows_linear(big, torch.full((2, 64), 100.0, dtype=dtype), backend="cpu")
    torch.testing.assert_close(got, F.linear(big.float(), torch.full((2, 64), 100.0)).to(dtype))


def test_selection_and_checks():
    x, w = torch.randn(4, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(rows_linear(x, w), rows_linear_ref(x, w))  # auto: float64 takes the reference
    with pytest.raises(BackendError, match="float64"):
        rows_linear(x, w, backend="cpu")
    with pytest.raises(ValueError, match="same K"):
        rows_linear(x, torch.randn(5, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bias must be \[5\]"):
        rows_linear(x, w, torch.zeros(4, dtype=torch.float64))
    if cpu_ext() is not None:
        with pytest.raises(BackendError, match="column stride"):
            rows_linear(torch.randn(8, 4).t(), torch.randn(5, 8), backend="cpu")


@needs_cpu_ext
def test_packed_projections_run_through_it(monkeypatch):
    from affectrt.models import packed
    from affectrt.models.packed import pack_projections
    from affectrt.ops import rows_linear as ops
    from tests.models.test_packed import lora_llm

    calls = []
    real = ops.rows_linear

    def spy(*args, **kw):
        calls.append(args[0].shape[0])
        return real(*args, **kw)

    monkeypatch.setattr(packed, "ROWS_KERNEL_MIN_BYTES", 0)  # every stack counts as large
    monkeypatch.setattr(ops, "rows_linear", spy)
    modules = lora_llm()
    ref = lora_llm()
    pack_projections(modules)
    assert all(
        p.w.rows_kernel and not p.w.columns for layer in modules.layers for p in layer.mlp.packs.values()
    )
    g = torch.Generator().manual_seed(2)
    for rows in (3, 4, 16, 64, 65):  # 3 and 65: MKL; 4-64: the kernel
        ids = torch.randint(0, 96, (rows, 1), generator=g)
        calls.clear()
        with torch.inference_mode():
            got, want = modules(ids), ref(ids)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert bool(calls) == (4 <= rows <= 64)


@needs_cpu_ext
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_packed_16bit_projections_take_it_for_one_row(monkeypatch, dtype):
    from affectrt.models import packed
    from affectrt.models.packed import pack_projections
    from affectrt.ops import rows_linear as ops
    from tests.models.test_packed import lora_llm

    # LoRA adapters stay float32, as the pipeline keeps them
    def base_in(dtype: torch.dtype) -> torch.nn.Module:
        model = lora_llm()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_" not in name:
                    p.data = p.data.to(dtype)
        return model

    calls = []
    real = ops.rows_linear

    def spy(*args, **kw):
        calls.append(args[0].shape[0])
        return real(*args, **kw)

    monkeypatch.setattr(packed, "ROWS_KERNEL_MIN_BYTES", 0)
    monkeypatch.setattr(ops, "rows_linear", spy)
    modules, ref = base_in(dtype), base_in(dtype)
    pack_projections(modules)
    g = torch.Generator().manual_seed(3)
    for rows in (1, 2):  # 1: the kernel; 2: torch
        ids = torch.randint(0, 96, (rows, 1), generator=g)
        calls.clear()
        with torch.inference_mode():
            got, want = modules(ids), ref(ids)
        torch.testing.assert_close(got.float(), want.float(), atol=0.05, rtol=0.02)
        assert bool(calls) == (rows == 1)
