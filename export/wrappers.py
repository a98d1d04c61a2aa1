"""One thin ``nn.Module`` per exported piece, with the names, shapes and dtypes of its inputs and outputs.

    vision   pixels [clips, T, 3, S, S] (CLIP-normalised)  -> z_video [clips, T, d_v]
             CLIP ViT + visual projection; the frames of all clips are flattened into one batch inside.
    audio    windows [clips, T, samples] (jointly normalised) -> z_audio [clips, T, d_a]
             HuBERT + the release's pooling: mean of the last 4 hidden states (the last after the final
             LN), then mean over time.
    fusion   z_video [clips, Tv, d_v], z_audio [clips, Ta, d_a] -> (multi,) audio, video [clips, K, D]
             the fusion head: per-modality compression and the pre-fusion ("multi" absent for "none").

Only the clip axis (``clips``) is dynamic; T, the image size and the samples per window are the model's
(``MediaConfig``), as the release always feeds 8 frames and 8 two-second windows. These wrappers compute
exactly ``AffectGPT.encode_video`` / ``encode_audio`` / ``multimodal_embeddings``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from affectrt.config import AffectGPTConfig

PIECES = ("vision", "audio", "fusion")
CLIPS = "clips"  # the name of the one dynamic axis
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TensorSpec:
    """An input or output: its name, shape (ints; ``"clips"`` for the dynamic axis) and dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def concrete(self, clips: int) -> tuple[int, ...]:
        return tuple(clips if d == CLIPS else d for d in self.shape)


@dataclass(frozen=True)
class PieceSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{tensor name: {axis: axis name}} for every dynamic axis, as the ONNX exporter takes them."""
        return {
            t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            for t in self.inputs + self.outputs
        }

    def to_json(self) -> dict:
        return {
            "inputs": [dataclasses.asdict(t) for t in self.inputs],
            "outputs": [dataclasses.asdict(t) for t in self.outputs],
            "dynamic_axes": self.dynamic_axes(),
        }


class VisionPiece(nn.Module):
    """CLIP ViT + projection over every frame: [clips, T, 3, S, S] -> [clips, T, d_v]."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: Tensor) -> Tensor:
        b, t = pixels.shape[:2]
        return self.encoder(pixels.flatten(0, 1)).unflatten(0, (b, t))


class AudioPiece(nn.Module):
    """HuBERT + layer and time pooling over every window: [clips, T, samples] -> [clips, T, d_a]."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, windows: Tensor) -> Tensor:
        b, t = windows.shape[:2]
        return self.encoder.pooled(windows.flatten(0, 1)).unflatten(0, (b, t))


class FusionPiece(nn.Module):
    """The fusion head: (z_video, z_audio) -> ((multi,) audio, video), each [clips, K, D]."""

    def __init__(self, fusion: nn.Module):
        super().__init__()
        self.fusion = fusion

    def forward(self, z_video: Tensor, z_audio: Tensor) -> tuple[Tensor, ...]:
        out = self.fusion(z_video, z_audio)
        # Contiguous outputs: K > 1 tokens are an expand() of one vector in eager mode.
        tokens = (out.audio, out.video) if out.multi is None else (out.multi, out.audio, out.video)
        return tuple(t.contiguous() for t in tokens)


def _check_piece(name: str) -> None:
    if name not in PIECES:
        raise ValueError(f"unknown export piece {name!r}; the pieces are {', '.join(PIECES)}")


def source_module(model: nn.Module, name: str) -> nn.Module:
    """The model's module whose weights a piece holds (and whose state dict the sidecar hashes)."""
    _check_piece(name)
    return {"vision": model.visual_encoder, "audio": model.acoustic_encoder, "fusion": model.fusion}[name]


def piece_config(cfg: AffectGPTConfig, name: str) -> dict:
    """The configuration a piece depends on, as JSON-ready data (recorded in and checked against sidecars)."""
    _check_piece(name)
    m = cfg.media
    if name == "vision":
        return {"vision": dataclasses.asdict(cfg.vision), "frames": m.n_frames, "image_size": m.image_size}
    if name == "audio":
        return {"audio": dataclasses.asdict(cfg.audio), "windows": m.n_audio_clips, "samples": m.clip_samples}
    return {
        "fusion": dataclasses.asdict(cfg.fusion),
        "video_dim": cfg.video_dim,
        "audio_dim": cfg.audio_dim,
        "llm_hidden_size": cfg.llm.hidden_size,
        "frames": m.n_frames,
        "windows": m.n_audio_clips,
    }


def piece_spec(cfg: AffectGPTConfig, name: str, dtype: str = "float32") -> PieceSpec:
    """Names, shapes and dtypes of a piece's inputs and outputs."""
    _check_piece(name)
    m, f = cfg.media, cfg.fusion
    if name == "vision":
        s = m.image_size
        ins = (TensorSpec("pixels", (CLIPS, m.n_frames, cfg.vision.num_channels, s, s), dtype),)
        outs = (TensorSpec("z_video", (CLIPS, m.n_frames, cfg.video_dim), dtype),)
    elif name == "audio":
        ins = (TensorSpec("windows", (CLIPS, m.n_audio_clips, m.clip_samples), dtype),)
        outs = (TensorSpec("z_audio", (CLIPS, m.n_audio_clips, cfg.audio_dim), dtype),)
    else:
        d = cfg.llm.hidden_size
        ins = (
            TensorSpec("z_video", (CLIPS, m.n_frames, cfg.video_dim), dtype),
            TensorSpec("z_audio", (CLIPS, m.n_audio_clips, cfg.audio_dim), dtype),
        )
        outs = (
            TensorSpec("audio", (CLIPS, f.num_audio_query_token, d), dtype),
            TensorSpec("video", (CLIPS, f.num_video_query_token, d), dtype),
        )
        if f.multi_fusion != "none":
            outs = (TensorSpec("multi", (CLIPS, f.num_multi_query_token, d), dtype),) + outs
    return PieceSpec(name, ins, outs)


def build_piece(model: nn.Module, name: str, dtype: str = "float32") -> nn.Module:
    """The eval-mode wrapper of a piece in ``dtype`` (a cast copy when the model holds another dtype)."""
    src = source_module(model, name)
    if name == "fusion" or next(src.parameters()).dtype != DTYPES[dtype]:
        src = copy.deepcopy(src).to(DTYPES[dtype])  # the fusion head is small: always a private copy
    if name == "fusion" and hasattr(src, "backend"):
        # The module path (Linear layers, attention pooling, unfolded gate) rather than the one fused
        # fusion_head op: it traces to standard ops, and its float64 gate folding has no place in an engine.
        src.backend = "module"
    wrapper = {"vision": VisionPiece, "audio": AudioPiece, "fusion": FusionPiece}[name](src)
    return wrapper.eval().requires_grad_(False)


def example_inputs(
    cfg: AffectGPTConfig, name: str, clips: int, dtype: str = "float32", seed: int = 0, device: str = "cpu"
) -> tuple[Tensor, ...]:
    """Random inputs of a piece for ``clips`` clips, at the scale the model sees (unit-variance)."""
    g = torch.Generator().manual_seed(seed)
    spec = piece_spec(cfg, name, dtype)
    return tuple(
        torch.randn(t.concrete(clips), generator=g).to(device=device, dtype=DTYPES[dtype])
        for t in spec.inputs
    )
