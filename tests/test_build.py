"""The native build: its recorded metadata, the CPU extension and (where nvcc built it) the CUDA one."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import affectrt
from affectrt.build_info import PTXAS_REPORT_PATH, build_info, ptxas_report


def _record(name: str) -> dict:
    info = build_info()
    if not info.get("built", True):
        pytest.skip(f"no build metadata: {info['reason']}")
    record = info["extensions"].get(name)
    if record is None:
        pytest.skip(f"{name} not listed in the build metadata")
    if not record["built"]:
        pytest.skip(f"{name} not built: {record['reason']}")
    return record


def test_build_info_readable():
    info = build_info()
    assert isinstance(info, dict) and "extensions" in info
    if info["built"]:
        assert info["affectrt_version"] == affectrt.__version__
        for key in ("python", "compiler", "pybind11", "date", "git_commit", "cuda"):
            assert key in info
        for name in ("affectrt._C", "affectrt._C_cuda"):
            record = info["extensions"][name]
            assert record["built"] or record["reason"], f"{name}: not built and no reason recorded"
    else:
        assert info["reason"].startswith(("not built", "unreadable"))


def test_cpu_extension_imports():
    record = _record("affectrt._C")
    mod = importlib.import_module("affectrt._C")
    assert Path(mod.__file__).name == record["file"]
    assert {"attn_pool", "fusion_head", "cross_attn"} <= set(mod.functions)
    assert mod.num_threads() >= 1
    assert isinstance(mod.openmp, bool)


def test_cuda_extension_compiled():
    record = _record("affectrt._C_cuda")
    cuda = build_info()["cuda"]
    assert (Path(affectrt.__file__).parent / record["file"]).exists()
    assert re.fullmatch(r"\d+\.\d+\.\d+", cuda["nvcc_version"])
    report = ptxas_report()
    assert report is not None, f"{PTXAS_REPORT_PATH} missing although _C_cuda was built"
    assert "Used" in report and "registers" in report
    kernels = [k for k in cuda["kernels"] if k["kernel"].startswith("attn_pool_kernel")]
    assert {k["arch"] for k in kernels} == {f"sm_{a}" for a in cuda["archs"]}
    for k in kernels:  # the pooling kernel is tiny: it must neither spill nor bloat
        assert k["spill_stores"] == 0 and k["spill_loads"] == 0, k
        assert 0 < k["registers"] <= 64, k


def test_cuda_extension_loads_without_a_driver():
    """Loading needs only libcudart; libcuda is opened at the first runtime call, which may then fail."""
    _record("affectrt._C_cuda")
    mod = importlib.import_module("affectrt._C_cuda")
    assert {"attn_pool", "fusion_head", "cross_attn"} <= set(mod.functions)
    assert mod.runtime_version() >= 12000
    count, error = mod.device_count()
    assert (count >= 0 and error is None) or (count == -1 and isinstance(error, str) and error)
