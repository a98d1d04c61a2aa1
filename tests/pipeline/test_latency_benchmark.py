"""``python benchmarks/latency.py`` as a newcomer runs it: readable stage names, both spreads, no noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "latency.py"


def test_help_names_no_internal_documents():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "media decode" in out.stdout and "LLM decode/token" in out.stdout
    for internal in ("PERFORMANCE", "MODEL_SPEC", "DESIGN.md", "target 1"):
        assert internal not in out.stdout


def test_table_both_spreads_and_files(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("decord")
    argv = ["--preset", "tiny", "--repeats", "2", "--new-tokens", "2", "--out-dir", str(tmp_path)]
    out = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("AffectGPT latency"), "nothing may print above the table"
    header = lines[1].split()
    assert header.count("p20-p80") == 2 and "reference" in header
    assert [line[:18].strip() for line in lines[2:8]] == [
        "media decode", "preprocess", "encoders", "fusion+splice", "LLM prefill", "LLM decode/token",
    ]  # fmt: skip
    assert "FutureWarning" not in out.stderr and "Loading weights" not in out.stderr
    data = json.loads((tmp_path / "latency.json").read_text())
    assert set(data["affectrt"]) == set(data["baseline"]) and data["device_name"]
    # the fp32 bound: the encoders' counted FLOPs at the CPU's measured GEMM rate can only be faster than
    # affectrt's real encoders, so the bound on the end-to-end ratio is at least the measured ratio
    assert any(line.startswith("fp32 bound: the encoders do") for line in lines)
    bound = data["bound"]
    assert bound["encoder_gflop_per_clip"] > 0 and bound["gemm_gflops"] > 0
    measured = data["baseline_end_to_end_ms"] / data["affectrt_end_to_end_ms"]
    assert bound["max_speedup_other_stages_free"] >= bound["max_speedup_other_stages_as_measured"] >= measured
