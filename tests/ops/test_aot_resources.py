"""Every Triton kernel, compiled ahead of time for sm_80 and sm_90 at the released shapes through the
project's own launchers and configuration choice, fits: shared memory per program within the limit, no
spills, registers within 255 (``affectrt.kernels.aot``; ptxas runs here, no GPU is needed)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def test_every_kernel_fits_sm80_and_sm90(tmp_path):
    # A subprocess: the test session runs the kernels interpreted (TRITON_INTERPRET=1), which replaces
    # the very objects this compiles; a fresh cache makes ptxas run (and report) for every kernel.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path / "cache"), "TRITON_DEFAULT_FP_FUSION": "1"}
    report = tmp_path / "aot.json"
    proc = subprocess.run(
        [sys.executable, "-m", "affectrt.kernels.aot", "--json", str(report)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if not report.exists():
        pytest.fail(
            f"AOT compile failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    rows = json.loads(report.read_text())
    kernels = {r["kernel"] for r in rows}
    assert kernels == {
        "cross_attn.fwd", "cross_attn.bwd_dq", "cross_attn.bwd_dx",
        "fusion_head.pool_proj", "fusion_head.gate_proj", "attn_pool.fwd", "attn_pool.bwd",
    }  # fmt: skip
    assert {(r["dtype"], r["arch"]) for r in rows} == {
        (d, a) for d in ("fp32", "fp16", "bf16") for a in ("sm_80", "sm_90")
    }
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "kernels over their limits:\n" + proc.stdout
    for r in rows:
        assert r["shared"] <= r["shared_limit"] and r["spills"] == 0 and 0 < r["regs"] <= 255, r
