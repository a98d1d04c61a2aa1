"""A synthetic training set in the release's layout (MODEL_SPEC §3.1), made by the tests themselves."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np

NAMES = [f"sample_{i:05d}" for i in range(8)]
LABELS = [
    "[happy, excited]",
    "['sad', \"worried\"]",
    "",
    "[angry]",
    "[calm, neutral]",
    "[surprised]",
    "[happy]",
    "[sad, angry]",
]
REASONS = [
    "She smiles and her voice is bright, so she is happy.",
    "He frowns and speaks slowly; he seems sad and worried.",
    "A calm voice and a still face: neutral.",
    "He shouts and his face is tense, so he is angry.",
    "Her face is relaxed and her tone is even.",
    "Eyes wide open and a sudden gasp: surprise.",
    "A broad smile and laughter.",
    "Tears and a raised voice.",
]


def write_wav(path: Path, seconds: float, seed: int, rate: int = 16000) -> None:
    rng = np.random.default_rng(seed)
    pcm = (0.2 * rng.standard_normal(int(seconds * rate)) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_faces(path: Path, n: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(path, rng.integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8))


def make_dataset(root: Path, layout: str = "mercaptionplus", bad: tuple[str, ...] = ()) -> Path:
    """track2/track3/subtitle CSVs + audio/ + openface_face/ for NAMES; names in ``bad`` get a broken .wav."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    with open(root / f"track2_train_{layout}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "openset"])
        w.writerows(zip(NAMES, LABELS))
    with open(root / f"track3_train_{layout}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "reason"])
        w.writerows(zip(NAMES, REASONS))
    with open(root / "subtitle_chieng.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "chinese", "english"])
        for i, n in enumerate(NAMES):
            w.writerow([n, "你好", "" if i == 2 else f"I said number {i}."])
    for i, n in enumerate(NAMES):
        if n in bad:
            (root / "audio" / f"{n}.wav").write_bytes(b"RIFF not really a wav file")
        else:
            write_wav(root / "audio" / f"{n}.wav", 1.0 + 0.5 * i, seed=i)
        write_faces(root / "openface_face" / n / f"{n}.npy", 3 + i, seed=100 + i)
    return root
