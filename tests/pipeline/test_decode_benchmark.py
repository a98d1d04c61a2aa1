"""``python benchmarks/decode.py`` on the tiny preset: the target line, the JSON record and the step profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"


def test_decode_benchmark_reports_both_sides_and_profiles_a_step(tmp_path):
    pytest.importorskip("peft")
    argv = ["--preset", "tiny", "--batch", "3", "--new-tokens", "4", "--repeats", "1", "--profile"]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "target 5: batch-3 decode" in out.stdout
    data = json.loads((tmp_path / "decode.json").read_text())
    assert data["batch"] == 3 and set(data["ms_per_step"]) == {"affectrt", "transformers"}
    assert data["speedup"] == pytest.approx(
        data["ms_per_step"]["transformers"] / data["ms_per_step"]["affectrt"]
    )
    profile = (tmp_path / "decode_profile.txt").read_text()
    for side in ("affectrt", "transformers"):
        assert f"{side}: " in profile and "ms of operator self time per decode step" in profile
    assert "aten::mm" in profile or "aten::addmm" in profile
