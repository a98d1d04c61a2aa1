"""FusionHead against a float64 re-derivation written straight from MODEL_SPEC §1.4-1.5, and the release keys."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from affectrt.config import AffectGPTConfig, get_preset
from affectrt.models.fusion import FusionHead, FusionOutput

TINY = get_preset("tiny")


def _cfg(base: AffectGPTConfig = TINY, **fusion_changes) -> AffectGPTConfig:
    return base.replace(fusion=dataclasses.replace(base.fusion, **fusion_changes))


def _head(cfg: AffectGPTConfig, seed: int = 0) -> FusionHead:
    """A float64 head in eval mode with every tensor random (LayerNorms included), so no term hides."""
    torch.manual_seed(seed)
    head = FusionHead(cfg).double().eval()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return head


def _inputs(
    cfg: AffectGPTConfig, b: int, tv: int, ta: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_v = torch.randn(b, tv, cfg.video_dim, generator=g, dtype=torch.float64)
    z_a = torch.randn(b, ta, cfg.audio_dim, generator=g, dtype=torch.float64)
    return z_v, z_a


# ---- the spec's formulas, straight-line ---------------------------------------------------------------


def _lin(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _ln(sd: dict, name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]


def ref_attention_tokens(sd: dict, mlp: str, proj: str, z: torch.Tensor, k: int) -> torch.Tensor:
    """s = Z·w + b; z̃ = Σ_t s_t Z_t; H = W z̃ + c; K copies."""
    s = z @ sd[mlp + ".weight"][0] + sd[mlp + ".bias"][0]  # [B,T]
    pooled = (s[:, :, None] * z).sum(dim=1)
    return _lin(sd, proj, pooled)[:, None, :].repeat(1, k, 1)


def ref_mean_tokens(sd: dict, proj: str, z: torch.Tensor, k: int) -> torch.Tensor:
    return _lin(sd, proj, z.sum(dim=1) / z.shape[1])[:, None, :].repeat(1, k, 1)


def ref_qformer(sd: dict, prefix: str, queries: torch.Tensor, x: torch.Tensor, heads: int, eps: float):
    """Post-LN BERT query path (§1.5b): LN(Q); per layer self-attn, cross-attn, GELU FFN, each + residual + LN."""

    def attention(h, kv, name):
        b, k, dim = h.shape
        dh = dim // heads
        q = _lin(sd, name + ".self.query", h).reshape(b, k, heads, dh).permute(0, 2, 1, 3)
        key = _lin(sd, name + ".self.key", kv).reshape(b, -1, heads, dh).permute(0, 2, 1, 3)
        val = _lin(sd, name + ".self.value", kv).reshape(b, -1, heads, dh).permute(0, 2, 1, 3)
        scores = q @ key.transpose(-1, -2) / math.sqrt(dh)
        probs = torch.exp(scores - scores.amax(-1, keepdim=True))
        probs = probs / probs.sum(-1, keepdim=True)
        out = (probs @ val).permute(0, 2, 1, 3).reshape(b, k, dim)
        return _ln(sd, name + ".output.LayerNorm", h + _lin(sd, name + ".output.dense", out), eps)

    h = _ln(sd, prefix + ".bert.embeddings.LayerNorm", queries, eps)
    n_layers = len({k.split(".")[4] for k in sd if k.startswith(prefix + ".bert.encoder.layer.")})
    for i in range(n_layers):
        p = f"{prefix}.bert.encoder.layer.{i}"
        h = attention(h, h, p + ".attention")
        h = attention(h, x, p + ".crossattention")
        f = _lin(sd, p + ".intermediate_query.dense", h)
        f = 0.5 * f * (1.0 + torch.erf(f / math.sqrt(2.0)))
        h = _ln(sd, p + ".output_query.LayerNorm", h + _lin(sd, p + ".output_query.dense", f), eps)
    return h


def ref_prefusion_attention(sd: dict, z_v: torch.Tensor, z_a: torch.Tensor, k: int) -> torch.Tensor:
    """u_v, u_a from mean pools; g = W2(W1[u_v;u_a]+b1)+b2 (no act, no softmax); H = W_mp(g0 u_v + g1 u_a)."""
    u_v = _lin(sd, "multi_video_embs", z_v.mean(dim=1))
    u_a = _lin(sd, "multi_audio_embs", z_a.mean(dim=1))
    g = _lin(sd, "fc_att", _lin(sd, "attention_mlp", torch.cat([u_v, u_a], dim=1)))
    fused = g[:, 0:1] * u_v + g[:, 1:2] * u_a
    return _lin(sd, "multi_llama_proj", fused)[:, None, :].repeat(1, k, 1)


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# ---- tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("t", [1, 7, 8])
def test_attention_fusion_matches_spec(b, t):
    cfg = TINY  # attention / attention / attention, K = 1
    head = _head(cfg)
    sd = head.state_dict()
    z_v, z_a = _inputs(cfg, b, t, t)
    with torch.no_grad():
        out = head(z_v, z_a)
    assert isinstance(out, FusionOutput)
    _close(out.video, ref_attention_tokens(sd, "video_attention_mlp", "affectgpt_proj", z_v, 1))
    _close(out.audio, ref_attention_tokens(sd, "audio_attention_mlp", "audio_llama_proj", z_a, 1))
    _close(out.multi, ref_prefusion_attention(sd, z_v, z_a, 1))
    assert out.video.shape == (b, 1, cfg.llm.hidden_size)


def test_attention_fusion_uneven_lengths():
    head = _head(TINY)
    sd = head.state_dict()
    z_v, z_a = _inputs(TINY, 2, 8, 5)
    with torch.no_grad():
        out = head(z_v, z_a)
    _close(out.multi, ref_prefusion_attention(sd, z_v, z_a, 1))
    _close(out.audio, ref_attention_tokens(sd, "audio_attention_mlp", "audio_llama_proj", z_a, 1))


@pytest.mark.parametrize("t", [1, 8])
def test_mean_fusion_matches_spec(t):
    cfg = _cfg(video_fusion="mean", audio_fusion="mean")
    head = _head(cfg)
    sd = head.state_dict()
    z_v, z_a = _inputs(cfg, 3, t, t)
    with torch.no_grad():
        out = head(z_v, z_a)
    _close(out.video, ref_mean_tokens(sd, "affectgpt_proj", z_v, 1))
    _close(out.audio, ref_mean_tokens(sd, "audio_llama_proj", z_a, 1))
    _close(out.multi, ref_prefusion_attention(sd, z_v, z_a, 1))


@pytest.mark.parametrize("b,tv,ta", [(1, 8, 8), (3, 5, 7)])
def test_qformer_fusion_matches_spec(b, tv, ta):
    cfg = _cfg(
        video_fusion="qformer",
        audio_fusion="qformer",
        multi_fusion="qformer",
        num_video_query_token=3,
        num_audio_query_token=2,
        num_multi_query_token=1,
    )
    qc = cfg.fusion.qformer
    head = _head(cfg)
    sd = head.state_dict()
    z_v, z_a = _inputs(cfg, b, tv, ta)
    with torch.no_grad():
        out = head(z_v, z_a)

    def tokens(prefix, pos_table, proj, x):
        x = x + sd[pos_table + ".weight"][: x.shape[1]]
        queries = sd[prefix + "_query_tokens"].expand(b, -1, -1)
        return _lin(
            sd, proj, ref_qformer(sd, prefix + "_Qformer", queries, x, qc.num_heads, qc.layer_norm_eps)
        )

    _close(out.video, tokens("video", "video_frame_position_embedding", "affectgpt_proj", z_v))
    _close(out.audio, tokens("audio", "audio_position_embedding", "audio_llama_proj", z_a))
    # Video first, then audio, positions 0..Tv+Ta-1.
    x = torch.cat([_lin(sd, "multi_video_embs", z_v), _lin(sd, "multi_audio_embs", z_a)], dim=1)
    _close(out.multi, tokens("multi", "multi_position_embedding", "multi_llama_proj", x))
    assert out.video.shape == (b, 3, cfg.llm.hidden_size) and out.audio.shape == (b, 2, cfg.llm.hidden_size)


def test_k_greater_than_one_repeats_one_vector():
    cfg = _cfg(audio_fusion="mean", num_video_query_token=4, num_audio_query_token=3, num_multi_query_token=2)
    head = _head(cfg)
    z_v, z_a = _inputs(cfg, 2, 8, 8)
    with torch.no_grad():
        out = head(z_v, z_a)
        one = _head(_cfg(audio_fusion="mean"))(z_v, z_a)  # same seed, K = 1
    for got, k, ref in ((out.video, 4, one.video), (out.audio, 3, one.audio), (out.multi, 2, one.multi)):
        assert got.shape == (2, k, cfg.llm.hidden_size)
        assert torch.equal(got, got[:, :1].expand_as(got))
        torch.testing.assert_close(got[:, :1], ref)


def test_folded_gate_equals_unfolded():
    head = _head(TINY)
    z_v, z_a = _inputs(TINY, 3, 8, 8)
    w, c = head.fold_gate()
    dm = TINY.multi_dim
    assert w.shape == (2, 2 * dm) and c.shape == (2,) and w.dtype == torch.float64
    with torch.no_grad():
        folded = head(z_v, z_a, gate=(w, c))
        unfolded = head(z_v, z_a)
    _close(folded.multi, unfolded.multi)
    torch.testing.assert_close(folded.audio, unfolded.audio, rtol=0, atol=0)
    # In float32 the fold only moves rounding.
    head32 = head.float()
    with torch.no_grad():
        f32 = head32(z_v.float(), z_a.float(), gate=head32.fold_gate()).multi
    torch.testing.assert_close(f32.double(), unfolded.multi, rtol=1e-4, atol=1e-4)


def test_fold_gate_needs_attention_prefusion():
    head = FusionHead(_cfg(multi_fusion="none"))
    with pytest.raises(ValueError, match="multi_fusion"):
        head.fold_gate()


def test_no_prefusion():
    cfg = _cfg(multi_fusion="none")
    head = _head(cfg)
    z_v, z_a = _inputs(cfg, 2, 8, 8)
    with torch.no_grad():
        out = head(z_v, z_a)
    assert out.multi is None and out.video.shape == (2, 1, cfg.llm.hidden_size)
    assert not any(k.startswith(("multi_", "attention_mlp", "fc_att")) for k in head.state_dict())


# The release's names for the fusion head in its released (attention) configuration, affectgpt.py L130-294.
RELEASE_ATTENTION_KEYS = {
    f"{m}.{p}"
    for m in (
        "image_llama_proj",
        "video_attention_mlp",
        "affectgpt_proj",
        "audio_attention_mlp",
        "audio_llama_proj",
        "multi_audio_embs",
        "multi_video_embs",
        "attention_mlp",
        "fc_att",
        "multi_llama_proj",
    )
    for p in ("weight", "bias")
}


def _release_qformer_keys(prefix: str, num_layers: int) -> set[str]:
    per_layer = [
        f"{blk}.{part}"
        for blk in ("attention", "crossattention")
        for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
    ] + ["intermediate_query.dense", "output_query.dense", "output_query.LayerNorm"]
    keys = {f"{prefix}.bert.embeddings.position_ids"}
    keys |= {f"{prefix}.bert.embeddings.LayerNorm.{wb}" for wb in ("weight", "bias")}
    keys |= {
        f"{prefix}.bert.encoder.layer.{i}.{p}.{wb}"
        for i in range(num_layers)
        for p in per_layer
        for wb in ("weight", "bias")
    }
    return keys


def test_state_dict_keys_are_release_keys_attention():
    with torch.device("meta"):
        head = FusionHead(get_preset("affectgpt-7b-face"))
    assert set(head.state_dict()) == RELEASE_ATTENTION_KEYS


def test_state_dict_keys_are_release_keys_qformer():
    cfg = _cfg(video_fusion="qformer", audio_fusion="qformer", multi_fusion="qformer")
    with torch.device("meta"):
        head = FusionHead(cfg)
    expected = {
        f"{m}.{p}"
        for m in ("image_llama_proj", "affectgpt_proj", "audio_llama_proj")
        for p in ("weight", "bias")
    }
    expected |= {
        f"{m}.{p}"
        for m in ("multi_audio_embs", "multi_video_embs", "multi_llama_proj")
        for p in ("weight", "bias")
    }
    expected |= {
        "video_frame_position_embedding.weight",
        "audio_position_embedding.weight",
        "multi_position_embedding.weight",
        "video_query_tokens",
        "audio_query_tokens",
        "multi_query_tokens",
    }
    n = cfg.fusion.qformer.num_layers
    expected |= _release_qformer_keys("video_Qformer", n) | _release_qformer_keys("audio_Qformer", n)
    expected |= _release_qformer_keys("multi_Qformer", n)
    sd = head.state_dict()
    assert set(sd) == expected
    assert sd["multi_position_embedding.weight"].shape == (264, cfg.multi_dim)
    assert sd["video_frame_position_embedding.weight"].shape == (32, cfg.video_dim)
    assert sd["audio_position_embedding.weight"].shape == (8, cfg.audio_dim)
    assert sd["multi_Qformer.bert.encoder.layer.0.crossattention.self.key.weight"].shape[1] == cfg.multi_dim
    # The Q-Former output is hidden_size wide, so the projections read hidden_size.
    assert sd["multi_llama_proj.weight"].shape == (cfg.llm.hidden_size, cfg.fusion.qformer.hidden_size)


def test_trainable_parameter_count_7b():
    """MODEL_SPEC §1.8: the released fusion head's trainable parameters, ≈16.8M with image_llama_proj."""
    with torch.device("meta"):
        head = FusionHead(get_preset("affectgpt-7b-face"))
    per_module = {name: sum(p.numel() for p in m.parameters()) for name, m in head.named_children()}
    assert per_module == {
        "image_llama_proj": 768 * 3584 + 3584,  # 2.756M
        "affectgpt_proj": 768 * 3584 + 3584,  # 2.756M
        "audio_llama_proj": 1024 * 3584 + 3584,  # 3.674M
        "multi_llama_proj": 1024 * 3584 + 3584,  # 3.674M
        "multi_audio_embs": 1024 * 1024 + 1024,  # 1.050M
        "multi_video_embs": 768 * 1024 + 1024,  # 0.787M
        "attention_mlp": 2048 * 1024 + 1024,  # 2.098M
        "fc_att": 2050,
        "video_attention_mlp": 769,
        "audio_attention_mlp": 1025,
    }
    total = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert total == 16_798_468
    assert total + 40_370_176 == 57_168_644  # with LoRA: "≈ 57.2M"


def test_gradients_reach_every_used_parameter():
    cfg = _cfg(video_fusion="qformer", audio_fusion="attention", multi_fusion="qformer")
    torch.manual_seed(0)
    head = FusionHead(cfg)
    z_v, z_a = (t.float() for t in _inputs(cfg, 2, 8, 8))
    out = head(z_v, z_a)
    (out.multi.square().sum() + out.audio.square().sum() + out.video.square().sum()).backward()
    no_grad = sorted(n for n, p in head.named_parameters() if p.grad is None)
    assert no_grad == ["image_llama_proj.bias", "image_llama_proj.weight"]


def test_input_errors_are_named():
    head = FusionHead(TINY)
    z_v, z_a = (t.float() for t in _inputs(TINY, 2, 8, 8))
    with pytest.raises(ValueError, match="z_video"):
        head(z_v[..., :-1], z_a)
    with pytest.raises(ValueError, match="z_audio"):
        head(z_v, z_a[:, :0])
    with pytest.raises(ValueError, match="batch sizes"):
        head(z_v, z_a[:1])
    qhead = FusionHead(_cfg(audio_fusion="qformer"))
    with pytest.raises(ValueError, match="position table has only 8 rows"):
        qhead.encode_audio(torch.randn(1, 9, TINY.audio_dim))
    with pytest.raises(ValueError, match="video_fusion"):
        FusionHead(_cfg(video_fusion="max"))


def test_under_autocast_and_fold_gate_stays_exact():
    cfg = _cfg(video_fusion="qformer", multi_fusion="attention")
    head = _head(cfg).float()
    z_v, z_a = (t.float() for t in _inputs(cfg, 2, 8, 8))
    with torch.no_grad():
        ref = head(z_v, z_a)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            gate = head.fold_gate()
            got = head(z_v, z_a, gate=gate)
    assert gate[0].dtype == torch.float32
    w1, w2 = head.attention_mlp.weight.double(), head.fc_att.weight.double()
    torch.testing.assert_close(gate[0].double(), w2 @ w1, rtol=1e-6, atol=1e-7)
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.float(), b, rtol=0.05, atol=0.05 * b.abs().max().item())
