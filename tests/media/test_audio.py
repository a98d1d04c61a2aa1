"""Audio: waveform reading, the release's windows and HuBERT's joint normalisation."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from affectrt.media.audio import joint_normalize, load_audio_windows, load_waveform
from affectrt.media.errors import MediaError
from affectrt.media.resample import resample
from affectrt.media.sampling import audio_window_slices


def _wav_int16(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        a = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        return a.reshape(-1, w.getnchannels()).T


def _release_windows(wave_: torch.Tensor) -> torch.Tensor:
    if wave_.shape[-1] < 32000:
        wave_ = torch.nn.functional.pad(wave_, (0, 32000 - wave_.shape[-1]))
    return torch.stack([wave_[a:b] for a, b in audio_window_slices(wave_.shape[-1])])


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
