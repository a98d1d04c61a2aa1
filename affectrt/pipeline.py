"""One clip (or a batch of clips) from media files to the model's answer, stage by stage.

The stages are separate methods returning plain tensors, so a benchmark can time each and a later stage
(a TensorRT encoder, cached features) can replace one without the others knowing:

    load_media      decode + sample: uint8 frames/faces [T,224,224,3], audio windows [T,32000]
    preprocess      CLIP normalisation, HuBERT joint normalisation, batching, host → device
    encode          Z_v [B,T,d_v], Z_a [B,T,d_a]
    fuse            the Multi / Audio / Face-or-Frame embeddings [B,K,D]
    generate        prompt splice, prefill, decode (GenerationConfig), text
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from affectrt.compile import COMPILED_DECODE_MAX_ROWS, check_compiler, compiled_decode_step
from affectrt.generate import GenerationConfig, generate
from affectrt.media.preprocess import clip_pixels
from affectrt.models import fused_decode
from affectrt.models.affectgpt import AffectGPT
from affectrt.models.packed import pack_projections
from affectrt.text.prompts import QUESTIONS, build_prompt, postprocess_answer
from affectrt.text.splice import inference_batch
from affectrt.text.tokenizer import Tokenizer


@dataclass
class ClipInput:
    """One clip: a video file, optional OpenFace faces (``.npy``), optional separate audio, a subtitle.

    The face model reads ``face_npy``; the frame model reads frames from ``video``. Audio comes from
    ``audio`` (a ``.wav``, as the release reads) or, when absent, from the video's own audio track.
    """

    video: str | Path | None = None
    subtitle: str = ""
    face_npy: str | Path | None = None
    audio: str | Path | None = None
    name: str = ""


@dataclass
class MediaTensors:
    """Sampled media of one clip: visual uint8 [T,H,W,3] (RGB frames or BGR faces), audio float32 [T,S]."""

    visual: np.ndarray
    audio: Tensor


@dataclass
class Batch:
    """Device tensors of a batch: pixels [B,T,3,H,W] float32, audio [B,T,S] float32, subtitles."""

    pixels: Tensor
    audio: Tensor
    subtitles: list[str] = field(default_factory=list)


# The release calls generate with max_length=2000 next to max_new_tokens: a prompt longer than
# 2000 - max_new_tokens keeps only its last tokens (MODEL_SPEC §5.1).
RELEASE_MAX_LENGTH = 2000


def default_generation(
    tokenizer: Tokenizer,
    max_new_tokens: int = 64,
    greedy: bool = True,
    seed: int | None = None,
    top_k: int = 20,
) -> GenerationConfig:
    """The release's generation settings or greedy decoding, with its stop sequences and eos ids.

    The release sets temperature 1, top-p 0.9 and repetition penalty 1.0 explicitly; top-k is not passed, so
    it comes from the LLM folder's ``generation_config.json`` (20 for Qwen2.5-Instruct): pass that value
    (:func:`affectrt.checkpoint.generation_top_k`). Like HF ``generate``, a row also stops on every eos id of
    that file (``tokenizer.generation_eos_ids``: ``<|im_end|>`` and ``<|endoftext|>`` for Qwen2.5-Instruct).
    """
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        temperature=1.0,
        top_p=0.9,
        top_k=top_k,
        seed=seed,
        stop_sequences=tokenizer.stop_sequences(),
        eos_token_id=tokenizer.generation_eos_ids,
        pad_token_id=tokenizer.pad_id,
    )


_AUTOCAST_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class AffectGPTPipeline:
    """Media → answer for AffectGPT, batched; every stage is a method (see the module docstring)."""

    def __init__(
        self,
        model: AffectGPT,
        tokenizer: Tokenizer,
        device: str | torch.device = "cpu",
        autocast: bool | None = None,
        encoders: object | None = None,
        precision: str = "auto",
        compile_model: bool = False,
    ) -> None:
        """The LLM's projections are packed for inference when it first generates
        (:func:`affectrt.models.packed.pack_projections`: the same computation in fewer GEMMs; the parameters
        become views, so the model's memory does not grow).

        ``precision``: the compute dtype of encoders and fusion head (weights stay float32):

        - ``"auto"``: the release's rule, float16 autocast on CUDA (its ``maybe_autocast``) and float32 on CPU
          (where its autocast is a no-op);
        - ``"fp32"``, ``"fp16"``: that, explicitly;
        - ``"bf16"``: bfloat16 autocast, for CPUs with bf16 matrix units (AMX, AVX512-BF16; see
          :func:`affectrt.cpu_features.cpu_bf16_units`) and GPUs. Not the release's numerics: its error
          against fp32 is of the size of the release's own fp16 error (``benchmarks/precision.py``).

        ``autocast`` (older spelling): True means ``"fp16"``, False ``"fp32"``.

        ``encoders``: serve the encoders and the fusion head from elsewhere (an ONNX Runtime or TensorRT
        backend of :func:`affectrt.export.runners.load_encoders`): any object with ``encode_video``,
        ``encode_audio`` and ``fuse`` taking and returning what the model's methods do.
        """
        self.model = model.eval().to(device)
        self.encoders = encoders
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.cfg = model.cfg
        if autocast is not None:
            precision = "fp16" if autocast else "fp32"
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        if precision not in _AUTOCAST_DTYPES:
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
        self.precision = precision
        self._decode_step = None
        if compile_model:
            check_compiler(self.device)
            self._decode_step = compiled_decode_step(self.model.llm)

    @property
    def autocast(self) -> bool:
        """Whether encoders and fusion run under autocast (any precision but fp32)."""
        return self.precision != "fp32"

    def _autocast(self):
        dtype = _AUTOCAST_DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def load_media(self, clip: ClipInput) -> MediaTensors:
        """Decode and sample one clip on the CPU (MODEL_SPEC §1.2)."""
        from affectrt.media.audio import load_audio_windows
        from affectrt.media.errors import MediaError

        m = self.cfg.media
        if self.cfg.visual_input == "face":
            if clip.face_npy is None:
                raise MediaError(
                    str(clip.video or clip.name), "the face model needs OpenFace faces: pass face_npy"
                )
            from affectrt.media.faces import load_faces

            visual = load_faces(clip.face_npy, n_frames=m.n_frames, size=m.image_size)
        else:
            if clip.video is None:
                raise MediaError(clip.name or "<clip>", "the frame model needs a video file")
            from affectrt.media.video import read_frames

            visual = read_frames(clip.video, n_frames=m.n_frames, size=m.image_size)
        source = clip.audio if clip.audio is not None else clip.video
        if source is None:
            raise MediaError(clip.name or "<clip>", "no audio: pass a .wav or a video with an audio track")
        audio = load_audio_windows(
            source, sample_rate=m.sample_rate, n_clips=m.n_audio_clips, clip_seconds=m.clip_seconds
        )
        return MediaTensors(visual=visual, audio=audio)

    def preprocess(self, media: Sequence[MediaTensors], subtitles: Sequence[str]) -> Batch:
        """CLIP normalisation and HuBERT's joint normalisation, stacked and moved to the device once.

        The audio of each clip is normalised on its own, as the release does at inference (batch 1).
        """
        from affectrt.media.audio import joint_normalize

        visual = torch.from_numpy(np.stack([m.visual for m in media])).to(self.device)
        pixels = clip_pixels(visual, self.cfg.media)
        audio = torch.stack([joint_normalize(m.audio, eps=self.cfg.media.audio_norm_eps) for m in media]).to(
            self.device
        )
        return Batch(pixels=pixels, audio=audio, subtitles=list(subtitles))

    @torch.inference_mode()
    def encode(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Z_v [B,T,d_v], Z_a [B,T,d_a]."""
        enc = self.encoders or self.model
        with self._autocast():
            return enc.encode_video(batch.pixels), enc.encode_audio(batch.audio)

    @torch.inference_mode()
    def fuse(self, z_video: Tensor, z_audio: Tensor) -> dict[str, Tensor]:
        """The LLM embeddings of each placeholder, [B,K,D] each."""
        with self._autocast():
            if self.encoders is not None:
                return self.encoders.fuse(z_video, z_audio)
            return self.model.multimodal_embeddings(z_video, z_audio)

    def prompts(self, subtitles: Sequence[str], question: str) -> list[str]:
        q = QUESTIONS.get(question, question)
        return [build_prompt(self.cfg, s, q) for s in subtitles]

    @torch.inference_mode()
    def prompt_embeds(
        self, features: dict[str, Tensor], subtitles: Sequence[str], question: str
    ) -> tuple[Tensor, Tensor]:
        """inputs_embeds [B,L,D] (left-padded) and attention mask [B,L]."""
        tokens = inference_batch(self.tokenizer, self.prompts(subtitles, question))
        ids = tokens.input_ids.to(self.device)
        embeds = self.model.inputs_embeds(ids, features, self.tokenizer.placeholder_ids)
        return embeds, tokens.attention_mask.to(self.device)

    @torch.inference_mode()
    def fused_prompt_embeds(
        self, z_video: Tensor, z_audio: Tensor, subtitles: Sequence[str], question: str
    ) -> tuple[Tensor, Tensor]:
        """fuse + prompt_embeds in one step: the fused head writes straight into the placeholder rows."""
        if self.encoders is not None:
            return self.prompt_embeds(self.fuse(z_video, z_audio), subtitles, question)
        tokens = inference_batch(self.tokenizer, self.prompts(subtitles, question))
        ids = tokens.input_ids.to(self.device)
        with self._autocast():
            embeds = self.model.spliced_embeds(ids, z_video, z_audio, self.tokenizer.placeholder_ids)
        return embeds, tokens.attention_mask.to(self.device)

    @torch.inference_mode()
    def generate(self, embeds: Tensor, mask: Tensor, gen: GenerationConfig) -> list[str]:
        """Decoded answers of a left-padded batch.

        Like the release, a prompt longer than ``RELEASE_MAX_LENGTH - max_new_tokens`` keeps only its last
        tokens (for a left-padded batch: the last columns, which cut each row to its own last tokens).
        """
        keep = RELEASE_MAX_LENGTH - gen.max_new_tokens
        if keep > 0 and embeds.shape[1] > keep:
            embeds, mask = embeds[:, -keep:], mask[:, -keep:]
        pack_projections(self.model.llm)  # once; later calls only check that the packs are intact
        compiled = embeds.shape[0] <= COMPILED_DECODE_MAX_ROWS and not fused_decode.supported(self.model.llm)
        step = self._decode_step if compiled else None
        rows = generate(self.model.llm, inputs_embeds=embeds, attention_mask=mask, gen=gen, step=step)
        return [self.decode(r) for r in rows]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one generated row: decoded with its special tokens, then cut as the release cuts it."""
        return postprocess_answer(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def answer(
        self,
        clips: Sequence[ClipInput],
        question: str = "ovlabel",
        gen: GenerationConfig | None = None,
    ) -> list[ClipResult]:
        """Each clip's answer as a :class:`ClipResult` (``question``: "ovlabel", "description" or any text).

        A clip whose media cannot be read gets its error in ``.error``; the others are answered in one batch.
        """
        from affectrt.media.errors import MediaError

        gen = gen or default_generation(self.tokenizer)
        results = [ClipResult(c.name or _with_name(c).name) for c in clips]
        media, ok = [], []
        for i, clip in enumerate(clips):
            try:
                media.append(self.load_media(clip))
                ok.append(i)
            except MediaError as e:
                results[i].error = str(e)
        if ok:
            batch = self.preprocess(media, [clips[i].subtitle for i in ok])
            z_v, z_a = self.encode(batch)
            embeds, mask = self.fused_prompt_embeds(z_v, z_a, batch.subtitles, question)
            for i, text in zip(ok, self.generate(embeds, mask, gen), strict=True):
                results[i].answer = text
        return results


@dataclass
class ClipResult:
    """One clip's outcome: the answer, or the reason it failed."""

    name: str
    answer: str | None = None
    error: str | None = None


def read_results(path: str | Path) -> dict[str, dict]:
    """The records of a batch job's JSON-lines output by clip name (the last line of a name wins)."""
    import json

    records: dict[str, dict] = {}
    path = Path(path)
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["name"]] = rec
    return records


def run_batch_job(
    pipe: AffectGPTPipeline,
    clips: Sequence[ClipInput],
    out_path: str | Path,
    question: str = "ovlabel",
    gen: GenerationConfig | None = None,
    batch_size: int = 8,
    media_backend: str = "auto",
    progress: bool = True,
    retry_failed: bool = False,
    record: dict | None = None,
) -> dict[str, ClipResult]:
    """Answer every clip, appending one JSON line per clip to ``out_path`` as soon as its batch is done.

    Clips already present in ``out_path`` (by name) are skipped, so a rerun resumes where an interrupted run
    stopped; with ``retry_failed`` the clips recorded with an error run again (their new line supersedes the
    old one). A clip whose media cannot be read is recorded with its error and the job goes on. Clip names must
    be unique (default: the video or face file name without extension). Each line holds ``name``, ``answer``,
    ``error``, ``question``, ``variant``, ``seconds`` (the batch's wall time per clip) and ``record``'s fields
    (the CLI adds model and checkpoint hashes). The output is locked while the job writes it: a second job on
    the same file fails at once instead of interleaving lines.
    """
    import fcntl
    import json
    import time

    from affectrt.errors import UsageError
    from affectrt.media.loader import MediaLoader

    out_path = Path(out_path)
    named = [c if c.name else _with_name(c) for c in clips]
    names = [c.name for c in named]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(
            "clips", f"clip names must be unique for a resumable job; repeated: {dup[:5]}", "rename them"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a") as sink:
        try:
            fcntl.flock(sink, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                out_path, "another job is writing this file", "wait for it, or pick another --out"
            ) from None
        done = {
            name: ClipResult(name, rec.get("answer"), rec.get("error"))
            for name, rec in read_results(out_path).items()
        }
        if retry_failed:
            done = {n: r for n, r in done.items() if r.error is None}
        todo = [c for c in named if c.name not in done]
        gen = gen or default_generation(pipe.tokenizer)
        loader = MediaLoader(
            todo,
            visual=pipe.cfg.visual_input,
            batch_size=batch_size,
            device=pipe.device,
            media=pipe.cfg.media,
            backend=media_backend,
        )
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="clips", unit="clip")
        extra = {"question": question, "variant": pipe.cfg.visual_input, **(record or {})}
        started = time.perf_counter()
        for mb in loader:
            results = [ClipResult(todo[f.index].name, error=f.reason) for f in mb.failures]
            if len(mb):
                batch = Batch(pixels=mb.pixels, audio=mb.audio, subtitles=list(mb.subtitles))
                z_v, z_a = pipe.encode(batch)
                embeds, mask = pipe.fused_prompt_embeds(z_v, z_a, batch.subtitles, question)
                texts = pipe.generate(embeds, mask, gen)
                results += [
                    ClipResult(todo[i].name, answer=t) for i, t in zip(mb.indices, texts, strict=True)
                ]
            now = time.perf_counter()
            seconds = round((now - started) / max(len(results), 1), 4)
            started = now
            for r in results:
                line = {"name": r.name, "answer": r.answer, "error": r.error, **extra, "seconds": seconds}
                sink.write(json.dumps(line) + "\n")
                done[r.name] = r
            sink.flush()
            if bar is not None:
                bar.update(len(results))
        if bar is not None:
            bar.close()
    return done


def _with_name(clip: ClipInput) -> ClipInput:
    source = clip.video or clip.face_npy or clip.audio
    name = Path(source).stem if source is not None else ""
    return ClipInput(
        video=clip.video, subtitle=clip.subtitle, face_npy=clip.face_npy, audio=clip.audio, name=name
    )
