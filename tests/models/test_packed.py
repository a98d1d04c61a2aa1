"""The packed projection layout (affectrt.models.packed) against the same model run module by module."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from affectrt.config import LoRAConfig, Qwen2Config
from affectrt.generate import GenerationConfig, generate
from affectrt.models.lora import apply_lora, load_lora_state_dict, lora_state_dict, merge_lora
from affectrt.models.packed import PackedLinears, pack_projections, unpack_projections
from affectrt.models.qwen2 import Qwen2ForCausalLM

CFG = Qwen2Config(
    vocab_size=96, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
    max_position_embeddings=128,
)  # fmt: skip
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_llm(seed: int = 0, targets: tuple[str, ...] = TARGETS) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(CFG)
    with torch.no_grad():
        for layer in model.layers:  # nonzero biases, so a dropped or misplaced bias shows
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(std=0.5)
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.05, targets=targets), init_b_std=0.2)
    return model.eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CFG.vocab_size, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    return ids, mask


def logits(model: Qwen2ForCausalLM) -> torch.Tensor:
    ids, mask = batch()
    with torch.inference_mode():
        return model(ids, attention_mask=mask)


def owners(model: Qwen2ForCausalLM) -> list[torch.nn.Module]:
    return [model] + [o for layer in model.layers for o in (layer.self_attn, layer.mlp)]


def packs_used(model: Qwen2ForCausalLM) -> bool:
    with torch.inference_mode():
        return all(p.usable() for o in owners(model) for p in o.packs.values())


GROUPS = 4 * CFG.num_layers + 1  # q/k/v, o, gate/up, down per layer; lm_head


@pytest.mark.parametrize(
    "variant",
    ["lora_fp32", "merged", "no_lora", "some_targets", "bf16_base", "float64", "mixed_scales", "tied"],
)
def test_packed_logits_equal_module_by_module(variant):
    model = lora_llm(targets=("q_proj", "v_proj", "down_proj") if variant == "some_targets" else TARGETS)
    if variant in ("no_lora", "tied"):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(dataclasses.replace(CFG, tie_word_embeddings=variant == "tied")).eval()
    if variant == "merged":
        merge_lora(model)
    if variant == "bf16_base":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_" not in name:
                    p.data = p.data.to(torch.bfloat16)
    if variant == "float64":  # nn.Linear's [out, in] layout, the adapters inside the base GEMM
        model.to(torch.float64)
    if variant == "mixed_scales":
        model.layers[0].self_attn.k_proj.scale = 5.0
    want = logits(model)
    assert pack_projections(model) == GROUPS - (variant == "tied")  # a tied lm_head is the embedding table
    assert packs_used(model)
    qkv = model.layers[0].self_attn.packs["qkv"]
    assert qkv.w.columns == (variant not in ("bf16_base", "float64"))  # [in, out] for float32 on the CPU
    assert (qkv.split is not None) == (variant in ("lora_fp32", "some_targets", "float64", "mixed_scales"))
    got = logits(model)
    # The same products in the same order: equal to float32 rounding (bit-equal on the machines tried).
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got.dtype == want.dtype


def test_packing_moves_parameters_into_shared_storage_without_changing_them():
    model = lora_llm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pack_projections(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, atol=0, rtol=0)
    attn = model.layers[0].self_attn
    storage = attn.packs["qkv"].w.t.untyped_storage().data_ptr()
    for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
        assert lin.weight.untyped_storage().data_ptr() == storage
        assert lin.lora_A.untyped_storage().data_ptr() == storage
    assert pack_projections(model) == 0  # intact groups are kept


def test_in_place_changes_reach_the_pack():
    model = lora_llm(seed=0)
    pack_projections(model)
    load_lora_state_dict(model, lora_state_dict(lora_llm(seed=5)))  # copies into the packed views
    with torch.no_grad():
        model.layers[1].mlp.down_proj.base_layer.weight.mul_(0.5)
        model.layers[0].self_attn.k_proj.base_layer.bias.add_(1.0)
    modules = copy.deepcopy(model)  # a copy's pointers differ from its packs': it runs module by module
    assert packs_used(model) and not packs_used(modules)
    torch.testing.assert_close(logits(model), logits(modules), atol=1e-5, rtol=1e-5)


def test_replaced_tensors_or_a_merge_fall_back_to_the_modules():
    model = lora_llm()
    want = logits(model)
    pack_projections(model)
    merge_lora(model)  # in place, but the adapters must no longer be added
    assert not packs_used(model)
    torch.testing.assert_close(logits(model), want, atol=1e-5, rtol=1e-5)
    assert pack_projections(model) == GROUPS - 1  # packed again without adapters; lm_head (none) is intact
    assert packs_used(model) and model.layers[0].self_attn.packs["qkv"].b is None
    torch.testing.assert_close(logits(model), want, atol=1e-5, rtol=1e-5)

    model = lora_llm()
    pack_projections(model)
    model.to(torch.float64)  # replaces every tensor
    assert not packs_used(model)
    torch.testing.assert_close(logits(model).float(), want, atol=1e-5, rtol=1e-5)


def test_autograd_and_dropout_use_the_modules():
    model, ref = lora_llm(), lora_llm()
    pack_projections(model)
    ids, mask = batch()
    for m in (model, ref):
        m(ids, attention_mask=mask).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
    model.train()
    with torch.inference_mode():
        assert not model.layers[0].self_attn.packs["qkv"].usable()  # dropout 0.05 is active


def test_generate_with_packed_projections_gives_the_same_tokens():
    model = lora_llm()
    ids, mask = batch()
    gen = GenerationConfig(max_new_tokens=12)
    want = generate(model, input_ids=ids, attention_mask=mask, gen=gen)
    pack_projections(model)
    assert generate(model, input_ids=ids, attention_mask=mask, gen=gen) == want


def test_unpack_gives_each_parameter_its_own_storage():
    model = lora_llm()
    want = logits(model)
    pack_projections(model)
    unpack_projections(model)
    ptrs = [p.untyped_storage().data_ptr() for p in model.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(not o.packs for o in owners(model))
    torch.testing.assert_close(logits(model), want, atol=0, rtol=0)


def test_packed_adapters_save_as_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    model = lora_llm()
    pack_projections(model)
    sd = {k: v.contiguous() for k, v in lora_state_dict(model).items()}  # as save_checkpoint writes them
    path = str(tmp_path / "lora.safetensors")
    save_file(sd, path)
    for k, v in load_file(path).items():
        torch.testing.assert_close(v, sd[k], atol=0, rtol=0)


def test_group_errors_name_the_problem():
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(6, 4)
    with pytest.raises(ValueError, match="input size"):
        PackedLinears([a, b])
