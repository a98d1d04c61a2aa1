"""Ordinary mistakes, through the real console script: one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def affectrt(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    script = Path(sys.executable).parent / "affectrt"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "affectrt.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def assert_one_line(result: subprocess.CompletedProcess, *words: str, code: int = 2) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("affectrt: "), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mistakes")
    (d / "clip.mp4").write_bytes(b"\x00" * 16)
    (d / "notes.txt").write_text("hello, not a checkpoint\n")
    (d / "sound.wav").write_bytes(b"RIFF" + b"\x00" * 60)
    (d / "empty_dir").mkdir()
    (d / "header_only.csv").write_text("name,video,subtitle\n")
    (d / "path_column.csv").write_text("name,path\na,clip.mp4\n")
    (d / "dupes.csv").write_text("name,video\na,clip.mp4\na,clip.mp4\n")
    (d / "mixed.csv").write_text("name,video,face_npy\na,clip.mp4,f.npy\nb,clip.mp4,\n")
    model = d / "model"
    for sub in ("vision", "audio", "llm"):
        (model / sub).mkdir(parents=True)
        (model / sub / "config.json").write_text("{}")
    return {p.name: p for p in d.iterdir()} | {"dir": d}


CASES = {
    "model dir missing": (["infer", "@clip.mp4", "--model-dir", "@dir/nope"], ["does not exist"]),
    "model dir empty": (["infer", "@clip.mp4", "--model-dir", "@empty_dir"], ["no CLIP vision folder"]),
    "llm without tokenizer": (["infer", "@clip.mp4", "--model-dir", "@model"], ["no tokenizer.json"]),
    "checkpoint without model dir": (
        ["infer", "@clip.mp4", "--checkpoint", "@notes.txt"],
        ["without --model-dir"],
    ),
    "cuda without cuda": (["infer", "@clip.mp4", "--device", "cuda"], ["CUDA is not available"]),
    "unknown preset": (["infer", "@clip.mp4", "--preset", "huge"], ["invalid choice", "tiny"]),
    "negative tokens": (["infer", "@clip.mp4", "--max-new-tokens", "-3"], ["must be >= 1"]),
    "zero batch": (
        ["batch", "@header_only.csv", "--out", "@dir/o.jsonl", "--batch-size", "0"],
        ["must be >= 1"],
    ),
    "question typo": (["infer", "@clip.mp4", "--question", "ovlable"], ["invalid choice", "description"]),
    "csv missing": (["batch", "@dir/none.csv", "--out", "@dir/o.jsonl"], ["CSV not found"]),
    "csv header only": (["batch", "@header_only.csv", "--out", "@dir/o.jsonl"], ["no clips"]),
    "csv path column": (["batch", "@path_column.csv", "--out", "@dir/o.jsonl"], ["unknown column(s) path"]),
    "csv duplicates": (["batch", "@dupes.csv", "--out", "@dir/o.jsonl"], ["unique", "'a'"]),
    "csv mixes faces": (["batch", "@mixed.csv", "--out", "@dir/o.jsonl"], ["one job runs one model"]),
    "input missing": (["infer", "@dir/missing.mp4"], ["not found"]),
    "onnx without artifacts": (["infer", "@clip.mp4", "--encoders", "onnx"], ["needs --artifacts"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_line(files, case):
    argv, words = CASES[case]
    assert_one_line(affectrt(*(_resolve(files, a) for a in argv)), *words)


def _resolve(files: dict[str, Path], arg: str) -> str:
    """``@name`` is a file of the fixture, ``@name/rest`` a path below it."""
    if not arg.startswith("@"):
        return arg
    name, _, rest = arg[1:].partition("/")
    return str(files[name] / rest if rest else files[name])


def test_debug_shows_the_traceback(files):
    result = affectrt("--debug", "infer", str(files["clip.mp4"]), "--model-dir", str(files["dir"] / "nope"))
    assert result.returncode == 2 and "Traceback" in result.stderr and "does not exist" in result.stderr
    result = affectrt("infer", str(files["clip.mp4"]), "--model-dir", "/nope", env={"AFFECTRT_DEBUG": "1"})
    assert "Traceback" in result.stderr


def test_version_and_help_show_defaults():
    from affectrt import __version__

    assert affectrt("--version").stdout.strip() == f"affectrt {__version__}"
    help_text = affectrt("infer", "--help").stdout
    assert (
        "(default: 64)" in help_text
        and "{affectgpt-7b-face,affectgpt-7b-frame,medium,small,tiny}" in help_text
    )


def test_misleading_advice_is_never_relayed(files, tmp_path):
    """A .wav as faces must not suggest allow_pickle; a text file as a checkpoint must not suggest
    weights_only=False (that would run code from the file)."""
    from affectrt.checkpoint import trainable_tensors
    from affectrt.media.errors import MediaError
    from affectrt.media.faces import pick_faces
    from affectrt.models.hf_io import WeightsError

    with pytest.raises(MediaError) as e:
        pick_faces(files["sound.wav"])
    assert "allow_pickle" not in str(e.value) and "sound.wav" in str(e.value)
    with pytest.raises(WeightsError) as e:
        trainable_tensors(files["notes.txt"])
    assert "weights_only" not in str(e.value) and "notes.txt" in str(e.value)


def test_every_option_of_every_command_has_help_text():
    import argparse

    from affectrt.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {'/'.join(act.option_strings) or act.dest}"
        for name, command in sub.choices.items()
        for act in command._actions
        if not act.help and act.dest != "help"
    ]
    assert not missing, missing
