"""The DALI graph on its CPU backend (VP9/MJPEG only) against PyAV; the GPU path is marked and skipped here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectrt.media.faces import load_faces, pick_faces
from affectrt.media.loader import ClipSpec, MediaLoader
from affectrt.media.preprocess import clip_pixels
from affectrt.media.sampling import sample_indices
from affectrt.media.video import count_frames, open_video, probe_video, read_frames

pytest.importorskip("nvidia.dali")
from affectrt.media.dali import DaliDecoder, unsupported_reason  # noqa: E402

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NVDEC) for DALI")


def _thumbs(frames: torch.Tensor) -> np.ndarray:
    """[N, H, W, 3] → [N, 3, 16, 16] area-averaged, to tell frames apart whatever the scaler."""
    return F.interpolate(frames.permute(0, 3, 1, 2).float(), (16, 16), mode="area").numpy()


def _pyav_all_frames(path) -> torch.Tensor:
    container, stream = open_video(path)
    with container:
        frames = sorted(container.decode(stream), key=lambda f: f.pts)
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in frames]))


@pytest.mark.parametrize("name", ["vp9", "mjpeg", "vp9_vfr", "truncated_mkv"])
def test_dali_cpu_decodes_the_release_frames(media, bad_media, name):
    path = {**media, **bad_media}[name]
    idx = sample_indices(count_frames(path))
    (got,) = DaliDecoder("video", 2, "cpu").frames([np.fromfile(path, np.uint8)], [idx])
    assert got.shape == (8, 224, 224, 3) and got.dtype == torch.uint8
    # The same frames: each DALI frame's nearest PyAV frame (by thumbnail) is the release's index.
    everything = _thumbs(_pyav_all_frames(path))
    nearest = [int(np.argmin(np.abs(everything - t).mean((1, 2, 3)))) for t in _thumbs(got)]
    assert nearest == idx
    # The pixels drift a little from decord's (see affectrt/media/dali.py). Measured: mean 1.4-2.8, max ≤ 47.
    diff = np.abs(got.numpy().astype(np.int32) - read_frames(path).astype(np.int32))
    assert diff.mean() < 4 and diff.max() < 96, (diff.mean(), diff.max())


def test_dali_faces_equal_opencv_within_one(tmp_path):
    faces = np.random.default_rng(2).integers(0, 256, (11, 112, 112, 3), dtype=np.uint8)
    np.save(tmp_path / "f.npy", faces)
    (got,) = DaliDecoder("face", 4, "cpu").faces([pick_faces(tmp_path / "f.npy")])
    diff = np.abs(got.numpy().astype(int) - load_faces(tmp_path / "f.npy").astype(int))
    assert diff.max() <= 1  # measured: 1 (OpenCV's fixed-point rounding), channel order kept (BGR)


def test_codec_gate():
    from affectrt.media.video import VideoInfo

    def info(codec, fmt="yuv420p", rot=0):
        return VideoInfo(10, codec, fmt, 64, 48, rot)

    assert unsupported_reason(info("vp9"), "cpu") is None
    assert "does not decode h264" in unsupported_reason(info("h264"), "cpu")
    assert unsupported_reason(info("h264"), "mixed") is None
    assert "yuv444p" in unsupported_reason(info("h264", "yuv444p"), "mixed")
    assert "yuv422p" in unsupported_reason(info("h264", "yuv422p"), "mixed")
    assert "av1" in unsupported_reason(info("av1"), "mixed")
    assert unsupported_reason(info("hevc", "yuv420p10le"), "mixed") is None
    assert "rotated" in unsupported_reason(info("vp9", rot=90), "cpu")


def test_loader_dali_with_fallbacks_and_failures(media, bad_media, caplog):
    """VP9/MJPEG through DALI, H.264 and a corrupt clip fall back to PyAV (logged), the corrupt one fails."""
    names = ["vp9", "h264", "mjpeg", "corrupt", "vp9_aac"]
    files = {**media, **bad_media}
    clips = [
        ClipSpec(video=files[n], audio=None if n == "vp9_aac" else media["short"], name=n) for n in names
    ]
    with caplog.at_level("WARNING", logger="affectrt.media"):
        (b,) = list(MediaLoader(clips, batch_size=5, device="cpu", backend="dali"))
    assert b.names == ["vp9", "h264", "mjpeg", "vp9_aac"]
    assert [f.name for f in b.failures] == ["corrupt"] and "cannot open" in b.failures[0].reason
    assert b.fallbacks == [(1, "DALI's CPU decoder does not decode h264")]
    assert "decoded with PyAV instead of DALI" in caplog.text and "left out of the batch" in caplog.text
    # The PyAV fallback is decord-exact; the DALI clips are within the drift measured above.
    torch.testing.assert_close(b.pixels[1], clip_pixels(read_frames(files["h264"])), rtol=0, atol=0)
    for k in (0, 2, 3):
        want = clip_pixels(read_frames(files[b.names[k]]))
        assert (b.pixels[k] - want).abs().mean() < 0.1  # ≈ 4/255 per level / CLIP std


def test_rotated_vp9_goes_to_pyav(tmp_path, media):
    from tests.media.conftest import make_video

    path = make_video(tmp_path / "rot.webm", "libvpx-vp9", 64, 48, 4, rotation=90)
    rot = probe_video(path).rotation
    if rot == 0:
        pytest.skip("this FFmpeg build does not store a display matrix in WebM")
    (b,) = list(MediaLoader([ClipSpec(video=path, audio=media["short"])], device="cpu", backend="dali"))
    assert b.fallbacks and "rotated" in b.fallbacks[0][1]


@pytest.mark.dali_gpu
@pytest.mark.gpu
@needs_gpu
def test_gpu_loader_matches_the_cpu_path(media):
    clips = [
        ClipSpec(video=media[n], audio=media["short"], name=n) for n in ["h264", "hevc", "vp9", "vfr", "odd"]
    ]
    (g,) = list(MediaLoader(clips, batch_size=5, device="cuda", backend="dali"))
    (c,) = list(MediaLoader(clips, batch_size=5, device="cpu", backend="pyav"))
    assert g.pixels.is_cuda and g.audio.is_cuda and g.names == c.names
    assert [i for i, _ in g.fallbacks] == [4]  # 4:4:4 H.264: NVDEC cannot
    torch.testing.assert_close(g.audio.cpu(), c.audio, rtol=0, atol=0)
    assert (g.pixels.cpu() - c.pixels).abs().mean() < 0.1


@pytest.mark.dali_gpu
@pytest.mark.gpu
@needs_gpu
def test_gpu_faces(tmp_path):
    faces = np.random.default_rng(3).integers(0, 256, (9, 112, 112, 3), dtype=np.uint8)
    np.save(tmp_path / "f.npy", faces)
    (got,) = DaliDecoder("face", 2, "cuda").faces([pick_faces(tmp_path / "f.npy")])
    assert got.is_cuda
    assert (got.cpu().int() - torch.from_numpy(load_faces(tmp_path / "f.npy")).int()).abs().max() <= 1


def test_index_past_the_decoded_length_fails_that_clip_only(media):
    # DALI's default pad_mode pads with black frames; affectrt asks for an error instead, so the loader
    # decodes that clip with PyAV. The other clip of the batch is unaffected.
    path = media["vp9"]
    n = count_frames(path)
    data = np.fromfile(path, np.uint8)
    good, bad = DaliDecoder("video", 2, "cpu").frames([data, data], [[0, 1, n - 1], [0, 1, n + 5]])
    assert isinstance(good, torch.Tensor) and good.shape[0] == 3
    assert isinstance(bad, Exception)
