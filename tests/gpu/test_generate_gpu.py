"""Greedy generation on CUDA equals greedy generation on the CPU (a tiny random Qwen2, float32)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]


def test_cuda_greedy_equals_cpu_greedy():
    pytest.importorskip("transformers")
    from affectrt.generate import GenerationConfig, generate
    from affectrt.models.qwen2 import Qwen2ForCausalLM, qwen2_config_from_hf
    from affectrt.testing.hf_models import tiny_qwen2

    hf = tiny_qwen2(256)  # a wide init: no near-ties for float32 reordering to flip
    model = Qwen2ForCausalLM(qwen2_config_from_hf(hf.config.to_dict())).eval()
    model.load_hf_state_dict(hf.state_dict())
    ids = torch.randint(0, 256, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :3] = 0  # left padding, as the batched prompts have
    mask[2, :5] = 0
    cfg = GenerationConfig(max_new_tokens=16)
    with torch.no_grad():
        emb = model.embed_tokens(ids)
        on_cpu = generate(model, emb, mask, cfg)
        model.cuda()
        on_gpu = generate(model, emb.cuda(), mask.cuda(), cfg)
    assert on_gpu == on_cpu
