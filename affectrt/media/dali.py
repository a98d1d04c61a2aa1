"""The sampled frames of a batch of clips decoded and resized by NVIDIA DALI, on the GPU (or its CPU backend).

Graph (one run per batch of clips, `backend` "mixed" on a GPU, "cpu" for tests):

    encoded file bytes ──┐
    frame indices [T] ───┴─ decoders.video(frames=…)  [T,H,W,3] uint8 RGB, only those frames (NVDEC)
                            └─ resize(size×size, linear, antialias)  [T,size,size,3] uint8
    OpenFace faces [T,112,112,3] uint8 BGR ─ .gpu() ─ resize(size×size, linear)  [T,size,size,3] uint8

The indices are the release's `sample_indices(count_frames(path))`, with the count taken as decord takes it
(packets of the best stream, `video.count_frames`); DALI's decoder counts frames in presentation order, so
on a variable-frame-rate clip the same frames come out (checked against PyAV in tests/media/test_dali.py).

Drift from the release, by design: decord scales the YUV planes with swscale's bilinear filter and converts
to RGB at 224×224; DALI converts to RGB at full size and resizes RGB with a linear (antialiased when
shrinking) filter. The filters have the same support, so the drift is small (measured on the CPU backend,
synthetic noisy clips: mean |Δ| 1.4–3.6 of 255, max 71 at sharp edges) but not zero. Faces: DALI's linear
upscaling of 112→224 is OpenCV's INTER_LINEAR up to rounding (max |Δ| 1).

Normalisation to CLIP's layout is not in the graph: the loader applies `preprocess.clip_pixels` to the whole
batch on the device, so DALI-decoded and PyAV-decoded clips get bit-identical normalisation (the release's
float64 rescale then float32 mean/std), which `crop_mirror_normalize` would not.

Codecs (`unsupported_reason`): the mixed backend decodes H.264 (8-bit 4:2:0 only: NVDEC has no H.264
4:2:2/4:4:4/10-bit), HEVC and VP9 (8/10-bit 4:2:0), VP8, MPEG-4 and MJPEG; AV1 is not sent to NVDEC on Hopper.
The CPU backend reads only VP8, VP9 and MJPEG. Rotated clips (display matrix) are left to PyAV because DALI
does not apply the rotation that decord applies. Anything else DALI raises on falls back per clip.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor

from affectrt.media.video import VideoInfo

__all__ = ["DaliDecoder", "dali_available", "unsupported_reason"]

_8BIT_420 = {"yuv420p", "yuvj420p"}
_UP_TO_10BIT_420 = _8BIT_420 | {"yuv420p10le"}
GPU_FORMATS: dict[str, set[str]] = {
    "h264": _8BIT_420,
    "hevc": _UP_TO_10BIT_420,
    "vp9": _UP_TO_10BIT_420,
    "vp8": _8BIT_420,
    "mpeg4": _8BIT_420,
    "mjpeg": _8BIT_420,
}
CPU_FORMATS: dict[str, set[str]] = {"vp8": _8BIT_420, "vp9": _8BIT_420, "mjpeg": _8BIT_420}


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def unsupported_reason(info: VideoInfo, backend: str) -> str | None:
    """Why DALI's `backend` ("mixed" or "cpu") should not decode this clip, or None when it can."""
    table = GPU_FORMATS if backend == "mixed" else CPU_FORMATS
    where = "NVDEC" if backend == "mixed" else "DALI's CPU decoder"
    if info.codec not in table:
        return f"{where} does not decode {info.codec}"
    if info.pix_fmt not in table[info.codec]:
        return f"{where} does not decode {info.codec} in {info.pix_fmt}"
    if info.rotation:
        return f"rotated video ({info.rotation}° display matrix), which DALI does not apply"
    return None


def _video_graph(backend: str, size: int):
    from nvidia.dali import fn, types

    encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
    frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
    # pad_mode="none": an index past the decoded length is an error, not a black frame (the default
    # "constant" pads silently); _run also checks each clip's frame count, so a short clip fails itself
    # and the loader falls back to PyAV for it.
    video = fn.decoders.video(encoded, frames=frames, device=backend, pad_mode="none")
    return fn.resize(video, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=True)


def _face_graph(backend: str, size: int):
    from nvidia.dali import fn, types

    faces = fn.external_source(name="faces", dtype=types.UINT8, ndim=4, layout="FHWC")
    if backend == "mixed":
        faces = faces.gpu()
    return fn.resize(faces, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=False)


class DaliDecoder:
    """Runs the video or face graph on batches of up to `max_batch` clips; results land on `device`.

    `device` cuda → backend "mixed" (NVDEC + GPU resize); cpu → backend "cpu" (VP8/VP9/MJPEG only).
    Not thread-safe: use one instance from one thread (the loader's producer thread).
    """

    def __init__(
        self, kind: str, max_batch: int, device: str | torch.device = "cpu", size: int = 224, threads: int = 2
    ) -> None:
        if kind not in ("video", "face"):
            raise ValueError(f"kind must be 'video' or 'face', got {kind!r}")
        self.kind, self.max_batch, self.size, self.threads = kind, max_batch, size, threads
        self.device = torch.device(device)
        self.backend = "mixed" if self.device.type == "cuda" else "cpu"
        self._pipe = None

    def _build(self):
        from nvidia.dali import pipeline_def

        graph = _video_graph if self.kind == "video" else _face_graph
        device_id = (self.device.index or 0) if self.device.type == "cuda" else None
        make = pipeline_def(graph, enable_conditionals=False)
        pipe = make(
            self.backend,
            self.size,
            batch_size=self.max_batch,
            num_threads=self.threads,
            device_id=device_id,
            prefetch_queue_depth=1,
            exec_dynamic=True,
        )
        pipe.build()
        return pipe

    def _run(self, inputs: dict[str, list[np.ndarray]], stream) -> Tensor:
        """uint8 [B, T, size, size, 3] on self.device for one batch of equally long sequences."""
        if self._pipe is None:
            self._pipe = self._build()
        for name, data in inputs.items():
            self._pipe.feed_input(name, data)
        (out,) = self._pipe.run()
        if "frames" in inputs:
            for i, (shape, want) in enumerate(zip(out.shape(), inputs["frames"])):
                if shape[0] != len(want):
                    raise IndexError(
                        f"DALI decoded {shape[0]} of {len(want)} requested frames of clip {i} (largest "
                        f"index {int(max(want))}): an index lies past the decoded length"
                    )
        if self.backend == "cpu":
            return torch.from_numpy(np.array(out.as_tensor()))  # copies: DALI reuses its buffers
        from nvidia.dali.plugin.pytorch import feed_ndarray

        t = out.as_tensor()
        # Allocated under the stream that writes it: the caching allocator then ties the block to that
        # stream, so it is never handed to other work while the copy is in flight.
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            dst = torch.empty(t.shape(), dtype=torch.uint8, device=self.device)
        feed_ndarray(t, dst, cuda_stream=stream)
        return dst

    def _per_clip(self, inputs: dict[str, list[np.ndarray]], stream=None) -> list[Tensor | Exception]:
        """One batched run; if DALI raises, each clip alone, so one bad clip only fails itself."""
        n = len(next(iter(inputs.values())))
        try:
            return list(self._run(inputs, stream).unbind(0))
        except Exception as e:  # DALI raises RuntimeError for decode errors; anything else: same handling
            self._pipe = None  # a pipeline that raised is not reused
            if n == 1:
                return [e]
        out: list[Tensor | Exception] = []
        for i in range(n):
            out.extend(self._per_clip({k: v[i : i + 1] for k, v in inputs.items()}, stream))
        return out

    def frames(
        self, encoded: list[np.ndarray], indices: list[list[int]], stream=None
    ) -> list[Tensor | Exception]:
        """Per clip: uint8 [T, size, size, 3] RGB frames at `indices` of the file bytes, or the exception."""
        if self.kind != "video":
            raise RuntimeError("this DaliDecoder resizes faces; make one with kind='video'")
        idx = [np.asarray(i, dtype=np.int32) for i in indices]
        return self._chunked({"encoded": list(encoded), "frames": idx}, stream)

    def faces(self, faces: list[np.ndarray], stream=None) -> list[Tensor | Exception]:
        """Per clip: uint8 [T, size, size, 3] faces (channel order kept: BGR in, BGR out), or the exception."""
        if self.kind != "face":
            raise RuntimeError("this DaliDecoder decodes video; make one with kind='face'")
        return self._chunked({"faces": [np.ascontiguousarray(f) for f in faces]}, stream)

    def _chunked(self, inputs: dict[str, list[np.ndarray]], stream) -> list[Tensor | Exception]:
        n = len(next(iter(inputs.values())))
        out: list[Tensor | Exception] = []
        for s in range(0, n, self.max_batch):
            out.extend(self._per_clip({k: v[s : s + self.max_batch] for k, v in inputs.items()}, stream))
        return out
