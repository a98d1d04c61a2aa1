"""Fixtures for whole-model tests: a tiny AffectGPT model directory in the real formats, and clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """vision/, audio/, llm/ Hugging Face folders matching the ``tiny`` preset, saved by transformers."""
    pytest.importorskip("transformers")
    from affectrt.testing.hf_models import write_hf_model_dir

    return write_hf_model_dir(get_preset("tiny"), tmp_path_factory.mktemp("model_dir"))
