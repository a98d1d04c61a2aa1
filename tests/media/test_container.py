"""`open_input`: the light probe decodes the same frames and samples as a full one, and is used only where the
header says all a full probe would learn (affectrt/media/container.py)."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest

from affectrt.media import container as mc
from affectrt.media import video
from affectrt.media.audio import load_waveform
from affectrt.media.errors import MediaError
from affectrt.media.sampling import sample_indices
from tests.media.conftest import _pattern, make_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory, media) -> dict:
    d = tmp_path_factory.mktemp("container")
    return {
        "h264_b_aac": make_video(
            d / "b.mp4", "libx264", 96, 64, 40, options={"g": "12", "bf": "3"}, audio="aac"
        ),
        "h264_no_b": make_video(d / "nob.mp4", "libx264", 64, 48, 20, options={"bf": "0"}),
        "h264_mkv": make_video(d / "b.mkv", "libx264", 64, 48, 20, options={"bf": "3"}),
        "hevc": media["hevc"],
        "mov_pcm": media["h264_pcm"],
        "vp9": media["vp9"],
        "mjpeg": media["mjpeg"],
        "two_videos": _two_video_streams(d / "two.mp4"),
        "fragmented": _fragmented_mp4(d / "frag.mp4"),
    }


def _fragmented_mp4(path):
    """H.264 with B-frames in a fragmented MP4: the composition offsets live in the fragments, so the header
    gives no reordering delay (a light probe leaves has_b_frames at 0; a full one learns it by decoding)."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        s = out.add_stream("libx264", rate=25, options={"g": "12", "bf": "3"})
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(40):  # moving patterns (noise would be coded without B-frames)
            out.mux(s.encode(av.VideoFrame.from_ndarray(_pattern(96, 64, i, rng), format="rgb24")))
        out.mux(s.encode())
    return path


def _two_video_streams(path):
    """An MP4 with a small video track first and a larger one second."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        streams = [out.add_stream("libx264", rate=25) for _ in range(2)]
        for s, (w, h) in zip(streams, [(32, 32), (96, 64)]):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(10):
            for s in streams:
                img = rng.integers(0, 255, (s.height, s.width, 3), dtype=np.uint8)
                out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        for s in streams:
            out.mux(s.encode())
    return path


def _frames(container) -> tuple[int, list[tuple[int, str]]]:
    with container:
        s = container.streams.best("video")
        return s.index, [
            (f.pts, hashlib.sha1(b"".join(bytes(p) for p in f.planes)).hexdigest())
            for f in container.decode(s)
        ]


def _samples(container) -> np.ndarray:
    with container:
        s = container.streams.best("audio")
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(s)])


LIGHT = ["h264_b_aac", "h264_no_b", "hevc", "mov_pcm", "fragmented"]  # MP4 / MOV, one video stream
FULL = ["h264_mkv", "vp9", "mjpeg", "two_videos"]


@pytest.mark.parametrize("name", LIGHT + FULL)
def test_the_same_frames_as_a_full_probe(clips, name):
    light = _frames(av.open(str(clips[name]), options=mc.LIGHT_PROBE))
    full = _frames(av.open(str(clips[name])))
    assert light == full and len(full[1]) >= 10


@pytest.mark.parametrize("name", ["h264_b_aac", "mov_pcm"])
def test_the_same_samples_as_a_full_probe(clips, name):
    light = _samples(av.open(str(clips[name]), options=mc.LIGHT_PROBE))
    full = _samples(av.open(str(clips[name])))
    np.testing.assert_array_equal(light, full)
    assert len(full) > 1000


@pytest.mark.parametrize("name", LIGHT + FULL)
def test_the_light_probe_only_where_the_header_suffices(clips, name):
    with mc.open_input(clips[name], "video") as c:
        assert (c.options == mc.LIGHT_PROBE) == (name in LIGHT), c.options


def test_audio_is_probed_lightly_in_an_mp4_with_video(clips):
    with mc.open_input(clips["h264_b_aac"], "audio") as c:
        assert c.options == mc.LIGHT_PROBE
    wave, rate = load_waveform(clips["h264_b_aac"])
    assert rate == 16000 and wave.shape[1] > 1000


@pytest.mark.parametrize(
    "name, full", [("fragmented", True), ("h264_b_aac", False), ("h264_no_b", False), ("hevc", False)]
)
def test_frames_ask_for_a_full_probe_when_the_header_misses_the_delay(clips, name, full, monkeypatch):
    """Only an H.264 stream whose packets are reordered while its (light) header says no delay is reopened
    with a full probe; its frames then equal decord's."""
    decord = pytest.importorskip("decord")
    asked = []

    def open_video(path, full_probe=False):
        asked.append(full_probe)
        return opener(path, full_probe)

    opener = video.open_video
    monkeypatch.setattr(video, "open_video", open_video)
    if name == "fragmented":  # the premise: only decoding tells this file's delay
        for options, delay in ((mc.LIGHT_PROBE, False), (None, True)):
            with av.open(str(clips[name]), options=options) as c:
                assert bool(c.streams.video[0].codec_context.has_b_frames) == delay
    frames = video.read_frames(clips[name], n_frames=5)
    assert any(asked) == full, asked
    vr = decord.VideoReader(str(clips[name]), height=224, width=224)
    np.testing.assert_array_equal(frames, vr.get_batch(sample_indices(len(vr), 5)).asnumpy())


def test_two_video_streams_pick_what_decord_picks(clips):
    """decord's FFmpeg 4.1 gives a stream marked default no precedence: the second, larger track wins on bit rate."""
    decord = pytest.importorskip("decord")
    with av.open(str(clips["two_videos"])) as c:
        assert c.streams.best("video").index == 0  # FFmpeg 8's pick: the default-marked first track
    container, stream = video.open_video(clips["two_videos"])
    with container:
        assert stream.index == 1
    vr = decord.VideoReader(str(clips["two_videos"]), height=224, width=224)
    ours = video.read_frames(clips["two_videos"], n_frames=4)
    np.testing.assert_array_equal(ours, vr.get_batch(sample_indices(len(vr), 4)).asnumpy())


def test_errors_name_the_file(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        mc.open_input(tmp_path / "none.mp4", "video")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(MediaError, match=r"junk\.mp4: cannot open as a media file"):
        mc.open_input(junk, "video")
