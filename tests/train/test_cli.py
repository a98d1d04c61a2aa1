"""`affectrt train` / `affectrt features` from the command line; the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from affectrt.cli import build_parser, main
from affectrt.train.recipe import RecipeError, example_recipes, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_help_documents_training(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for word in (
        "--resume",
        "affectgpt-2025",
        "affectgpt-2024",
        "cached (default)",
        "release-exact",
        "torchrun",
        "metrics.jsonl",
    ):
        assert word in text, word


def test_shipped_recipes_carry_the_release_hyperparameters():
    assert {"affectgpt-2025", "affectgpt-2024", "smoke"} <= set(example_recipes())
    r = load_recipe("affectgpt-2025")
    (s,) = r.stages
    assert (s.init_lr, s.min_lr, s.warmup_lr, s.warmup_steps) == (1e-5, 1e-5, 1e-6, 5000)
    assert (s.max_epoch, s.iters_per_epoch, s.batch_size, s.accum_grad_iters) == (60, 5000, 3, 1)
    assert (s.weight_decay, s.max_length, s.clip_grad, s.dataset.label_type) == (0.05, 1024, None, "hybird")
    assert r.amp == "fp16" and r.seed == 42 and r.features.mode == "cached"
    two = load_recipe("affectgpt-2024")
    assert [s.dataset.layout for s in two.stages] == ["mercaption", "ovmerd"]
    for name in example_recipes():  # configs/ holds the same files
        assert (REPO / "configs" / f"{name}.yaml").read_text() == (
            REPO / "affectrt/train/recipes" / f"{name}.yaml"
        ).read_text()


def test_recipe_errors_name_the_key():
    with pytest.raises(RecipeError, match=r"stages\[0\]: unknown key\(s\) \['lr'\]"):
        recipe_from_dict({"name": "x", "stages": [{"name": "a", "dataset": {"root": "."}, "lr": 1}]})
    with pytest.raises(RecipeError, match="missing required key"):
        recipe_from_dict({"name": "x", "stages": [{"name": "a"}]})
    with pytest.raises(RecipeError, match="amp='fp8'"):
        recipe_from_dict({"name": "x", "amp": "fp8", "stages": [{"name": "a", "dataset": {"root": "."}}]})


def test_features_then_train_from_the_command_line(tmp_path, dataset_root, capsys):
    data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    sets = [f"--set=stages.0.dataset.root={dataset_root}", f"--set=features.cache={tmp_path / 'cache'}",
            "--set=stages.0.iters_per_epoch=2", "--set=stages.0.max_epoch=1", "--set=plot=false"]  # fmt: skip
    assert main(["features", str(tmp_path / "r.yaml"), "--no-progress", *sets]) == 0
    assert "7 computed, 0 already cached, 1 skipped" in capsys.readouterr().out
    assert main(["features", str(tmp_path / "r.yaml"), "--no-progress", *sets]) == 0
    assert "0 computed, 7 already cached" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "r.yaml"), "--no-progress", "--output-dir", str(out), *sets]) == 0
    assert (out / "mercaptionplus" / "final.safetensors").is_file()
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
