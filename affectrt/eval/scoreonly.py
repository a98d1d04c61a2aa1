"""Scoring answers already produced: the release's output layout, or affectrt's (MODEL_SPEC §4.1, §4.5, §5.1).

Layout, per dataset key (``mer2023`` ... ``ovmerdplus``) and run folder::

    <results-root>/results-<key>/<run>/<stem>.npz                      answers: name2reason = {name: text}
    <results-root>/results-<key>/<run>/<stem>-openset.npz              judge: filenames, fileitems (label list)
    <results-root>/results-<key>/<run>/<stem>-openset-sentiment.npz    judge, sentiment sets: one word each
    <results-root>/results-<key>/<run>/<stem>[.shard-i-of-n].jsonl     affectrt's answers as they are written

One ``stem`` is one checkpoint (``checkpoint_000030_loss_0.602``). Every answer file of the folder is scored,
in sorted name order; names containing ``openset`` or ``sentiment`` are judge outputs, not answers. The
paper's number per dataset is the best file by the primary metric (``np.argmax``: the first file wins a tie,
and a NaN score wins outright, as in NumPy); the secondary metrics are those of that same file. The honest
number is one fixed checkpoint for every dataset, reported next to it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectrt.eval.datasets import DatasetSpec, Sample
from affectrt.eval.metrics import fine_grained_scores, hit_rate, sentiment_scores
from affectrt.eval.wheel import EmotionWheels

PRIMARY = {"basic": "hit", "sentiment": "waf", "fine": "fscore"}
SECONDARY = {"basic": (), "sentiment": ("acc",), "fine": ("precision", "recall")}
OPENSET_SUFFIX = "-openset.npz"
SENTIMENT_SUFFIX = "-openset-sentiment.npz"
_SHARD = re.compile(r"\.shard-\d+-of-\d+$")


class ScoreError(ValueError):
    """Answers or judge outputs are missing or malformed; the message names the file and the fix."""


# ----- files -----------------------------------------------------------------------------------------------


def find_run_dir(results_root: str | Path, key: str, run: str = "") -> Path:
    """``results-<key>/<run>``; if it does not exist, the folder ``results-<key>/<run>*`` holding the most
    files named ``checkpoint_*`` without a ``-`` (the release's ``search_for_result_root``; first in sorted
    order on a tie). ``run=""`` therefore picks among all run folders of the dataset."""
    base = Path(results_root) / f"results-{key}"
    exact = base / run
    if run and exact.is_dir():
        return exact
    candidates = sorted(p for p in base.glob(f"{run}*") if p.is_dir()) if base.is_dir() else []
    if not candidates:
        raise ScoreError(
            f"{base / (run or '*')}: no run folder; expected the release's output layout "
            "(results-<dataset>/<run>/checkpoint_*.npz): check --results-root and --run"
        )
    counts = [
        sum(1 for f in p.iterdir() if f.name.startswith("checkpoint_") and "-" not in f.name)
        for p in candidates
    ]
    return candidates[int(np.argmax(counts))]


def answer_stems(run_dir: Path) -> list[str]:
    """The checkpoints answered in ``run_dir``: stems of ``*.npz`` (not judge outputs) and ``*.jsonl``, sorted."""
    stems = set()
    for p in run_dir.iterdir():
        if p.suffix == ".npz" and "openset" not in p.name and "sentiment" not in p.name:
            stems.add(p.stem)
        elif p.suffix == ".jsonl":
            stems.add(_SHARD.sub("", p.stem))
    return sorted(stems)


def read_jsonl_answers(paths: Sequence[Path]) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> answer, name -> error) from affectrt's JSON lines; a failed clip's answer is "".

    A last line without its newline was cut short by a killed run and is ignored (the clip counts as
    unanswered).
    """
    answers, errors = {}, {}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()  # unfinished by a killed run: that clip is answered again
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                name = rec["name"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ScoreError(
                    f"{path}:{i}: not an affectrt result line ({{'name', 'answer', 'error'}})"
                ) from None
            answers[name] = rec.get("answer") or ""
            if rec.get("error"):
                errors[name] = rec["error"]
    return answers, errors


def jsonl_files(run_dir: Path, stem: str) -> list[Path]:
    files = [run_dir / f"{stem}.jsonl"] + sorted(run_dir.glob(f"{stem}.shard-*-of-*.jsonl"))
    return [p for p in files if p.is_file()]


def read_answers(run_dir: Path, stem: str) -> dict[str, str]:
    """name -> answer text: ``<stem>.npz`` (``name2reason``) if present, else the JSON lines of that stem."""
    npz = run_dir / f"{stem}.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=True) as z:
            if "name2reason" not in z.files:
                raise ScoreError(f"{npz}: no 'name2reason' entry; not an answer file of the release")
            return {str(k): str(v) for k, v in z["name2reason"].tolist().items()}
    files = jsonl_files(run_dir, stem)
    if not files:
        raise ScoreError(f"{npz}: answers not found (neither .npz nor .jsonl)")
    return read_jsonl_answers(files)[0]


def write_answers_npz(path: Path, name2reason: Mapping[str, str]) -> None:
    """The release's answer file: ``np.savez_compressed(path, name2reason=dict)`` (a 0-d object array)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, name2reason=dict(name2reason))
    tmp.replace(path)


def read_judge_cache(path: Path) -> dict[str, str]:
    """name -> the judge's string, from a ``filenames`` / ``fileitems`` npz."""
    with np.load(path, allow_pickle=False) as z:
        if "filenames" not in z.files or "fileitems" not in z.files:
            raise ScoreError(f"{path}: expected the arrays 'filenames' and 'fileitems' (a judge output file)")
        return {str(n): str(i) for n, i in zip(z["filenames"], z["fileitems"])}


def write_judge_cache(path: Path, names: Sequence[str], items: Sequence[str]) -> None:
    """Arrays ``filenames`` and ``fileitems`` as NumPy unicode arrays, as the release writes them."""
    tmp = path.with_name(path.name[: -len(".npz")] + ".tmp.npz")
    np.savez_compressed(
        tmp, filenames=np.array(list(names), dtype=str), fileitems=np.array(list(items), dtype=str)
    )
    tmp.replace(path)


# ----- scoring ---------------------------------------------------------------------------------------------

# Called for a (run_dir, stem, task) whose judge caches are missing; it must write them (see judge.py).
JudgeHook = Callable[[Path, str, str], None]


def score_checkpoint(
    spec: DatasetSpec,
    samples: Sequence[Sample],
    run_dir: Path,
    stem: str,
    wheels: EmotionWheels | None = None,
    judge: JudgeHook | None = None,
) -> dict[str, float]:
    """All metrics of one checkpoint's answers on one dataset, from the judge caches next to them."""
    openset = run_dir / f"{stem}{OPENSET_SUFFIX}"
    sentiment = run_dir / f"{stem}{SENTIMENT_SUFFIX}"
    needed = [openset] + ([sentiment] if spec.task == "sentiment" else [])
    if any(not p.is_file() for p in needed):
        if judge is None:
            missing = next(p for p in needed if not p.is_file())
            raise ScoreError(
                f"{missing}: judge output missing; pass --judge-dir (a Qwen2.5-Instruct folder) to extract "
                "the labels, or score only runs whose judge outputs exist"
            )
        judge(run_dir, stem, spec.task)
    what = str(openset)
    if spec.task == "basic":
        return hit_rate({s.name: s.gt for s in samples}, read_judge_cache(openset), wheels, what=what)
    if spec.task == "fine":
        return fine_grained_scores(
            {s.name: s.gt for s in samples}, read_judge_cache(openset), wheels, what=what
        )
    return sentiment_scores({s.name: s.gt for s in samples}, read_judge_cache(sentiment), what=str(sentiment))


def argmax_first(values: Sequence[float]) -> int:
    """``np.argmax``: index of the first maximum; a NaN counts as the maximum (its first occurrence wins)."""
    return int(np.argmax(np.asarray(values, dtype=float)))


def select_fixed(stems: Sequence[str], fixed: str | None) -> str:
    """The fixed checkpoint: ``fixed`` as a stem, a stem prefix or an epoch number; default the last stem."""
    if not stems:
        raise ScoreError("no answer files to choose a fixed checkpoint from")
    if fixed is None:
        return stems[-1]
    if fixed in stems:
        return fixed
    prefix = f"checkpoint_{int(fixed):06d}" if fixed.isdigit() else fixed
    matches = [s for s in stems if s.startswith(prefix)]
    if len(matches) != 1:
        raise ScoreError(
            f"--fixed-checkpoint {fixed}: {'no' if not matches else len(matches)} answer files match "
            f"(have: {', '.join(stems)}); give a stem, a unique prefix or an epoch number"
        )
    return matches[0]


@dataclass
class DatasetResult:
    """Per-checkpoint metrics of one dataset and the two selections (the paper's best and a fixed one)."""

    key: str
    title: str
    task: str
    run_dir: str
    n_samples: int
    checkpoints: dict[str, dict[str, float]] = field(default_factory=dict)
    best: str = ""
    fixed: str = ""

    @property
    def primary(self) -> str:
        return PRIMARY[self.task]

    def value(self, which: str, metric: str | None = None) -> float:
        """A metric (default: the primary one) of the ``"best"`` or ``"fixed"`` checkpoint."""
        stem = self.best if which == "best" else self.fixed
        return self.checkpoints[stem].get(metric or self.primary, math.nan)


def score_dataset(
    spec: DatasetSpec,
    samples: Sequence[Sample],
    run_dir: Path,
    fixed: str | None = None,
    wheels: EmotionWheels | None = None,
    judge: JudgeHook | None = None,
    stems: Sequence[str] | None = None,
) -> DatasetResult:
    """Score every answer file of ``run_dir`` (or ``stems``) and pick the best and the fixed checkpoint."""
    stems = list(stems) if stems is not None else answer_stems(run_dir)
    if not stems:
        raise ScoreError(f"{run_dir}: no answer files (*.npz or *.jsonl)")
    result = DatasetResult(spec.key, spec.title, spec.task, str(run_dir), len(samples))
    for stem in stems:
        result.checkpoints[stem] = score_checkpoint(spec, samples, run_dir, stem, wheels, judge)
    primaries = [result.checkpoints[s][result.primary] for s in stems]
    result.best = stems[argmax_first(primaries)]
    result.fixed = select_fixed(stems, fixed)
    return result
