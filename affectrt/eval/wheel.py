"""Emotion-wheel label mapping of MER-UniBench (MODEL_SPEC §4.1), read from the tables in ``eval/data``.

A free-form emotion word y is mapped onto the inner ring of wheel k in three steps:

    F_l1  format:   y -> base words B(y)        (``format.csv``: inflected forms, ``happier`` -> ``happy``)
    F_l2  synonym:  b -> wheel words S(b)       (``synonym.csv``: 8 runs merged by union)
    F_l3  wheel k:  w -> level-1 sector of w    (``wheel<k>.csv``: every level-1/2/3 word -> its level 1)

    G_k(y) = wheel_k[ min{ w ∈ ∪_{b ∈ B(y)} S(b) : w ∈ wheel_k } ]   (alphabetical first match), else ""

A word that is not a key of the format table maps to "" (dropped), as does one whose wheel words all miss
wheel k. The tables are the release's (Apache-2.0); their quirks are kept on purpose, since the published
numbers depend on them: ``neutral`` maps to "" on every wheel, ``fear`` to ``happy`` on wheel 2, ``surprise``
to "" on wheel 5, and a word listed under two sectors keeps the later one (wheel 2).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from affectrt.text.labels import string_to_list  # noqa: F401 - re-exported: the metrics parse with it

DATA_DIR = Path(__file__).with_name("data")
N_WHEELS = 5


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: emotion-wheel table missing; reinstall affectrt (the wheel ships eval/data/*.csv)"
        )
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_format_table(path: Path) -> dict[str, list[str]]:
    """F_l1: every form (and every base word itself) -> the base words listing it, in file order.

    Forms are parsed with :func:`string_to_list` and NOT lower-cased (as the release does); a blank form
    cell is an empty list.
    """
    mapping: dict[str, list[str]] = {}
    for row in _read_csv(path):
        base = row["name"]
        for form in string_to_list(row["format"] or None):
            mapping.setdefault(form, []).append(base)
        mapping.setdefault(base, []).append(base)
    return mapping


def read_synonym_table(path: Path, runs: int = 8) -> dict[str, list[str]]:
    """F_l2: each synonym (and each wheel word) -> the wheel words it came from, merged over ``runs`` runs.

    Per run, ``word_runN`` (stripped, lower-cased) maps to itself and each of its ``synonym_runN`` entries
    (parsed, stripped, lower-cased) maps to it; the runs are merged by set union (the order of a value
    list is irrelevant: :meth:`EmotionWheels.sector` sorts it).
    """
    rows = _read_csv(path)
    merged: dict[str, set[str]] = {}
    for run in range(1, runs + 1):
        for row in rows:
            word = row[f"word_run{run}"].strip().lower()
            merged.setdefault(word, set()).add(word)
            for syn in string_to_list(row[f"synonym_run{run}"] or None):
                merged.setdefault(syn.strip().lower(), set()).add(word)
    return {k: sorted(v) for k, v in merged.items()}


def read_wheel_table(path: Path) -> dict[str, str]:
    """F_l3: every level-1, level-2 and level-3 word of one wheel -> its level-1 sector.

    Blank cells inherit the value above (merged cells in the sheet); values are lower-cased and stripped.
    Words are assigned in sheet order, so a word under two sectors keeps the later one.
    """
    tree: dict[str, dict[str, list[str]]] = {}
    last = {"level1": "", "level2": "", "level3": ""}
    for row in _read_csv(path):
        for col in last:
            if row[col] != "":
                last[col] = row[col]
        l1, l2, l3 = (last[c].lower().strip() for c in ("level1", "level2", "level3"))
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    sector: dict[str, str] = {}
    # Insertion order as the release builds its map: sector, then each level 2 and its level-3 words.
    for l1, children in tree.items():
        sector[l1] = l1
        for l2, leaves in children.items():
            sector[l2] = l1
            for l3 in leaves:
                sector[l3] = l1
    return sector


@dataclass(frozen=True)
class EmotionWheels:
    """The three mapping tables and, for speed, G_k precomputed for every known word."""

    format_map: dict[str, list[str]]
    synonym_map: dict[str, list[str]]
    wheels: tuple[dict[str, str], ...]

    @classmethod
    def load(cls, data_dir: str | Path = DATA_DIR) -> EmotionWheels:
        d = Path(data_dir)
        return cls(
            format_map=read_format_table(d / "format.csv"),
            synonym_map=read_synonym_table(d / "synonym.csv"),
            wheels=tuple(read_wheel_table(d / f"wheel{k}.csv") for k in range(1, N_WHEELS + 1)),
        )

    def sector(self, label: str, k: int) -> str:
        """G_k(label) for wheel ``k`` in 0..4: its level-1 sector, or "" when it maps to nothing."""
        bases = self.format_map.get(label)
        if bases is None:
            return ""
        words = sorted(w for b in bases for w in self.synonym_map.get(b, ()))
        wheel = self.wheels[k]
        for w in words:
            if w in wheel:
                return wheel[w]
        return ""

    def sectors(self, labels: Iterable[str], k: int) -> set[str]:
        """{G_k(y) : y ∈ labels} without "" (labels are used as given: normalise them first)."""
        out = {self.sector(y, k) for y in labels}
        out.discard("")
        return out


@lru_cache(maxsize=1)
def default_wheels() -> EmotionWheels:
    """The release's tables shipped in ``affectrt/eval/data`` (loaded once per process)."""
    return EmotionWheels.load(DATA_DIR)


def normalise_labels(value: object) -> list[str]:
    """``string_to_list`` then lower-case and strip each item, as the metrics do before mapping."""
    return [str(item).lower().strip() for item in string_to_list(value)]
