"""In-place activations at inference: the same bits as out of place, and the encoders' outputs unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectrt.config import get_preset
from affectrt.models.activations import gelu, quick_gelu
from affectrt.models.clip import CLIPVisionEncoder
from affectrt.models.hubert import HubertEncoder
from affectrt.ops import bias_act, feat_conv
from affectrt.ops._ext import cpu_ext


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


def _encoders_and_inputs():
    cfg = get_preset("tiny")
    clip, hubert = _perturbed(CLIPVisionEncoder(cfg.vision)), _perturbed(HubertEncoder(cfg.audio))
    pixels = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    audio = torch.randn(3, 16000)
    return clip, hubert, pixels, audio


def test_in_place_activations_give_the_same_bits_with_and_without_autograd(monkeypatch):
    # With the C++ epilogues out of the way, inference differs from training only by writing in place.
    monkeypatch.setattr(bias_act, "cpu_kernel_fits", lambda *a: False)
    monkeypatch.setattr(feat_conv, "cpu_kernel_fits", lambda *a: False)
    clip, hubert, pixels, audio = _encoders_and_inputs()
    with torch.no_grad():
        got_v, got_a = clip(pixels), hubert(audio)
    want_v, want_a = clip(pixels).detach(), [h.detach() for h in hubert(audio)]
    assert torch.equal(got_v, want_v)
    assert len(got_a) == len(want_a) and all(torch.equal(g, w) for g, w in zip(got_a, want_a))


def _count_epilogue_calls(monkeypatch) -> dict[str, int]:
    """Calls of each C++ encoder epilogue from now on (the extension's functions wrapped)."""
    calls = {"bias_act": 0, "ln_gelu": 0, "conv0_ln_gelu": 0}
    ext = cpu_ext()

    def spy(name):
        fn = getattr(ext, name)

        def counted(*args):
            calls[name] += 1
            return fn(*args)

        return counted

    for name in calls:
        monkeypatch.setattr(ext, name, spy(name))
    return calls


@pytest.mark.skipif(cpu_ext() is None, reason="affectrt._C is not built")
def test_inference_runs_the_cpu_epilogues_and_matches_autograd(monkeypatch):
    calls = _count_epilogue_calls(monkeypatch)
    clip, hubert, pixels, audio = _encoders_and_inputs()
    with torch.no_grad():
        got_v, got_a = clip(pixels), hubert(audio)
    layers = len(clip.blocks) + len(hubert.blocks)
    assert calls == {"bias_act": layers, "ln_gelu": len(hubert.convs) - 1, "conv0_ln_gelu": 1}
    want_v, want_a = clip(pixels).detach(), [h.detach() for h in hubert(audio)]  # autograd on: torch's ops
    assert calls["bias_act"] == layers  # not called again
    torch.testing.assert_close(got_v, want_v, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_a, want_a, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(cpu_ext() is None, reason="affectrt._C is not built")
def test_under_cpu_autocast_the_encoders_run_the_cpu_epilogues_in_float32(monkeypatch):
    # bf16 autocast makes the GEMMs' and convs' outputs bfloat16; the epilogues take them with the float32
    # bias / LayerNorm parameters, compute in float32 and round once (torch's path: bf16 ops, mixed LayerNorm).
    clip, hubert, pixels, audio = _encoders_and_inputs()

    def run():
        return clip(pixels), hubert(audio)[-1]

    def err(got, want):
        return ((got.float() - want).abs().max() / want.abs().max()).item()

    with torch.no_grad():
        want = run()
        with torch.autocast("cpu", dtype=torch.bfloat16), monkeypatch.context() as torch_path:
            torch_path.setattr(bias_act, "cpu_kernel_fits", lambda *a: False)
            torch_path.setattr(feat_conv, "cpu_kernel_fits", lambda *a: False)
            torch_ops = run()
    calls = _count_epilogue_calls(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    layers = len(clip.blocks) + len(hubert.blocks)
    assert calls == {"bias_act": layers, "ln_gelu": len(hubert.convs) - 1, "conv0_ln_gelu": 1}
    assert err(got[0], want[0]) < 0.01  # CLIP, bf16 against fp32
    # the tiny HuBERT's states move by half their scale under bf16 either way: no further than torch's path
    for g, t, w in zip(got, torch_ops, want):
        assert err(g, w) <= 1.1 * err(t, w) + 1e-3
