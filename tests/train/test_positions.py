"""The training forward gives the release's logits at every position of a right-padded batch."""

from __future__ import annotations

import pytest
import torch

from affectrt.models.qwen2 import Qwen2ForCausalLM, qwen2_config_from_hf, training_attention_mask


def test_right_padded_training_logits_match_hf_everywhere():
    pytest.importorskip("transformers")
    from affectrt.testing.hf_models import tiny_qwen2

    hf = tiny_qwen2(vocab_size=128)
    hf.config._attn_implementation = "sdpa"  # the release: transformers' default (SDPA)
    ours = Qwen2ForCausalLM(qwen2_config_from_hf(hf.config.to_dict()))
    ours.load_hf_state_dict(hf.state_dict())
    ours.eval()
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(3, 12, 64, generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0  # right padding (the final eos is masked too, pad == eos)
    mask[2, 10:] = 0
    with torch.no_grad():
        want = hf(inputs_embeds=embeds, attention_mask=mask).logits
        got = ours(inputs_embeds=embeds, attention_mask=training_attention_mask(mask))
        old = ours(inputs_embeds=embeds, attention_mask=mask)  # the inference (left-padding) rule
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # padding positions included
    real = mask.bool()
    torch.testing.assert_close(old[real], want[real], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(old[~real], want[~real], atol=1e-3)  # the inference rule differs on padding


def test_affectgpt_loss_unchanged_and_uses_training_positions():
    from affectrt.config import get_preset
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.text.prompts import build_prompt
    from affectrt.text.splice import training_batch
    from affectrt.text.tokenizer import byte_level_tokenizer

    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = AffectGPT(cfg, with_encoders=False).eval()
    tok = byte_level_tokenizer()
    p = build_prompt(cfg, "hi", "Q?")
    tb = training_batch(tok, [p, p], ["a long answer here", "b"])
    zv, za = torch.randn(2, 8, 24), torch.randn(2, 8, 32)
    with torch.no_grad():
        mean = model.loss(tb, zv, za, tok.placeholder_ids)
        total = model.loss(tb, zv, za, tok.placeholder_ids, reduction="sum")
        n = (tb.labels[:, 1:] != -100).sum()
        # The loss only reads real positions, so the old (inference-rule) forward gives the same value.
        embeds = model.inputs_embeds(tb.input_ids, model.multimodal_embeddings(zv, za), tok.placeholder_ids)
        logits = model.llm(inputs_embeds=embeds, attention_mask=tb.attention_mask)
        ref = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tb.labels[:, 1:].reshape(-1)
        )
    torch.testing.assert_close(mean, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total / n, mean)
    # The loss's plain-causal shortcut equals the loss read from the release-mask logits.
    with torch.no_grad():
        full = model.training_logits(tb, zv, za, tok.placeholder_ids)
        via_mask = torch.nn.functional.cross_entropy(
            full[:, :-1].reshape(-1, full.shape[-1]), tb.labels[:, 1:].reshape(-1)
        )
    torch.testing.assert_close(mean, via_mask, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    from affectrt.text.prompts import DESCRIPTION_QUESTION, build_prompt
    from affectrt.text.splice import training_batch
    from affectrt.train.model import ModelSpec, build_model

    out = []
    for ckpt in (False, True):
        spec = ModelSpec(preset="tiny", tokenizer="bpe", gradient_checkpointing=ckpt, lora_dropout=0.0)
        model, tok = build_model(spec, with_encoders=False)
        model.train()
        p = build_prompt(model.cfg, "hi", DESCRIPTION_QUESTION)
        tb = training_batch(tok, [p, p], ["abc def", "x"])
        g = torch.Generator().manual_seed(0)
        loss = model.loss(
            tb, torch.randn(2, 8, 24, generator=g), torch.randn(2, 8, 32, generator=g), tok.placeholder_ids
        )
        loss.backward()
        grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
        out.append((loss.detach(), grads))
    assert torch.equal(out[0][0], out[1][0])
    assert out[0][1].keys() == out[1][1].keys() and any(".lora_A" in k for k in out[0][1])
    for k in out[0][1]:
        torch.testing.assert_close(out[1][1][k], out[0][1][k], rtol=1e-6, atol=1e-7)
