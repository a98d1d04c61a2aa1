"""The batched loader on the CPU (PyAV): release-exact tensors, per-clip failures, prefetch, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectrt.media.audio import joint_normalize, load_audio_windows
from affectrt.media.faces import load_faces
from affectrt.media.loader import ClipSpec, MediaLoader
from affectrt.media.preprocess import clip_pixels
from affectrt.media.sampling import audio_window_slices, sample_indices
from affectrt.media.video import count_frames, probe_video, read_frames

decord = pytest.importorskip("decord")


def _decord_frames(path) -> np.ndarray:
    vr = decord.VideoReader(str(path), height=224, width=224)
    return vr.get_batch(sample_indices(len(vr))).asnumpy()


def _run(clips, **kw) -> list:
    return list(MediaLoader(clips, device="cpu", backend="pyav", **kw))


def test_batches_equal_the_release_per_clip(media):
    names = ["h264_aac", "vp9", "mjpeg", "vfr", "five"]
    clips = [ClipSpec(video=media[n], audio=media["mono16k"], subtitle=n, name=n) for n in names]
    clips[0].audio = None  # audio from the video's own track
    batches = _run(clips, batch_size=2)
    assert [b.indices for b in batches] == [[0, 1], [2, 3], [4]]
    for b in batches:
        assert b.pixels.shape == (len(b), 8, 3, 224, 224) and b.pixels.dtype == torch.float32
        assert b.audio.shape == (len(b), 8, 32000) and not b.failures
        for k, i in enumerate(b.indices):
            c = clips[i]
            assert b.names[k] == b.subtitles[k] == c.name
            want = clip_pixels(_decord_frames(c.video))
            torch.testing.assert_close(b.pixels[k], want, rtol=0, atol=0)
            wave = joint_normalize(load_audio_windows(c.audio or c.video))
            torch.testing.assert_close(b.audio[k], wave, rtol=0, atol=0)


def test_faces_and_uint8_output(media, tmp_path):
    faces = np.random.default_rng(1).integers(0, 256, (13, 112, 112, 3), dtype=np.uint8)
    np.save(tmp_path / "f.npy", faces)
    np.save(tmp_path / "empty.npy", faces[:0])
    clips = [
        ClipSpec(face_npy=tmp_path / "f.npy", audio=media["short"]),
        ClipSpec(face_npy=tmp_path / "empty.npy", audio=media["short"]),
        ClipSpec(video=media["h264"], audio=media["short"]),  # no faces for the face model
    ]
    (b,) = _run(clips, visual="face", batch_size=3, normalize=False)
    assert b.indices == [0] and b.pixels.dtype == torch.uint8
    np.testing.assert_array_equal(b.pixels[0].numpy(), load_faces(tmp_path / "f.npy"))
    reasons = {f.index: f.reason for f in b.failures}
    assert "holds 0 faces" in reasons[1] and "needs OpenFace faces" in reasons[2]


def test_bad_inputs_fail_alone_and_the_batch_goes_on(media, bad_media, tmp_path):
    """Each case: the release's behaviour where it has one, otherwise a per-clip failure with a reason."""
    wav = media["mono16k"]
    cases = {
        # release behaviour (decord frames, torchaudio-style audio), checked below
        "one": ClipSpec(video=bad_media["one"], audio=wav),  # frame 0 eight times
        "odd": ClipSpec(video=media["odd"], audio=wav),  # 97x61 4:4:4
        "rot90": ClipSpec(video=media["rot90"], audio=wav),  # display matrix applied, like decord
        "x264_10bit": ClipSpec(video=bad_media["x264_10bit"], audio=wav),
        "x265_10bit": ClipSpec(video=bad_media["x265_10bit"], audio=wav),
        "huge": ClipSpec(video=bad_media["huge"], audio=wav),  # 4096x2160
        "vfr": ClipSpec(video=media["vfr"], audio=wav),  # indices count frames, not time
        "truncated_mkv": ClipSpec(video=bad_media["truncated_mkv"]),  # the frames and audio that survive
        "zero_audio": ClipSpec(video=media["five"], audio=media["zero"]),  # 2 s of silence → all zeros
        # no release behaviour (it crashes): a clear per-clip failure
        "empty": ClipSpec(video=media["empty"], audio=wav),
        "truncated_mp4": ClipSpec(video=bad_media["truncated_mp4"], audio=wav),
        "corrupt": ClipSpec(video=media["corrupt"], audio=wav),
        "no_video": ClipSpec(video=wav, audio=wav),
        "no_audio": ClipSpec(video=media["h264"]),
        "missing": ClipSpec(video=tmp_path / "nope.mp4", audio=wav),
    }
    for name, c in cases.items():
        c.name = name
    (b,) = _run(list(cases.values()), batch_size=len(cases))
    failed = {f.name: f.reason for f in b.failures}
    assert set(failed) == {"empty", "truncated_mp4", "corrupt", "no_video", "no_audio", "missing"}
    assert "cannot open as a media file" in failed["empty"] and "empty.mp4" in failed["empty"]
    assert "cannot open" in failed["truncated_mp4"] and "cannot open" in failed["corrupt"]
    assert "no video stream (the file holds only audio)" in failed["no_video"]
    assert "no audio stream (the file holds only video)" in failed["no_audio"]
    assert "file not found" in failed["missing"]
    assert b.names == list(cases)[: len(b)]
    for k, name in enumerate(b.names):
        c = cases[name]
        torch.testing.assert_close(b.pixels[k], clip_pixels(_decord_frames(c.video)), rtol=0, atol=0)
        # audio that must be resampled goes through a convolution whose float rounding follows the thread
        # count: the loader's threads run torch serially (affectrt.cpu_threads), this thread does not
        torch.testing.assert_close(
            b.audio[k], joint_normalize(load_audio_windows(c.audio or c.video)), rtol=1e-5, atol=1e-8
        )
    one = b.pixels[b.names.index("one")]
    assert torch.equal(one, one[:1].expand_as(one))
    assert torch.count_nonzero(b.audio[b.names.index("zero_audio")]) == 0
    assert count_frames(bad_media["truncated_mkv"]) == len(
        decord.VideoReader(str(bad_media["truncated_mkv"]))
    )
    assert probe_video(media["rot90"]).rotation == 90 and probe_video(bad_media["huge"]).width == 4096


def test_window_starts_follow_the_release_rule():
    """2.5 s at 16 kHz: s_i = i·0.5/8 s = i·1000 samples (pytorchvideo 0.1.5), slices of exactly 32000."""
    slices = audio_window_slices(40000)
    assert [a for a, _ in slices] == [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000]
    assert all(b - a == 32000 for a, b in slices)


def test_prefetch_stops_when_the_consumer_breaks(media):
    clips = [ClipSpec(video=media["h264"], audio=media["short"]) for _ in range(6)]
    loader = MediaLoader(clips, batch_size=2, device="cpu", backend="pyav", prefetch=2)
    assert len(loader) == 3
    for b in loader:
        assert len(b) == 2
        break  # the producer thread must notice and exit (the generator's finally joins it)
    assert [len(b) for b in loader] == [2, 2, 2]


def test_process_workers_give_the_same_pixels(media):
    clips = [ClipSpec(video=media[n], audio=media["short"]) for n in ["gop", "mjpeg"]]
    (b,) = _run(clips, batch_size=2, workers=1, executor="process", normalize=False)
    for k, c in enumerate(clips):
        np.testing.assert_array_equal(b.pixels[k].numpy(), read_frames(c.video))


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs torch to run on 2+ threads")
def test_loader_threads_run_torch_serially_and_the_main_thread_keeps_its_team(media, monkeypatch):
    import affectrt.media.loader as loader_module

    seen = []
    real = loader_module._audio

    def audio(clip, m):  # runs in a loader thread
        seen.append(torch.get_num_threads())
        return real(clip, m)

    monkeypatch.setattr(loader_module, "_audio", audio)
    main_threads = torch.get_num_threads()
    clips = [ClipSpec(video=media["vp9"], audio=media["mono16k"], name=f"c{i}") for i in range(3)]
    assert len(_run(clips, batch_size=2)) == 2
    # no OpenMP team of their own: the main thread's team keeps spin-waiting (affectrt.cpu_threads)
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == main_threads > 1
