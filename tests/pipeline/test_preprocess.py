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
