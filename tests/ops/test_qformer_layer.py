"""qformer_layer (fused cross-attention) against the eager Q-Former layer modules (MODEL_SPEC §1.5b)."""

from __future__ import annotations

import os

import pytest
import torch

from affectrt.config import QFormerConfig
from affectrt.models.qformer import QFormerLayer
from affectrt.ops.qformer_layer import qformer_layer

CFG = QFormerConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24)
ENC = 12


def _layer(seed=0):
    torch.manual_seed(seed)
    layer = QFormerLayer(CFG, ENC, fused=False).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_((1.0 if name.endswith("LayerNorm.weight") else 0.0) + 0.3 * torch.randn_like(p))
    return layer


def _data(b=3, k=4, n=9):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2] = False
    return torch.randn(b, k, CFG.hidden_size, generator=g), torch.randn(b, n, ENC, generator=g), mask


@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_forward_matches_eager_layer(backend):
    layer = _layer()
    h, x, mask = _data()
    with torch.no_grad():
        want = layer(h, x, mask)
        got = qformer_layer(
            h, x, dict(layer.named_parameters()), CFG.num_heads, CFG.layer_norm_eps, mask, backend
        )
        got_nomask = qformer_layer(h, x, dict(layer.named_parameters()), CFG.num_heads, CFG.layer_norm_eps)
        want_nomask = layer(h, x, None)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(got_nomask, want_nomask, atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), reason="needs TRITON_INTERPRET=1")
def test_gradients_through_triton_match_eager_layer():
    layer = _layer(1)
    h, x, mask = _data(b=3, k=2, n=7)
    # The eager layer ADDS dtype-min, so its fully padded row passes (numerically invisible) gradients
    # through the scores; the fused op defines them as 0 (gradcheck-consistent). Compare with one key left.
    mask[2, 0] = True
    h.requires_grad_()
    x.requires_grad_()
    params = dict(layer.named_parameters())
    got = qformer_layer(h, x, params, CFG.num_heads, CFG.layer_norm_eps, mask, backend="triton")
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, [h, x, *params.values()], g)
    want = layer(h, x, mask)
    want_grads = torch.autograd.grad(want, [h, x, *params.values()], g)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    for name, a, b in zip(["h", "x", *params], grads, want_grads):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_fused_model_layer_is_the_default_and_matches():
    layer = _layer(2)
    h, x, mask = _data()
    with torch.no_grad():
        want = layer(h, x, mask)
        layer.fused = True
        torch.testing.assert_close(layer(h, x, mask), want, atol=2e-5, rtol=2e-5)
    assert QFormerLayer(CFG, ENC).fused


def test_missing_weight_is_named():
    layer = _layer()
    h, x, _ = _data()
    params = dict(layer.named_parameters())
    del params["crossattention.self.key.weight"]
    with pytest.raises(KeyError, match="crossattention.self.key.weight"):
        qformer_layer(h, x, params, CFG.num_heads, CFG.layer_norm_eps)
