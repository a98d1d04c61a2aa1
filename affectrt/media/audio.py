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

import logging
import os
import wave as wavfile
from collections.abc import Iterator

import av
import numpy as np
import torch

from affectrt.media.container import open_input
from affectrt.media.errors import MediaError
from affectrt.media.resample import StreamingResampler
from affectrt.media.sampling import audio_window_slices

__all__ = ["load_waveform", "load_audio_windows", "joint_normalize"]

log = logging.getLogger("affectrt.media")

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


def _open_audio(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.AudioStream]:
    container = open_input(path, "audio")
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = f"the file holds only {', '.join(kinds)}" if kinds else "the file holds no streams"
        raise MediaError(
            path,
            f"no audio stream ({what})",
            "pass a file with an audio track, or extract one (ffmpeg -ac 1 -ar 16000 x.wav)",
        )
    return container, container.streams.best("audio") or container.streams.audio[0]


def _pcm16_wav_chunks(
    path: str | os.PathLike, frames: int = 1 << 16
) -> Iterator[tuple[np.ndarray, int]] | None:
    """The chunks of a plain 16-bit PCM ``.wav`` (the release's audio files) read with the standard library,
    or None for anything else. Same values as decoding it with FFmpeg (int16 / 32768), without the container
    probing that costs milliseconds per clip."""
    if not os.fspath(path).lower().endswith(".wav"):
        return None
    try:
        w = wavfile.open(os.fspath(path), "rb")
    except (wavfile.Error, EOFError, OSError):
        return None  # WAVE_FORMAT_EXTENSIBLE, float, damaged, ...: FFmpeg reads those
    if w.getsampwidth() != 2 or w.getnframes() == 0:
        w.close()
        return None

    def chunks() -> Iterator[tuple[np.ndarray, int]]:
        with w:
            channels, rate = w.getnchannels(), w.getframerate()
            while True:
                data = w.readframes(frames)
                if not data:
                    return
                a = np.frombuffer(data, "<i2")[: len(data) // (2 * channels) * channels]
                yield (a.reshape(-1, channels).T.astype(np.float32) / np.float32(32768)), rate

    return chunks()


def _decode_chunks(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, int]]:
    """(float32 [channels, samples], sample rate) per decoded frame of the best audio stream.

    Like ffmpeg, a packet the decoder rejects is skipped (counted, and logged once at the end) and a read
    error ends the stream early; only a stream of which nothing decodes is an error.
    """
    fast = _pcm16_wav_chunks(path)
    if fast is not None:
        yield from fast
        return
    container, stream = _open_audio(path)
    bad, decoded, error = 0, 0, None
    with container:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as e:  # a damaged container: keep what was read, as ffmpeg does
                error = e
                break
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                bad, error = bad + 1, e
                continue
            for frame in frames:
                decoded += 1
                yield _to_float(frame), frame.sample_rate
    if decoded == 0 and error is not None:
        raise MediaError(path, f"no audio could be decoded ({error})", "the audio is corrupt; re-extract it")
    if bad or error is not None:
        what = f"{bad} undecodable audio packet(s) skipped" if bad else f"audio read stopped early ({error})"
        log.warning("%s: %s; the rest of the track is used, as ffmpeg would", os.fspath(path), what)


def load_waveform(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """(float32 [channels, samples] in [-1, 1], sample_rate) from a .wav or a video file's audio track."""
    chunks, rates = [], set()
    for chunk, chunk_rate in _decode_chunks(path):
        chunks.append(chunk)
        rates.add(chunk_rate)
    if not chunks:  # an audio stream without samples: the caller pads it to silence
        container, stream = _open_audio(path)
        with container:
            rate, channels = stream.codec_context.sample_rate or stream.rate, stream.codec_context.channels
        if not rate or not channels:
            raise MediaError(
                path, "the audio stream has no sample rate or channel count", "re-extract the audio"
            )
        return torch.zeros(channels, 0), int(rate)
    if len(rates) > 1 or len({c.shape[0] for c in chunks}) > 1:
        raise MediaError(
            path, "the audio format changes mid-stream", "re-extract the audio with ffmpeg -ac 1 -ar 16000"
        )
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(chunks, axis=1))), int(rates.pop())


def _to_mono(x: torch.Tensor) -> torch.Tensor:
    """[1 or 2, n] → [n]: the release averages exactly two channels (elementwise, so chunking changes no bit)."""
    return x.mean(0) if x.shape[0] == 2 else x[0]


# Resampled samples kept in memory before switching to the two-pass path (60 s at 16 kHz: 3.8 MB).
LONG_AUDIO_SAMPLES = 60 * 16000


def load_audio_windows(
    path: str | os.PathLike, sample_rate: int = 16000, n_clips: int = 8, clip_seconds: float = 2.0
) -> torch.Tensor:
    """float32 [n_clips, clip_samples]: the release's eight (overlapping) 2 s windows at `sample_rate`.

    Decoded and resampled frame by frame (:class:`StreamingResampler`, bit-equal to resampling the whole
    track). A track of up to ``LONG_AUDIO_SAMPLES`` resampled samples is kept whole and cut; a longer one is
    only counted on a first pass (the window positions depend on its length) and decoded again, keeping just
    the window samples, so memory stays bounded whatever the clip's length: the peak RSS grows by about 40 MB
    for a 2-, 10- or 20-minute 48 kHz stereo clip (1.9 GB for 10 minutes when the whole track was held at its
    source rate).
    """
    clip = int(sample_rate * clip_seconds)
    parts, total = [], 0
    for part in _resampled_mono(path, sample_rate):
        total += part.shape[0]
        if total > LONG_AUDIO_SAMPLES:
            parts = None
            break
        parts.append(part)
    if parts is not None:  # short: cut from the whole track
        wave = torch.cat(parts) if parts else torch.zeros(0)
        if wave.shape[0] < clip:
            wave = torch.nn.functional.pad(wave, (0, clip - wave.shape[0]))
        return torch.stack(
            [wave[a:b] for a, b in audio_window_slices(wave.shape[0], sample_rate, n_clips, clip_seconds)]
        )
    total = sum(part.shape[0] for part in _resampled_mono(path, sample_rate))
    slices = audio_window_slices(max(total, clip), sample_rate, n_clips, clip_seconds)
    windows = torch.zeros(n_clips, clip)
    pos = 0
    for part in _resampled_mono(path, sample_rate):
        end = pos + part.shape[0]
        for w, (a, b) in enumerate(slices):
            lo, hi = max(a, pos), min(b, end)
            if lo < hi:
                windows[w, lo - a : hi - a] = part[lo - pos : hi - pos]
        pos = end
    return windows


def _resampled_mono(path: str | os.PathLike, sample_rate: int) -> Iterator[torch.Tensor]:
    """The track at ``sample_rate`` as the release mixes it, in pieces: two channels averaged (after
    resampling), any other count reduced to channel 0 (which HuBERT reads)."""
    resampler, channels, rate = None, None, None
    for chunk, chunk_rate in _decode_chunks(path):
        if resampler is None:
            channels, rate = chunk.shape[0], chunk_rate
            resampler = StreamingResampler(rate, sample_rate, 2 if channels == 2 else 1)
        elif chunk.shape[0] != channels or chunk_rate != rate:
            raise MediaError(
                path,
                "the audio format changes mid-stream",
                "re-extract the audio with ffmpeg -ac 1 -ar 16000",
            )
        yield _to_mono(resampler.push(torch.from_numpy(chunk[: 2 if channels == 2 else 1])))
    if resampler is None:
        load_waveform(path)  # no samples: raises when the stream has no rate or channels
        return
    yield _to_mono(resampler.finish())


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
