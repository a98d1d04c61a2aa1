"""Frames for the frame model, decoded on the CPU with PyAV exactly as the release's decord reads them.

The release calls `decord.VideoReader(path, height=224, width=224)`, takes `len(vr)` as the frame count N and
`vr.get_batch(sample_indices(N))` (MODEL_SPEC §1.2). What decord does, and what we reproduce:

- N is the number of *packets* of the best video stream (decord demuxes the whole file once to index it);
  header frame counts are not used. Frame i is the i-th frame in presentation order (decord sorts its
  packet index by pts), so on a variable-frame-rate clip indices count frames, not time.
- Each frame goes through the FFmpeg graph `[transpose…,]scale=W:H` into an rgb24 sink. In decord's bundled
  FFmpeg 4.1 the scale filter's default flags are `bilinear`, the YUV→RGB matrix is BT.601 and the chroma
  siting is ignored. PyAV's FFmpeg 8 `sws_scale_frame` honours the frame's chroma location (H.264/HEVC tag
  it "left"), which moves chroma by a quarter pixel; we hand swscale a copy of the frame without that tag,
  and the pixels then equal decord's exactly (max abs difference 0 on H.264, HEVC, VP9, MJPEG, VFR clips,
  up- and downscaling). Known deviation: when the source height already equals the target and only the width
  is scaled, FFmpeg 8 still sites chroma differently (320×224 → 224×224: max 45, mean 1.1).
- Rotation metadata: decord applies `transpose` before scaling; we rotate the planes the same way.

We decode only up to the last needed frame, and jump ahead with a keyframe seek when a keyframe lies
between the current position and the next needed frame. On H.264 the decoder also skips the non-reference
frames that are not themselves needed (`_decode_ranks_skipping`: frames picked by pts from the index, every
decoded frame bit-identical to a full decode); whenever its output disagrees with the index it falls back to
counting decoded frames. decord is never imported here.

Cost (10 s 720p H.264 pan clip, 2-core Xeon, benchmarks/media.py): a plain open costs ~25 ms there
(avformat_find_stream_info decodes the first frame on one thread); an MP4's open skips that decode
(`affectrt.media.container`: ~1-2 ms), and the H.264 path keeps the index pass's packets (up to
`_KEEP_PACKET_BYTES`) and decodes them from memory in the same container: one open, one demux, a jump to a
keyframe is a decoder flush. It decodes with slice threads: frame threads delay every output by a frame per
thread, which a reader that stops at each target and jumps to the next keyframe pays at every jump (skipping
path measured 265 ms with frame threads, 171 ms with slice threads); and it drains the decoder after the last
target of each run instead of decoding further frames to push it out. The picked frames share one scaler, so
swscale is set up once per read instead of once per frame. What is left is decoding the
targets and the reference frames they depend on (89 of 250 frames there, the costly I/P ones).
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from affectrt.media.container import open_input, probed_lightly
from affectrt.media.errors import MediaError
from affectrt.media.sampling import sample_indices

__all__ = ["VideoInfo", "count_frames", "open_video", "probe_video", "read_frames", "read_frames_at"]


@dataclass(frozen=True)
class _Index:
    """What decord's IndexKeyframes learns from one pass over the packets (no decoding)."""

    pts: list[int]  # presentation timestamps in rank order (len == frame count)
    seek_ranks: list[int]  # ranks of keyframes that are safe seek points (closed GOP), ascending
    by_pts: bool = False  # every packet has its own, unique pts: frames can be picked by pts
    reorders: bool = True  # decode order is not presentation order (or, without timestamps, may not be)
    # The packets themselves in decode order, when the index pass was asked to keep them and they fit the
    # budget (`_index`'s keep_bytes); None otherwise. Seek rank k is packets[k] (a closed-GOP keyframe).
    packets: list[av.Packet] | None = field(default=None, compare=False, repr=False)

    def seek_point(self, rank: int) -> int:
        """The largest safe keyframe rank ≤ rank (0 when none)."""
        i = bisect.bisect_right(self.seek_ranks, rank) - 1
        return self.seek_ranks[i] if i >= 0 else 0


def open_video(
    path: str | os.PathLike, full_probe: bool = False
) -> tuple[av.container.InputContainer, av.VideoStream]:
    """Open `path` (`open_input`: no probe decode where the header suffices, unless `full_probe`) and pick the
    video stream decord would (`_decord_stream`); MediaError otherwise."""
    container = open_input(path, "video", full_probe)
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = f"the file holds only {', '.join(kinds)}" if kinds else "the file holds no streams"
        raise MediaError(
            path, f"no video stream ({what})", "pass a file with a video track, or use the face model"
        )
    stream = _decord_stream(container)
    stream.thread_type = "AUTO"
    return container, stream


_IMPAIRED = av.stream.Disposition.hearing_impaired | av.stream.Disposition.visual_impaired


def _decord_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The video stream decord reads: av_find_best_stream as in its FFmpeg 4.1.

    Among the streams FFmpeg can decode, the greatest (not marked for the hearing or visually impaired, frames
    counted by the probe up to 5, bit rate, frames counted), the first on ties. PyAV's `streams.best` runs
    FFmpeg >= 4.3's, which also ranks a stream marked default first: given a default small track and a larger
    second one, decord reads the second. The probe's frame count is not exposed, so the header's stands in for
    it (equal up to 5 wherever a stream has 5 frames or more).
    """
    best, best_key = container.streams.video[0], None
    for s in container.streams.video:
        if s.codec_context is None:  # no decoder for it
            continue
        key = (not s.disposition & _IMPAIRED, min(5, s.frames), s.bit_rate or 0, s.frames)
        if best_key is None or key > best_key:
            best, best_key = s, key
    return best


# Packets `read_frames` keeps in memory from the index pass instead of reopening the file and demuxing it
# again (64 MiB: minutes of 1080p H.264; longer files take the reopen-and-seek path).
_KEEP_PACKET_BYTES = 64 << 20


def _index(
    container: av.container.InputContainer, stream: av.VideoStream, path, keep_bytes: int = 0
) -> _Index:
    """One pass over the packets (no decoding); keeps them in `_Index.packets` while they total ≤ keep_bytes."""
    packets = []  # (dts order) pts and keyframe flag, as decord's av_read_frame loop records them
    kept: list[av.Packet] | None = [] if keep_bytes > 0 else None
    size = 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0 and pkt.pts is None:  # PyAV's end-of-stream flush packet, not a file packet
                continue
            packets.append((pkt.pts, pkt.is_keyframe))
            size += pkt.size
            if kept is not None and size > keep_bytes:
                kept = None  # over budget: drop them; the decoder reopens the file and seeks instead
            if kept is not None:
                kept.append(pkt)
    except av.FFmpegError as e:
        raise MediaError(
            path, f"cannot read the video packets ({e})", "the file is corrupt; re-encode it"
        ) from e
    if not packets:
        raise MediaError(path, "the video stream has no frames", "pass a non-empty video")
    if any(p is None for p, _ in packets):  # no timestamps: decode order is all we have, and we never seek
        return _Index(pts=list(range(len(packets))), seek_ranks=[])
    pts = sorted(p for p, _ in packets)
    # A keyframe is a safe seek point when exactly `count` frames precede it in both decode and
    # presentation order (closed GOP); open-GOP leading frames would otherwise shift every index after it.
    seek = [i for i, (p, key) in enumerate(packets) if key and i > 0 and pts[i] == p]
    reorders = any(p != q for (p, _), q in zip(packets, pts))
    return _Index(pts=pts, seek_ranks=seek, by_pts=len(set(pts)) == len(pts), reorders=reorders, packets=kept)


def count_frames(path: str | os.PathLike) -> int:
    """decord's `len(VideoReader(path))`: the number of packets of the best video stream."""
    container, stream = open_video(path)
    with container:
        return len(_index(container, stream, path).pts)


@dataclass(frozen=True)
class VideoInfo:
    """What a GPU decoder needs to know before it is handed a file (see `probe_video`)."""

    n_frames: int  # decord's len(VideoReader): packets of the best video stream
    codec: str  # FFmpeg decoder name: "h264", "hevc", "vp9", "av1", "mjpeg", ...
    pix_fmt: str  # "yuv420p", "yuv420p10le", "yuv444p", ...
    width: int
    height: int
    rotation: int  # clockwise degrees decord would rotate by (0, 90, 180, 270)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, codec, pixel format and display rotation of the best video stream.

    The count demuxes the whole file (as decord does); the rotation needs one decoded frame, because
    PyAV exposes the display matrix only on frames.
    """
    container, stream = open_video(path)
    with container:
        n = len(_index(container, stream, path).pts)
        cc = stream.codec_context
        codec, pix_fmt, width, height = cc.name, cc.pix_fmt or "", cc.width, cc.height
    container, stream = open_video(path)
    with container:
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as e:
            raise MediaError(
                path, f"decoding failed ({e})", "the video stream is corrupt; re-encode it"
            ) from e
    if first is None:
        raise MediaError(path, "no frame could be decoded", "the video stream is corrupt; re-encode it")
    clockwise = (-int(first.rotation or 0)) % 360
    return VideoInfo(
        n, codec, first.format.name or pix_fmt, first.width or width, first.height or height, clockwise
    )


_SEEK_MIN_SKIP = 2  # seek only when it skips more than this many frames (a seek flushes the decoder)


class _SeekMiss(Exception):
    """A keyframe seek did not land where the index says; the caller decodes from the start instead."""


def _decode_ranks(
    container, stream, index: _Index, wanted: list[int], allow_seek: bool
) -> dict[int, av.VideoFrame]:
    """Frames at the sorted, unique presentation ranks `wanted`, decoding as little as possible."""
    out: dict[int, av.VideoFrame] = {}
    frames = None
    pos = 0  # rank of the next frame `frames` yields
    last = None
    for target in wanted:
        key = index.seek_point(target) if allow_seek else 0
        if frames is None and key <= _SEEK_MIN_SKIP:
            key = 0  # the first frames are cheaper to decode than a seek
        if frames is None or key > pos + _SEEK_MIN_SKIP:
            if key > 0:
                container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            pos = key
            if key > 0:
                first = next(frames, None)
                if first is None or first.pts != index.pts[key]:
                    raise _SeekMiss
                last, pos = first, key + 1
                if key == target:
                    out[target] = first
                    continue
        while pos <= target:
            frame = next(frames, None)
            if (
                frame is None
            ):  # fewer decodable frames than packets: keep the last one (decord reuses a cached frame)
                break
            last, pos = frame, pos + 1
        if last is None:
            raise _SeekMiss
        out[target] = last
    return out


# Decoders whose skip_frame="NONREF" drops exactly the frames no other frame predicts from (H.264: the
# pictures with nal_ref_idc 0). HEVC stays on the plain path: its "_N" NAL types mark pictures that only the
# same temporal sub-layer does not reference, and FFmpeg skips them without looking at sub-layers.
_SKIP_NONREF_CODECS = frozenset({"h264"})


def _packets_from(container, stream, index: _Index, key: int) -> Iterator[av.Packet | None]:
    """The packets from the closed-GOP keyframe at rank `key` on (key 0: the first packet), then None (flush).

    From `index.packets` when the index pass kept them: flushing the decoder is all a demuxer seek does to
    it, and packet k in decode order is the keyframe at rank k. Otherwise from a keyframe seek in the file.
    """
    if index.packets is not None:
        stream.codec_context.flush_buffers()
        yield from itertools.islice(index.packets, key, None)
        yield None
        return
    container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
    for pkt in container.demux(stream):
        yield None if pkt.size == 0 and pkt.pts is None else pkt  # PyAV's end-of-stream flush packet


def _decode_ranks_skipping(
    container, stream, index: _Index, wanted: list[int], fed: list[av.Packet | None] | None = None
) -> dict[int, av.VideoFrame] | None:
    """`_decode_ranks`'s frames, decoding besides the targets only the frames other frames predict from.

    The index pass already knows every target's pts, so each packet goes to the decoder with skip_frame
    DEFAULT when its pts is a target and NONREF otherwise. A skipped frame is never a reference, so every
    frame that is decoded has the pixels of a full decode; outputs are picked by pts instead of by count.
    Returns None (the caller then decodes plainly) whenever the decoder's output disagrees with the index: a
    seek that lands elsewhere, a frame whose pts is unknown or out of order, a target never output.

    Targets are decoded in runs, each from the keyframe before its first target; a run goes on to the next
    target unless a keyframe more than `_SEEK_MIN_SKIP` frames past the last one lies at or before it. Once
    every target of a run is in the decoder, the run is drained (end of stream): the decoder would otherwise
    hold the last target back for its reordering delay and decode the next reference frames first.
    Decodes with slice threads (when the decoder is not open yet): frame threads add a frame of delay per
    thread, which every run would pay again.
    fed: when given, receives every packet handed to the decoder (None: a drain), the ones it skips as
    non-reference included; benchmarks/media.py counts from it the frames that were decoded.
    """
    cc = stream.codec_context
    if not cc.is_open:
        cc.thread_type = "SLICE"
    rank = {p: r for r, p in enumerate(index.pts)}
    targets = {index.pts[r] for r in wanted}
    todo = list(wanted)  # ascending; outputs come in ascending pts, so todo[0] is always the next one
    out: dict[int, av.VideoFrame] = {}
    pos = None  # rank just after the last frame output; None before the first run
    packets, expect, first = None, 0, True
    unfed: set[int] = set()  # pts of this run's targets not yet handed to the decoder; empty: start a run
    try:
        while todo:
            if not unfed:
                key = index.seek_point(todo[0])
                if pos is None and key <= _SEEK_MIN_SKIP:
                    key = 0  # the first frames are cheaper to decode than a seek
                end = 0
                while (
                    end + 1 < len(todo) and index.seek_point(todo[end + 1]) <= todo[end] + 1 + _SEEK_MIN_SKIP
                ):
                    end += 1
                last, unfed = todo[end], {index.pts[r] for r in todo[: end + 1]}
                packets, expect, first, pos = _packets_from(container, stream, index, key), key, True, key
            pkt = next(packets, False)
            if pkt is False:
                return None
            cc.skip_frame = "DEFAULT" if pkt is None or pkt.pts in targets else "NONREF"
            if fed is not None:
                fed.append(pkt)
            got = cc.decode(pkt)
            if pkt is not None:
                unfed.discard(pkt.pts)
                if not unfed:  # the run's last target is in the decoder: drain instead of decoding on
                    got += cc.decode(None)
                    if fed is not None:
                        fed.append(None)
            for frame in got:
                r = rank.get(frame.pts)
                if r is None or r < expect or (first and r != expect):
                    return None
                first, expect, pos = False, r + 1, r + 1
                if r == todo[0]:
                    out[todo.pop(0)] = frame
                    if not todo:
                        break
            # Drained (or the stream ended) with a target of the run not output: the plain path knows.
            if (pkt is None or not unfed) and todo and todo[0] <= last:
                return None
    finally:
        cc.skip_frame = "DEFAULT"
    return out


def _strip_chroma_location(frame: av.VideoFrame) -> av.VideoFrame:
    """A copy of `frame` without its chroma-location tag (FFmpeg 4.1's scale ignored it; FFmpeg 8 does not)."""
    clean = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for src, dst in zip(frame.planes, clean.planes):
        a = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)
        b = np.frombuffer(dst, np.uint8).reshape(dst.height, dst.line_size)  # the new frame's own buffer
        n = min(src.line_size, dst.line_size)
        b[:, :n] = a[:, :n]  # one copy, straight into the plane (no staging array, no second copy)
        b[:, n:] = 0
    clean.color_range = frame.color_range
    clean.colorspace = frame.colorspace
    return clean


def _rotate(frame: av.VideoFrame, clockwise: int) -> av.VideoFrame:
    """decord's `transpose=1` (90° clockwise), twice (180°) or `transpose=2` (270°), done on the planes."""
    fmt = frame.format
    if not fmt.is_planar or fmt.chroma_width(64) != fmt.chroma_height(64):
        frame = frame.reformat(format="yuv444p")  # packed/4:2:2 sources: rotate a 4:4:4 copy (approximation)
        fmt = frame.format
    bpc = 2 if max(c.bits for c in fmt.components) > 8 else 1
    dtype = np.uint16 if bpc == 2 else np.uint8
    k = {90: -1, 180: 2, 270: 1}[clockwise]
    planes = []
    for p in frame.planes:
        a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width * bpc].view(dtype)
        planes.append(np.ascontiguousarray(np.rot90(a, k)))
    w, h = (frame.height, frame.width) if clockwise != 180 else (frame.width, frame.height)
    out = av.VideoFrame(w, h, fmt.name)
    for a, dst in zip(planes, out.planes):
        b = np.zeros((dst.height, dst.line_size), np.uint8)
        raw = a.view(np.uint8).reshape(a.shape[0], -1)
        b[: raw.shape[0], : raw.shape[1]] = raw
        dst.update(b)
    out.color_range = frame.color_range
    out.colorspace = frame.colorspace
    return out


def _to_rgb(frame: av.VideoFrame, size: int, scaler: VideoReformatter | None = None) -> np.ndarray:
    """[size, size, 3] uint8 RGB: decord's `scale=size:size` (bilinear, aspect ratio not kept) into rgb24.

    scaler: one `VideoReformatter` for all frames of a read (swscale is set up on its first frame and reused
    while the input stays alike; a new one per frame costs ~0.5 ms of setup). Not shared across threads.
    One swscale thread: a 224×224 output is too small to split, and loader workers already run in parallel.
    """
    clockwise = (-int(frame.rotation or 0)) % 360
    frame = _strip_chroma_location(frame)
    if clockwise in (90, 180, 270):
        frame = _rotate(frame, clockwise)
    scaler = scaler or VideoReformatter()
    return scaler.reformat(
        frame, size, size, format="rgb24", interpolation="BILINEAR", threads=1
    ).to_ndarray()


def _to_rgb_batch(frames: dict[int, av.VideoFrame], ranks: list[int], size: int) -> np.ndarray:
    """uint8 [len(ranks), size, size, 3]: each distinct frame converted once, through one scaler."""
    scaler = VideoReformatter()
    rgb = {r: _to_rgb(f, size, scaler) for r, f in frames.items()}
    return np.stack([rgb[r] for r in ranks])


def _read(path, pick, size: int) -> np.ndarray:
    try:
        container, stream = open_video(path)
        with container:
            index = _index(container, stream, path, keep_bytes=_KEEP_PACKET_BYTES)
            codec = stream.codec_context.name
            n = len(index.pts)
            indices = pick(n)
            bad = [i for i in indices if not -n <= i < n]
            if bad:
                raise MediaError(
                    path, f"frame indices {bad} out of range for {n} frames", "sample within the clip"
                )
            ranks = [i % n for i in indices]
            wanted = sorted(set(ranks))
            # A light probe leaves an H.264 decoder the reordering delay the header gives; when that is none
            # while the packets are reordered (a fragmented MP4), only a full probe's decoding learns it.
            full_probe = (
                probed_lightly(container)
                and codec == "h264"
                and not stream.codec_context.has_b_frames
                and index.reorders
            )
            skipping = index.by_pts and codec in _SKIP_NONREF_CODECS
            if skipping and index.packets is not None and not full_probe:
                # The kept packets decode in this container without touching its demuxer again: no second
                # open (a second stream probe), no second demux, no seek.
                frames = _decode_ranks_skipping(container, stream, index, wanted)
                if frames is not None:
                    return _to_rgb_batch(frames, ranks, size)
                skipping = False  # it disagreed with the index: the plain path decodes
        attempts = [lambda c, s: _decode_ranks(c, s, index, wanted, allow_seek=True)]
        attempts.append(lambda c, s: _decode_ranks(c, s, index, wanted, allow_seek=False))
        if skipping:
            attempts.insert(0, lambda c, s: _decode_ranks_skipping(c, s, index, wanted))
        for k, attempt in enumerate(attempts):
            # Every attempt opens the file afresh: seeking a demuxer back to the start after a full pass fails
            # on some webm files ("Operation not permitted") that a fresh open decodes fine.
            container, stream = open_video(path, full_probe)
            with container:
                try:
                    frames = attempt(container, stream)
                except _SeekMiss:
                    if k == len(attempts) - 1:
                        raise
                    continue
                if frames is not None:
                    return _to_rgb_batch(frames, ranks, size)
        raise _SeekMiss  # unreachable: the last attempt returns frames or raises
    except _SeekMiss as e:
        raise MediaError(
            path, "no frame could be decoded", "the video stream is corrupt; re-encode it"
        ) from e
    except av.FFmpegError as e:
        raise MediaError(path, f"decoding failed ({e})", "the video stream is corrupt; re-encode it") from e


def read_frames_at(path: str | os.PathLike, indices: list[int], size: int = 224) -> np.ndarray:
    """uint8 [len(indices), size, size, 3] RGB: decord's `VideoReader(path, height=size, width=size).get_batch`."""
    return _read(path, lambda n: list(indices), size)


def read_frames(path: str | os.PathLike, n_frames: int = 8, size: int = 224) -> np.ndarray:
    """uint8 [n_frames, size, size, 3] RGB at the release's indices floor(i·N/n_frames) (MODEL_SPEC §1.2)."""
    return _read(path, lambda n: sample_indices(n, n_frames), size)
