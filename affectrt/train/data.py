"""Training data in the release's layouts (MODEL_SPEC §3.1) and its sample rule (§2.2a).

A dataset folder (``mer2025-dataset/``) holds

    video/<name>.mp4   audio/<name>.wav   openface_face/<name>/<name>.npy   subtitle_chieng.csv
    track2_train_<set>.csv (name, openset)     track3_train_<set>.csv (name, reason)

with ``<set>`` = ``mercaptionplus`` (MER-Caption+) or ``ovmerd`` (OV-MERD = EMER-Fine); layout ``mercaption``
reads the same files for MER-Caption (EMER-Coarse; the release ships no loader for it). The older EMER
files read by layouts ``emer-v1`` (``EMER/dataset-v1/gt-eng.csv``: names, emotions, subtitles, reasons)
and ``emer-v2`` (``EMER/dataset-v2/final-EMER-reason.csv``: name, chinese, english = the description).

One training sample (:meth:`TrainingSet.draw`) follows the release's ``__getitem__``: up to 10 attempts; each
draws the label type (``hybird``: description or OV labels with p = 1/2), builds prompt and answer, and fails
when the sample exceeds ``max_length`` tokens or its features cannot be had (bad media, NaN description); a
failed attempt is logged with the clip name and reason, counted, and replaced by a uniformly random sample.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from affectrt.config import AffectGPTConfig
from affectrt.text.labels import string_to_list
from affectrt.text.prompts import DESCRIPTION_QUESTION, OVLABEL_QUESTION, build_prompt, ovlabel_answer
from affectrt.text.tokenizer import STOP_STRING, Tokenizer

log = logging.getLogger("affectrt.train")

LAYOUTS = ("mercaptionplus", "ovmerd", "mercaption", "emer-v1", "emer-v2")
LABEL_TYPES = ("hybird", "description", "ovlabel")
# The release's hybird candidates, in its order (index drawn with random.randint(0, 1)).
_HYBIRD = ("description", "ovlabel")
MAX_ATTEMPTS = 10


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and what to fix."""


@dataclass(frozen=True)
class TrainSample:
    """One row: the clip ``name``, its ``subtitle``, OV labels (None: not in this set) and ``reason``
    (the description; None: not in this set or an empty/NaN cell), and its media paths."""

    name: str
    subtitle: str
    openset: tuple[str, ...] | None
    reason: str | None
    video: Path
    audio: Path
    face: Path


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; each of ``columns`` must be present (else :class:`DataError`)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; point the stage's dataset root at the release folder")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; found {reader.fieldnames}. Expected the release layout"
            )
        return list(reader)


def _table(path: Path, key: str, value: str) -> dict[str, str]:
    return {r[key]: r[value] for r in read_csv(path, (key, value))}


def _nan(text: str | None) -> bool:
    """pandas reads an empty cell (or the literal ``nan``) as NaN."""
    return text is None or text == "" or text.lower() == "nan"


def media_paths(root: Path, name: str) -> tuple[Path, Path, Path]:
    """video, audio, face paths of a clip in the MER2025 layout (one face sub-folder per clip)."""
    return (
        root / "video" / f"{name}.mp4",
        root / "audio" / f"{name}.wav",
        root / "openface_face" / name / f"{name}.npy",
    )


def read_samples(
    root: str | Path, layout: str, subtitle_csv: str = "subtitle_chieng.csv"
) -> list[TrainSample]:
    """The rows of one training set, in file order (the release's sample order).

    For the track2/track3 layouts every name of the track2 CSV must also be in the track3 CSV and the
    subtitle CSV (the release fails with ``KeyError`` at construction; this raises :class:`DataError`).
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown dataset layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    out: list[TrainSample] = []
    if layout in ("mercaptionplus", "ovmerd", "mercaption"):
        labels = read_csv(root / f"track2_train_{layout}.csv", ("name", "openset"))
        reasons = _table(root / f"track3_train_{layout}.csv", "name", "reason")
        subs = _table(root / subtitle_csv, "name", "english")
        for row in labels:
            name = row["name"]
            for table, what in ((reasons, f"track3_train_{layout}.csv"), (subs, subtitle_csv)):
                if name not in table:
                    raise DataError(
                        f"{root / what}: no row for {name!r} (listed in track2_train_{layout}.csv)"
                    )
            reason = reasons[name]
            sub = subs[name]
            out.append(
                TrainSample(
                    name,
                    "" if _nan(sub) else sub,
                    tuple(string_to_list(None if _nan(row["openset"]) else row["openset"])),
                    None if _nan(reason) else reason,
                    *media_paths(root, name),
                )
            )
    elif layout == "emer-v1":
        for row in read_csv(
            root / "EMER" / "dataset-v1" / "gt-eng.csv", ("names", "emotions", "subtitles", "reasons")
        ):
            out.append(
                TrainSample(
                    row["names"],
                    "" if _nan(row["subtitles"]) else row["subtitles"],
                    tuple(string_to_list(None if _nan(row["emotions"]) else row["emotions"])),
                    None if _nan(row["reasons"]) else row["reasons"],
                    *media_paths(root, row["names"]),
                )
            )
    else:  # emer-v2: descriptions only; subtitles from the subtitle CSV when it is there
        sub_path = root / subtitle_csv
        subs = _table(sub_path, "name", "english") if sub_path.is_file() else {}
        for row in read_csv(root / "EMER" / "dataset-v2" / "final-EMER-reason.csv", ("name", "english")):
            sub = subs.get(row["name"], "")
            out.append(
                TrainSample(
                    row["name"],
                    "" if _nan(sub) else sub,
                    None,
                    None if _nan(row["english"]) else row["english"],
                    *media_paths(root, row["name"]),
                )
            )
    if not out:
        raise DataError(f"{root}: layout {layout!r} lists no samples")
    return out


@dataclass
class Example:
    """One drawn training example: clip ``name`` (the features' key), prompt and answer text, label type."""

    name: str
    index: int
    prompt: str
    answer: str
    label_type: str
    features: object = None


@dataclass
class SkipLog:
    """Failed attempts of a run: a count per reason kind, and the last few (name, reason) pairs."""

    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, kind: str, reason: str) -> None:
        self.count += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        log.warning("skipped sample %s (%s): %s", name, kind, reason)


class SampleError(Exception):
    """A sample that cannot be used this attempt; ``kind`` groups the reasons in the skip counts."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class TrainingSet:
    """A release training set: samples, the prompt variant, the label type and the token limit.

    ``fetch`` (optional) is called with each candidate sample and returns its features (cached Z_v/Z_a or
    decoded media), stored in :attr:`Example.features`; it raises :class:`SampleError` when they cannot be
    had (no cached features, unreadable media): the attempt then fails as in the release.
    """

    def __init__(
        self,
        samples: list[TrainSample],
        cfg: AffectGPTConfig,
        tokenizer: Tokenizer,
        label_type: str = "hybird",
        max_length: int = 1024,
        fetch: Callable[[TrainSample], object] | None = None,
    ) -> None:
        if label_type not in LABEL_TYPES:
            raise DataError(f"label_type {label_type!r} is not one of {', '.join(LABEL_TYPES)}")
        self.samples = samples
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.label_type = label_type
        self.max_length = max_length
        self.fetch = fetch
        self.skips = SkipLog()

    def __len__(self) -> int:
        return len(self.samples)

    def _qa(self, s: TrainSample, kind: str) -> tuple[str, str]:
        if kind == "ovlabel":
            if s.openset is None:
                raise SampleError("no-labels", "this set has no OV labels for the sample")
            return OVLABEL_QUESTION, ovlabel_answer(list(s.openset))
        if s.reason is None:
            raise SampleError("no-description", "empty (NaN) description")
        return DESCRIPTION_QUESTION, s.reason

    def _kind(self, s: TrainSample, rng: random.Random) -> str:
        if self.label_type != "hybird":
            return self.label_type
        kind = _HYBIRD[rng.randint(0, 1)]
        # A set without OV labels (EMER v2) has only descriptions: hybird then means description.
        return "description" if s.openset is None else kind

    def attempt(self, index: int, rng: random.Random) -> Example:
        """One attempt of the release's ``__getitem__`` at ``index``; raises :class:`SampleError`."""
        s = self.samples[index]
        kind = self._kind(s, rng)
        question, answer = self._qa(s, kind)
        prompt = build_prompt(self.cfg, s.subtitle, question)
        n = len(self.tokenizer.encode(prompt)) + len(self.tokenizer.encode(answer + STOP_STRING))
        if n > self.max_length:
            raise SampleError("too-long", f"{n} tokens > max_length {self.max_length}")
        feats = self.fetch(s) if self.fetch is not None else None
        return Example(s.name, index, prompt, answer, kind, feats)

    def draw(self, index: int, rng: random.Random) -> Example:
        """The release's sample rule: up to 10 attempts, each failure replaced by a random index."""
        last = ""
        for _ in range(MAX_ATTEMPTS):
            try:
                return self.attempt(index, rng)
            except SampleError as e:
                self.skips.add(self.samples[index].name, e.kind, str(e))
                last = f"{self.samples[index].name}: {e}"
                index = rng.randrange(len(self.samples))
        raise RuntimeError(
            f"{MAX_ATTEMPTS} attempts in a row drew unusable samples (last: {last}); check the dataset and "
            "the feature cache (affectrt features) before training"
        )
