"""Score-only on small .npz files in the release's output format (answers + judge outputs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from affectrt.cli import main

from .conftest import MINI_TEST

RUN = "emercoarse_highlevelfilter4_outputhybird_bestsetup_bestfusion_lz_20250110100"
A, B = "checkpoint_000030_loss_0.602", "checkpoint_000035_loss_0.590"
IEMOCAP, MELD = (
    ("happy", "sad", "neutral", "anger"),
    ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"),
)


def _gt_label(key, v):
    return IEMOCAP[v] if key == "iemocapfour" else MELD[v] if key == "meld" else v


# Judge outputs per checkpoint: "exact" repeats the ground-truth label (a hit on every wheel that keeps the
# sample), "[]" misses; the sentiment sets list the judge's sentiment words.
BASIC = {
    "mer2023": ("exact", "[]"),
    "mer2024": ("exact", "exact"),
    "meld": ("exact", "exact"),
    "iemocapfour": ("exact", "[]"),
}
SENTIMENT = {
    "cmumosi": (["positive", "negative", "neutral"], ["Positive", "negative", "positive"]),
    "cmumosei": (["positive", "negative"], ["positive", "negative"]),
    "sims": (["neutral", "neutral"], ["negative", "positive"]),
    "simsv2": (["positive.", "negative"], ["mixed", "mixed"]),
}


def _savez(path, names, items):
    np.savez_compressed(path, filenames=np.array(names), fileitems=np.array(items))


def write_release_results(root):
    for key, tests in MINI_TEST.items():
        names = list(tests)
        d = root / f"results-{key}" / RUN
        d.mkdir(parents=True)
        decoy = root / f"results-{key}" / "emercoarse_old_run"  # fewer checkpoint files: not picked
        decoy.mkdir()
        np.savez_compressed(decoy / f"{A}.npz", name2reason={})
        for i, stem in enumerate((A, B)):
            np.savez_compressed(
                d / f"{stem}.npz", name2reason={n: "The character's emotional state is x." for n in names}
            )
            if key in BASIC:
                mode = BASIC[key][i]
                items = [f"[{_gt_label(key, v)}]" if mode == "exact" else "[]" for v in tests.values()]
                _savez(d / f"{stem}-openset.npz", names, items)
            elif key in SENTIMENT:
                _savez(d / f"{stem}-openset.npz", names, ["[calm]"] * len(names))
                _savez(d / f"{stem}-openset-sentiment.npz", names, SENTIMENT[key][i])
            else:  # OV-MERD+: A predicts nothing (F_s = 0/0 = NaN), B repeats the ground truth
                gts = ["[happy, relaxed]", "[neutral]", "[Angry]"]
                _savez(d / f"{stem}-openset.npz", names, ["[]"] * 3 if i == 0 else gts)
    return root


@pytest.fixture(scope="module")
def release_results(tmp_path_factory):
    return write_release_results(tmp_path_factory.mktemp("output"))


def test_score_only_release_layout(capsys, tmp_path, bench_root, release_results):
    out = tmp_path / "report"
    argv = ["eval", "--score-only", "--results-root", str(release_results), "--data-root", str(bench_root)]
    assert main([*argv, "--run", "emercoarse", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert f"fixed: {B}" in printed and "best over checkpoints" in printed
    assert f"OV-MERD+: {A} scores NaN and is taken as the best" in captured.err
    data = json.loads((out / "report.json").read_text())
    ds = data["datasets"]
    # best: argmax over the sorted files, the first wins a tie (mer2024, meld, mosei, simsv2), and a NaN
    # score counts as the maximum (OV-MERD+: A's F_s is NaN, so A is "best", as np.argmax picks it)
    assert {k: v["best"] for k, v in ds.items()} == {
        "mer2023": A, "mer2024": A, "meld": A, "iemocapfour": A, "cmumosi": A, "cmumosei": A, "sims": B,
        "simsv2": A, "ovmerdplus": A,
    }  # fmt: skip
    assert all(v["fixed"] == B for v in ds.values())
    assert all(v["run_dir"].endswith(RUN) for v in ds.values())
    rows = {r["label"]: r["values"] for r in data["table"]["rows"]}
    # MOSI B: kept (T,F) (F,F) -> WAF = (1·0 + 1·2/3)/2 = 1/3; SIMS A and SIMS v2 (both files) likewise.
    best = [100, 100, 100, 100, 100, 100, 100, 33.33, None]
    fixed = [0, 100, 100, 0, 33.33, 100, 100, 33.33, 100]
    assert rows["best over checkpoints (paper protocol)"][:9] == best
    assert rows["best over checkpoints (paper protocol)"][9] is None  # mean with a NaN
    assert rows[f"fixed: {B}"] == [*fixed, pytest.approx(566.66 / 9, abs=0.01)]
    assert rows["paper AffectGPT (A,V,T)"][-1] == 74.77
    # secondary metrics come from the selected file
    assert ds["sims"]["checkpoints"][B]["acc"] == 1.0 and ds["simsv2"]["checkpoints"][A]["acc"] == 0.5
    ov = ds["ovmerdplus"]["checkpoints"]
    assert ov[A]["fscore"] is None and ov[B]["fscore"] == ov[B]["precision"] == ov[B]["recall"] == 1.0
    csv_text = (out / "report.csv").read_text().splitlines()
    assert csv_text[0].startswith("row,MER2023,MER2024,MELD,IEMOCAP,MOSI,MOSEI,SIMS,SIMS v2,OV-MERD+,Mean")
    assert len(csv_text) == 4


def test_score_only_fixed_checkpoint_and_subset(capsys, tmp_path, bench_root, release_results):
    out = tmp_path / "r"
    argv = ["eval", "--score-only", "--results-root", str(release_results), "--data-root", str(bench_root)]
    assert (
        main(
            [
                *argv,
                "--datasets",
                "mer2023,cmumosi",
                "--fixed-checkpoint",
                "30",
                "--out",
                str(out),
                "--no-chart",
            ]
        )
        == 0
    )
    data = json.loads((out / "report.json").read_text())
    assert list(data["datasets"]) == ["mer2023", "cmumosi"]
    assert data["table"]["columns"] == ["MER2023", "MOSI", "Mean (2/9)"]
    assert {r["label"] for r in data["table"]["rows"]} >= {f"fixed: {A}"}
    assert not (out / "report.png").exists()
    assert main([*argv, "--fixed-checkpoint", "99", "--out", str(out)]) == 2
    assert "--fixed-checkpoint 99: no answer files match" in capsys.readouterr().err


def test_score_only_chart(tmp_path, bench_root, release_results):
    pytest.importorskip("matplotlib")
    out = tmp_path / "c"
    argv = ["eval", "--score-only", "--results-root", str(release_results), "--data-root", str(bench_root)]
    assert main([*argv, "--datasets", "meld", "--out", str(out)]) == 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_only_missing_judge_output_is_a_clear_error(capsys, tmp_path, bench_root, release_results):
    d = tmp_path / "results-meld" / "run1"
    d.mkdir(parents=True)
    np.savez_compressed(d / f"{A}.npz", name2reason={n: "x" for n in MINI_TEST["meld"]})
    argv = ["eval", "--score-only", "--results-root", str(tmp_path), "--data-root", str(bench_root)]
    assert main([*argv, "--datasets", "meld"]) == 2
    err = capsys.readouterr().err
    assert f"{A}-openset.npz: judge output missing; pass --judge-dir" in err
    assert main([*argv, "--datasets", "mer2023"]) == 2
    assert "results-mer2023" in capsys.readouterr().err and not math.isnan(0)


def test_eval_help_documents_the_modes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--score-only", "--results-root", "--shard", "--merge", "--judge-dir", "--fixed-checkpoint"):
        assert flag in text


def test_score_only_reads_affectrt_json_lines(tmp_path, bench_root):
    from affectrt.eval.scoreonly import read_answers

    d = tmp_path / "results-meld" / "mine"
    d.mkdir(parents=True)
    names = list(MINI_TEST["meld"])
    lines = [
        {"name": names[0], "answer": "joy", "error": None},
        {"name": names[2], "answer": None, "error": "x.mp4: cannot decode"},
    ]
    (d / "checkpoint_000040.shard-0-of-2.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (d / "checkpoint_000040.shard-1-of-2.jsonl").write_text(
        json.dumps({"name": names[1], "answer": "calm"}) + "\n"
    )
    assert read_answers(d, "checkpoint_000040") == {names[0]: "joy", names[2]: "", names[1]: "calm"}
    # gt joy, neutral (skipped), surprise: judge says [joy] for the first, nothing for the failed clip
    _savez(d / "checkpoint_000040-openset.npz", names, ["[joy]", "[calm]", "[]"])
    out = tmp_path / "rep"
    argv = ["eval", "--score-only", "--results-root", str(tmp_path), "--data-root", str(bench_root)]
    assert main([*argv, "--datasets", "meld", "--out", str(out), "--no-chart"]) == 0
    ck = json.loads((out / "report.json").read_text())["datasets"]["meld"]["checkpoints"]["checkpoint_000040"]
    # wheels 1-4 keep both non-neutral samples (hit 1, miss 0) -> 1/2; wheel 5 drops "surprise" -> 1/1
    assert ck["n_w5"] == 1 and ck["hit_w5"] == 1.0
    assert ck["hit"] == pytest.approx((4 * 0.5 + 1) / 5)
