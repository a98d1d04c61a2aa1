"""Index rules and the torchaudio-equivalent resampler."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from affectrt.media.resample import resample
from affectrt.media.sampling import audio_window_slices, sample_indices


def test_sample_indices():
    assert sample_indices(5) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert sample_indices(93) == [0, 11, 23, 34, 46, 58, 69, 81]
    assert sample_indices(1) == [0] * 8
    for n in range(1, 300):
        assert sample_indices(n) == (np.arange(0, n, n / min(8, n)).astype(int).tolist() + [n - 1] * 8)[:8]
    with pytest.raises(ValueError):
        sample_indices(0)


class _PytorchvideoConstantClips:
    """pytorchvideo's ConstantClipsPerVideoSampler arithmetic, as ImageBind's get_clip_timepoints drives it."""

    def __init__(self, clip_duration, clips_per_video):
        self.d, self.k, self.i = Fraction(clip_duration), clips_per_video, 0

    def __call__(self, duration):
        start = Fraction(Fraction(max(duration - self.d, 0)), self.k) * self.i  # 0.1.5 on PyPI
        self.i += 1
        return start, start + self.d, self.i >= self.k


@pytest.mark.parametrize("n", [32000, 32001, 48077, 16000 * 7 + 3, 160000, 44100 * 3])
def test_audio_window_slices(n):
    sampler, got, last = _PytorchvideoConstantClips(2, 8), [], False
    while not last:
        s, e, last = sampler(n / 16000)
        got.append((int(s * 16000), int(e * 16000)))
    assert audio_window_slices(n) == got
    assert all(b - a == 32000 and b <= n for a, b in got)
    # the last window starts 7/8 of the way into the spare time (the release's pytorchvideo divides by 8)
    assert abs(got[-1][0] - (n - 32000) * 7 / 8) <= 1


def _reference(x: np.ndarray, sr: int, nr: int, width: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Float64 band-limited interpolation from its definition, one output sample at a time."""
    g = math.gcd(sr, nr)
    o, m = sr // g, nr // g
    b = min(o, m) * rolloff
    i = np.arange(len(x))
    out = np.empty(math.ceil(m * len(x) / o))
    for j in range(len(out)):
        t = np.clip(b * (i / o - j / m), -width, width)
        out[j] = (x * np.sinc(t) * np.cos(np.pi * t / width / 2) ** 2).sum() * b / o
    return out


@pytest.mark.parametrize("sr, nr", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000)])
def test_resample_matches_definition(sr, nr):
    x = np.random.default_rng(sr).standard_normal(1500)
    ref = _reference(x, sr, nr)
    y64 = resample(torch.tensor(x), sr, nr).numpy()
    assert y64.shape == ref.shape
    np.testing.assert_allclose(y64, ref, atol=1e-9)
    y32 = resample(torch.tensor(x, dtype=torch.float32)[None, None], sr, nr)
    assert y32.shape == (1, 1, len(ref)) and y32.dtype == torch.float32
    np.testing.assert_allclose(y32[0, 0].double().numpy(), ref, atol=1e-4)  # float32 kernel, like torchaudio


def test_resample_identity_and_errors():
    x = torch.randn(2, 100)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(TypeError):
        resample(torch.ones(3, dtype=torch.int16), 8000, 16000)
    assert resample(torch.zeros(1, 0), 44100, 16000).shape == (1, 0)
