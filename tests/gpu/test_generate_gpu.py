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


def test_cuda_packed_fp16_lora_equals_module_by_module():
    """The packed inference layout on CUDA with the release's dtypes: fp16 base, fp32 LoRA (a second GEMM)."""
    from affectrt.config import LoRAConfig, Qwen2Config
    from affectrt.generate import GenerationConfig, generate
    from affectrt.models.lora import apply_lora
    from affectrt.models.packed import pack_projections
    from affectrt.models.qwen2 import Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
        max_position_embeddings=128,
    )  # fmt: skip
    model = apply_lora(Qwen2ForCausalLM(cfg), LoRAConfig(r=4, alpha=8, dropout=0.05), init_b_std=0.2)
    model = model.eval().cuda()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" not in name:
                p.data = p.data.half()
    ids = torch.randint(0, 128, (3, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.inference_mode():
        want = model(ids)
        gen_want = generate(model, input_ids=ids, gen=GenerationConfig(max_new_tokens=8))
        assert pack_projections(model) > 0
        got = model(ids)
        gen_got = generate(model, input_ids=ids, gen=GenerationConfig(max_new_tokens=8))
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)
    assert gen_got == gen_want
