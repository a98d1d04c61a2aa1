"""``python benchmarks/cpu_parts.py --only front_end``: the shared HuBERT front end against window by window."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_parts.py"


def test_front_end_part_reports_both_clips(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "front_end", "--repeats", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = re.findall(
        r"front_end ([\d.]+) s clip: shared ([\d.]+) ms, window by window ([\d.]+) ms", out.stdout
    )
    assert [s for s, _, _ in lines] == ["3.0", "3.0417"]
    assert all(float(a) > 0 and float(b) > 0 for _, a, b in lines)
