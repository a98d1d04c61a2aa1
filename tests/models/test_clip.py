"""CLIPVisionEncoder equals transformers' CLIP image features on small random models."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from affectrt.models.clip import CLIPVisionEncoder, clip_vision_config_from_hf  # noqa: E402
from affectrt.models.hf_io import WeightsError, read_config  # noqa: E402

VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=224,
    patch_size=14, projection_dim=24,
)  # fmt: skip
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)


def _perturb(model: torch.nn.Module) -> None:
    # Random init leaves LayerNorms at identity and biases at 0; perturb them so the tests see them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output from get_image_features, 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24)
    model = transformers.CLIPModel(cfg).eval()
    _perturb(model)
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


@pytest.fixture(scope="module")
def vision_proj_folder(tmp_path_factory):
    torch.manual_seed(1)
    cfg = transformers.CLIPVisionConfig(**VISION)
    model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    _perturb(model)
    folder = tmp_path_factory.mktemp("clip_vision")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def test_config_from_hf(clip_folder, vision_proj_folder):
    for folder, _ in (clip_folder, vision_proj_folder):
        cfg = clip_vision_config_from_hf(read_config(folder))
        assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads) == (32, 2, 4)
        assert (cfg.patch_size, cfg.projection_dim, cfg.num_tokens, cfg.hidden_act) == (
            14,
            24,
            257,
            "quick_gelu",
        )
    with pytest.raises(ValueError, match="not a CLIP config"):
        clip_vision_config_from_hf({"model_type": "bert"})


@pytest.mark.parametrize("n", [1, 3])
def test_matches_clip_model(clip_folder, n):
    folder, hf = clip_folder
    ours = CLIPVisionEncoder.from_pretrained(folder)
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())
    x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        ref = _features(hf.get_image_features(pixel_values=x))
        ref_tokens = hf.vision_model(pixel_values=x).last_hidden_state
        got = ours(x)
        got_tokens = ours.forward_tokens(x)
    assert got.shape == (n, 24) and got_tokens.shape == (n, 257, 32)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_tokens, ref_tokens, atol=1e-5, rtol=1e-5)


def test_cls_query_only_equals_all_queries(clip_folder):
    # The last layer projects only the CLS token's query (k and v for every token): the same as projecting all
    # queries and keeping the CLS row. (The encoder as a whole equals transformers', above.)
    folder, _ = clip_folder
    attn = CLIPVisionEncoder.from_pretrained(folder).blocks[-1].attn
    h = torch.randn(3, 257, 32, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        torch.testing.assert_close(attn(h, queries=1), attn(h)[:, :1], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(attn(h, queries=5), attn(h)[:, :5], atol=1e-6, rtol=1e-5)


def test_matches_vision_model_with_projection(vision_proj_folder):
    folder, hf = vision_proj_folder
    ours = CLIPVisionEncoder.from_pretrained(folder)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).image_embeds, atol=1e-5, rtol=1e-5)


def test_from_pretrained_dtype(vision_proj_folder):
    folder, _ = vision_proj_folder
    ours = CLIPVisionEncoder.from_pretrained(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    assert ours(torch.randn(1, 3, 224, 224)).dtype == torch.bfloat16


def test_full_state_dict_extra_keys_ignored(clip_folder):
    _, hf = clip_folder
    sd = dict(hf.state_dict())
    sd["vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    assert any(k.startswith("text_model.") for k in sd)
    ours = CLIPVisionEncoder(clip_vision_config_from_hf(hf.config.to_dict())).load_hf_state_dict(sd)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), _features(hf.get_image_features(pixel_values=x)))


def test_missing_and_misshaped_keys(clip_folder):
    _, hf = clip_folder
    cfg = clip_vision_config_from_hf(hf.config.to_dict())
    sd = dict(hf.state_dict())
    del sd["vision_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(WeightsError, match=r"missing keys.*layers\.1\.self_attn\.k_proj\.bias"):
        CLIPVisionEncoder(cfg).load_hf_state_dict(sd, source="test")
    sd = dict(hf.state_dict())
    sd["visual_projection.weight"] = torch.zeros(25, 32)
    with pytest.raises(WeightsError, match=r"mis-shaped.*visual_projection\.weight: expected \(24, 32\)"):
        CLIPVisionEncoder(cfg).load_hf_state_dict(sd, source="test")
    sd = dict(hf.state_dict())
    sd["vision_model.encoder.layers.2.mlp.fc1.weight"] = torch.zeros(64, 32)
    with pytest.raises(WeightsError, match=r"unexpected keys.*layers\.2\.mlp\.fc1\.weight"):
        CLIPVisionEncoder(cfg).load_hf_state_dict(sd, source="test")


def test_wrong_image_size_raises(clip_folder):
    folder, _ = clip_folder
    with pytest.raises(ValueError, match="224x224"):
        CLIPVisionEncoder.from_pretrained(folder)(torch.randn(1, 3, 112, 112))
