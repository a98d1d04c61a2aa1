"""Readers for the nine MER-UniBench test sets in the release's ``*-process/`` layouts (MODEL_SPEC §3.2).

Each reader returns the test split as :class:`Sample` rows in the stored order (that order fixes only the
order of generation and of the result files): the media paths, the subtitle the release reads and the ground
truth the metric needs (a label string for the basic-emotion sets, MELD's and IEMOCAP's integer labels
already turned into strings; a valence float for the sentiment sets; a ``", "``-joined label string for
OV-MERD+).

Deliberate difference: the release's dataset classes also read the train split (and fail without it); these
readers read only what the test split needs, so a root holding just the test data loads.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectrt.eval.wheel import string_to_list

# Cells pandas' read_csv turns into NaN, which the release then replaces by "" (an empty subtitle).
_PANDAS_NA = frozenset(
    "#N/A,#N/A N/A,#NA,-1.#IND,-1.#QNAN,-NaN,-nan,1.#IND,1.#QNAN,<NA>,N/A,NA,NULL,NaN,None,n/a,nan,null".split(
        ","
    )
)
IEMOCAP_LABELS = ("happy", "sad", "neutral", "anger")
MELD_LABELS = ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise")


class DatasetError(ValueError):
    """A dataset folder does not have the release's layout; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    """One test clip: media paths (the pipeline reads faces or frames per model variant), subtitle, truth."""

    name: str
    video: Path
    audio: Path
    face: Path
    subtitle: str
    gt: str | float


@dataclass(frozen=True)
class DatasetSpec:
    """``key``: the result-folder name (``results-<key>``); ``task``: "basic", "sentiment" or "fine"."""

    key: str
    title: str
    folder: str
    task: str
    expected: int
    reader: Callable[[Path], list[Sample]]

    def read(self, data_root: str | Path) -> list[Sample]:
        root = Path(data_root) / self.folder
        if not root.is_dir():
            raise DatasetError(
                f"{root}: no such folder; --data-root must hold the release's '{self.folder}', "
                f"or leave {self.key} out of --datasets"
            )
        return self.reader(root)


def _npz_split(path: Path, key: str) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: label file missing; expected the release's '*-process' layout")
    with np.load(path, allow_pickle=True) as z:
        if key not in z.files:
            raise DatasetError(f"{path}: no '{key}' entry (it has {sorted(z.files)}); not the release's file")
        return z[key].tolist()


def _csv_column(path: Path, column: str) -> dict[str, str]:
    """name -> cell of ``column``; empty or NaN-like cells become "" (pandas NaN, then the release's "")."""
    if not path.is_file():
        raise DatasetError(f"{path}: subtitle file missing; expected the release's '*-process' layout")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "name" not in reader.fieldnames or column not in reader.fieldnames:
            raise DatasetError(
                f"{path}: expected the columns 'name' and '{column}', found {reader.fieldnames}"
            )
        return {row["name"]: ("" if row[column] in _PANDAS_NA else row[column]) for row in reader}


def _csv_names(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row["name"] for row in csv.DictReader(f)]


def _subtitle(subs: dict[str, str], name: str, path: Path) -> str:
    try:
        return subs[name]
    except KeyError:
        raise DatasetError(
            f"{path}: no subtitle row for test clip {name!r}; the file is incomplete"
        ) from None


def _sample(root: Path, name: str, video: Path, audio_dir: str, subtitle: str, gt: str | float) -> Sample:
    return Sample(
        name=name,
        video=video,
        audio=root / audio_dir / f"{name}.wav",
        face=root / "openface_face" / f"{name}.npy",
        subtitle=subtitle,
        gt=gt,
    )


def _mp4_else_avi(folder: Path, name: str) -> Path:
    mp4 = folder / f"{name}.mp4"
    return mp4 if mp4.exists() else folder / f"{name}.avi"


def _mer(labels: str, subtitles: str, column: str) -> Callable[[Path], list[Sample]]:
    def read(root: Path) -> list[Sample]:
        split = _npz_split(root / labels, "test1_corpus")
        sub_path = root / subtitles
        subs = _csv_column(sub_path, column)
        out = []
        for name, item in split.items():
            name = str(name)
            video = _mp4_else_avi(root / "video", name)
            out.append(_sample(root, name, video, "audio", _subtitle(subs, name, sub_path), str(item["emo"])))
        return out

    return read


def _read_iemocap(root: Path) -> list[Sample]:
    corpus = _npz_split(root / "label_4way.npz", "whole_corpus")
    sub_path = root / "transcription-engchi-polish.csv"
    subs = _csv_column(sub_path, "english")
    out = []
    for name, item in corpus.items():
        name = str(name)
        if len(name) < 5 or not name[4].isdigit():
            raise DatasetError(f"{root / 'label_4way.npz'}: {name!r} is not an IEMOCAP name (SesNN...)")
        if int(name[4]) - 1 != 4:  # Session 5 is the test split
            continue
        video = root / "subvideo-tgt" / f"{name}.avi"
        gt = IEMOCAP_LABELS[int(item["emo"])]
        out.append(_sample(root, name, video, "subaudio", _subtitle(subs, name, sub_path), gt))
    return out


def _plain(video_dir: str, audio_dir: str, task: str) -> Callable[[Path], list[Sample]]:
    """MELD and the four sentiment sets: ``label.npz`` ``test_corpus``, English subtitles, ``.mp4`` clips."""

    def read(root: Path) -> list[Sample]:
        split = _npz_split(root / "label.npz", "test_corpus")
        sub_path = root / "transcription-engchi-polish.csv"
        subs = _csv_column(sub_path, "english")
        out = []
        for name, item in split.items():
            name = str(name)
            gt = MELD_LABELS[int(item["emo"])] if task == "basic" else float(item["val"])
            video = root / video_dir / f"{name}.mp4"
            out.append(_sample(root, name, video, audio_dir, _subtitle(subs, name, sub_path), gt))
        return out

    return read


def _read_ovmerdplus(root: Path) -> list[Sample]:
    sub_path = root / "subtitle_eng.csv"
    subs = _csv_column(sub_path, "sentence")
    labels = _csv_column(root / "ovlabel.csv", "openset")
    out = []
    for name in _csv_names(sub_path):  # the test split is the subtitle file's name column, in file order
        if name not in labels:
            raise DatasetError(f"{root / 'ovlabel.csv'}: no label row for test clip {name!r}")
        gt = ", ".join(string_to_list(labels[name] or None) or ["neutral"])
        out.append(_sample(root, name, root / "video" / f"{name}.mp4", "audio", subs[name], gt))
    return out


DATASETS: dict[str, DatasetSpec] = {
    s.key: s
    for s in (
        DatasetSpec(
            "mer2023",
            "MER2023",
            "mer2023-dataset-process",
            "basic",
            411,
            _mer("label-6way.npz", "transcription-engchi-polish.csv", "english"),
        ),
        DatasetSpec(
            "mer2024",
            "MER2024",
            "mer2024-dataset-process",
            "basic",
            1169,
            _mer("label-6way.npz", "transcription_merge.csv", "chinese"),
        ),
        DatasetSpec("meld", "MELD", "meld-process", "basic", 2610, _plain("subvideo", "subaudio", "basic")),
        DatasetSpec("iemocapfour", "IEMOCAP", "iemocap-process", "basic", 1241, _read_iemocap),
        DatasetSpec(
            "cmumosi",
            "MOSI",
            "cmumosi-process",
            "sentiment",
            686,
            _plain("subvideo", "subaudio", "sentiment"),
        ),
        DatasetSpec(
            "cmumosei",
            "MOSEI",
            "cmumosei-process",
            "sentiment",
            4659,
            _plain("subvideo_new", "subaudio", "sentiment"),
        ),
        DatasetSpec("sims", "SIMS", "sims-process", "sentiment", 457, _plain("video", "audio", "sentiment")),
        DatasetSpec(
            "simsv2",
            "SIMS v2",
            "simsv2-process",
            "sentiment",
            1034,
            _plain("video_new", "audio", "sentiment"),
        ),
        DatasetSpec("ovmerdplus", "OV-MERD+", "ovmerdplus-process", "fine", 532, _read_ovmerdplus),
    )
}
_ALIASES = {"iemocap": "iemocapfour", "mosi": "cmumosi", "mosei": "cmumosei", "ovmerd+": "ovmerdplus"}


def resolve_datasets(spec: str | None) -> list[DatasetSpec]:
    """``"mer2023,meld"`` (case-insensitive; ``iemocap``, ``mosi``, ``mosei`` accepted) -> specs in the paper's
    order; None or "all" -> all nine. Raises ValueError naming an unknown key and the valid ones."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(DATASETS.values())
    keys = []
    for raw in spec.split(","):
        key = raw.strip().lower()
        key = _ALIASES.get(key, key)
        if key not in DATASETS:
            raise ValueError(
                f"--datasets {spec}: unknown dataset {raw.strip()!r}; choose from {', '.join(DATASETS)}"
            )
        keys.append(key)
    return [s for k, s in DATASETS.items() if k in keys]
