"""Which frames and which audio windows the release reads (MODEL_SPEC §1.2, §8 "Preprocessing").

Frames: `np.arange(0, n, n / min(k, n)).astype(int)`, start-aligned, padded with the last index when n < k.
Audio: pytorchvideo `ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=8)` as ImageBind's
`load_audio` calls it, with its exact arithmetic: the duration D = samples / rate is a Python float,
`max(D - 2, 0)` is taken in float and turned into an exact `Fraction`, clip i starts at that Fraction·i/8 and the
slice is `wave[int(rate·s_i) : int(rate·(s_i + 2))]`, truncating exact rationals, so every slice has exactly
rate·2 samples. The release pins pytorchvideo 0.1.5 from PyPI, whose sampler divides by `clips_per_video` (8);
later git revisions divide by `clips_per_video − 1`, which the release never ran, so the last window ends
2/8 of the spare time before the end of the clip.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def sample_indices(n: int, k: int = 8) -> list[int]:
    """k frame indices out of n decoded frames: floor(i·n/min(k,n)), the last one repeated up to k.

    5 → [0,1,2,3,4,4,4,4]; 93 → [0,11,23,34,46,58,69,81]. The float step and arange are the release's, so
    rounding matches it bit for bit.
    """
    if n < 1:
        raise ValueError(f"cannot sample {k} frames from a clip with {n} frames")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    idx = np.arange(0, n, n / min(k, n)).astype(int).tolist()
    return idx + [idx[-1]] * (k - len(idx))


def audio_window_starts(duration_s: float, n: int = 8, clip_s: float = 2.0) -> list[Fraction]:
    """Start times (exact `Fraction`s, seconds) of the n windows: s_i = i·max(D − clip_s, 0)/n.

    `duration_s` must be the float the release computes (samples / rate); the subtraction happens in float,
    as pytorchvideo's `float - Fraction` does, and only then becomes exact.
    """
    max_start = Fraction(max(float(duration_s) - float(Fraction(clip_s)), 0))
    step = max_start / n  # pytorchvideo 0.1.5: Fraction(max_possible_clip_start, clips_per_video)
    return [step * i for i in range(n)]


def audio_window_slices(
    n_samples: int, sample_rate: int = 16000, n: int = 8, clip_s: float = 2.0
) -> list[tuple[int, int]]:
    """[(start, stop)] sample ranges of the n windows over a wave of `n_samples` samples (already padded)."""
    clip = Fraction(clip_s)
    starts = audio_window_starts(n_samples / sample_rate, n, clip_s)
    return [(int(s * sample_rate), int((s + clip) * sample_rate)) for s in starts]
