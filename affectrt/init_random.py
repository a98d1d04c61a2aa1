"""``affectrt init-random DIR``: a complete AffectGPT model folder with RANDOM weights, in the real formats.

    DIR/vision/   config.json (CLIPVisionModelWithProjection) + model.safetensors
    DIR/audio/    config.json (HubertModel, stable layer norm) + model.safetensors
    DIR/llm/      config.json (Qwen2ForCausalLM) + model.safetensors + tokenizer.json + generation_config.json
    DIR/checkpoint.pth   the fusion head and LoRA under the release's key names ({"model": ...})

Written by affectrt alone (no ``transformers``): the configs and weight names are those Hugging Face reads and
writes, so ``affectrt infer --model-dir DIR --checkpoint DIR/checkpoint.pth`` and ``transformers``'
``from_pretrained`` both load the folders. The weights are noise: the folder exercises every loading and
serving path on a machine that has no real weights. The tokenizer is byte-level (one token per byte) with the
Qwen special tokens; ``generation_config.json`` lists Qwen2.5-Instruct's eos ids and top-k.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from affectrt.config import AffectGPTConfig, get_preset


def _random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Hugging Face-style init: normal(0, 0.02) weights, zero biases, unit norm gains."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "bias":
            out[key] = torch.zeros(shape)
        elif "norm" in key or "layrnorm" in key or leaf in ("weight_g", "original0"):
            out[key] = torch.ones(shape)  # LayerNorm / RMSNorm gains, weight-norm magnitudes
        else:
            out[key] = 0.02 * torch.randn(shape, generator=g)
    return out


def _write_folder(folder: Path, config: dict, shapes: dict, seed: int) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = _random_weights({k: tuple(v) for k, v in shapes.items()}, seed)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def clip_config_json(cfg: AffectGPTConfig) -> dict:
    v = cfg.vision
    return {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "num_channels": v.num_channels,
        "projection_dim": v.projection_dim,
        "layer_norm_eps": v.layer_norm_eps,
        "hidden_act": v.hidden_act,
    }


def hubert_config_json(cfg: AffectGPTConfig) -> dict:
    """The stable-layer-norm HuBERT config, with HubertConfig's training defaults (dropouts, LayerDrop,
    SpecAugment) that the release's train mode reads."""
    a = cfg.audio
    return {
        "architectures": ["HubertModel"],
        "model_type": "hubert",
        "hidden_size": a.hidden_size,
        "intermediate_size": a.intermediate_size,
        "num_hidden_layers": a.num_layers,
        "num_attention_heads": a.num_heads,
        "conv_dim": list(a.conv_dim),
        "conv_kernel": list(a.conv_kernel),
        "conv_stride": list(a.conv_stride),
        "conv_bias": a.conv_bias,
        "num_conv_pos_embeddings": a.num_conv_pos_embeddings,
        "num_conv_pos_embedding_groups": a.num_conv_pos_embedding_groups,
        "layer_norm_eps": a.layer_norm_eps,
        "hidden_act": a.hidden_act,
        "feat_extract_activation": "gelu",
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "feat_proj_layer_norm": True,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "feat_proj_dropout": 0.0,
        "layerdrop": 0.1,
        "apply_spec_augment": True,
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
    }


def qwen2_config_json(cfg: AffectGPTConfig, bos_id: int, eos_id: int) -> dict:
    q = cfg.llm
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": q.vocab_size,
        "hidden_size": q.hidden_size,
        "intermediate_size": q.intermediate_size,
        "num_hidden_layers": q.num_layers,
        "num_attention_heads": q.num_heads,
        "num_key_value_heads": q.num_kv_heads,
        "hidden_act": "silu",
        "rope_theta": q.rope_theta,
        "rms_norm_eps": q.rms_norm_eps,
        "max_position_embeddings": q.max_position_embeddings,
        "tie_word_embeddings": q.tie_word_embeddings,
        "use_sliding_window": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def write_generation_config(llm_dir: str | Path, backend, **overrides: object) -> None:
    """``generation_config.json`` with Qwen2.5-7B-Instruct's settings, in this tokenizer's ids.

    Qwen2.5-Instruct stops on ``<|im_end|>`` and ``<|endoftext|>`` and samples with top-k 20 (the release
    overrides temperature, top-p and the repetition penalty, but not top-k).
    """
    endoftext, im_end = backend.token_to_id("<|endoftext|>"), backend.token_to_id("<|im_end|>")
    cfg = {
        "bos_token_id": endoftext,
        "do_sample": True,
        "eos_token_id": [im_end, endoftext],
        "pad_token_id": endoftext,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
    }
    cfg.update(overrides)
    (Path(llm_dir) / "generation_config.json").write_text(json.dumps(cfg, indent=2))


def write_random_model_dir(root: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write ``root/{vision,audio,llm}`` and ``root/checkpoint.pth`` for ``preset``; returns ``root``.

    Raises :class:`~affectrt.errors.UsageError` when ``root`` already holds files (nothing is overwritten).
    """
    from affectrt.checkpoint import load_model, release_state_dict
    from affectrt.errors import UsageError
    from affectrt.models.clip import CLIPVisionEncoder
    from affectrt.models.hubert import HubertEncoder
    from affectrt.models.qwen2 import Qwen2ForCausalLM
    from affectrt.text.tokenizer import byte_level_tokenizer

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise UsageError(root, "is not empty", "pass a new or empty folder (nothing is overwritten)")
    cfg = get_preset(preset)
    with torch.device("meta"):
        vision, audio, llm = (
            CLIPVisionEncoder(cfg.vision),
            HubertEncoder(cfg.audio),
            Qwen2ForCausalLM(cfg.llm),
        )
    _write_folder(root / "vision", clip_config_json(cfg), vision.hf_shapes(), seed)
    # masked_spec_embed: SpecAugment's mask vector, which every HubertModel save holds (inference ignores it)
    audio_shapes = {**audio.hf_shapes(), "masked_spec_embed": (cfg.audio.hidden_size,)}
    _write_folder(root / "audio", hubert_config_json(cfg), audio_shapes, seed + 1)
    tokenizer = byte_level_tokenizer()
    bos, eos = tokenizer.backend.token_to_id("<|endoftext|>"), tokenizer.eos_id
    _write_folder(root / "llm", qwen2_config_json(cfg, bos, eos), llm.hf_shapes(), seed + 2)
    tokenizer.backend.save(str(root / "llm" / "tokenizer.json"))
    write_generation_config(root / "llm", tokenizer.backend)

    model, _ = load_model(root, variant="face")
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():  # a trained checkpoint's tensors are far from LoRA's zero init
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    torch.save({"model": release_state_dict(model), "epoch": 0}, root / "checkpoint.pth")
    return root
