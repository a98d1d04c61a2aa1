"""Batches of ready encoder inputs from a list of clips, prefetched while the previous batch is encoded.

    loader = MediaLoader(clips, visual="frame", batch_size=16, device="cuda")
    for batch in loader:            # batch k+1 is decoded in the background while you use batch k
        z_v = clip(batch.pixels)    # [B, T, 3, 224, 224] float32, CLIP-normalised, on the device
        z_a = hubert(batch.audio)   # [B, T, 32000] float32, jointly normalised per clip
        batch.failures              # clips of this batch that could not be read, with the reason

Per batch (MODEL_SPEC §1.2):
- audio: `load_audio_windows` (a .wav, else the video's own track) and `joint_normalize` per clip, as the
  release does at inference, in worker threads submitted first so they overlap the video decode;
- frames: backend "dali": every clip is probed (decord's frame count, codec, rotation) in the workers, the
  clips NVDEC can decode go through one DALI run (`dali.DaliDecoder`), the others and any clip DALI raises on
  are decoded with PyAV (`video.read_frames`, decord-exact) and the reason is logged; backend "pyav": PyAV in
  worker threads or processes;
- faces: the 8 picked OpenFace crops, resized to 224 (DALI on the GPU; `faces.load_faces`, OpenCV-exact, with
  PyAV/numpy), BGR kept;
- host tensors are gathered in pinned memory and copied to the device once, on a side stream; pixels are
  normalised there with `preprocess.clip_pixels` (identical for DALI- and PyAV-decoded clips).

A clip that fails (a MediaError, or any exception while decoding it) becomes a `ClipFailure` with the reason;
the other clips of the batch go on. A batch whose clips all fail has B = 0 and only failures.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from affectrt.config import MediaConfig
from affectrt.cpu_threads import serial_torch_in_this_thread
from affectrt.media.audio import joint_normalize, load_audio_windows
from affectrt.media.errors import MediaError
from affectrt.media.faces import load_faces, pick_faces
from affectrt.media.preprocess import clip_pixels
from affectrt.media.sampling import sample_indices
from affectrt.media.video import probe_video, read_frames

__all__ = ["ClipFailure", "ClipSpec", "MediaBatch", "MediaLoader"]

log = logging.getLogger("affectrt.media")


@dataclass
class ClipSpec:
    """One clip. Any object with these attributes works (e.g. `affectrt.pipeline.ClipInput`)."""

    video: str | Path | None = None
    subtitle: str = ""
    face_npy: str | Path | None = None
    audio: str | Path | None = None
    name: str = ""


@dataclass(frozen=True)
class ClipFailure:
    """A clip left out of its batch: `index` in the loader's clip list, the file at fault and why."""

    index: int
    name: str
    reason: str


@dataclass
class MediaBatch:
    """The clips of one batch that loaded; B ≤ batch_size.

    pixels: float32 [B, T, 3, S, S] CLIP-normalised (uint8 [B, T, S, S, 3] with normalize=False), RGB frames
    or BGR faces; audio: float32 [B, T, clip_samples] jointly normalised per clip; `indices[b]` is clip b's
    position in the loader's list; `fallbacks` lists (index, reason) of clips PyAV decoded instead of DALI.
    """

    pixels: Tensor
    audio: Tensor
    indices: list[int]
    names: list[str]
    subtitles: list[str]
    failures: list[ClipFailure] = field(default_factory=list)
    fallbacks: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, MediaError) else f"{type(e).__name__}: {e}"


def _clip_name(clip, index: int) -> str:
    return clip.name or os.fspath(clip.video or clip.face_npy or clip.audio or f"clip {index}")


def _audio(clip, m: MediaConfig) -> Tensor:
    source = clip.audio if clip.audio is not None else clip.video
    if source is None:
        raise MediaError(clip.name or None, "no audio source", "pass a .wav or a video with an audio track")
    w = load_audio_windows(
        source, sample_rate=m.sample_rate, n_clips=m.n_audio_clips, clip_seconds=m.clip_seconds
    )
    return joint_normalize(w, eps=m.audio_norm_eps)


def _need(clip, visual: str) -> str:
    path = clip.face_npy if visual == "face" else clip.video
    if path is None:
        what = "OpenFace faces (face_npy)" if visual == "face" else "a video file"
        raise MediaError(clip.name or None, f"the {visual} model needs {what}", "add it to the clip")
    return os.fspath(path)


def _pyav_visual(path: str, visual: str, n_frames: int, size: int) -> np.ndarray:
    """uint8 [T, S, S, 3] on the CPU; a top-level function so worker processes can run it."""
    if visual == "face":
        return load_faces(path, n_frames=n_frames, size=size)
    return read_frames(path, n_frames=n_frames, size=size)


class MediaLoader:
    """Iterate over `clips` in batches of `batch_size` ready tensors on `device` (see the module docstring).

    backend: "auto" (DALI when `device` is CUDA and DALI is installed, else PyAV), "dali" (on a CPU device this
    runs DALI's CPU backend, which reads only VP8/VP9/MJPEG: for tests), or "pyav".
    workers: CPU worker count (default: min(8, cores)); executor: "thread" or "process" for PyAV video
    decode (audio always uses threads). prefetch: batches prepared ahead of the consumer.
    """

    def __init__(
        self,
        clips: Sequence,
        visual: Literal["frame", "face"] = "frame",
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        media: MediaConfig | None = None,
        backend: Literal["auto", "dali", "pyav"] = "auto",
        normalize: bool = True,
        workers: int | None = None,
        executor: Literal["thread", "process"] = "thread",
        prefetch: int = 1,
    ) -> None:
        if visual not in ("frame", "face"):
            raise ValueError(f"visual must be 'frame' or 'face', got {visual!r}")
        if batch_size < 1 or prefetch < 1:
            raise ValueError(f"batch_size and prefetch must be ≥ 1, got {batch_size} and {prefetch}")
        self.clips, self.visual, self.batch_size = list(clips), visual, batch_size
        self.device = torch.device(device)
        self.media = media or MediaConfig()
        self.normalize, self.prefetch = normalize, prefetch
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        if executor not in ("thread", "process"):
            raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")
        self.executor = executor
        if backend == "auto":
            from affectrt.media.dali import dali_available

            backend = "dali" if self.device.type == "cuda" and dali_available() else "pyav"
        if backend not in ("dali", "pyav"):
            raise ValueError(f"backend must be 'auto', 'dali' or 'pyav', got {backend!r}")
        self.backend = backend

    def __len__(self) -> int:
        return -(-len(self.clips) // self.batch_size)

    def __iter__(self) -> Iterator[MediaBatch]:
        """Batches in order; a background thread prepares up to `prefetch` batches ahead."""
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            serial_torch_in_this_thread()  # keeps the consumer's OpenMP team spinning (affectrt.cpu_threads)
            try:
                with self._pools() as (threads, decoders):
                    dali = self._dali() if self.backend == "dali" else None
                    for start in range(0, len(self.clips), self.batch_size):
                        if stop.is_set() or not put(self._load(start, threads, decoders, dali)):
                            return
                put(done)
            except BaseException as e:  # a bug, not a bad clip: hand it to the consumer
                put(e)

        worker = threading.Thread(target=produce, name="affectrt-media-loader", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self._hand_over(item)
        finally:
            stop.set()
            worker.join()

    def _hand_over(self, batch: MediaBatch) -> MediaBatch:
        """Mark the batch's device tensors as used on the consumer's current stream.

        They were allocated and written on the producer's side stream (which has finished: the producer
        synchronised it). ``record_stream`` keeps the caching allocator from reusing their memory for the
        side stream's next batch until the consumer stream's work queued so far has run.
        """
        if self.device.type == "cuda":
            consumer = torch.cuda.current_stream(self.device)
            for t in (batch.pixels, batch.audio):
                if t.device.type == "cuda":
                    t.record_stream(consumer)
        return batch

    def _pools(self):
        """(thread pool for audio/probes, pool for PyAV visual decode) as one context manager."""
        loader = self

        class _Pools:
            def __enter__(self):
                self.threads = ThreadPoolExecutor(
                    loader.workers,
                    thread_name_prefix="affectrt-media",
                    initializer=serial_torch_in_this_thread,
                )
                self.decoders: Executor = self.threads
                if loader.executor == "process":
                    ctx = mp.get_context("spawn")  # fork after torch/DALI threads started is unsafe
                    self.decoders = ProcessPoolExecutor(loader.workers, mp_context=ctx)
                return self.threads, self.decoders

            def __exit__(self, *exc):
                self.threads.shutdown(wait=True, cancel_futures=True)
                if self.decoders is not self.threads:
                    self.decoders.shutdown(wait=True, cancel_futures=True)

        return _Pools()

    def _dali(self):
        from affectrt.media.dali import DaliDecoder

        kind = "face" if self.visual == "face" else "video"
        return DaliDecoder(kind, self.batch_size, self.device, size=self.media.image_size)

    def _load(self, start: int, threads: Executor, decoders: Executor, dali) -> MediaBatch:
        m, size, n_frames = self.media, self.media.image_size, self.media.n_frames
        idx = list(range(start, min(start + self.batch_size, len(self.clips))))
        clips = [self.clips[i] for i in idx]
        audio = [threads.submit(_audio, c, m) for c in clips]  # first, so it overlaps the video work
        visual: list[Future | Tensor | BaseException] = []
        paths: list[str | None] = []
        for c in clips:
            try:
                paths.append(_need(c, self.visual))
            except MediaError as e:
                paths.append(None)
                visual.append(e)
                continue
            visual.append(None)
        fallbacks: list[tuple[int, str]] = []
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        todo = [j for j, p in enumerate(paths) if p is not None]
        if dali is not None:
            done = self._with_dali(dali, paths, todo, threads, stream, fallbacks, idx)
            for j, r in done.items():
                visual[j] = r
            todo = [j for j in todo if j not in done]
        for j in todo:
            visual[j] = decoders.submit(_pyav_visual, paths[j], self.visual, n_frames, size)
        ok: list[int] = []
        pix: list[Tensor] = []
        wav: list[Tensor] = []
        failures: list[ClipFailure] = []
        for j, (v, a) in enumerate(zip(visual, audio)):
            try:
                if isinstance(v, BaseException):
                    raise v
                v = v.result() if isinstance(v, Future) else v
                a = a.result()
            except Exception as e:
                failures.append(ClipFailure(idx[j], _clip_name(clips[j], idx[j]), _reason(e)))
                log.warning("%s: left out of the batch: %s", _clip_name(clips[j], idx[j]), _reason(e))
                continue
            ok.append(j)
            pix.append(torch.as_tensor(v))
            wav.append(a)
        return self._assemble(ok, pix, wav, clips, idx, failures, fallbacks, stream)

    def _with_dali(self, dali, paths, todo, threads, stream, fallbacks, idx) -> dict[int, Tensor | Exception]:
        """Visual results DALI produced (or the MediaError that makes the clip fail), by batch position.

        Clips DALI should not or could not decode are left out, for PyAV, with the reason in `fallbacks`.
        """
        from affectrt.media.dali import unsupported_reason

        n_frames = self.media.n_frames
        results: dict[int, Tensor | Exception] = {}
        if self.visual == "face":
            picked = {j: threads.submit(pick_faces, paths[j], n_frames) for j in todo}
            ready = []
            for j, f in picked.items():
                try:
                    ready.append((j, f.result()))
                except Exception as e:  # a missing or malformed .npy: the clip fails, PyAV would too
                    results[j] = e
            out = dali.faces([f for _, f in ready], stream) if ready else []
        else:
            probes = {j: threads.submit(probe_video, paths[j]) for j in todo}
            ready = []
            for j, f in probes.items():
                try:
                    info = f.result()
                except Exception as e:  # unreadable file: PyAV's reader would fail the same way
                    results[j] = e
                    continue
                why = unsupported_reason(info, dali.backend)
                if why is None:
                    ready.append(
                        (j, (np.fromfile(paths[j], np.uint8), sample_indices(info.n_frames, n_frames)))
                    )
                else:
                    fallbacks.append((idx[j], why))
            out = dali.frames([e for _, (e, _) in ready], [i for _, (_, i) in ready], stream) if ready else []
        for (j, _), r in zip(ready, out):
            if isinstance(r, Exception):
                fallbacks.append((idx[j], f"DALI failed: {str(r).strip().splitlines()[-1][:300]}"))
            else:
                results[j] = r
        for i, why in fallbacks:
            log.warning("%s: decoded with PyAV instead of DALI: %s", _clip_name(self.clips[i], i), why)
        return results

    def _assemble(self, ok, pix, wav, clips, idx, failures, fallbacks, stream) -> MediaBatch:
        """Stack, move to the device once (pinned host memory, side stream) and normalise there."""
        m, size = self.media, self.media.image_size
        cuda = self.device.type == "cuda"
        if not ok:  # empty, but allocated like the others: under the side stream that owns the batch
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                pixels = torch.empty(0, m.n_frames, size, size, 3, dtype=torch.uint8, device=self.device)
                audio = torch.empty(
                    0, m.n_audio_clips, m.clip_samples, dtype=torch.float32, device=self.device
                )
        else:
            host = [j for j, p in enumerate(pix) if p.device.type == "cpu"]
            if cuda:
                with torch.cuda.stream(stream):
                    staged = torch.stack([pix[j] for j in host]).pin_memory() if host else None
                    wav_host = torch.stack(wav).pin_memory()
                    audio = wav_host.to(self.device, non_blocking=True)
                    moved = staged.to(self.device, non_blocking=True) if staged is not None else None
                    parts = list(pix)
                    for k, j in enumerate(host):
                        parts[j] = moved[k]
                    pixels = torch.stack(parts)
            else:
                pixels, audio = torch.stack(pix), torch.stack(wav)
        if self.normalize:
            if cuda:
                with torch.cuda.stream(stream):
                    pixels = clip_pixels(pixels, m)
            else:
                pixels = clip_pixels(pixels, m)
        if stream is not None:
            stream.synchronize()  # only this producer thread waits; the consumer's stream never does
        return MediaBatch(
            pixels=pixels,
            audio=audio,
            indices=[idx[j] for j in ok],
            names=[_clip_name(clips[j], idx[j]) for j in ok],
            subtitles=[clips[j].subtitle for j in ok],
            failures=failures,
            fallbacks=fallbacks,
        )
