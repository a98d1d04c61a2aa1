"""Small media files made with PyAV once per test session (no downloads)."""

from __future__ import annotations

import fractions
import logging
import wave
from pathlib import Path

import av
import numpy as np
import pytest

RATE = 16000


def _pattern(w: int, h: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """Gradients plus noise: smooth areas and edges, so a wrong scaler or chroma siting shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            (xx * 255 // max(w - 1, 1) + 7 * i) % 256,
            yy * 255 // max(h - 1, 1),
            (3 * (xx + yy + 13 * i)) % 256,
        ],
        -1,
    )
    return np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)


def make_video(
    path: Path,
    codec: str,
    w: int,
    h: int,
    n: int,
    pix_fmt: str = "yuv420p",
    rate: int = 25,
    vfr: bool = False,
    audio: str | None = None,
    options: dict | None = None,
    rotation: int | None = None,
) -> Path:
    rng = np.random.default_rng(n + w)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if vfr:
            s.codec_context.time_base = s.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream(audio, rate=RATE)
            a.layout = "mono"
        pts = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_pattern(w, h, i, rng), format="rgb24")
            if vfr:
                f.pts, f.time_base = pts, s.time_base
                pts += int(rng.choice([20, 40, 90]))
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(int(RATE * n / rate)) / RATE
            fmt = a.codec_context.codec.audio_formats[0].name
            x = np.sin(2 * np.pi * 440 * t)[None] * 0.3
            x = (x * 32767).astype(np.int16) if fmt.startswith("s16") else x.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(x, format=fmt, layout="mono")
            frame.sample_rate = RATE
            for p in a.encode(frame):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def make_wav(path: Path, samples: np.ndarray, rate: int, layout: str, fmt: str = "s16") -> Path:
    """samples: [channels, n] in the sample format `fmt` ("s16" int16 or "flt" float32), written interleaved."""
    codec = {"s16": "pcm_s16le", "flt": "pcm_f32le"}[fmt]
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        if samples.shape[1]:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples.T).reshape(1, -1), format=fmt, layout=layout
            )
            frame.sample_rate = rate
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    logging.getLogger("libav").setLevel(logging.ERROR)
    d = tmp_path_factory.mktemp("media")
    quiet265 = {"x265-params": "log-level=none"}
    rng = np.random.default_rng(0)
    files = {
        "h264": make_video(d / "h264.mp4", "libx264", 96, 64, 30),
        "h264_aac": make_video(d / "h264_aac.mp4", "libx264", 64, 48, 12, audio="aac"),
        "h264_pcm": make_video(d / "h264_pcm.mov", "libx264", 64, 48, 12, audio="pcm_s16le"),
        "odd": make_video(d / "odd.mp4", "libx264", 97, 61, 11, pix_fmt="yuv444p"),
        "hevc": make_video(d / "hevc.mp4", "libx265", 64, 48, 12, options=quiet265),
        "vp9": make_video(d / "vp9.webm", "libvpx-vp9", 64, 48, 12),
        "mjpeg": make_video(d / "mjpeg.avi", "mjpeg", 97, 61, 12, pix_fmt="yuvj420p"),
        "vfr": make_video(d / "vfr.mp4", "libx264", 64, 48, 20, vfr=True),
        "five": make_video(d / "five.mp4", "libx264", 64, 48, 5),
        "gop": make_video(d / "gop.mp4", "libx264", 48, 32, 93, options={"g": "8", "bf": "2"}),
        "rot90": make_video(d / "rot90.mp4", "libx264", 64, 48, 9, rotation=-90),
        "rot180": make_video(d / "rot180.mp4", "libx264", 64, 48, 9, rotation=180),
    }
    tone = (np.sin(np.arange(5 * 44100) * 0.05) * 12000).astype(np.int16)
    files["mono16k"] = make_wav(
        d / "mono16k.wav", rng.integers(-30000, 30000, (1, 3 * RATE + 77), dtype=np.int16), RATE, "mono"
    )
    files["short"] = make_wav(
        d / "short.wav", rng.integers(-3000, 3000, (1, RATE // 2), dtype=np.int16), RATE, "mono"
    )
    with wave.open(str(d / "zero.wav"), "wb") as w:  # a valid header and no samples
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
    files["zero"] = d / "zero.wav"
    files["stereo44k"] = make_wav(d / "stereo44k.wav", np.stack([tone, -tone // 3]), 44100, "stereo")
    files["surround48k"] = make_wav(
        d / "surround48k.wav", rng.integers(-20000, 20000, (6, 48000 * 3), dtype=np.int16), 48000, "5.1"
    )
    files["float_wav"] = make_wav(
        d / "float.wav",
        (rng.standard_normal((1, RATE * 3)) * 0.1).astype(np.float32),
        RATE,
        "mono",
        fmt="flt",
    )
    files["audio_only"] = make_wav(d / "audio_only.m4a.wav", tone[None, :RATE], 44100, "mono")
    (d / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "empty.mp4").write_bytes(b"")
    files["corrupt"], files["empty"] = d / "corrupt.mp4", d / "empty.mp4"
    return files


@pytest.fixture(scope="session")
def bad_media(tmp_path_factory, media) -> dict[str, Path]:
    """The robustness cases of issue 4, each as small as it can be."""
    d = tmp_path_factory.mktemp("bad_media")
    files = {
        "one": make_video(d / "one.mp4", "libx264", 64, 48, 1),
        "x264_10bit": make_video(d / "x264_10.mp4", "libx264", 64, 48, 10, pix_fmt="yuv420p10le"),
        "x265_10bit": make_video(
            d / "x265_10.mp4",
            "libx265",
            64,
            48,
            10,
            pix_fmt="yuv420p10le",
            options={"x265-params": "log-level=none"},
        ),
        "huge": make_video(d / "huge.mp4", "libx264", 4096, 2160, 2, options={"preset": "ultrafast"}),
        "vp9_vfr": make_video(d / "vp9_vfr.webm", "libvpx-vp9", 64, 48, 20, vfr=True),
        "vp9_aac": make_video(d / "vp9_aac.mkv", "libvpx-vp9", 64, 48, 12, audio="aac"),
    }
    mp4 = media["h264"].read_bytes()
    (d / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])  # PyAV's muxer writes the index (moov) last
    webm = (d / "vp9_aac.mkv").read_bytes()
    (d / "truncated.mkv").write_bytes(webm[: int(len(webm) * 0.6)])  # index-free: the first packets survive
    files["truncated_mp4"], files["truncated_mkv"] = d / "truncated.mp4", d / "truncated.mkv"
    return files
