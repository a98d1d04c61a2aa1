"""Overlapping audio windows through HuBERT's conv front end once: each shared sample is convolved once.

The release cuts a clip's audio into eight 2 s windows starting at ``int(16000·i·(D − 2)/8)`` (MODEL_SPEC
§1.2): for a clip of D = 3 s they cover 16 s of samples drawn from 3 s. The feature extractor's convolutions
are local (receptive field 400 samples, hop 320), so a frame's features depend only on the samples under it:
where two windows hold the same samples at the same phase of the convolution's stride, their frames are the
same numbers. Here a clip's windows are convolved as one longer signal per stride phase ("track") and each
window's frames are cut back out of it, so the front end does the union's work, not the sum's: 3 s instead
of 16 s for a 3 s clip (the later layers split a track wherever window offsets fall on different phases).

The overlaps are found in the data, not taken on trust: window i continues window i − 1 at shift d only if
``w_i[:S−d]`` equals ``w_{i−1}[d:]`` exactly (:func:`find_chains`). The inputs every convolution sees are
therefore the same values as per window, and only the order in which oneDNN blocks a longer convolution can
change a result, in the last bits (``tests/models/test_window_overlap.py`` holds it to 1e-5 of the
per-window path and of transformers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# A shift is looked for by its first PROBE samples; beyond MAX_CANDIDATES matching positions (digital
# silence, a synthetic tone) the rows are treated as unrelated: always correct, at worst no saving.
PROBE = 16
MAX_CANDIDATES = 8


def continuation_shift(a: Tensor, b: Tensor, min_overlap: int) -> int | None:
    """The smallest d >= 0 with ``b[:S-d] == a[d:]`` and an overlap S − d >= ``min_overlap``, else None.

    a, b: [S] rows of equal length.
    """
    s = a.shape[0]
    if b.shape[0] != s or s < max(min_overlap, PROBE):
        return None
    last = s - max(min_overlap, PROBE)  # largest shift considered
    cand = torch.nonzero(a[: last + 1] == b[0]).flatten()
    for j in range(1, PROBE):  # narrow the candidates down on the next probe samples
        if cand.numel() <= 1:
            break
        cand = cand[a[cand + j] == b[j]]
    if cand.numel() > MAX_CANDIDATES:
        return None
    for d in cand.tolist():
        if torch.equal(a[d:], b[: s - d]):
            return d
    return None


@dataclass
class Chain:
    """Rows of the input that are slices of one signal: row ``rows[j]`` is ``signal[offsets[j] :][:S]``."""

    rows: list[int]
    offsets: list[int]


def find_chains(x: Tensor, min_overlap: int) -> list[Chain]:
    """Split the rows of x [N, S] into runs where each row continues the one before (in row order)."""
    chains: list[Chain] = []
    for i in range(x.shape[0]):
        d = continuation_shift(x[i - 1], x[i], min_overlap) if i else None
        if d is None:
            chains.append(Chain([i], [0]))
        else:
            chains[-1].rows.append(i)
            chains[-1].offsets.append(chains[-1].offsets[-1] + d)
    return chains


def _signal(x: Tensor, chain: Chain) -> Tensor:
    """The signal a chain's rows are slices of: [offsets[-1] + S, ...]."""
    s = x.shape[1]
    parts = [x[chain.rows[0]]]
    for j in range(1, len(chain.rows)):
        grow = chain.offsets[j] - chain.offsets[j - 1]  # samples this row adds past the previous row's end
        if grow:
            parts.append(x[chain.rows[j], s - grow :])
    return torch.cat(parts)


def _spans(members: list[tuple[int, int]], stride: int, length: int) -> list[list[tuple[int, int]]]:
    """Members (row, offset) grouped by stride phase, each group cut where windows stop overlapping (so a
    track never convolves a gap no window covers)."""
    by_phase: dict[int, list[tuple[int, int]]] = {}
    for row, off in sorted(members, key=lambda m: m[1]):
        by_phase.setdefault(off % stride, []).append((row, off))
    spans = []
    for group in by_phase.values():
        spans.append([group[0]])
        for row, off in group[1:]:
            if off < spans[-1][-1][1] + length:
                spans[-1].append((row, off))
            else:
                spans.append([(row, off)])
    return spans


def conv_stack_shared(
    x: Tensor, layers: Sequence[Callable[[Tensor], Tensor]], kernels: Sequence[int], strides: Sequence[int]
) -> Tensor | None:
    """The conv stack over the rows of x [N, S] with overlapping rows computed once: [N, T_out, C_out].

    ``layers[i]`` maps channels-last [1, T, C_in] (C_in = 1 for the first) -> [1, (T − kernels[i]) //
    strides[i] + 1, C_out]. The result equals running every row alone; None when no row continues another
    (the caller then runs the rows batched, as before).
    """
    n, s = x.shape
    rf = 1  # one output frame's receptive field in samples: the least overlap that shares any frame
    for k, st in zip(reversed(kernels), reversed(strides)):
        rf = (rf - 1) * st + k
    chains = find_chains(x, rf)
    if all(len(c.rows) == 1 for c in chains):
        return None
    # A track: a stretch of one signal at one stride phase, and the (row, frame offset) of its windows.
    tracks = [(_signal(x, c)[:, None], list(zip(c.rows, c.offsets))) for c in chains]
    length = s  # every window's length at the current layer
    for layer, k, st in zip(layers, kernels, strides):
        nxt = []
        for sig, members in tracks:
            for span in _spans(members, st, length):
                lo, hi = span[0][1], span[-1][1] + length
                y = layer(sig[lo:hi][None])[0]
                nxt.append((y, [(row, (off - lo) // st) for row, off in span]))
        tracks = nxt
        length = (length - k) // st + 1
    first = tracks[0][0]
    out = first.new_empty((n, length, first.shape[-1]))
    for y, members in tracks:
        for row, off in members:
            out[row] = y[off : off + length]
    return out
