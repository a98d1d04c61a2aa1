"""The query-only Q-Former against transformers' Blip2QFormerModel (same architecture) and the release keys."""

from __future__ import annotations

import pytest
import torch

from affectrt.config import QFormerConfig
from affectrt.models.qformer import QFormer

transformers = pytest.importorskip("transformers")

CFG = QFormerConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
ENC_WIDTH = 24


def _hf_model(cfg: QFormerConfig, encoder_width: int):
    hf_cfg = transformers.Blip2QFormerConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_act="gelu",
        encoder_hidden_size=encoder_width,
        cross_attention_frequency=1,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
    )
    return transformers.Blip2QFormerModel(hf_cfg).eval()


def _hf_to_release_key(key: str) -> str:
    key = key.replace("layernorm.", "bert.embeddings.LayerNorm.", 1) if key.startswith("layernorm.") else key
    key = key.replace(".attention.attention.", ".attention.self.")
    key = key.replace(".crossattention.attention.", ".crossattention.self.")
    return key if key.startswith("bert.") else "bert." + key


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    hf = _hf_model(CFG, ENC_WIDTH)
    # Random (non-identity) LayerNorms so the key mapping is really exercised.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            is_ln_weight = name.lower().endswith("layernorm.weight")
            p.copy_((1.0 if is_ln_weight else 0.0) + 0.2 * torch.randn_like(p))
    ours = QFormer(CFG, ENC_WIDTH).eval()
    sd = {_hf_to_release_key(k): v for k, v in hf.state_dict().items()}
    sd["bert.embeddings.position_ids"] = ours.bert.embeddings.position_ids.clone()
    ours.load_state_dict(sd, strict=True)
    return hf, ours


@pytest.mark.parametrize("batch,k,n", [(1, 1, 16), (3, 4, 7)])
def test_matches_blip2_qformer(pair, batch, k, n):
    hf, ours = pair
    g = torch.Generator().manual_seed(batch * 10 + n)
    q = torch.randn(batch, k, CFG.hidden_size, generator=g)
    x = torch.randn(batch, n, ENC_WIDTH, generator=g)
    with torch.no_grad():
        ref = hf(query_embeds=q, encoder_hidden_states=x).last_hidden_state
        got = ours(q, x)
        got_ones = ours(q, x, torch.ones(batch, n, dtype=torch.long))
    assert got.shape == (batch, k, CFG.hidden_size)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_ones, ref, atol=1e-5, rtol=1e-5)


def test_matches_blip2_qformer_with_padding(pair):
    hf, ours = pair
    g = torch.Generator().manual_seed(7)
    b, k, n = 3, 2, 9
    q = torch.randn(b, k, CFG.hidden_size, generator=g)
    x = torch.randn(b, n, ENC_WIDTH, generator=g)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 1:] = 0
    with torch.no_grad():
        ref = hf(query_embeds=q, encoder_hidden_states=x, encoder_attention_mask=mask).last_hidden_state
        got = ours(q, x, mask)
        got_bool = ours(q, x, mask.bool())
        # Padded positions must not matter: changing them leaves the output unchanged.
        x2 = x.clone()
        x2[mask == 0] = 100.0
        got_changed = ours(q, x2, mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_bool, got)
    torch.testing.assert_close(got_changed, got, atol=1e-6, rtol=1e-6)
    # Row 0 (no padding) equals the unmasked computation of that row.
    with torch.no_grad():
        torch.testing.assert_close(ours(q[:1], x[:1]), got[:1], atol=1e-6, rtol=1e-6)


def test_state_dict_keys_follow_release():
    m = QFormer(CFG, ENC_WIDTH)
    sd = m.state_dict()
    per_layer = [
        f"{blk}.{part}.{wb}"
        for blk in ("attention", "crossattention")
        for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
        for wb in ("weight", "bias")
    ] + [
        f"{part}.{wb}"
        for part in ("intermediate_query.dense", "output_query.dense", "output_query.LayerNorm")
        for wb in ("weight", "bias")
    ]
    expected = {
        "bert.embeddings.position_ids",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    }
    expected |= {f"bert.encoder.layer.{i}.{p}" for i in range(CFG.num_layers) for p in per_layer}
    assert set(sd) == expected
    assert sd["bert.encoder.layer.1.crossattention.self.key.weight"].shape == (CFG.hidden_size, ENC_WIDTH)
    assert sd["bert.encoder.layer.0.attention.self.key.weight"].shape == (CFG.hidden_size, CFG.hidden_size)
    pos = sd["bert.embeddings.position_ids"]
    assert pos.dtype == torch.int64 and pos.shape == (1, 512)
    assert torch.equal(pos[0], torch.arange(512))


def test_release_size_parameter_count():
    # Release Q-Former (bert-base, 2 layers, encoder_width 1024), without the query tokens.
    with torch.device("meta"):
        m = QFormer(QFormerConfig(), 1024)
    h, i, e = 768, 3072, 1024
    per_layer = 4 * (h * h + h) + 2 * h  # self-attention + output LN
    per_layer += (h * h + h) + 2 * (e * h + h) + (h * h + h) + 2 * h  # cross-attention
    per_layer += (h * i + i) + (i * h + h) + 2 * h  # query FFN
    assert sum(p.numel() for p in m.parameters()) == 2 * h + 2 * per_layer


def test_dropout_only_in_training():
    torch.manual_seed(1)
    m = QFormer(CFG, ENC_WIDTH)
    q = torch.randn(2, 3, CFG.hidden_size)
    x = torch.randn(2, 5, ENC_WIDTH)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(q, x), m(q, x))
        m.train()
        torch.manual_seed(2)
        a = m(q, x)
        torch.manual_seed(3)
        b = m(q, x)
    assert not torch.allclose(a, b)


def test_shape_errors_name_the_input():
    m = QFormer(CFG, ENC_WIDTH)
    q = torch.randn(2, 1, CFG.hidden_size)
    with pytest.raises(ValueError, match="encoder_hidden"):
        m(q, torch.randn(2, 5, ENC_WIDTH + 1))
    with pytest.raises(ValueError, match="batch sizes"):
        m(q, torch.randn(3, 5, ENC_WIDTH))
    with pytest.raises(ValueError, match="encoder_mask"):
        m(q, torch.randn(2, 5, ENC_WIDTH), torch.ones(2, 4))
    with pytest.raises(ValueError, match="query_tokens"):
        m(torch.randn(2, 1, CFG.hidden_size + 1), torch.randn(2, 5, ENC_WIDTH))


def test_runs_under_autocast_with_mask():
    # The release runs the fusion under half-precision autocast; the padding mask must follow q's dtype.
    torch.manual_seed(4)
    m = QFormer(CFG, ENC_WIDTH).eval()
    q = torch.randn(2, 3, CFG.hidden_size)
    x = torch.randn(2, 5, ENC_WIDTH)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        ref = m(q, x, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(q, x, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), ref, atol=0.1, rtol=0.1)
