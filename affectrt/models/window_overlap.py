"""Overlapping audio windows through HuBERT's conv front end once: each shared sample is convolved once.

The release cuts a clip's audio into eight 2 s windows starting at ``int(16000·i·(D − 2)/8)`` (MODEL_SPEC
§1.2): for a clip of D = 3 s they cover 16 s of samples drawn from 3 s. The feature extractor's convolutions
are local (receptive field 400 samples, hop 320), so a frame's features depend only on the samples under it:
where two windows hold the same samples at the same phase of the convolution's stride, their frames are the
same numbers. Here a clip's windows are convolved as one longer signal per stride phase ("track") and each
window's frames are cut back out of it, so the front end does the union's work, not the sum's.

That pays only where the windows' offsets share the strides' phases (5, then 10, 20, ... 320 samples): the
offsets are ``int(i·(n − 32000)/8)`` for n samples, multiples of 80 when n − 32000 is a multiple of 640,
e.g. audio of whole seconds or of a whole number of 25 fps video frames. Then layers 1-5 convolve each
sample once (3 s instead of 16 s of samples for a 3 s clip: the `small` preset's front end 32.6 -> 10.5 ms
on a 2-core Xeon, ``python benchmarks/cpu_parts.py --only front_end``). With offsets on many phases every window soon has a track of its own, so a plan that saves
less than ``MIN_SAVING`` of the FLOPs is dropped and the windows run batched as before (the check costs
~0.2 ms per clip).

The overlaps are found in the data, not taken on trust: window i continues window i − 1 at shift d only if
``w_i[:S−d]`` equals ``w_{i−1}[d:]`` exactly (:func:`find_chains`, :func:`verified`). The inputs every
convolution sees are therefore the same values as per window, and only the order in which oneDNN blocks a
longer convolution could change a result, in the last bits (the measured cases were bit-equal;
``tests/models/test_window_overlap.py`` holds it to 1e-6 of the per-window path and 1e-5 of transformers).
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


def continuation_shift(a: Tensor, b: Tensor, min_overlap: int, verify: bool = True) -> int | None:
    """The smallest d >= 0 with ``b[:S-d] == a[d:]`` and an overlap S − d >= ``min_overlap``, else None.

    a, b: [S] rows of equal length. ``verify=False`` returns the first shift whose PROBE samples match,
    unchecked beyond them (a candidate for :func:`verified`).
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
        if not verify or torch.equal(a[d:], b[: s - d]):
            return d
    return None


@dataclass
class Chain:
    """Rows of the input that are slices of one signal: row ``rows[j]`` is ``signal[offsets[j] :][:S]``."""

    rows: list[int]
    offsets: list[int]


def find_chains(x: Tensor, min_overlap: int, verify: bool = True) -> list[Chain]:
    """Split the rows of x [N, S] into runs where each row continues the one before (in row order).

    ``verify=False``: candidate chains, each link matched on its first samples only (:func:`verified`).
    """
    chains: list[Chain] = []
    for i in range(x.shape[0]):
        d = continuation_shift(x[i - 1], x[i], min_overlap, verify) if i else None
        if d is None:
            chains.append(Chain([i], [0]))
        else:
            chains[-1].rows.append(i)
            chains[-1].offsets.append(chains[-1].offsets[-1] + d)
    return chains


def verified(x: Tensor, chains: Sequence[Chain]) -> bool:
    """Whether every link of ``chains`` holds sample for sample: row j continues row j − 1 at its offset."""
    s = x.shape[1]
    for c in chains:
        for j in range(1, len(c.rows)):
            d = c.offsets[j] - c.offsets[j - 1]
            if not torch.equal(x[c.rows[j - 1], d:], x[c.rows[j], : s - d]):
                return False
    return True


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


@dataclass
class Plan:
    """Which stretch of which signal every layer convolves: ``spans[l]`` lists, per track, the input range
    (lo, hi) in the track's signal, the parent track, and the (row, offset) of its windows."""

    chains: list[Chain]
    spans: list[list[tuple[int, int, int, list[tuple[int, int]]]]]
    length: int  # frames per window after the last layer

    def work(self, frame_cost: Sequence[float], kernels: Sequence[int], strides: Sequence[int]) -> float:
        """Σ over layers of output frames × ``frame_cost[l]`` (the FLOPs of one output frame)."""
        total = 0.0
        for spans, c, k, st in zip(self.spans, frame_cost, kernels, strides):
            total += c * sum((hi - lo - k) // st + 1 for lo, hi, _, _ in spans)
        return total


def plan(x: Tensor, kernels: Sequence[int], strides: Sequence[int], verify: bool = True) -> Plan:
    """The tracks of the shared conv stack over the rows of x [N, S] (chains found in the data; ``verify``
    as in :func:`find_chains`)."""
    rf = 1  # one output frame's receptive field in samples: the least overlap that shares any frame
    for k, st in zip(reversed(kernels), reversed(strides)):
        rf = (rf - 1) * st + k
    chains = find_chains(x, rf, verify)
    tracks = [list(zip(c.rows, c.offsets)) for c in chains]  # per track: its windows' (row, offset)
    length, layers = x.shape[1], []
    for k, st in zip(kernels, strides):
        spans, nxt = [], []
        for parent, members in enumerate(tracks):
            for span in _spans(members, st, length):
                lo, hi = span[0][1], span[-1][1] + length
                spans.append((lo, hi, parent, span))
                nxt.append([(row, (off - lo) // st) for row, off in span])
        layers.append(spans)
        tracks = nxt
        length = (length - k) // st + 1
    return Plan(chains, layers, length)


# Sharing pays when it saves more than this fraction of the front end's FLOPs: a track is one long sequence
# (N = 1), which oneDNN runs less efficiently than the windows batched, and each track is another call per
# layer. Measured on the `small` preset (2-core Xeon), time ratio against FLOP ratio: 0.31/0.19 (3 s clip),
# 0.67/0.44 (5.3 s), 0.79/0.53 (7.3 s), 0.67/0.56 (10 s), 1.04/0.70 (3.04 s: a loss).
MIN_SAVING = 0.4


def conv_stack_shared(
    x: Tensor,
    layers: Sequence[Callable[[Tensor], Tensor]],
    kernels: Sequence[int],
    strides: Sequence[int],
    frame_cost: Sequence[float] | None = None,
) -> Tensor | None:
    """The conv stack over the rows of x [N, S] with overlapping rows computed once: [N, T_out, C_out].

    ``layers[i]`` maps channels-last [1, T, C_in] (C_in = 1 for the first) -> [1, (T − kernels[i]) //
    strides[i] + 1, C_out]; ``frame_cost[i]`` is the FLOPs of one of its output frames (default: equal).
    The result equals running every row alone. None when that would be as cheap: no row continues another,
    or the windows' offsets fall on so many stride phases that sharing saves less than ``MIN_SAVING`` of the
    work (the caller then runs the rows batched, as before).
    """
    n, s = x.shape
    p = plan(x, kernels, strides, verify=False)  # checked below, once sharing is known to pay
    if all(len(c.rows) == 1 for c in p.chains):
        return None
    cost = list(frame_cost) if frame_cost is not None else [1.0] * len(kernels)
    per_window, length = 0.0, s
    for c, k, st in zip(cost, kernels, strides):
        length = (length - k) // st + 1
        per_window += n * length * c
    if p.work(cost, kernels, strides) > (1 - MIN_SAVING) * per_window or not verified(x, p.chains):
        return None
    signals = [_signal(x, c)[:, None] for c in p.chains]
    for layer, spans in zip(layers, p.spans):
        signals = [layer(signals[parent][lo:hi][None])[0] for lo, hi, parent, _ in spans]
    out = signals[0].new_empty((n, p.length, signals[0].shape[-1]))
    st = strides[-1]
    for y, (lo, _, _, members) in zip(signals, p.spans[-1]):
        for row, off in members:
            f = (off - lo) // st
            out[row] = y[f : f + p.length]
    return out
