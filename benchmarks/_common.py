"""Shared helpers of the benchmarks: timing statistics, run metadata, a synthetic clip."""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and each option's default after its help."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall times in ms of ``repeats`` calls after ``warmup`` calls, synchronising the device around each."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {
        "median_ms": float(np.median(a)),
        "p20_ms": float(np.percentile(a, 20)),
        "p80_ms": float(np.percentile(a, 80)),
        "n": len(samples),
    }


def run_metadata(device: torch.device) -> dict:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    from affectrt.cpu_features import cpu_bf16_units, cpu_name

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "cpu_bf16_units": cpu_bf16_units(),
        "commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def make_clip(path: Path, seconds: float = 3.0, fps: int = 25, size: tuple[int, int] = (320, 240)) -> Path:
    """Write an H.264 + AAC test clip (moving colour pattern, a chirp) with PyAV, once."""
    if path.exists():
        return path
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    n = int(seconds * fps)
    rate = 44100
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=rate)
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)
        block = 1024
        for start in range(0, len(wave), block):
            chunk = wave[start : start + block][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            for pkt in aus.encode(frame):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)
    return path


def make_wav(video: Path, out: Path) -> Path:
    """The clip's audio track as the release's data holds it: a 16 kHz mono 16-bit ``.wav`` (``ffmpeg -ar 16000
    -ac 1``), written once with PyAV."""
    if out.exists():
        return out
    import av

    with av.open(str(video)) as src, av.open(str(out), "w", format="wav") as dst:
        stream = dst.add_stream("pcm_s16le", rate=16000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for frame in src.decode(audio=0):
            for f in resampler.resample(frame):
                for pkt in stream.encode(f):
                    dst.mux(pkt)
        for f in resampler.resample(None):
            for pkt in stream.encode(f):
                dst.mux(pkt)
        for pkt in stream.encode():
            dst.mux(pkt)
    return out
