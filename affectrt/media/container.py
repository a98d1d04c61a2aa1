"""Opening a media file with PyAV, without the decoding its stream probe does where the file's header says it all.

`av.open` runs FFmpeg's ``avformat_find_stream_info``, which decodes the first frames of every stream to learn
what a container header may not say (pixel format, H.264's reordering delay, ...). It decodes them on one
thread: on a 10 s 720p H.264 clip of a detailed scene that is ~25 ms, paid by every open of the file (again
when the audio is read from the same file), while decoding the frames the model needs takes ~140 ms.

An MP4 / MOV header (``moov``) already holds each stream's codec, size and sample rate, and for H.264 with
B-frames the reordering delay, which the demuxer derives from the composition offsets. There the probe's
decoders are told to skip every frame (``skip_frame=all``) and its analysis window is cut to its minimum, so it
reads a packet or so and decodes nothing; the streams' own decoders then start from the header's parameters and
decode the same frames, bit for bit (tests/media/test_container.py compares every frame and sample against a
full probe). Everything else keeps the full probe:

- other containers (Matroska, AVI, MPEG-TS, ...), whose headers may lack what the probe learns by decoding;
- on request (``full_probe=True``): `video.read_frames` asks for it when an H.264 stream's header gives no
  reordering delay while its packets are reordered (a fragmented MP4, whose offsets are only in its fragments):
  a stream without the SPS's bitstream-restriction fields tells its delay only by decoding, and a decoder that
  starts with too small a delay drops the first out-of-order frames;
- a file with more than one stream of the kind asked for: ``av_find_best_stream`` (``streams.best``, which the
  audio reader picks with; the video reader ranks as decord's FFmpeg 4.1 did) counts the frames the probe saw,
  e.g. to put a video before its cover art.
"""

from __future__ import annotations

import os
from typing import Literal

import av

from affectrt.media.errors import MediaError

__all__ = ["LIGHT_PROBE", "open_input", "probed_lightly"]

# Options for avformat_open_input / avformat_find_stream_info: the probe's decoders skip every frame, and the
# probe stops after the shortest analysis window (1 µs; 0 would mean "the default, 5 s").
LIGHT_PROBE = {"skip_frame": "all", "analyzeduration": "1"}

_MOV_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"  # FFmpeg's name for the ISO-BMFF / QuickTime demuxer


def _header_suffices(container: av.container.InputContainer, kind: Literal["video", "audio"]) -> bool:
    """Whether a lightly probed `container` knows what a full probe would tell about its `kind` stream."""
    if container.format.name != _MOV_FAMILY:
        return False
    streams = container.streams.video if kind == "video" else container.streams.audio
    return len(streams) <= 1  # none: the caller reports it; several: the best-stream ranking needs counts


def open_input(
    path: str | os.PathLike, kind: Literal["video", "audio"], full_probe: bool = False
) -> av.container.InputContainer:
    """`av.open(path)` for reading its best `kind` stream, lightly probed where the header suffices (above);
    ``full_probe=True`` always probes fully. `probed_lightly` tells which it was.

    Raises MediaError when the file is missing or FFmpeg cannot open it.
    """
    if not os.path.exists(path):
        raise MediaError(path, "file not found", "check the path")
    try:
        if full_probe:
            return av.open(os.fspath(path))
        container = av.open(os.fspath(path), options=LIGHT_PROBE)
        if not _header_suffices(container, kind):
            container.close()
            container = av.open(os.fspath(path))
    except (av.FFmpegError, OSError) as e:
        raise MediaError(
            path, f"cannot open as a media file ({e})", "the file is corrupt or not audio/video"
        ) from e
    return container


def probed_lightly(container: av.container.InputContainer) -> bool:
    """Whether `open_input` opened `container` with the light probe."""
    return container.options == LIGHT_PROBE
