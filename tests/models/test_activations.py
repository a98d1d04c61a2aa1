"""In-place activations at inference: the same bits as out of place, and the encoders' outputs unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectrt.config import get_preset
from affectrt.models.activations import gelu, quick_gelu
from affectrt.models.clip import CLIPVisionEncoder
from affectrt.models.hubert import HubertEncoder


@pytest.mark.parametrize(
    "fn, ref", [(gelu, F.gelu), (quick_gelu, lambda x: x * torch.sigmoid(1.702 * x))], ids=["gelu", "quick"]
)
def test_inference_overwrites_the_input_with_the_same_bits(fn, ref):
    x = torch.randn(4, 33, 40) * 3
    want = ref(x)
    kept = x.clone()
    y = fn(kept.clone())  # with autograd on: out of place
    assert torch.equal(y, want)
    with torch.no_grad():
        z = fn(kept)
    assert torch.equal(z, want)
    if fn is gelu:
        assert z.data_ptr() == kept.data_ptr()  # written where the input was
    x.requires_grad_(True)
    fn(x).sum().backward()  # the backward pass still sees its input
    torch.testing.assert_close(x.grad, torch.func.grad(lambda t: ref(t).sum())(x.detach()))


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_encoders_give_the_same_bits_with_and_without_autograd():
    cfg = get_preset("tiny")
    clip, hubert = _perturbed(CLIPVisionEncoder(cfg.vision)), _perturbed(HubertEncoder(cfg.audio))
    pixels = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    audio = torch.randn(3, 16000)
    with torch.no_grad():
        got_v, got_a = clip(pixels), hubert(audio)
    want_v, want_a = clip(pixels).detach(), [h.detach() for h in hubert(audio)]
    assert torch.equal(got_v, want_v)
    assert len(got_a) == len(want_a) and all(torch.equal(g, w) for g, w in zip(got_a, want_a))
