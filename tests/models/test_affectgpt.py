import torch

from affectrt.config import get_preset
from affectrt.models.affectgpt import AffectGPT


def test_repeated_inputs_are_encoded_once_with_the_same_result():
    torch.manual_seed(0)
    model = AffectGPT(get_preset("tiny")).eval()
    calls = []
    real = model.acoustic_encoder.pooled
    model.acoustic_encoder.pooled = lambda x: calls.append(x.shape[0]) or real(x)
    window = torch.randn(1, 1, 32000)
    short_clip = window.expand(2, 8, 32000)  # a clip of <= 2 s: eight identical windows, twice
    with torch.inference_mode():
        z = model.encode_audio(short_clip)
        ref = real(window[0]).expand(16, -1).reshape(2, 8, -1)
    assert calls == [1]
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)

    frames = torch.randn(1, 5, 3, 224, 224)
    repeated = torch.cat([frames, frames[:, -1:].expand(1, 3, -1, -1, -1)], dim=1)  # 5 frames -> 8
    with torch.inference_mode():
        z_v = model.encode_video(repeated)
        ref_v = model.visual_encoder(repeated[0])
    torch.testing.assert_close(z_v[0], ref_v, rtol=1e-5, atol=1e-6)


def test_cpu_encoder_calls_take_the_rows_set_in_the_environment(monkeypatch):
    import pytest

    torch.manual_seed(0)
    model = AffectGPT(get_preset("tiny")).eval()
    calls = []
    real = model.acoustic_encoder.pooled
    model.acoustic_encoder.pooled = lambda x: calls.append(x.shape[0]) or real(x)
    windows = torch.randn(2, 8, 32000)  # 16 distinct windows
    with torch.inference_mode():
        whole = real(windows.flatten(0, 1)).view(2, 8, -1)
        monkeypatch.delenv("AFFECTRT_ENCODER_ROWS", raising=False)
        default = model.encode_audio(windows)
        assert calls == [8, 8]  # the default: 8 rows per call
        calls.clear()
        monkeypatch.setenv("AFFECTRT_ENCODER_ROWS", "5")
        five = model.encode_audio(windows)
        assert calls == [5, 5, 5, 1]
    for z in (default, five):  # each window is encoded on its own: only the GEMM shapes' rounding differs
        torch.testing.assert_close(z, whole, rtol=1e-5, atol=1e-6)
    for bad in ("0", "-2", "eight"):
        monkeypatch.setenv("AFFECTRT_ENCODER_ROWS", bad)
        with pytest.raises(ValueError, match="AFFECTRT_ENCODER_ROWS"), torch.inference_mode():
            model.encode_audio(windows)
