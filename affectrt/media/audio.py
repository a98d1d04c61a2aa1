"""Audio for HuBERT: eight 2 s windows at 16 kHz, as the release's ImageBind-style `load_audio` cuts them.

The release (MODEL_SPEC §1.2, §8): `torchaudio.load(wav)` → `torchaudio.functional.resample(·, sr, 16000)` →
average the channels only when there are exactly 2 (any other count is kept and HuBERT reads channel 0) →
zero-pad at the end to ≥ 2 s → eight windows `wave[int(16000·s_i) : int(16000·(s_i + 2))]` with
s_i = i·max(D − 2, 0)/8 (pytorchvideo 0.1.5; see `sampling.audio_window_slices`). HuBERT then gets one zero-mean/unit-variance
normalisation over all eight windows together (`joint_normalize`).

Differences from the release, on purpose: we also read the audio track of a video container (the release's
backend cannot; it reads a separately extracted .wav), a file without an audio stream raises a MediaError that
names it (the release crashes), and zero-length audio becomes 2 s of silence as the release's padding implies.
"""

from __future__ import annotations

import os

import av
import numpy as np
import torch

from affectrt.media.errors import MediaError
from affectrt.media.resample import resample
from affectrt.media.sampling import audio_window_slices

__all__ = ["load_waveform", "load_audio_windows", "joint_normalize"]

# torchaudio.load's normalisation of integer PCM to [-1, 1): divide by 2^(bits-1) (unsigned 8-bit re-centred).
_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _to_float(frame: av.AudioFrame) -> np.ndarray:
    """[channels, samples] float32 from one decoded frame, planar or interleaved."""
    fmt = frame.format
    a = frame.to_ndarray()
    if not fmt.is_planar:
        a = a.reshape(-1, len(frame.layout.channels)).T
    name = fmt.name.rstrip("p")
    if name in _INT_SCALE:
        return (a.astype(np.float64) / _INT_SCALE[name]).astype(np.float32)
    if name == "u8":
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    return a.astype(np.float32)  # flt / dbl: as stored


def load_waveform(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """(float32 [channels, samples] in [-1, 1], sample_rate) from a .wav or a video file's audio track."""
    if not os.path.exists(path):
        raise MediaError(path, "file not found", "check the path")
    try:
        container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(
            path, f"cannot open as a media file ({e})", "the file is corrupt or not audio/video"
        ) from e
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams})
            what = f"the file holds only {', '.join(kinds)}" if kinds else "the file holds no streams"
            raise MediaError(
                path,
                f"no audio stream ({what})",
                "pass a file with an audio track, or extract one (ffmpeg -ac 1 -ar 16000 x.wav)",
            )
        stream = container.streams.best("audio") or container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        channels = stream.codec_context.channels
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.append(_to_float(frame))
                rate, channels = frame.sample_rate, chunks[-1].shape[0]
        except av.FFmpegError as e:
            raise MediaError(
                path, f"decoding the audio failed ({e})", "the audio is corrupt; re-extract it"
            ) from e
    if not rate or not channels:
        raise MediaError(path, "the audio stream has no sample rate or channel count", "re-extract the audio")
    wave = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return torch.from_numpy(np.ascontiguousarray(wave)), int(rate)


def load_audio_windows(
    path: str | os.PathLike, sample_rate: int = 16000, n_clips: int = 8, clip_seconds: float = 2.0
) -> torch.Tensor:
    """float32 [n_clips, clip_samples]: the release's eight (overlapping) 2 s windows at `sample_rate`."""
    wave, rate = load_waveform(path)
    if wave.shape[0] != 2:
        wave = wave[:1]  # channels are resampled independently, so picking channel 0 first changes nothing
    wave = resample(wave, rate, sample_rate)
    wave = wave.mean(0) if wave.shape[0] == 2 else wave[0]
    clip = int(sample_rate * clip_seconds)
    if wave.shape[0] < clip:
        wave = torch.nn.functional.pad(wave, (0, clip - wave.shape[0]))
    return torch.stack(
        [wave[a:b] for a, b in audio_window_slices(wave.shape[0], sample_rate, n_clips, clip_seconds)]
    )


def joint_normalize(windows: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(x − mean) / sqrt(var + eps) with ONE mean and (population) variance over every value of `windows`.

    This is what the release's `Wav2Vec2FeatureExtractor(do_normalize=True)(windows, ...)` does with a 2-D
    torch tensor: a tensor is not a numpy array or list, so the extractor treats it as a single unbatched
    sequence and normalises all 8×32000 values together (per-clip std is therefore not 1).
    """
    x = windows.to(torch.float32)
    mean = x.mean()
    var = (x - mean).square().mean()
    return (x - mean) / torch.sqrt(var + eps)
