import types

import numpy as np
import pytest
import torch

from affectrt.media.preprocess import clip_pixels


def test_clip_pixels_equal_clip_image_processor():
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    proc = transformers.CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    expected = proc([Image.fromarray(f) for f in frames], return_tensors="pt").pixel_values
    got = clip_pixels(frames)
    assert got.shape == (3, 3, 224, 224) and got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_clip_pixels_rejects_float_frames():
    with pytest.raises(ValueError, match="frames: expected uint8"):
        clip_pixels(np.zeros((2, 224, 224, 3), dtype=np.float32))


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (2, 3, 70, 61, 3), (4, 224, 224, 3)])
def test_clip_pixels_kernel_equals_the_torch_lookup(shape, monkeypatch):
    """The C++ pass (csrc/clip_pixels.h) and the per-channel gather give the same bits, every byte value."""
    from affectrt.media import preprocess
    from affectrt.ops._ext import cpu_ext

    if cpu_ext() is None or not hasattr(cpu_ext(), "clip_pixels"):
        pytest.skip("affectrt._C without clip_pixels")
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8))
    n = min(256, x.numel() // 3)  # every byte value in every channel, where the frames hold that many pixels
    x.view(-1)[: 3 * n] = torch.arange(n, dtype=torch.uint8).repeat_interleave(3)
    calls = []
    real = cpu_ext().clip_pixels
    monkeypatch.setattr(
        preprocess,
        "cpu_ext",
        lambda: types.SimpleNamespace(clip_pixels=lambda *a: (calls.append(1), real(*a))),
    )
    got = clip_pixels(x)
    assert calls == [1]
    monkeypatch.setattr(preprocess, "cpu_ext", lambda: None)
    want = clip_pixels(x)
    assert got.shape == (*shape[:-3], 3, *shape[-3:-1]) and torch.equal(got, want)
    # a strided view (every other frame) takes the torch lookup and still agrees
    if shape[0] > 1:
        monkeypatch.setattr(preprocess, "cpu_ext", cpu_ext)
        assert torch.equal(clip_pixels(x[::2]), want[::2])
