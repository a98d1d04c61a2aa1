"""Building the model to train: with or without the encoder weights, from folders or a random preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from affectrt.config import AffectGPTConfig, get_preset

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ModelSpec:
    """Where the model comes from.

    ``model_dir``: the inference model directory (``vision``/``audio``/``llm`` Hugging Face folders or the
    release's names); without it, the ``preset`` on random weights drawn from ``seed`` (tests, benchmarks).
    ``variant``: "face" or "frame". ``llm_dtype``: the LLM base weights' dtype (release: float16).
    ``lora_dropout``: override the LoRA dropout (release 0.05). ``init_checkpoint``: start the first stage
    from these trainable tensors (release ``.pth`` or affectrt ``.safetensors``). ``tokenizer`` (random presets
    only): "bytes" (one token per byte) or "bpe" (a small BPE trained on the prompt text: realistic lengths).
    ``fusion_backend``: the fusion head's op backend ("auto": the fused op with its backward; "module": the
    per-module eager path, the reference). ``gradient_checkpointing``: recompute each LLM layer in the backward
    pass (less activation memory for large batches; same values).
    """

    model_dir: str | None = None
    preset: str = "tiny"
    variant: str | None = None
    llm_dtype: str = "float32"
    seed: int = 0
    lora_dropout: float | None = None
    init_checkpoint: str | None = None
    tokenizer: str = "bytes"
    fusion_backend: str = "auto"
    gradient_checkpointing: bool = False


class NativeDropout(torch.nn.Module):
    """``nn.Dropout``'s rule (keep each value with probability 1-p, scale kept values by 1/(1-p)) computed by
    ``torch.native_dropout``: the fused kernel CUDA's dropout already runs; on the CPU about 3x faster than
    ``nn.Dropout``'s ``bernoulli_`` path (which made LoRA dropout ~1/5 of a small-model training step).
    Same distribution; a different random stream than ``nn.Dropout`` on the CPU."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return torch.native_dropout(x, self.p, True)[0]

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_native_dropout(model: torch.nn.Module) -> int:
    """Replace every ``nn.Dropout`` of ``model`` by :class:`NativeDropout` with the same p; returns the count."""
    swaps = [(name, m) for name, m in model.named_modules() if type(m) is torch.nn.Dropout]
    for name, m in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, NativeDropout(m.p))
    return len(swaps)


def _config(spec: ModelSpec) -> AffectGPTConfig:
    cfg = get_preset(spec.preset)
    if spec.variant is not None:
        cfg = cfg.replace(visual_input=spec.variant)
    return cfg


def _with_overrides(cfg: AffectGPTConfig, spec: ModelSpec) -> AffectGPTConfig:
    if spec.lora_dropout is not None and cfg.lora is not None:
        cfg = cfg.replace(lora=dataclasses.replace(cfg.lora, dropout=spec.lora_dropout))
    return cfg


def build_model(spec: ModelSpec, with_encoders: bool):
    """``(model, tokenizer)`` in train-ready form: fusion head and LoRA trainable, everything else frozen.

    ``with_encoders=False`` builds the fusion head and LLM only; loading then reads just the LLM folder (the
    feature sizes d_v, d_a come from the vision/audio ``config.json`` when present, else from the release
    configuration ``affectgpt-7b-<variant>``).
    """
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.text.tokenizer import byte_level_tokenizer

    if spec.model_dir is None:
        cfg = _with_overrides(_config(spec), spec)
        torch.manual_seed(spec.seed)
        model = AffectGPT(cfg, with_encoders=with_encoders)
        if spec.tokenizer == "bpe":
            from affectrt.testing.hf_models import bpe_tokenizer
            from affectrt.text.tokenizer import Tokenizer

            tokenizer = Tokenizer.from_backend(bpe_tokenizer(cfg.llm.vocab_size), source="bpe tokenizer")
        elif spec.tokenizer == "bytes":
            tokenizer = byte_level_tokenizer()
        else:
            raise ValueError(
                f"model.tokenizer={spec.tokenizer!r}; use 'bytes' or 'bpe' (random presets only)"
            )
    else:
        model, tokenizer = _load(spec, with_encoders)
    if model.cfg.lora is None:
        model.llm.requires_grad_(False)
    use_native_dropout(model)
    model.fusion.backend = spec.fusion_backend
    model.llm.gradient_checkpointing = spec.gradient_checkpointing
    if spec.init_checkpoint:
        from affectrt.checkpoint import load_checkpoint

        load_checkpoint(model, spec.init_checkpoint)
    return model, tokenizer


def _load(spec: ModelSpec, with_encoders: bool):
    from affectrt.checkpoint import AUDIO_DIRS, LLM_DIRS, VISION_DIRS, find_subdir, load_model
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.models.fusion import FusionHead
    from affectrt.models.hf_io import load_state_dict, read_config
    from affectrt.models.qwen2 import qwen2_config_from_hf
    from affectrt.text.tokenizer import Tokenizer

    variant = spec.variant or "face"
    dtype = DTYPES[spec.llm_dtype]
    if with_encoders:
        model, tokenizer = load_model(spec.model_dir, variant=variant, llm_dtype=dtype)
        if spec.lora_dropout is not None:
            for m in model.llm.modules():
                if hasattr(m, "lora_A"):
                    m.dropout = (
                        torch.nn.Dropout(spec.lora_dropout) if spec.lora_dropout > 0 else torch.nn.Identity()
                    )
        return model, tokenizer
    llm_dir = find_subdir(spec.model_dir, LLM_DIRS, "Qwen2.5 LLM")
    cfg = get_preset(f"affectgpt-7b-{variant}")
    from affectrt.models.clip import clip_vision_config_from_hf
    from affectrt.models.hubert import hubert_config_from_hf

    changes: dict = {"name": f"affectgpt-{variant}", "llm": qwen2_config_from_hf(read_config(llm_dir))}
    for names, key, conv in (
        (VISION_DIRS, "vision", clip_vision_config_from_hf),
        (AUDIO_DIRS, "audio", hubert_config_from_hf),
    ):
        for n in names:
            if (Path(spec.model_dir) / n / "config.json").is_file():
                changes[key] = conv(read_config(Path(spec.model_dir) / n))
                break
    cfg = _with_overrides(cfg.replace(**changes), spec)
    tokenizer = Tokenizer.from_folder(llm_dir)
    with torch.device("meta"):
        model = AffectGPT(cfg, with_lora=False, with_encoders=False)
    model.fusion = FusionHead(cfg)
    model.llm.load_hf_state_dict(load_state_dict(llm_dir), source=str(llm_dir), dtype=dtype)
    model.llm.requires_grad_(False)
    model.add_lora()
    return model, tokenizer
