"""Fixtures for whole-model tests: a tiny AffectGPT model directory in the real formats, and clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affectrt.config import get_preset


def write_clip(path: Path, seconds: float = 1.0, fps: int = 10, size=(64, 48), audio: bool = True) -> Path:
    """A small H.264 (+ AAC) clip made with PyAV."""
    import av

    w, h = size
    rate = 16000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=rate) if audio else None
        rng = np.random.default_rng(0)
        for _ in range(int(seconds * fps)):
            img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if aus is not None:
            wave = (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(
                    wave[None, start : start + 1024], format="fltp", layout="mono"
                )
                frame.sample_rate = rate
                for pkt in aus.encode(frame):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)
    return path


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="session")
def silent_clip_path(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "silent.mp4", audio=False)


@pytest.fixture(scope="session")
def face_npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faces") / "faces.npy"
    rng = np.random.default_rng(1)
    np.save(path, rng.integers(0, 256, size=(13, 112, 112, 3), dtype=np.uint8))
    return path


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move LayerNorm/bias parameters off their 1/0 init so parity checks exercise them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """vision/, audio/, llm/ Hugging Face folders matching the ``tiny`` preset, saved by transformers."""
    transformers = pytest.importorskip("transformers")
    from affectrt.text.tokenizer import byte_level_tokenizer

    root = tmp_path_factory.mktemp("model_dir")
    cfg = get_preset("tiny")
    v, a, q = cfg.vision, cfg.audio, cfg.llm
    torch.manual_seed(0)
    clip = transformers.CLIPModel(
        transformers.CLIPConfig(
            vision_config=dict(
                hidden_size=v.hidden_size,
                intermediate_size=v.intermediate_size,
                num_hidden_layers=v.num_layers,
                num_attention_heads=v.num_heads,
                image_size=v.image_size,
                patch_size=v.patch_size,
            ),
            text_config=dict(
                hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
            ),
            projection_dim=v.projection_dim,
        )
    )
    _perturb(clip, 1)
    clip.save_pretrained(root / "vision")
    hubert = transformers.HubertModel(
        transformers.HubertConfig(
            hidden_size=a.hidden_size,
            intermediate_size=a.intermediate_size,
            num_hidden_layers=a.num_layers,
            num_attention_heads=a.num_heads,
            conv_dim=list(a.conv_dim),
            conv_kernel=list(a.conv_kernel),
            conv_stride=list(a.conv_stride),
            conv_bias=False,
            num_conv_pos_embeddings=a.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=a.num_conv_pos_embedding_groups,
            do_stable_layer_norm=True,
            feat_extract_norm="layer",
        )
    )
    _perturb(hubert, 2)
    hubert.save_pretrained(root / "audio")
    llm = transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            vocab_size=q.vocab_size,
            hidden_size=q.hidden_size,
            intermediate_size=q.intermediate_size,
            num_hidden_layers=q.num_layers,
            num_attention_heads=q.num_heads,
            num_key_value_heads=q.num_kv_heads,
            rope_theta=q.rope_theta,
            rms_norm_eps=q.rms_norm_eps,
            max_position_embeddings=q.max_position_embeddings,
            tie_word_embeddings=False,
        )
    )
    _perturb(llm, 3)
    llm.save_pretrained(root / "llm")
    byte_level_tokenizer().backend.save(str(root / "llm" / "tokenizer.json"))
    return root
