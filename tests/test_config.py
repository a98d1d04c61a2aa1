import pytest
import torch

from affectrt.config import PRESETS, config_from_dict, config_to_dict, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_roundtrip_through_dicts(name):
    cfg = get_preset(name)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError, match="known presets: affectgpt-7b-face"):
        get_preset("affectgpt-13b")


def test_released_dimensions():
    cfg = get_preset("affectgpt-7b-face")
    assert (cfg.video_dim, cfg.audio_dim, cfg.multi_dim, cfg.llm.hidden_size) == (768, 1024, 1024, 3584)
    assert cfg.vision.num_tokens == 257 and cfg.audio.num_frames(cfg.media.clip_samples) == 99
    assert cfg.llm.head_dim == 128 and cfg.lora.scale == 2.0
    assert get_preset("affectgpt-7b-frame").visual_input == "frame"


def test_released_parameter_counts_on_meta():
    """The 7B preset builds the real topology: LoRA adds exactly the paper's 40,370,176 parameters."""
    from affectrt.models.affectgpt import AffectGPT

    with torch.device("meta"):
        model = AffectGPT(get_preset("affectgpt-7b-face"))
    count = lambda m, trainable=None: sum(  # noqa: E731
        p.numel() for p in m.parameters() if trainable is None or p.requires_grad == trainable
    )
    lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    assert lora == 40_370_176
    assert count(model, trainable=True) == 57_168_644  # LoRA + fusion head (MODEL_SPEC §1.8: ≈57.2M)
    assert 7.6e9 < count(model.llm) - lora < 7.7e9
    assert 303e6 < count(model.visual_encoder) < 305e6  # CLIP ViT-L/14 vision + projection
    assert 315e6 < count(model.acoustic_encoder) < 317e6  # HuBERT-large
