"""Faces for the face model: OpenFace crops, resized exactly as the release's `cv2.resize` does.

The release loads `openface_face/<name>.npy` ([N,112,112,3] uint8, BGR as `cv2.imread` read the .bmp crops),
`cv2.resize`s every face to 224×224 with INTER_LINEAR and then picks 8 at `sample_indices(N)`. It never
swaps BGR to RGB, and the checkpoint was trained that way, so neither do we. Resizing is per face, so we
resize only the 8 picked faces: same result, N/8 times less work.

`resize_linear_u8` is OpenCV's INTER_LINEAR for uint8, bit-exact, without importing cv2:
- source coordinate of destination x: f = (x + 0.5)·(in/out) − 0.5 computed in float32, s = floor(f),
  a = f − s; columns outside [0, in − 1] clamp to the edge with a = 0, rows clamp the index but keep a;
- weights in 11-bit fixed point: w1 = round(a·2048), w0 = round((1 − a)·2048) (each rounded on its own);
- horizontal pass, exact int32: H = w0·S[s] + w1·S[s+1];
- vertical pass as OpenCV's vector loop computes it (opencv-python 4.x on x86, every column):
  (((H0 >> 4)·v0 >> 16) + ((H1 >> 4)·v1 >> 16) + 2) >> 2, saturated to [0, 255]. This differs by at most 1
  from the exact (v0·H0 + v1·H1 + 2^21) >> 22 that OpenCV's scalar fallback would give.
"""

from __future__ import annotations

import os

import numpy as np

from affectrt.media.errors import MediaError
from affectrt.media.sampling import sample_indices

__all__ = ["load_faces", "pick_faces", "resize_linear_u8"]

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _axis_taps(n_in: int, n_out: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """(index0, index1, weight0, weight1) per output position, as OpenCV's resize computes them.

    OpenCV zeroes the fraction at the borders for columns only; for rows it keeps the fraction and clamps the
    row indices, so a border row is blended with itself (which the SIMD rounding makes differ by one).
    """
    scale = 1.0 / (np.float64(n_out) / n_in)  # cv::resize: scale = 1 / (dsize / ssize), in double
    f = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    a = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        a[s < 0], a[s >= n_in - 1] = 0, 0
        s = np.clip(s, 0, n_in - 1)
        return s, np.minimum(s + 1, n_in - 1), *_fixed(a)
    return np.clip(s, 0, n_in - 1), np.clip(s + 1, 0, n_in - 1), *_fixed(a)


def _fixed(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """11-bit fixed-point weights (1 − a, a), each rounded on its own like saturate_cast<short>."""
    w1 = np.rint(a * np.float32(_COEF_SCALE)).astype(np.int64)
    w0 = np.rint((np.float32(1) - a) * np.float32(_COEF_SCALE)).astype(np.int64)
    return w0, w1


def resize_linear_u8(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)` for uint8 [..., H, W, C] images."""
    if img.dtype != np.uint8 or img.ndim < 3:
        raise ValueError(f"expected uint8 [..., H, W, C] images, got {img.dtype} {img.shape}")
    h_in, w_in, c = img.shape[-3:]
    x0, x1, a0, a1 = _axis_taps(w_in, width, clamp_weights=True)
    y0, y1, b0, b1 = _axis_taps(h_in, height, clamp_weights=False)
    src = img.astype(np.int64)
    rows = src[..., x0, :] * a0[:, None] + src[..., x1, :] * a1[:, None]  # [..., H_in, W, C], exact
    h0 = rows[..., y0, :, :].reshape(*img.shape[:-3], height, width * c)
    h1 = rows[..., y1, :, :].reshape(*img.shape[:-3], height, width * c)
    v0, v1 = b0[:, None], b1[:, None]
    # OpenCV's vector loop (VResizeLinearVec_32s8u): 16-bit high multiplies, then a rounding shift by 2.
    out = ((((h0 >> 4) * v0) >> 16) + (((h1 >> 4) * v1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8).reshape(*img.shape[:-3], height, width, c)


def pick_faces(npy_path: str | os.PathLike, n_frames: int = 8) -> np.ndarray:
    """uint8 [n_frames, H, W, 3] BGR crops at `sample_indices(N)` of an OpenFace `.npy`, not resized."""
    try:
        faces = np.load(os.fspath(npy_path), mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as e:
        raise MediaError(
            npy_path, "face file not found", "run OpenFace feature extraction for this clip"
        ) from e
    except (ValueError, OSError) as e:
        # numpy's message about pickled data advises allow_pickle: never relay it for a face file
        raise MediaError(
            npy_path,
            "not a .npy array of faces (numpy cannot read it as one)",
            "pass the OpenFace faces saved with numpy.save: uint8 [N, H, W, 3]",
        ) from e
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
        raise MediaError(
            npy_path,
            f"expected faces of shape [N, H, W, 3] uint8, got {faces.shape} {faces.dtype}",
            "stack the OpenFace .bmp crops as read by cv2.imread",
        )
    if faces.shape[0] == 0:
        raise MediaError(
            npy_path,
            "holds 0 faces (OpenFace found no face in the clip)",
            "use the frame model for this clip, or drop it",
        )
    return np.ascontiguousarray(faces[sample_indices(faces.shape[0], n_frames)])


def load_faces(npy_path: str | os.PathLike, n_frames: int = 8, size: int = 224) -> np.ndarray:
    """uint8 [n_frames, size, size, 3] **BGR** faces from an OpenFace `.npy` of [N, H, W, 3] uint8 crops."""
    return resize_linear_u8(pick_faces(npy_path, n_frames), size, size)
