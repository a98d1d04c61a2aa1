"""Faces: OpenCV INTER_LINEAR bit-exact, BGR kept, release's sampling, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from affectrt.media.errors import MediaError
from affectrt.media.faces import load_faces, resize_linear_u8
from affectrt.media.sampling import sample_indices

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize(
    "hw_in, hw_out",
    [
        ((112, 112), (224, 224)),
        ((61, 97), (224, 224)),
        ((112, 112), (57, 83)),
        ((5, 7), (13, 11)),
        ((300, 200), (224, 224)),
        ((1, 1), (5, 5)),
    ],
)
def test_resize_equals_cv2(hw_in, hw_out):
    img = np.random.default_rng(sum(hw_in)).integers(0, 256, (3, *hw_in, 3), dtype=np.uint8)
    ref = np.stack([cv2.resize(i, hw_out[::-1], interpolation=cv2.INTER_LINEAR) for i in img])
    np.testing.assert_array_equal(resize_linear_u8(img, *hw_out), ref)


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_load_faces_is_release_load_face(tmp_path, n):
    faces = np.random.default_rng(n).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    np.save(tmp_path / "f.npy", faces)
    # release: resize every face (cv2, BGR untouched), then pick sample_indices(N)
    ref = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR) for f in faces])[
        sample_indices(n)
    ]
    np.testing.assert_array_equal(load_faces(tmp_path / "f.npy"), ref)


@pytest.mark.parametrize(
    "arr, words",
    [
        (np.zeros((0, 112, 112, 3), np.uint8), "0 faces"),
        (np.zeros((4, 112, 112), np.uint8), "expected faces"),
        (np.zeros((4, 112, 112, 3), np.float32), "expected faces"),
    ],
)
def test_bad_face_files(tmp_path, arr, words):
    path = tmp_path / "bad.npy"
    np.save(path, arr)
    with pytest.raises(MediaError, match=words) as e:
        load_faces(path)
    assert str(path) in str(e.value)


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_faces(tmp_path / "none.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(MediaError, match="not a .npy array"):
        load_faces(tmp_path / "junk.npy")
