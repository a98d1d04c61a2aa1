"""Frames: counts, indices and pixels equal decord's (the release's reader), exactly."""

from __future__ import annotations

import numpy as np
import pytest

from affectrt.media import video
from affectrt.media.errors import MediaError
from affectrt.media.sampling import sample_indices

decord = pytest.importorskip("decord")

CLIPS = [
    "h264",
    "h264_aac",
    "h264_pcm",
    "odd",
    "hevc",
    "vp9",
    "mjpeg",
    "vfr",
    "five",
    "gop",
    "rot90",
    "rot180",
]


@pytest.mark.parametrize("name", CLIPS)
def test_frames_equal_decord(media, name):
    path = str(media[name])
    vr = decord.VideoReader(path, height=224, width=224)
    n = len(vr)
    assert video.count_frames(path) == n
    idx = sample_indices(n)
    ours = video.read_frames(path)
    assert ours.shape == (8, 224, 224, 3) and ours.dtype == np.uint8
    ref = vr.get_batch(idx).asnumpy()
    # Measured max abs difference: 0 on every clip (bilinear swscale, chroma siting ignored like FFmpeg 4.1).
    np.testing.assert_array_equal(ours, ref)


def test_seeking_matches_decord_and_sequential(media):
    path = str(media["gop"])
    container, stream = video.open_video(path)
    with container:
        index = video._index(container, stream, path)
    assert len(index.seek_ranks) > 3, "the clip must have keyframes to seek to"
    idx = [90, 3, 45, 45, 0, 61, 92, 17, 30]
    ours = video.read_frames_at(path, idx, size=40)
    vr = decord.VideoReader(path, height=40, width=40)
    np.testing.assert_array_equal(ours, vr.get_batch(idx).asnumpy())
    with video.av.open(path) as c:
        s = c.streams.video[0]
        seq = video._decode_ranks(c, s, index, sorted(set(idx)), allow_seek=False)
    with video.av.open(path) as c:
        s = c.streams.video[0]
        jumped = video._decode_ranks(c, s, index, sorted(set(idx)), allow_seek=True)
    for r in seq:
        assert seq[r].pts == jumped[r].pts == index.pts[r]


def test_other_sizes_and_negative_indices(media):
    path = str(media["odd"])
    ref = decord.VideoReader(path, height=40, width=40).get_batch([10, 0, 5]).asnumpy()
    np.testing.assert_array_equal(video.read_frames_at(path, [-1, 0, 5], size=40), ref)
    assert video.count_frames(path) == len(decord.VideoReader(path))


@pytest.mark.parametrize(
    "name, words",
    [
        ("corrupt", "cannot open"),
        ("empty", "cannot open"),
        ("mono16k", "no video stream (the file holds only audio)"),
    ],
)
def test_errors_name_the_file(media, name, words):
    with pytest.raises(MediaError) as e:
        video.read_frames(media[name])
    assert str(media[name]) in str(e.value) and words in str(e.value)
    assert e.value.path == str(media[name])


def test_missing_file_and_bad_index(media, tmp_path):
    with pytest.raises(MediaError, match="not found"):
        video.count_frames(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="out of range"):
        video.read_frames_at(media["five"], [5])


def test_known_deviation_when_only_the_width_is_scaled(tmp_path):
    """Source height == target size, width differs: FFmpeg 8's swscale sites chroma differently from decord's
    FFmpeg 4.1 (measured on 320x224 H.264 → 224x224: max 45, mean 1.1). Every other case is exact."""
    from tests.media.conftest import make_video

    path = str(make_video(tmp_path / "h224.mp4", "libx264", 80, 40, 2))
    ref = decord.VideoReader(path, height=40, width=40).get_batch([0, 1]).asnumpy().astype(int)
    diff = np.abs(video.read_frames_at(path, [0, 1], size=40).astype(int) - ref)
    assert diff.mean() < 3 and diff.max() <= 64


# --- the skipping path: frames identical to a plain decode of every frame -----------------------------------

BFRAMES = {  # x264's fixed B-frame pattern (b-adapt=0:scenecut=0), so every clip surely has non-reference B-frames
    "bf_default": (
        "libx264",
        {"g": "12", "x264-params": "b-adapt=0:scenecut=0"},
        False,
    ),  # 3 B, pyramid "normal"
    "bf_no_pyramid": ("libx264", {"g": "12", "x264-params": "b-adapt=0:scenecut=0:b-pyramid=none"}, False),
    "bf_strict_pyramid": (
        "libx264",
        {"g": "12", "x264-params": "b-adapt=0:scenecut=0:b-pyramid=strict:bframes=4"},
        False,
    ),
    "bf_open_gop": ("libx264", {"g": "12", "x264-params": "b-adapt=0:scenecut=0:open-gop=1"}, False),
    "bf_vfr": ("libx264", {"g": "12", "x264-params": "b-adapt=0:scenecut=0"}, True),  # retimed, see _retime
    "hevc_bf": (
        "libx265",
        {"x265-params": "log-level=none:keyint=12:open-gop=0:b-adapt=0:scenecut=0:bframes=3"},
        False,
    ),
}


def _retime(src: str, dst: str) -> str:
    """Remux `src` (constant frame rate) with frame durations of 0.5, 1 or 2.5 ticks: a VFR clip with B-frames.

    (x264 itself mis-times B-frames on VFR input.) pts and dts go through one increasing map, so the order of
    both, and pts >= dts, survive.
    """
    rng = np.random.default_rng(1)
    with video.av.open(src) as i, video.av.open(dst, "w") as o:
        s = i.streams.video[0]
        tick = round(1 / (s.average_rate * s.time_base))
        steps = rng.choice([tick // 2, tick, 5 * tick // 2], 4096)
        starts = np.concatenate([[0], np.cumsum(steps)])
        out = o.add_stream_from_template(s)
        for pkt in i.demux(s):
            if pkt.dts is None:
                continue
            pkt.pts, pkt.dts = (int(starts[t // tick]) if t >= 0 else t for t in (pkt.pts, pkt.dts))
            pkt.stream = out
            o.mux(pkt)
    return dst


@pytest.fixture(scope="module")
def bclips(tmp_path_factory) -> dict[str, str]:
    from tests.media.conftest import make_video

    d = tmp_path_factory.mktemp("bframes")
    out = {}
    for name, (codec, opts, vfr) in BFRAMES.items():
        out[name] = str(make_video(d / f"{name}.mp4", codec, 64, 48, 41, options=opts))
        if vfr:
            out[name] = _retime(out[name], str(d / f"{name}_vfr.mp4"))
    return out


def _all_frames(path: str) -> list:
    """Every frame in presentation order, from one plain decode (no seeking, no skipping)."""
    with video.av.open(path) as c:
        return list(c.decode(c.streams.video[0]))


def _skipping(path: str, wanted: list[int], keep: bool = False) -> dict | None:
    """keep: decode from the packets the index pass kept (read_frames' path); else seek in the file."""
    container, stream = video.open_video(path)
    with container:
        index = video._index(container, stream, path, keep_bytes=video._KEEP_PACKET_BYTES if keep else 0)
        assert (index.packets is not None) == keep
        return video._decode_ranks_skipping(container, stream, index, wanted)


@pytest.mark.parametrize("name", [n for n in BFRAMES if n.startswith("bf")])
def test_skipping_path_equals_a_full_decode(bclips, name):
    path = bclips[name]
    full = _all_frames(path)
    n = len(full)
    types = [int(f.pict_type) for f in full]  # 3: B
    b_ranks = [r for r, t in enumerate(types) if t == 3]
    with video.av.open(path) as c:  # the clip must have frames that the skipping path leaves out
        s = c.streams.video[0]
        s.codec_context.skip_frame = "NONREF"
        assert len(list(c.decode(s))) < n and len(b_ranks) > n // 3
    for wanted in (sample_indices(n), b_ranks[::3], b_ranks[1::4] + [0, n - 1], list(range(n))):
        wanted = sorted(set(wanted))
        for keep in (False, True):
            got = _skipping(path, wanted, keep)
            assert got is not None, "the skipping path must not fall back on a well-formed H.264 clip"
            assert sorted(got) == wanted
            for r in wanted:
                assert got[r].pts == full[r].pts
                np.testing.assert_array_equal(got[r].to_ndarray(), full[r].to_ndarray())
    # through the public reader (skipping path + RGB), against decord and against converting the full decode
    idx = b_ranks[:5] + sample_indices(n)
    ours = video.read_frames_at(path, idx, size=40)
    np.testing.assert_array_equal(ours, np.stack([video._to_rgb(full[r], 40) for r in idx]))
    if name != "bf_open_gop":  # decord seeks into an open GOP and decodes its leading B-frames without
        # their references ("Missing reference picture"); we (before and after skipping) decode them whole
        ref = decord.VideoReader(path, height=40, width=40).get_batch(idx).asnumpy()
        np.testing.assert_array_equal(ours, ref)


def test_hevc_takes_the_plain_path_and_equals_a_full_decode(bclips):
    """FFmpeg's HEVC NONREF skip ignores temporal sub-layers, so HEVC is never decoded with skipping.

    Closed GOP: on x265's default open GOP decord decodes the leading frames of a CRA it seeks to without
    their references, which nothing here reproduces (the same holds for H.264 open GOP, see above)."""
    path = bclips["hevc_bf"]
    full = _all_frames(path)
    assert "hevc" not in video._SKIP_NONREF_CODECS
    idx = sample_indices(len(full)) + [3, 7]
    ours = video.read_frames_at(path, idx, size=40)
    np.testing.assert_array_equal(ours, np.stack([video._to_rgb(full[r], 40) for r in idx]))
    ref = decord.VideoReader(path, height=40, width=40).get_batch(idx).asnumpy()
    np.testing.assert_array_equal(ours, ref)


def test_skipping_path_declines_what_it_cannot_check(media, bclips):
    path = bclips["bf_default"]
    container, stream = video.open_video(path)
    with container:
        index = video._index(container, stream, path)
    assert index.by_pts
    missing = video._Index(
        pts=index.pts[:-1] + [index.pts[-1] + 10**6], seek_ranks=index.seek_ranks, by_pts=True
    )
    container, stream = video.open_video(path)
    with container:  # the last target's pts never comes out of the decoder: None, so the plain path decodes
        assert video._decode_ranks_skipping(container, stream, missing, [0, len(index.pts) - 1]) is None
        assert stream.codec_context.skip_frame == "DEFAULT"
    container, stream = video.open_video(path)
    with container:  # the same from kept packets
        kept = video._index(container, stream, path, keep_bytes=video._KEEP_PACKET_BYTES)
        assert kept.packets is not None and len(kept.packets) == len(index.pts)
        missing = video._Index(
            pts=missing.pts, seek_ranks=missing.seek_ranks, by_pts=True, packets=kept.packets
        )
        assert video._decode_ranks_skipping(container, stream, missing, [0, len(index.pts) - 1]) is None
        assert stream.codec_context.skip_frame == "DEFAULT"


def _count_opens(monkeypatch) -> list:
    real, opened = video.open_video, []

    def counting(path, full_probe=False):
        opened.append(path)
        return real(path, full_probe)

    monkeypatch.setattr(video, "open_video", counting)
    return opened


@pytest.mark.parametrize("budget", [None, 1000])
def test_h264_is_read_with_one_open_unless_its_packets_exceed_the_budget(bclips, monkeypatch, budget):
    """H.264 decodes from the index pass's packets (one open, slice threads); over the budget it reopens."""
    path = bclips["bf_default"]
    full = _all_frames(path)
    if budget is not None:
        monkeypatch.setattr(video, "_KEEP_PACKET_BYTES", budget)
    opened = _count_opens(monkeypatch)
    idx = sample_indices(len(full)) + [5, 2]
    ours = video.read_frames_at(path, idx, size=40)
    np.testing.assert_array_equal(ours, np.stack([video._to_rgb(full[r], 40) for r in idx]))
    assert len(opened) == (1 if budget is None else 2)


def test_skipping_decodes_with_slice_threads_from_the_keyframe(bclips):
    """Slice threads (frame threads would delay output past each target); a jump starts at its keyframe."""
    path = bclips["bf_default"]
    n = len(_all_frames(path))
    container, stream = video.open_video(path)
    with container:
        index = video._index(container, stream, path, keep_bytes=video._KEEP_PACKET_BYTES)
        fed: list = []
        got = video._decode_ranks_skipping(container, stream, index, [n - 1], fed)
        assert stream.codec_context.thread_type == video.av.codec.context.ThreadType.SLICE
    key = index.seek_point(n - 1)
    assert sorted(got) == [n - 1] and key > 0
    assert fed[0] is index.packets[key] and len(fed) <= n - key + 1


class _NoRewind:
    """A container whose demuxer refuses to seek, as some webm files refuse ``seek(0)`` after a full pass."""

    def __init__(self, container):
        self._c = container

    def seek(self, *args, **kwargs):
        import errno

        import av

        raise av.error.PermissionError(errno.EPERM, "Operation not permitted")

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._c.__exit__(*exc)


@pytest.mark.parametrize("name", ["vp9", "h264", "gop"])
def test_decoding_never_rewinds_the_index_pass(media, monkeypatch, name):
    """The index pass's container is never sought back: the frames come from a fresh open."""
    real, opened = video.open_video, []

    def open_once_unseekable(path, full_probe=False):
        container, stream = real(path, full_probe)
        opened.append(path)
        return (_NoRewind(container) if len(opened) == 1 else container), stream

    monkeypatch.setattr(video, "open_video", open_once_unseekable)
    path = str(media[name])
    vr = decord.VideoReader(path, height=224, width=224)
    np.testing.assert_array_equal(video.read_frames(path), vr.get_batch(sample_indices(len(vr))).asnumpy())


def test_a_partly_downloaded_webm_reads_like_decord(media, tmp_path):
    data = media["vp9"].read_bytes()
    cut = tmp_path / "half.webm"
    cut.write_bytes(data[: len(data) // 2])
    vr = decord.VideoReader(str(cut), height=224, width=224)
    assert video.count_frames(cut) == len(vr)
    np.testing.assert_array_equal(video.read_frames(cut), vr.get_batch(sample_indices(len(vr))).asnumpy())
