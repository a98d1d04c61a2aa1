"""Audio: waveform reading, the release's windows and HuBERT's joint normalisation."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from affectrt.media.audio import joint_normalize, load_audio_windows, load_waveform
from affectrt.media.errors import MediaError
from affectrt.media.resample import resample

RATE = 16000


def _wav_int16(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        a = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        return a.reshape(-1, w.getnchannels()).T


def _release_windows(wave_: torch.Tensor) -> torch.Tensor:
    """ImageBind's load_audio after resampling, written here from pytorchvideo 0.1.5's sampler: pad to 2 s,
    start_i = Fraction(max(D − 2, 0)) / 8 · i with D the float duration, slices truncated from exact rationals."""
    from fractions import Fraction

    if wave_.shape[-1] < 2 * RATE:
        wave_ = torch.nn.functional.pad(wave_, (0, 2 * RATE - wave_.shape[-1]))
    step = Fraction(max(wave_.shape[-1] / RATE - Fraction(2), 0)) / 8
    return torch.stack([wave_[int(step * i * RATE) : int((step * i + 2) * RATE)] for i in range(8)])


def test_int16_is_divided_by_32768(media):
    w, sr = load_waveform(media["stereo44k"])
    assert sr == 44100 and w.dtype == torch.float32 and w.shape[0] == 2
    np.testing.assert_array_equal(w.numpy(), _wav_int16(media["stereo44k"]) / np.float32(32768))


def test_mono_16k_windows_are_plain_slices(media):
    raw = torch.from_numpy(_wav_int16(media["mono16k"])[0] / np.float32(32768))
    torch.testing.assert_close(load_audio_windows(media["mono16k"]), _release_windows(raw), rtol=0, atol=0)


def test_stereo_is_resampled_then_averaged(media):
    w, sr = load_waveform(media["stereo44k"])
    ref = _release_windows(resample(w, sr, 16000).mean(0))
    torch.testing.assert_close(load_audio_windows(media["stereo44k"]), ref, rtol=0, atol=0)


def test_surround_keeps_channel_0(media):
    w, sr = load_waveform(media["surround48k"])
    assert w.shape[0] == 6
    ref = _release_windows(resample(w, sr, 16000)[0])
    torch.testing.assert_close(load_audio_windows(media["surround48k"]), ref, rtol=0, atol=0)


def test_short_and_zero_length_are_zero_padded(media):
    short = load_audio_windows(media["short"])
    assert short.shape == (8, 32000)
    assert (
        torch.equal(short[0], short[7])
        and short[0, 8000:].abs().max() == 0
        and short[0, :8000].abs().max() > 0
    )
    zero = load_audio_windows(media["zero"])
    assert zero.shape == (8, 32000) and zero.abs().max() == 0
    assert joint_normalize(zero).abs().max() == 0


def test_float_wav_and_video_tracks(media):
    w, sr = load_waveform(media["float_wav"])
    assert sr == 16000 and w.dtype == torch.float32 and w.abs().max() < 1
    for name in ["h264_aac", "h264_pcm"]:
        windows = load_audio_windows(media[name])
        assert windows.shape == (8, 32000) and 0.1 < windows.abs().max() <= 1


@pytest.mark.parametrize(
    "name, words",
    [
        ("h264", "no audio stream (the file holds only video)"),
        ("corrupt", "cannot open"),
        ("empty", "cannot open"),
    ],
)
def test_errors_name_the_file(media, name, words):
    with pytest.raises(MediaError) as e:
        load_audio_windows(media[name])
    assert str(media[name]) in str(e.value) and words in str(e.value)


def test_joint_normalize_equals_wav2vec2_feature_extractor():
    transformers = pytest.importorskip("transformers")
    x = torch.randn(8, 32000, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.05
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    # A 2-D torch tensor is not a numpy array or list: the extractor sees one unbatched sequence.
    ref = fe(x, sampling_rate=16000, return_tensors="pt").input_values
    assert ref.shape == (1, 8, 32000)
    torch.testing.assert_close(joint_normalize(x), ref[0], rtol=0, atol=1e-5)
    y = joint_normalize(x)
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std(unbiased=False)) - 1) < 1e-4


def _damage_audio(src, dst, bad):
    """Remux ``src`` with the payload of every audio packet k where ``bad(k)`` replaced by zero bytes (0xFF
    would look like an ADTS header to the muxer)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vi, ai = i.streams.video[0], i.streams.audio[0]
        vo, ao = o.add_stream_from_template(vi), o.add_stream_from_template(ai)
        k = 0
        for p in i.demux():
            if p.dts is None:
                continue
            if p.stream is ai:
                if bad(k):
                    junk = av.Packet(bytes(p.size))
                    junk.pts, junk.dts, junk.duration, junk.time_base = p.pts, p.dts, p.duration, p.time_base
                    p = junk
                k += 1
                p.stream = ao
            else:
                p.stream = vo
            o.mux(p)
    return dst


def test_undecodable_audio_packets_are_skipped_like_ffmpeg(media, tmp_path, caplog):
    clean, _ = load_waveform(media["h264_aac"])
    damaged = _damage_audio(media["h264_aac"], tmp_path / "damaged.mp4", lambda k: k in (3, 4))
    with caplog.at_level("WARNING", logger="affectrt.media"):
        wave_, _ = load_waveform(damaged)
    assert "2 undecodable audio packet(s) skipped" in caplog.text and str(damaged) in caplog.text
    # everything before the damage is decoded as in the clean file; the two packets' 2 x 1024 samples are gone
    assert wave_.shape[-1] == clean.shape[-1] - 2 * 1024
    assert torch.equal(wave_[:, : 3 * 1024], clean[:, : 3 * 1024])
    assert load_audio_windows(damaged).shape == (8, 32000)


def test_audio_of_which_nothing_decodes_is_an_error(media, tmp_path):
    damaged = _damage_audio(media["h264_aac"], tmp_path / "dead.mp4", lambda k: True)
    with pytest.raises(MediaError, match="no audio could be decoded") as e:
        load_audio_windows(damaged)
    assert str(damaged) in str(e.value)


def test_streamed_windows_equal_the_whole_track_for_long_audio(tmp_path):
    """A long 44.1 kHz stereo track: streamed decode + resample gives the whole-track windows bit for bit."""
    from affectrt.media.resample import resample

    rng = np.random.default_rng(3)
    samples = (rng.standard_normal((2, 44100 * 40 + 123)) * 3000).astype(np.int16)
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(samples.T.tobytes())
    whole = torch.from_numpy(samples.astype(np.float32) / np.float32(32768))
    ref = _release_windows(resample(whole, 44100, RATE).mean(0))
    assert torch.equal(load_audio_windows(path), ref)


@pytest.mark.parametrize("name", ["stereo44k", "surround48k", "short", "zero", "h264_aac"])
def test_the_two_pass_path_for_long_tracks_gives_the_same_windows(media, monkeypatch, name):
    """Past LONG_AUDIO_SAMPLES only the window samples are kept (a first pass counts the length); lowering the
    threshold sends these short files down that path, which must give the same bits."""
    import affectrt.media.audio as audio

    whole = load_audio_windows(media[name])
    monkeypatch.setattr(audio, "LONG_AUDIO_SAMPLES", 100)
    assert torch.equal(load_audio_windows(media[name]), whole)


def test_streaming_resampler_equals_resample_in_any_chunks():
    from affectrt.media.resample import StreamingResampler, resample

    g = torch.Generator().manual_seed(0)
    for rate, channels in ((44100, 1), (48000, 2), (22050, 6), (8000, 1)):
        x = torch.randn(channels, rate * 3 + 11, generator=g)
        r, parts, i = StreamingResampler(rate, RATE, channels), [], 0
        while i < x.shape[1]:
            k = int(torch.randint(1, 7000, (1,), generator=g))
            parts.append(r.push(x[:, i : i + k]))
            i += k
        parts.append(r.finish())
        assert torch.equal(torch.cat(parts, dim=-1), resample(x, rate, RATE)), (rate, channels)


def test_memory_does_not_hold_the_decoded_source(tmp_path):
    """3 min of 48 kHz stereo (66 MB as float32): the windows need far less than the decoded track.

    Measured in a fresh process as the growth of its peak RSS; the whole-track path held the decoded source
    several times over (about 1 GB for a 10-minute clip)."""
    import subprocess
    import sys

    seconds, rate = 180, 48000
    path = tmp_path / "long48k.wav"
    rng = np.random.default_rng(4)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        for _ in range(seconds // 10):
            w.writeframes((rng.standard_normal((10 * rate, 2)) * 3000).astype(np.int16).tobytes())
    code = (
        "import resource, sys\n"
        "from affectrt.media.audio import load_audio_windows\n"
        "load_audio_windows(sys.argv[2])\n"  # warm up on a short file: imports, allocator, kernels
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "load_audio_windows(sys.argv[1])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(4 * rate))
    out = subprocess.run([sys.executable, "-c", code, str(path), str(short)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    grown_mb = int(out.stdout.strip()) / 1024
    decoded_mb = seconds * rate * 2 * 4 / 2**20
    # measured here: about 10 MB (the first 60 s before the switch to two passes, the windows, decoder
    # buffers); the decoded source alone is 66 MB, and holding the whole track grew it by about 570 MB
    assert grown_mb < 0.4 * decoded_mb, (
        f"peak RSS grew by {grown_mb:.0f} MB (decoded source: {decoded_mb:.0f} MB)"
    )


@pytest.mark.parametrize("name", ["mono16k", "stereo44k", "surround48k", "short"])
def test_pcm16_wav_fast_path_equals_ffmpeg(media, monkeypatch, name):
    """Plain 16-bit PCM .wav files skip FFmpeg (the standard library reads them): the same windows."""
    import affectrt.media.audio as audio

    fast = load_audio_windows(media[name])
    monkeypatch.setattr(audio, "_pcm16_wav_chunks", lambda path, frames=0: None)
    assert torch.equal(load_audio_windows(media[name]), fast)
