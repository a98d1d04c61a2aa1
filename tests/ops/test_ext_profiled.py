"""affectrt._C's kernels show in torch.profiler tables (affectrt.ops._ext.ProfiledExt)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import profile

from affectrt.ops import bias_act
from affectrt.ops._ext import ProfiledExt, cpu_ext, cpu_ext_reason

pytestmark = pytest.mark.skipif(cpu_ext() is None, reason=f"affectrt._C not built: {cpu_ext_reason()}")


def _names(prof) -> set[str]:
    return {e.key for e in prof.key_averages()}


def test_kernel_calls_are_profiler_ranges():
    y, b = torch.randn(8, 64), torch.randn(64)
    want = bias_act.bias_act_ref(y, b, "gelu", upcast=True).float()
    with torch.inference_mode(), profile() as prof:
        got = bias_act.bias_act_(y.clone(), b, "gelu", backend="cpu")
    assert "affectrt._C.bias_act" in _names(prof)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # without a profiler: the plain module (next test), the same result
    with torch.inference_mode():
        torch.testing.assert_close(
            bias_act.bias_act_(y.clone(), b, "gelu", backend="cpu"), got, rtol=0, atol=0
        )


def test_the_module_itself_unless_profiling():
    plain = cpu_ext()
    assert not isinstance(plain, ProfiledExt)  # no wrapper on the hot path
    with profile():
        ext = cpu_ext()
    assert isinstance(ext, ProfiledExt)
    assert ext.openmp is plain.openmp and ext.functions == plain.functions
    assert ext.num_threads() == plain.num_threads() and ext.bias_act.__name__ == "bias_act"
    assert not hasattr(ext, "no_such_kernel")
