"""GPU runtimes beside the kernels: ONNX Runtime's CUDA provider is really used (no silent CPU fallback), the
CUDA extension answers for itself, and no combination of extras installs both onnxruntime wheels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import torch

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


def test_no_extra_installs_both_onnxruntime_wheels():
    meta = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    extras = {k: names(v) for k, v in meta["optional-dependencies"].items()}
    base = names(meta["dependencies"])
    cpu = {k for k, v in extras.items() if "onnxruntime" in v} | (
        {"<base>"} if "onnxruntime" in base else set()
    )
    gpu = {k for k, v in extras.items() if "onnxruntime-gpu" in v}
    assert not (cpu and gpu), f"onnxruntime in {sorted(cpu)} and onnxruntime-gpu in {sorted(gpu)}"


@pytest.mark.gpu
@needs_gpu
def test_onnxruntime_uses_the_cuda_provider(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.fail(f"onnxruntime offers only {ort.get_available_providers()}: install onnxruntime-gpu alone")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )  # fmt: skip
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    # A session silently falls back to the CPU when the CUDA provider fails to load: check what it got.
    assert sess.get_providers()[0] == "CUDAExecutionProvider", sess.get_providers()


@pytest.mark.gpu
@needs_gpu
def test_cuda_extension_answers_for_itself():
    from affectrt.ops._backends import cuda_ext_available
    from affectrt.ops._ext import cuda_ext, cuda_ext_reason

    if cuda_ext() is None:
        pytest.skip(f"affectrt._C_cuda not built: {cuda_ext_reason()}")
    count, error = cuda_ext().device_count()
    assert count >= 1, error
    assert cuda_ext().driver_version() >= cuda_ext().runtime_version()
    assert cuda_ext_available("attn_pool")() is None
