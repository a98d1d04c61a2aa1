"""The op template's shared parts: one backend vocabulary, one rule for Triton on CPU, and the CUDA
extension's availability asked of the extension itself (its device count, the driver its runtime needs)."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

import affectrt.ops.attn_pool  # noqa: F401 - registers the ops
import affectrt.ops.cross_attn  # noqa: F401
import affectrt.ops.fusion_head  # noqa: F401
from affectrt.ops import _backends, _ext


def test_one_vocabulary():
    for op in ("attn_pool", "cross_attn", "fusion_head"):
        assert [b.name for b in _backends.backends(op)] == ["cuda", "triton", "cpu", "eager"], op


def test_auto_never_interprets_triton_on_cpu():
    z = torch.randn(2, 3, 4, requires_grad=True)
    chosen = _backends.select(
        "attn_pool", {"z": z, "weight": torch.randn(4), "bias": torch.randn(1)}, "auto", True
    )
    assert chosen.name == "eager"


def _fake_ext(runtime: int, driver: int, count: int, error: str | None = None):
    return types.SimpleNamespace(
        runtime_version=lambda: runtime,
        driver_version=lambda: driver,
        device_count=lambda: (count, error),
        attn_pool=None,
    )


@pytest.mark.parametrize(
    "ext,want",
    [
        (_fake_ext(13000, 12080, 1), "needs a driver for CUDA >= 13.0; this driver supports CUDA 12.8"),
        (_fake_ext(13000, 0, 0), "no CUDA driver is installed"),
        (
            _fake_ext(13000, 13000, -1, "CUDA driver version is insufficient"),
            "cannot use the GPU: CUDA driver",
        ),
        (_fake_ext(13000, 13010, 0), "sees no CUDA device"),
    ],
)
def test_cuda_extension_reports_why_it_cannot_run(monkeypatch, ext, want):
    monkeypatch.setattr(_ext, "cuda_ext", lambda: ext)
    monkeypatch.setattr(_ext, "cuda_ext_reason", lambda: None)
    _backends._cuda_ext_reason.cache_clear()
    try:
        reason = _backends.cuda_ext_available("attn_pool")()
    finally:
        _backends._cuda_ext_reason.cache_clear()
    assert reason is not None and want in reason, reason


def test_cuda_extension_fine_but_torch_sees_no_gpu(monkeypatch):
    monkeypatch.setattr(_ext, "cuda_ext", lambda: _fake_ext(13000, 13010, 1))
    monkeypatch.setattr(_ext, "cuda_ext_reason", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _backends._cuda_ext_reason.cache_clear()
    try:
        assert "torch does not" in _backends.cuda_ext_available("attn_pool")()
        assert "has no fusion_head" in _backends.cuda_ext_available("fusion_head")()
    finally:
        _backends._cuda_ext_reason.cache_clear()


@pytest.mark.skipif(not _backends.triton_interpreted(), reason="Triton on CPU needs TRITON_INTERPRET=1")
def test_opcheck_attn_pool_triton():
    z, w, b = torch.randn(2, 5, 7), torch.randn(7), torch.randn(1)
    torch.library.opcheck(torch.ops.affectrt.attn_pool_triton.default, (z, w, b))
    torch.library.opcheck(torch.ops.affectrt.attn_pool_triton_bwd.default, (torch.randn(2, 7), z, w, b))


def test_auto_falls_back_when_a_kernel_runs_out_of_resources(monkeypatch):
    # A GPU the resource model misjudges: the first launch raises Triton's OutOfResources. "auto" then
    # warns and runs the next backend that fits; an explicit backend raises.
    class OutOfResources(RuntimeError):
        pass

    def broken(*args, **kwargs):
        raise OutOfResources("shared memory, Required: 300000, Hardware limit: 232448")

    declared = _backends.backends("attn_pool")
    cpu = next(b for b in declared if b.name == "cpu")
    monkeypatch.setitem(
        _backends._REGISTRY,
        "attn_pool",
        [dataclasses.replace(cpu, run=broken) if b is cpu else b for b in declared],
    )
    z, w, b = torch.randn(2, 3, 4), torch.randn(4), torch.randn(1)
    if cpu.available() is not None:
        pytest.skip(f"affectrt._C: {cpu.available()}")
    with pytest.warns(RuntimeWarning, match="ran out of GPU resources.*using 'eager'"):
        out = affectrt.ops.attn_pool.attn_pool(z, w, b)
    torch.testing.assert_close(out, affectrt.ops.attn_pool.attn_pool_ref(z, w, b))
    with pytest.raises(OutOfResources):
        affectrt.ops.attn_pool.attn_pool(z, w, b, backend="cpu")
