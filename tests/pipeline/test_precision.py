"""--precision: the release's rule by default, bf16 autocast on request, and CPU bf16 detection."""

from __future__ import annotations

import pytest
import torch

from affectrt.checkpoint import load_model
from affectrt.pipeline import AffectGPTPipeline, ClipInput


def test_default_is_the_releases_rule_and_bf16_stays_close(tiny_model_dir, clip_path):
    model, tok = load_model(tiny_model_dir, variant="frame")
    fp32 = AffectGPTPipeline(model, tok)
    assert fp32.precision == "fp32" and not fp32.autocast  # the release's autocast is a no-op on CPU
    bf16 = AffectGPTPipeline(model, tok, precision="bf16")
    batch = fp32.preprocess([fp32.load_media(ClipInput(video=clip_path))], [""])
    z32, _ = fp32.encode(batch)
    z16, _ = bf16.encode(batch)
    assert z32.dtype == torch.float32 and z16.dtype == torch.bfloat16
    err = float((z16.float() - z32).abs().max() / z32.abs().max())
    assert 0 < err < 2e-2  # bf16 really ran, and stays within the size of the release's own fp16 error
    with pytest.raises(ValueError, match="precision"):
        AffectGPTPipeline(model, tok, precision="int8")


def test_cpu_bf16_units_are_read_from_the_flags(monkeypatch):
    import affectrt.cpu_features as cf

    for flags, units in (
        ({"amx_bf16", "avx512_bf16"}, "AMX"),
        ({"avx512_bf16"}, "AVX512-BF16"),
        (set(), None),
    ):
        monkeypatch.setattr(cf, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert cf.cpu_bf16_units() == units
