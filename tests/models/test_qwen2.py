"""Qwen2ForCausalLM against transformers on tiny random configs, plus loading and the static KV cache."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from affectrt.models.hf_io import WeightsError  # noqa: E402
from affectrt.models.kv_cache import StaticKVCache  # noqa: E402
from affectrt.models.qwen2 import Qwen2ForCausalLM, hf_key, own_key, qwen2_config_from_hf  # noqa: E402
from affectrt.testing.hf_models import tiny_qwen2  # noqa: E402

VOCAB, SEQ = 256, 9


def tiny_hf(tie: bool = False, seed: int = 0):
    return tiny_qwen2(VOCAB, tie=tie, seed=seed)


@pytest.fixture(scope="module")
def pair():
    hf = tiny_hf()
    ours = Qwen2ForCausalLM(qwen2_config_from_hf(hf.config.to_dict())).eval()
    ours.load_hf_state_dict(hf.state_dict())
    return hf, ours


def left_padded(batch: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, SEQ), generator=g)
    mask = torch.ones(batch, SEQ, dtype=torch.long)
    for b, npad in enumerate([0, 3, 5][:batch]):
        mask[b, :npad] = 0
    return ids, mask


@torch.no_grad()
def test_logits_match_hf(pair):
    hf, ours = pair
    ids, _ = left_padded()
    torch.testing.assert_close(ours(ids), hf(input_ids=ids).logits, atol=1e-5, rtol=0)
    emb = ours.embed_tokens(ids)
    torch.testing.assert_close(ours(inputs_embeds=emb), hf(inputs_embeds=emb).logits, atol=1e-5, rtol=0)


@torch.no_grad()
def test_right_padded_training_path_matches_hf(pair):
    hf, ours = pair
    ids, _ = left_padded()
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    keep = mask.bool()
    got, want = ours(ids, attention_mask=mask), hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=0)


@torch.no_grad()
def test_left_padded_rows_equal_alone(pair):
    _, ours = pair
    ids, mask = left_padded()
    batched = ours(ids, attention_mask=mask)
    assert torch.isfinite(batched).all()
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = ours(ids[b : b + 1, SEQ - n :])
        torch.testing.assert_close(batched[b, SEQ - n :], alone[0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_kv_cache_prefill_and_decode_equal_full_forward(pair):
    _, ours = pair
    ids, mask = left_padded()
    B, extra = ids.shape[0], 4
    full_ids = torch.cat([ids, torch.randint(0, VOCAB, (B, extra))], dim=1)
    full_mask = torch.cat([mask, torch.ones(B, extra, dtype=torch.long)], dim=1)
    want = ours(full_ids, attention_mask=full_mask)

    cache = StaticKVCache.for_model(ours, B, SEQ + extra + 3)  # longer than needed: unused slots masked
    got = [ours(ids, attention_mask=full_mask, kv_cache=cache)]
    for t in range(extra):
        pos = torch.tensor([SEQ + t])
        got.append(
            ours(
                full_ids[:, SEQ + t : SEQ + t + 1],
                attention_mask=full_mask,
                kv_cache=cache,
                cache_position=pos,
            )
        )
    got = torch.cat(got, dim=1)
    keep = full_mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=0)


def test_from_pretrained_safetensors_and_dtype(tmp_path):
    hf = tiny_hf(seed=3)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = Qwen2ForCausalLM.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in ours.parameters()) and not ours.training
    ids, _ = left_padded()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(input_ids=ids).logits, atol=1e-5, rtol=0)

    half = Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float16)
    hf_half = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float16).eval()
    assert half.lm_head.weight.dtype == torch.float16
    assert half.rotary_emb.inv_freq.dtype == torch.float32  # angles stay exact
    with torch.no_grad():
        got, want = half(ids), hf_half(input_ids=ids).logits
    assert got.dtype == want.dtype == torch.float16
    torch.testing.assert_close(got, want, atol=0, rtol=0)  # same ops in the same dtypes: bit-exact


def test_tied_embeddings(tmp_path):
    hf = tiny_hf(tie=True, seed=4)
    hf.save_pretrained(tmp_path)
    ours = Qwen2ForCausalLM.from_pretrained(tmp_path)
    assert ours.lm_head is None
    ids, _ = left_padded()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(input_ids=ids).logits, atol=1e-5, rtol=0)
    # A stored lm_head.weight next to tied embeddings is tolerated.
    ours.load_hf_state_dict({**hf.state_dict(), "lm_head.weight": hf.lm_head.weight})


def test_model_cast_keeps_fp32_rope(pair):
    _, ours = pair
    m = Qwen2ForCausalLM(ours.cfg)
    inv = m.rotary_emb.inv_freq.clone()
    m.to(torch.bfloat16)
    assert m.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(m.rotary_emb.inv_freq, inv, atol=0, rtol=0)


def test_bad_weights_raise_one_clear_error(pair):
    hf, ours = pair
    sd = dict(hf.state_dict())
    del sd["model.layers.1.mlp.up_proj.weight"]
    sd["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(3)
    sd["model.extra.weight"] = torch.zeros(1)
    model = Qwen2ForCausalLM(ours.cfg)
    with pytest.raises(WeightsError) as e:
        model.load_hf_state_dict(sd, source="ckpt")
    msg = str(e.value)
    assert "model.layers.1.mlp.up_proj.weight" in msg
    assert "model.layers.0.self_attn.q_proj.bias" in msg and "model.extra.weight" in msg


def test_key_mapping_and_config():
    assert hf_key("layers.3.self_attn.q_proj.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert hf_key("layers.3.mlp.down_proj.base_layer.weight") == "model.layers.3.mlp.down_proj.weight"
    assert hf_key("lm_head.weight") == "lm_head.weight"
    assert own_key("model.norm.weight") == "norm.weight"
    old_style = {  # transformers 4.x config.json of Qwen2.5-7B-Instruct
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_act": "silu",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "max_position_embeddings": 32768,
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "vocab_size": 152064,
    }
    cfg = qwen2_config_from_hf(old_style)
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.rope_theta) == (128, 4, 1e6)
    with pytest.raises(ValueError, match="sliding"):
        qwen2_config_from_hf({**old_style, "use_sliding_window": True})


def test_training_backward_and_checkpointing(pair):
    _, ours = pair
    model = Qwen2ForCausalLM(ours.cfg)
    model.load_state_dict(ours.state_dict())
    model.train()
    ids, _ = left_padded()
    mask = torch.ones_like(ids)
    mask[2, -3:] = 0

    def grads(ckpt: bool):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        logits = model(ids, attention_mask=mask)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, ck = grads(False), grads(True)
    assert plain["layers.0.self_attn.q_proj.weight"].abs().sum() > 0
    for n in plain:
        torch.testing.assert_close(ck[n], plain[n], atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_4d_mask_with_a_cache_covers_the_attended_slots(pair):
    _, ours = pair
    ids, mask = left_padded()
    cache = StaticKVCache.for_model(ours, ids.shape[0], SEQ + 2)
    cache.length = SEQ
    want = ours(ids, attention_mask=mask, kv_cache=cache)
    allowed = mask.bool()[:, None, None, :] & torch.ones(SEQ, SEQ, dtype=torch.bool).tril()[None, None]
    allowed |= torch.eye(SEQ, dtype=torch.bool)[None, None]  # a padding query sees itself, as the 2-D path
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    got = ours(ids, attention_mask=allowed, position_ids=pos, kv_cache=cache)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="needs 9 key columns"):
        ours(ids, attention_mask=allowed[..., :-1], position_ids=pos, kv_cache=cache)


@pytest.mark.parametrize("dim", [64, 3584])
def test_rmsnorm_inference_kernel_equals_the_hf_formula_bit_for_bit(dim):
    from affectrt.models.qwen2 import RMSNorm

    norm = RMSNorm(dim, 1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, dim) * 3
    with torch.no_grad():
        fused = norm(x)  # torch's rms_norm kernel
    composite = norm(x).detach()  # with autograd: HF's formula, op by op
    assert torch.equal(fused, composite)
