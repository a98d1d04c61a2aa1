"""`affectrt eval` end to end on the miniature benchmark: tiny random AffectGPT, tiny random judge."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from affectrt.cli import main
from affectrt.eval.datasets import DATASETS

from .conftest import MINI_TEST

SENTIMENT = ("cmumosi", "cmumosei", "sims", "simsv2")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two affectrt checkpoints of the tiny face model with different random trainable weights."""
    import torch

    from affectrt.checkpoint import save_checkpoint
    from affectrt.config import get_preset
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.testing.hf_models import randomize_trainable

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = AffectGPT(get_preset("tiny").replace(visual_input="face"))
    paths = []
    for i, epoch in enumerate((30, 35)):
        randomize_trainable(model, seed=10 + i, scale=0.3)
        paths.append(d / f"checkpoint_{epoch:06d}.safetensors")
        save_checkpoint(model, paths[-1])
    return [str(p) for p in paths]


def _argv(bench, out, judge, *extra):
    return [
        "eval", "--data-root", str(bench), "--out", str(out), "--judge-dir", str(judge), "--judge", "greedy",
        "--judge-max-new-tokens", "4", "--max-new-tokens", "4", "--batch-size", "4", "--no-chart", *extra,
    ]  # fmt: skip


def _answers(path):
    with np.load(path, allow_pickle=True) as z:
        return z["name2reason"].tolist()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, bench_root, tiny_judge_dir, checkpoints):
    out = tmp_path_factory.mktemp("full")
    assert main(_argv(bench_root, out, tiny_judge_dir, "--checkpoint", checkpoints[0])) == 0
    return out


def test_full_run_writes_release_layout_and_report(full_run, capsys):
    for key, tests in MINI_TEST.items():
        d = full_run / f"results-{key}" / "affectrt"
        for stem in ("checkpoint_000030",):
            answers = _answers(d / f"{stem}.npz")
            assert list(answers) == list(tests)  # test-name order
            assert all(isinstance(a, str) for a in answers.values())
            with np.load(d / f"{stem}-openset.npz") as z:
                assert list(z["filenames"]) == list(tests)
            assert (d / f"{stem}-openset-sentiment.npz").is_file() == (key in SENTIMENT)
            lines = (d / f"{stem}.jsonl").read_text().splitlines()
            assert sorted(json.loads(x)["name"] for x in lines) == sorted(tests)
    data = json.loads((full_run / "report.json").read_text())
    assert list(data["datasets"]) == list(DATASETS)  # the paper's order
    assert all(list(v["checkpoints"]) == ["checkpoint_000030"] for v in data["datasets"].values())
    assert (full_run / "report.csv").is_file()


def test_rerun_is_free(full_run, bench_root, tiny_judge_dir, checkpoints, capsys, monkeypatch):
    import affectrt.eval.runner as runner

    def boom(*a, **k):
        raise AssertionError("nothing should be generated on a rerun")

    monkeypatch.setattr(runner, "encode_clips", boom)
    monkeypatch.setattr(runner, "generate_answers", boom)
    monkeypatch.setattr("affectrt.eval.judge.Judge.complete", boom)
    before = {p: p.stat().st_mtime_ns for p in full_run.rglob("*.npz")}
    assert main(_argv(bench_root, full_run, tiny_judge_dir, "--checkpoint", checkpoints[0])) == 0
    assert {p: p.stat().st_mtime_ns for p in full_run.rglob("*.npz")} == before
    assert "best over checkpoints" in capsys.readouterr().out
    # score-only on affectrt's own results gives the same report
    report = json.loads((full_run / "report.json").read_text())
    assert (
        main(
            [
                "eval",
                "--score-only",
                "--results-root",
                str(full_run),
                "--data-root",
                str(bench_root),
                "--no-chart",
            ]
        )
        == 0
    )
    assert json.loads((full_run / "report.json").read_text())["datasets"] == report["datasets"]


def test_sharded_equals_unsharded(full_run, tmp_path, bench_root, tiny_judge_dir, checkpoints, monkeypatch):
    import affectrt.eval.runner as runner

    encoded, real_encode = [], runner.encode_clips
    monkeypatch.setattr(
        runner, "encode_clips", lambda pipe, s, *a: encoded.extend(s) or real_encode(pipe, s, *a)
    )
    subset = ["--datasets", "mer2023,cmumosi", "--checkpoint", *checkpoints]
    for shard in ("1/2", "0/2"):
        assert main(_argv(bench_root, tmp_path, tiny_judge_dir, *subset, "--shard", shard)) == 0
    assert len(encoded) == len({s.name for s in encoded}) == 6  # each clip encoded once for both checkpoints
    assert not list(tmp_path.rglob("checkpoint_000030.npz"))  # shards never merge
    assert main(_argv(bench_root, tmp_path, tiny_judge_dir, *subset, "--merge")) == 0
    for key in ("mer2023", "cmumosi"):
        ours = tmp_path / f"results-{key}" / "affectrt"
        ref = full_run / f"results-{key}" / "affectrt"
        assert _answers(ours / "checkpoint_000030.npz") == _answers(ref / "checkpoint_000030.npz")
        assert len(list(ours.glob("checkpoint_000030.shard-*-of-2.jsonl"))) == 2
        for name in ("checkpoint_000030-openset.npz",):
            with np.load(ours / name) as a, np.load(ref / name) as b:
                assert list(a["fileitems"]) == list(b["fileitems"])
        assert _answers(ours / "checkpoint_000035.npz") != _answers(ours / "checkpoint_000030.npz")
    data = json.loads((tmp_path / "report.json").read_text())
    for v in data["datasets"].values():  # both checkpoints scored; the fixed one is the last
        assert list(v["checkpoints"]) == ["checkpoint_000030", "checkpoint_000035"]
        assert v["fixed"] == "checkpoint_000035" and v["best"] in v["checkpoints"]


def test_merge_with_a_missing_shard_is_a_clear_error(
    tmp_path, bench_root, tiny_judge_dir, checkpoints, capsys
):
    subset = ["--datasets", "cmumosi", "--checkpoint", checkpoints[0]]
    assert main(_argv(bench_root, tmp_path, tiny_judge_dir, *subset, "--shard", "0/2")) == 0
    capsys.readouterr()
    assert main(_argv(bench_root, tmp_path, tiny_judge_dir, *subset, "--merge")) == 2
    assert "1 of 3 MOSI clips unanswered" in capsys.readouterr().err


def test_resume_after_interruption_and_bad_clip(
    full_run, tmp_path, bench_root, tiny_judge_dir, checkpoints, monkeypatch
):
    import affectrt.pipeline as pipeline

    root = tmp_path / "data"
    shutil.copytree(bench_root / "mer2023-dataset-process", root / "mer2023-dataset-process")
    out = tmp_path / "out"
    argv = _argv(
        root,
        out,
        tiny_judge_dir,
        "--datasets",
        "mer2023",
        "--checkpoint",
        checkpoints[0],
        "--batch-size",
        "1",
    )
    real, calls = pipeline.AffectGPTPipeline.generate, []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(pipeline.AffectGPTPipeline, "generate", interrupted)
    assert main(argv) == 130  # Ctrl-C: "interrupted", exit 130, what was answered is kept
    d = out / "results-mer2023" / "affectrt"
    assert (
        len((d / "checkpoint_000030.jsonl").read_text().splitlines()) == 1
        and not (d / "checkpoint_000030.npz").exists()
    )
    monkeypatch.setattr(pipeline.AffectGPTPipeline, "generate", real)
    with (d / "checkpoint_000030.jsonl").open("a") as f:
        f.write('{"name": "sample_00000003", "ans')  # a line cut short by the kill
    assert main(argv) == 0
    assert len((d / "checkpoint_000030.jsonl").read_text().splitlines()) == 3  # only the rest was answered
    ref = _answers(full_run / "results-mer2023" / "affectrt" / "checkpoint_000030.npz")
    assert _answers(d / "checkpoint_000030.npz") == ref

    # a clip whose faces cannot be read is recorded with its error and answered "", the run goes on
    bad = root / "mer2023-dataset-process" / "openface_face" / "sample_00000003.npy"
    bad.write_bytes(b"junk")
    out2 = tmp_path / "out2"
    assert main(_argv(root, out2, tiny_judge_dir, "--datasets", "mer2023")) == 0
    d2 = out2 / "results-mer2023" / "affectrt"
    records = {
        json.loads(x)["name"]: json.loads(x) for x in (d2 / "untrained.jsonl").read_text().splitlines()
    }
    assert (
        "sample_00000003" in records["sample_00000003"]["error"]
        and records["sample_00000007"]["error"] is None
    )
    assert _answers(d2 / "untrained.npz")["sample_00000003"] == ""


def test_torchrun_equals_single_process(full_run, tmp_path, bench_root, tiny_judge_dir, checkpoints):
    import subprocess
    import sys

    args = _argv(
        bench_root, tmp_path, tiny_judge_dir, "--datasets", "mer2023,cmumosi", "--checkpoint", checkpoints[0]
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "-m",
        "affectrt.cli",
        *args,
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    for key in ("mer2023", "cmumosi"):
        ours, ref = tmp_path / f"results-{key}" / "affectrt", full_run / f"results-{key}" / "affectrt"
        assert _answers(ours / "checkpoint_000030.npz") == _answers(ref / "checkpoint_000030.npz")
        assert len(list(ours.glob("checkpoint_000030.shard-*-of-2.jsonl"))) == 2
        with (
            np.load(ours / "checkpoint_000030-openset.npz") as a,
            np.load(ref / "checkpoint_000030-openset.npz") as b,
        ):
            assert list(a["fileitems"]) == list(b["fileitems"])


def test_feature_cache_spares_the_encoders_on_the_next_run(
    full_run, tmp_path, bench_root, tiny_judge_dir, checkpoints, monkeypatch
):
    import affectrt.pipeline as pipeline

    cache = tmp_path / "features"
    first = tmp_path / "first"
    extra = ("--datasets", "mer2023", "--checkpoint", checkpoints[0], "--feature-cache", str(cache))
    assert main(_argv(bench_root, first, tiny_judge_dir, *extra)) == 0
    assert list((cache / "shards").glob("*.safetensors"))

    def no_encoders(self, batch):
        raise AssertionError("the encoders ran although the cache holds every clip")

    monkeypatch.setattr(pipeline.AffectGPTPipeline, "encode", no_encoders)
    second = tmp_path / "second"
    assert main(_argv(bench_root, second, tiny_judge_dir, *extra)) == 0
    stem = "checkpoint_000030"
    a = _answers(first / "results-mer2023" / "affectrt" / f"{stem}.npz")
    b = _answers(second / "results-mer2023" / "affectrt" / f"{stem}.npz")
    assert a == b == _answers(full_run / "results-mer2023" / "affectrt" / f"{stem}.npz")
