"""Band-limited resampling equal to `torchaudio.functional.resample` with its defaults.

Windowed-sinc interpolation (Hann window, `lowpass_filter_width` = 6 zero crossings, `rolloff` = 0.99), written
as a strided conv1d. With the rates reduced by their gcd to o (in) and m (out), the cutoff b = min(o, m)·rolloff
and w = ceil(6·o/b), output sample j·m + p (phase p = 0..m−1) is

    y[j·m + p] = Σ_k x[j·o − w + k] · h_p[k],   k = 0 .. 2w + o − 1,
    h_p[k] = (b/o) · sinc(π·t) · cos²(π·t / 12),  t = clamp(b·((k − w)/o − p/m), −6, 6)

(x zero-padded by w on the left and w + o on the right), truncated to ceil(m·n/o) samples. The kernel is
built in the waveform's dtype, like torchaudio's, so float32 input gives the same rounding.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["resample", "sinc_kernel"]


@lru_cache(maxsize=16)
def sinc_kernel(
    orig: int, new: int, dtype: torch.dtype = torch.float32, width: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int]:
    """([m, 1, 2w + o] kernel, w) for rates already reduced by their gcd."""
    base = min(orig, new) * rolloff
    w = math.ceil(width * orig / base)
    k = torch.arange(-w, w + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + k
    t = (t * base).clamp_(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones((), dtype=dtype), t.sin() / t)
    kernel = kernel * (window * (base / orig))
    return kernel, w


def resample(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """[..., n] float wave at `orig_freq` → [..., ceil(n·new/orig)] at `new_freq` (torchaudio defaults)."""
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} → {new_freq}")
    if not wave.is_floating_point():
        raise TypeError(f"resample needs a floating-point wave, got {wave.dtype}")
    if orig_freq == new_freq:
        return wave
    g = math.gcd(int(orig_freq), int(new_freq))
    o, m = int(orig_freq) // g, int(new_freq) // g
    kernel, w = sinc_kernel(o, m, wave.dtype)
    shape = wave.shape
    x = wave.reshape(math.prod(shape[:-1]), 1, shape[-1])
    y = F.conv1d(F.pad(x, (w, w + o)), kernel.to(wave.device), stride=o)  # [B, m, frames]: phase-major
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : math.ceil(m * shape[-1] / o)]
    return y.reshape(*shape[:-1], y.shape[-1])
