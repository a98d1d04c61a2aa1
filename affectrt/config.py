"""Typed, frozen model configurations and named presets.

Every dimension of the AffectGPT computation lives here, so that the encoders, the fusion head, the LLM
and the media pipeline agree without reading each other. Presets:

- ``affectgpt-7b-face`` / ``affectgpt-7b-frame``: the released dimensions (MODEL_SPEC §1.1, §1.3, §1.8).
- ``small``: a few hundred hidden units with the real topology (every component present), for CPU
  benchmarks.
- ``tiny``: the smallest real topology, for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

FusionType = Literal["attention", "mean", "qformer"]
PreFusionType = Literal["attention", "qformer", "none"]
VisualInput = Literal["face", "frame"]

# The five placeholder tokens the release adds as special tokens, in the order it adds them.
PLACEHOLDER_TOKENS: tuple[str, ...] = (
    "<ImageHere>",
    "<AudioHere>",
    "<FrameHere>",
    "<FaceHere>",
    "<MultiHere>",
)


@dataclass(frozen=True)
class CLIPVisionConfig:
    """CLIP ViT vision tower + visual projection (pre-LN, quick-GELU)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    projection_dim: int = 768
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1


@dataclass(frozen=True)
class HubertConfig:
    """HuBERT (stable-layer-norm variant: layer-norm conv front end, pre-LN encoder)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    # The release averages the last four hidden states (MODEL_SPEC §1.3).
    pool_last_layers: int = 4

    def num_frames(self, num_samples: int) -> int:
        """Frames produced by the conv front end for ``num_samples`` input samples."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
        return n


@dataclass(frozen=True)
class Qwen2Config:
    """Qwen2.5 decoder (GQA, RoPE, RMSNorm, SwiGLU; bias on q/k/v only)."""

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class LoRAConfig:
    """peft LoRA of the release: r=16, alpha=32, dropout 0.05 on all seven projections."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class QFormerConfig:
    """Query-only BERT Q-Former (post-LN, cross-attention in every layer)."""

    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1


@dataclass(frozen=True)
class FusionConfig:
    """Per-modality token compression and the multimodal pre-fusion (MODEL_SPEC §1.4-1.5)."""

    video_fusion: FusionType = "attention"
    audio_fusion: FusionType = "attention"
    multi_fusion: PreFusionType = "attention"
    num_video_query_token: int = 1
    num_audio_query_token: int = 1
    num_multi_query_token: int = 1
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    # Sizes of the learned temporal position tables of the Q-Former variants (release values).
    video_qformer_positions: int = 32
    audio_qformer_positions: int = 8
    multi_qformer_positions: int = 264


@dataclass(frozen=True)
class MediaConfig:
    """What the media pipeline hands the encoders (MODEL_SPEC §1.2)."""

    n_frames: int = 8
    image_size: int = 224
    face_size: int = 112
    sample_rate: int = 16000
    clip_seconds: float = 2.0
    n_audio_clips: int = 8
    clip_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    clip_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    audio_norm_eps: float = 1e-7

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


@dataclass(frozen=True)
class AffectGPTConfig:
    """The assembled model: encoders, fusion, LLM, adapters, media and prompt variant."""

    name: str = "affectgpt-7b-face"
    vision: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    audio: HubertConfig = field(default_factory=HubertConfig)
    llm: Qwen2Config = field(default_factory=Qwen2Config)
    lora: LoRAConfig | None = field(default_factory=LoRAConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    visual_input: VisualInput = "face"
    max_length: int = 1024

    @property
    def video_dim(self) -> int:
        """d_v: the CLIP feature size the fusion head sees (projection_dim)."""
        return self.vision.projection_dim

    @property
    def audio_dim(self) -> int:
        """d_a: the HuBERT feature size the fusion head sees."""
        return self.audio.hidden_size

    @property
    def multi_dim(self) -> int:
        """max_hidden_size of the pre-fusion: max(d_v, d_a)."""
        return max(self.video_dim, self.audio_dim)

    def replace(self, **changes: object) -> AffectGPTConfig:
        return dataclasses.replace(self, **changes)


def _tiny() -> AffectGPTConfig:
    return AffectGPTConfig(
        name="tiny",
        vision=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, projection_dim=24
        ),
        audio=HubertConfig(
            hidden_size=32,
            intermediate_size=64,
            num_layers=2,
            num_heads=4,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
        llm=Qwen2Config(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            max_position_embeddings=2048,
        ),
        lora=LoRAConfig(r=4, alpha=8),
        fusion=FusionConfig(
            qformer=QFormerConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
        ),
        visual_input="face",
    )


def _small() -> AffectGPTConfig:
    return AffectGPTConfig(
        name="small",
        vision=CLIPVisionConfig(
            hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4, projection_dim=192
        ),
        audio=HubertConfig(
            hidden_size=256,
            intermediate_size=1024,
            num_layers=4,
            num_heads=4,
            conv_dim=(128,) * 7,
            num_conv_pos_embeddings=64,
            num_conv_pos_embedding_groups=8,
        ),
        llm=Qwen2Config(
            vocab_size=1024,
            hidden_size=256,
            intermediate_size=768,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            max_position_embeddings=4096,
        ),
        lora=LoRAConfig(r=8, alpha=16),
        fusion=FusionConfig(
            qformer=QFormerConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512)
        ),
        visual_input="frame",
    )


def _medium() -> AffectGPTConfig:
    """An LLM that behaves like the real one on a CPU: 0.4 B parameters (1.5 GB in fp32), several times a
    server CPU's last-level cache, so decoding is bound by memory bandwidth as the 7B model's is (``small``
    fits in cache and measures overheads instead)."""
    return AffectGPTConfig(
        name="medium",
        vision=CLIPVisionConfig(
            hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8, projection_dim=384
        ),
        audio=HubertConfig(
            hidden_size=512,
            intermediate_size=2048,
            num_layers=8,
            num_heads=8,
            conv_dim=(256,) * 7,
            num_conv_pos_embeddings=64,
            num_conv_pos_embedding_groups=16,
        ),
        llm=Qwen2Config(
            vocab_size=32768,
            hidden_size=1536,
            intermediate_size=4096,
            num_layers=12,
            num_heads=12,
            num_kv_heads=2,
            max_position_embeddings=4096,
        ),
        lora=LoRAConfig(r=16, alpha=32),
        fusion=FusionConfig(
            qformer=QFormerConfig(hidden_size=256, num_layers=2, num_heads=4, intermediate_size=1024)
        ),
        visual_input="frame",
    )


PRESETS = {
    "affectgpt-7b-face": lambda: AffectGPTConfig(name="affectgpt-7b-face", visual_input="face"),
    "affectgpt-7b-frame": lambda: AffectGPTConfig(name="affectgpt-7b-frame", visual_input="frame"),
    "small": _small,
    "medium": _medium,
    "tiny": _tiny,
}


def get_preset(name: str) -> AffectGPTConfig:
    """Return the named preset; raises ``KeyError`` listing the known names."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def config_to_dict(cfg: AffectGPTConfig) -> dict:
    """A JSON-ready dict of ``cfg`` (tuples become lists)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict) -> AffectGPTConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise ``TypeError`` naming them."""

    def build(cls: type, values: dict) -> object:
        kwargs = {}
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
        for key, value in values.items():
            sub = _NESTED.get((cls, key))
            if sub is not None and isinstance(value, dict):
                value = build(sub, value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    return build(AffectGPTConfig, data)  # type: ignore[return-value]


_NESTED: dict[tuple[type, str], type] = {
    (AffectGPTConfig, "vision"): CLIPVisionConfig,
    (AffectGPTConfig, "audio"): HubertConfig,
    (AffectGPTConfig, "llm"): Qwen2Config,
    (AffectGPTConfig, "lora"): LoRAConfig,
    (AffectGPTConfig, "fusion"): FusionConfig,
    (AffectGPTConfig, "media"): MediaConfig,
    (FusionConfig, "qformer"): QFormerConfig,
}
