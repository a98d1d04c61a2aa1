"""LoRA adapters against peft on a tiny random Qwen2: key names, unmerged/merged logits, fp16 base."""

from __future__ import annotations

import tempfile

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from affectrt.config import LoRAConfig  # noqa: E402
from affectrt.models.hf_io import WeightsError  # noqa: E402
from affectrt.models.lora import (  # noqa: E402
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_state_dict,
    lora_state_dict_from_release,
    lora_state_dict_to_release,
    merge_lora,
    peft_key,
    unmerge_lora,
)
from affectrt.models.qwen2 import Qwen2ForCausalLM, qwen2_config_from_hf  # noqa: E402
from affectrt.testing.hf_models import tiny_qwen2  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = LoRAConfig(r=4, alpha=8, dropout=0.05, targets=TARGETS)
VOCAB = 256


def peft_model(dtype: torch.dtype = torch.float32, seed: int = 0):
    """A peft-wrapped tiny HF Qwen2 (base in ``dtype``) with random nonzero lora_B."""
    hf = tiny_qwen2(VOCAB, seed=seed)
    if dtype != torch.float32:
        # Reload in ``dtype`` the way the release does (from_pretrained keeps RoPE's inv_freq in float32;
        # ``.to(dtype)`` would round it).
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(tmp)
            hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp, dtype=dtype).eval()
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS), lora_dropout=0.05)
    pm = peft.get_peft_model(hf, cfg).eval()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    return pm


def ours_from_peft(pm) -> Qwen2ForCausalLM:
    base = pm.get_base_model()
    sd = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
    model = Qwen2ForCausalLM(qwen2_config_from_hf(base.config.to_dict()))
    model.load_hf_state_dict(sd)
    model.to(base.dtype)
    apply_lora(model, LORA)
    release = {"llama_model." + k: v for k, v in pm.state_dict().items()}
    load_lora_state_dict(model, lora_state_dict_from_release(release))
    return model.eval()


@pytest.fixture(scope="module")
def fp32_pair():
    pm = peft_model()
    return pm, ours_from_peft(pm)


def ids(batch: int = 2, seq: int = 7) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))


def test_release_key_names_follow_peft(fp32_pair):
    pm, ours = fp32_pair
    peft_lora = {k for k in pm.state_dict() if ".lora_" in k}
    release = lora_state_dict_to_release(lora_state_dict(ours))
    assert set(release) == {"llama_model." + k for k in peft_lora}
    assert (
        peft_key("layers.0.self_attn.q_proj.lora_A", "llama_model.")
        == "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    )
    back = lora_state_dict_from_release({**release, "llama_proj.weight": torch.zeros(1)})
    assert back.keys() == lora_state_dict(ours).keys()
    with pytest.raises(WeightsError, match="adapter"):
        lora_state_dict_from_release({k.replace(".default.", ".other."): v for k, v in release.items()})


def test_trainable_parameters_and_dtypes_like_peft(fp32_pair):
    pm, ours = fp32_pair
    ours_trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert ours_trainable == set(lora_state_dict(ours))
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == sum(
        p.numel() for p in pm.parameters() if p.requires_grad
    )
    assert len([m for m in ours.modules() if isinstance(m, LoRALinear)]) == 7 * 2


@torch.no_grad()
def test_unmerged_logits_equal_peft(fp32_pair):
    pm, ours = fp32_pair
    x = ids()
    torch.testing.assert_close(ours(x), pm(input_ids=x).logits, atol=1e-5, rtol=0)


@torch.no_grad()
def test_merge_and_unmerge(fp32_pair):
    pm, ours = fp32_pair
    x = ids()
    before = ours(x)
    w0 = ours.layers[0].mlp.down_proj.weight.clone()
    merge_lora(ours)
    try:
        assert ours.layers[0].mlp.down_proj.merged
        torch.testing.assert_close(ours(x), before, atol=1e-4, rtol=0)
    finally:
        unmerge_lora(ours)
    torch.testing.assert_close(ours.layers[0].mlp.down_proj.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(x), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_low_precision_base_with_fp32_adapters_matches_peft(dtype):
    pm = peft_model(dtype, seed=2)
    lora_a = pm.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    assert lora_a.dtype == torch.float32  # peft's autocast_adapter_dtype
    ours = ours_from_peft(pm)
    assert ours.layers[0].self_attn.q_proj.weight.dtype == dtype
    assert ours.layers[0].self_attn.q_proj.lora_A.dtype == torch.float32
    x = ids()
    got, want = ours(x), pm(input_ids=x).logits
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got, want, atol=0, rtol=0)  # same casts in the same order: bit-exact


def test_zero_init_is_identity_and_dropout_only_in_training():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8)
    lin = LoRALinear(base, r=4, alpha=8, dropout=0.5)
    x = torch.randn(5, 16)
    torch.testing.assert_close(lin(x), base(x), atol=0, rtol=0)  # B = 0 at init, as in peft
    assert lin.lora_A.abs().sum() > 0
    lin = LoRALinear(base, r=4, alpha=8, dropout=0.5, init_b_std=0.1)
    lin.eval()
    ref = base(x) + (x @ lin.lora_A.T @ lin.lora_B.T) * 2.0
    torch.testing.assert_close(lin(x), ref, atol=1e-6, rtol=0)
    lin.train()
    assert not torch.allclose(lin(x), ref)


def test_load_lora_rejects_missing_and_misshaped(fp32_pair):
    _, ours = fp32_pair
    sd = dict(lora_state_dict(ours))
    sd.pop("layers.1.mlp.up_proj.lora_B")
    sd["layers.0.self_attn.q_proj.lora_A"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError) as e:
        load_lora_state_dict(ours, sd, source="release.pth")
    assert "layers.1.mlp.up_proj.lora_B" in str(e.value) and "q_proj.lora_A" in str(e.value)
    with pytest.raises(ValueError, match="already"):
        apply_lora(ours, LORA)


@torch.no_grad()
def test_meta_built_model_loads_base_then_adapters(fp32_pair):
    """The checkpoint loader's order: build on meta, add LoRA, assign HF weights, then release adapters."""
    pm, ours = fp32_pair
    base = pm.get_base_model()
    hf_sd = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
    with torch.device("meta"):
        model = Qwen2ForCausalLM(ours.cfg)
    apply_lora(model, LORA)
    model.load_hf_state_dict(hf_sd, source="hf folder")
    load_lora_state_dict(model, lora_state_dict(ours), source="release")
    assert not any(t.is_meta for t in model.state_dict().values())
    assert model.layers[1].mlp.gate_proj.lora_B.dtype == torch.float32
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora_state_dict(ours))
    x = ids()
    torch.testing.assert_close(model.eval()(x), pm(input_ids=x).logits, atol=1e-5, rtol=0)
