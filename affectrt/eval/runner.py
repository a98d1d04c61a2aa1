"""Answering the MER-UniBench test sets with AffectGPT: batched, sharded, resumable (MODEL_SPEC §5.1).

For each dataset and checkpoint, the answers go to::

    <out>/results-<key>/<run>/<stem>.jsonl                 unsharded: one JSON line per clip, as batches finish
    <out>/results-<key>/<run>/<stem>.shard-<i>-of-<n>.jsonl  with --shard i/n: clips i, i+n, i+2n, ...
    <out>/results-<key>/<run>/<stem>.npz                   the release's answer file, once every clip is answered

``stem`` is the checkpoint file name without its suffix (``untrained`` without a checkpoint). A rerun skips
the clips already in any JSON-lines file of that stem and the (checkpoint, dataset) pairs whose ``.npz``
exists, so it resumes after an interruption; an unsharded run (or ``--merge``) after sharded ones only
merges. A clip whose media cannot be read is recorded with its error and answered "" in the ``.npz``.
The frozen encoders run once per clip (features kept in memory per dataset) for all checkpoints.
Every dataset is asked the release's ``--zeroshot`` question (the open-vocabulary label question).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from affectrt.eval.datasets import DatasetSpec, Sample
from affectrt.eval.scoreonly import jsonl_files, read_jsonl_answers, write_answers_npz

if TYPE_CHECKING:
    import torch

    from affectrt.generate import GenerationConfig
    from affectrt.pipeline import AffectGPTPipeline


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the samples ``index::count``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with 0 <= i < n."""
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text}: expected i/n, e.g. 0/4") from None
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return cls(i, n)

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def take(self, samples: Sequence[Sample]) -> list[Sample]:
        return list(samples[self.index :: self.count])

    def suffix(self) -> str:
        return f".shard-{self.index}-of-{self.count}" if self.sharded else ""


def checkpoint_stem(checkpoint: str | Path | None) -> str:
    return Path(checkpoint).stem if checkpoint is not None else "untrained"


def run_dir(out: str | Path, spec: DatasetSpec, run: str) -> Path:
    return Path(out) / f"results-{spec.key}" / run


def merge_answers(directory: Path, stem: str, samples: Sequence[Sample]) -> tuple[int, int]:
    """Write ``<stem>.npz`` from the JSON lines once every test clip has a line.

    Returns (missing, failed): the clips without a line (nothing written then) and those recorded as failed.
    """
    answers, errors = read_jsonl_answers(jsonl_files(directory, stem)) if directory.is_dir() else ({}, {})
    missing = sum(s.name not in answers for s in samples)
    if missing == 0:
        write_answers_npz(directory / f"{stem}.npz", {s.name: answers[s.name] for s in samples})
    return missing, sum(s.name in errors for s in samples)


def clips_for(samples: Sequence[Sample]) -> list:
    from affectrt.pipeline import ClipInput

    return [
        ClipInput(video=s.video, subtitle=s.subtitle, face_npy=s.face, audio=s.audio, name=s.name)
        for s in samples
    ]


Features = dict[str, tuple["torch.Tensor", "torch.Tensor"]]


def encode_clips(
    pipe: AffectGPTPipeline,
    samples: Sequence[Sample],
    batch_size: int = 8,
    progress: bool = True,
    cache=None,
) -> tuple[Features, dict[str, str]]:
    """Z_v, Z_a of each clip (kept on the pipeline's device), and name -> reason for clips that failed.

    The frozen encoders do not depend on the checkpoint, so each clip is encoded once per run and its
    features serve every checkpoint (MediaLoader: batched decode prefetched in worker threads). With a
    :class:`~affectrt.features.FeatureCache` (``affectrt eval --feature-cache``, or the folder ``affectrt
    features`` filled) clips already there are read instead, and the ones encoded here are added, so a later
    run (other checkpoints, a rerun) never encodes them again.
    """
    from affectrt.media.loader import MediaLoader
    from affectrt.pipeline import Batch

    feats: Features = {}
    keys: dict[str, str] = {}
    if cache is not None:
        from affectrt.features import media_files, pipeline_feature_key

        settings, weights = pipeline_feature_key(pipe)
        cache.write_manifest(settings, weights)
        for s in samples:
            try:
                keys[s.name] = cache.key(media_files(s, pipe.cfg.visual_input), settings, weights)
            except OSError:
                continue  # unreadable media: the loader below records why
            if keys[s.name] in cache:
                feats[s.name] = tuple(t.to(pipe.device) for t in cache.get(keys[s.name]))
        samples = [s for s in samples if s.name not in feats]

    loader = MediaLoader(
        clips_for(samples),
        visual=pipe.cfg.visual_input,
        batch_size=batch_size,
        device=pipe.device,
        media=pipe.cfg.media,
    )
    errors: dict[str, str] = {}
    new: dict[str, tuple] = {}
    bar = _bar(progress, len(samples), "encode")
    for mb in loader:
        for f in mb.failures:
            errors[samples[f.index].name] = f.reason
        if len(mb):
            z_v, z_a = pipe.encode(Batch(pixels=mb.pixels, audio=mb.audio, subtitles=list(mb.subtitles)))
            for row, i in enumerate(mb.indices):
                feats[samples[i].name] = (z_v[row], z_a[row])
                if samples[i].name in keys:
                    new[keys[samples[i].name]] = (z_v[row], z_a[row])
        if bar is not None:
            bar.update(len(mb) + len(mb.failures))
    if bar is not None:
        bar.close()
    if cache is not None:
        cache.put(new)
    return feats, errors


def generate_answers(
    pipe: AffectGPTPipeline,
    samples: Sequence[Sample],
    feats: Features,
    errors: dict[str, str],
    out_path: Path,
    gen: GenerationConfig,
    batch_size: int = 8,
    progress: bool = True,
) -> None:
    """Answer ``samples`` from their features, appending ``{"name", "answer", "error"}`` lines batch by batch."""
    import torch

    out_path.parent.mkdir(parents=True, exist_ok=True)
    drop_partial_line(out_path)
    bar = _bar(progress, len(samples), "answer")
    with out_path.open("a", encoding="utf-8") as sink:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            ok = [s for s in batch if s.name in feats]
            lines = [(s.name, None, errors.get(s.name, "no features")) for s in batch if s.name not in feats]
            if ok:
                z_v = torch.stack([feats[s.name][0] for s in ok])
                z_a = torch.stack([feats[s.name][1] for s in ok])
                embeds, mask = pipe.fused_prompt_embeds(z_v, z_a, [s.subtitle for s in ok], "ovlabel")
                texts = pipe.generate(embeds, mask, gen)
                lines += [(s.name, t, None) for s, t in zip(ok, texts)]
            for name, answer, error in lines:
                sink.write(
                    json.dumps({"name": name, "answer": answer, "error": error}, ensure_ascii=False) + "\n"
                )
            sink.flush()  # a killed run keeps every finished batch
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()


def drop_partial_line(path: Path) -> None:
    """Cut a last line left unfinished by a killed run, so appended lines start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _bar(progress: bool, total: int, desc: str):
    if not progress or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr)


@dataclass
class Checkpoint:
    """One checkpoint of the run: its result-file stem and a function putting its weights into the model."""

    stem: str
    apply: Callable[[], None]


def answer_datasets(
    pipe: AffectGPTPipeline,
    datasets: Sequence[tuple[DatasetSpec, Sequence[Sample]]],
    checkpoints: Sequence[Checkpoint],
    out: str | Path,
    run: str,
    gen: GenerationConfig,
    shard: Shard = Shard(),
    batch_size: int = 8,
    progress: bool = True,
    cache=None,
) -> dict[tuple[str, str], int]:
    """Answer every (checkpoint, dataset) pair still open; returns (dataset, stem) -> failed clips.

    Per dataset: the clips any checkpoint still lacks are encoded once, then each checkpoint's weights are
    applied and its answers generated from those features. Unsharded runs then merge into ``<stem>.npz``.
    """
    failed: dict[tuple[str, str], int] = {}
    for spec, samples in datasets:
        directory = run_dir(out, spec, run)
        todo: dict[str, list[Sample]] = {}
        for ck in checkpoints:
            if (directory / f"{ck.stem}.npz").is_file():
                continue
            done = read_jsonl_answers(jsonl_files(directory, ck.stem))[0] if directory.is_dir() else {}
            missing = [s for s in shard.take(samples) if s.name not in done]
            if missing:
                todo[ck.stem] = missing
        needed = {s.name for rows in todo.values() for s in rows}
        if needed:
            if progress:
                print(f"affectrt: {spec.title}: {len(needed)} clips to encode", file=sys.stderr)
            needed_samples = [s for s in samples if s.name in needed]
            feats, errors = encode_clips(pipe, needed_samples, batch_size, progress, cache)
        for ck in checkpoints:
            if ck.stem in todo:
                ck.apply()
                out_path = directory / f"{ck.stem}{shard.suffix()}.jsonl"
                generate_answers(pipe, todo[ck.stem], feats, errors, out_path, gen, batch_size, progress)
            if shard.sharded:
                continue  # shards never merge: another shard may still be writing its lines
            if not (directory / f"{ck.stem}.npz").is_file():
                missing, n_failed = merge_answers(directory, ck.stem, samples)
                failed[(spec.key, ck.stem)] = n_failed
        if needed:
            del feats
    return failed
