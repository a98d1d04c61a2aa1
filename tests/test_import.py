import subprocess
import sys

HEAVY = ("triton", "nvidia.dali", "tensorrt", "onnx", "onnxruntime", "transformers", "flash_attn")

SCRIPT = """
import sys
import {modules}
import torch
heavy = [m for m in {heavy!r} if m in sys.modules]
assert not heavy, f"imported at package import: {{heavy}}"
assert not torch.cuda.is_initialized(), "CUDA was initialised at import"
print("lean")
"""


def _run(modules: str) -> subprocess.CompletedProcess:
    code = SCRIPT.format(modules=modules, heavy=HEAVY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_affectrt_is_lean():
    proc = _run("affectrt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "lean"


def test_library_modules_import_nothing_optional():
    proc = _run("affectrt.pipeline, affectrt.checkpoint, affectrt.cli, affectrt.ops.attn_pool")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "lean"
