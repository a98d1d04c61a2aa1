"""Weights read from safetensors are mapped in at load, not one page fault at a time in the decode loop."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import save_file

from affectrt.models.hf_io import load_state_dict


def _resident_kb(addr: int) -> int | None:
    """Rss of the mapping of this process that holds ``addr`` (/proc/self/smaps), or None if none does."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1])
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_loaded_weights_are_resident(tmp_path):
    table = torch.randn(4096, 1024)  # 16 MB
    save_file({"model.embed_tokens.weight": table}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    w = load_state_dict(tmp_path)["model.embed_tokens.weight"]
    rss = _resident_kb(w.data_ptr())
    if rss is None:
        pytest.skip("this safetensors build copies tensors out of the file: nothing is memory-mapped")
    # Every page already mapped: a decode step's first read of a row costs no page fault.
    assert rss >= 0.99 * table.numel() * 4 / 1024, f"only {rss} KB of the 16 MB table is mapped after load"
    assert torch.equal(w, table)
