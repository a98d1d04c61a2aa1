"""The CPU kernels other machines take: the AVX2 (e.g. AMD EPYC before Zen 4) and baseline code paths of the
fusion head, cross-attention and rows_linear, run here by capping the ISA (AFFECTRT_CPU_ISA, read once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from affectrt.ops._ext import cpu_ext, cpu_ext_reason

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(cpu_ext() is None, reason=f"affectrt._C not built: {cpu_ext_reason()}")
@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_capped_isa_kernels_pass_their_tests(isa):
    env = {**os.environ, "AFFECTRT_CPU_ISA": isa}
    tests = ["tests/ops/test_rows_linear.py", "tests/ops/test_fusion_head.py", "tests/ops/test_cross_attn.py"]
    tests += ["-k", "not triton"]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
