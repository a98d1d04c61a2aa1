"""Band-limited resampling equal to `torchaudio.functional.resample` with its defaults.

Windowed-sinc interpolation (Hann window, `lowpass_filter_width` = 6 zero crossings, `rolloff` = 0.99), written
as a strided conv1d. With the rates reduced by their gcd to o (in) and m (out), the cutoff b = min(o, m)·rolloff
and w = ceil(6·o/b), output sample j·m + p (phase p = 0..m−1) is

    y[j·m + p] = Σ_k x[j·o − w + k] · h_p[k],   k = 0 .. 2w + o − 1,
    h_p[k] = (b/o) · sinc(π·t) · cos²(π·t / 12),  t = clamp(b·((k − w)/o − p/m), −6, 6)

(x zero-padded by w on the left and w + o on the right), truncated to ceil(m·n/o) samples. The kernel is
built in the waveform's dtype, like torchaudio's, so float32 input rounds the kernel the same way.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["resample", "sinc_kernel", "StreamingResampler"]


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
    if not wave.is_floating_point():
        raise TypeError(f"resample needs a floating-point wave, got {wave.dtype}")
    if orig_freq == new_freq and orig_freq > 0:
        return wave  # torchaudio returns its input unchanged
    shape = wave.shape
    r = StreamingResampler(orig_freq, new_freq, math.prod(shape[:-1]), wave.dtype, wave.device)
    x = wave.reshape(math.prod(shape[:-1]), shape[-1])
    y = torch.cat([r.push(x), r.finish()], dim=-1)
    return y.reshape(*shape[:-1], y.shape[-1])


class StreamingResampler:
    """:func:`resample` of a wave that arrives in chunks, keeping only the kernel's context of the input.

    ``push(chunk [C, n])`` returns the output samples that chunk completes; ``finish()`` the rest. Output frame
    j (samples j·m .. j·m + m − 1) reads input x[j·o − w, j·o + w + o) (zeros beyond either end). Frames are
    computed in fixed blocks of ``block`` frames, always by one strided conv1d of the same shape (the last
    block zero-padded), because conv1d's rounding can depend on the input length: so the output is the same
    bits whether the wave arrives whole or in any chunks, and :func:`resample` is this class on the whole wave.
    """

    def __init__(
        self,
        orig_freq: int,
        new_freq: int,
        channels: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
            raise ValueError(f"sample rates must be positive integers, got {orig_freq} → {new_freq}")
        g = math.gcd(int(orig_freq), int(new_freq))
        self.o, self.m = int(orig_freq) // g, int(new_freq) // g
        self.identity = orig_freq == new_freq
        kernel, self.w = sinc_kernel(self.o, self.m, dtype)
        self.kernel = kernel.to(device)
        self.block = max(1, 65536 // self.o)  # frames per conv1d call: about 64k input samples
        self.span = (self.block - 1) * self.o + 2 * self.w + self.o  # input samples one block reads
        # The input from x[frames·o − w] on; the wave starts after w zeros.
        self.buf = torch.zeros(channels, 0 if self.identity else self.w, dtype=dtype, device=device)
        self.seen = 0  # input samples pushed so far
        self.frames = 0  # output frames emitted so far

    def _blocks(self, n_blocks: int) -> torch.Tensor:
        x = self.buf[:, : (n_blocks - 1) * self.block * self.o + self.span]
        outs = []
        for b in range(n_blocks):
            piece = x[:, None, b * self.block * self.o : b * self.block * self.o + self.span]
            y = F.conv1d(piece, self.kernel, stride=self.o)  # [C, m, block]: phase-major
            outs.append(y.transpose(1, 2).reshape(x.shape[0], -1))
        self.buf = self.buf[:, n_blocks * self.block * self.o :].clone()  # drop the consumed input's storage
        self.frames += n_blocks * self.block
        return torch.cat(outs, dim=-1)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """[C, n] input → the [C, k] output samples it completes (k may be 0)."""
        self.seen += chunk.shape[-1]
        self.buf = torch.cat([self.buf, chunk.to(self.buf.dtype)], dim=-1)
        if self.identity:
            out, self.buf = self.buf, self.buf[:, :0]
            return out
        n_blocks = (self.buf.shape[-1] - self.span) // (self.block * self.o) + 1
        # new_empty, not a view: a zero-length view would keep the whole buffer alive in the caller's list
        return self._blocks(n_blocks) if n_blocks > 0 else self.buf.new_empty(self.buf.shape[0], 0)

    def finish(self) -> torch.Tensor:
        """The remaining output samples, up to ceil(m·n/o) in all, as torchaudio truncates."""
        if self.identity:
            return self.buf
        total = math.ceil(self.m * self.seen / self.o)
        n_frames = math.ceil(total / self.m) - self.frames
        if n_frames <= 0:
            return self.buf.new_empty(self.buf.shape[0], 0)
        n_blocks = math.ceil(n_frames / self.block)
        need = (n_blocks - 1) * self.block * self.o + self.span
        self.buf = F.pad(self.buf, (0, max(need - self.buf.shape[-1], 0)))
        first = self.frames
        return self._blocks(n_blocks)[:, : total - first * self.m]
