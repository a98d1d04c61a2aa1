"""``affectrt init-random``: a complete random model folder in the real formats, without transformers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from affectrt.init_random import write_random_model_dir

README = Path(__file__).resolve().parents[2] / "README.md"


def test_written_folders_load_in_affectrt_and_transformers(tmp_path):
    root = write_random_model_dir(tmp_path / "m", "tiny", seed=1)
    from affectrt.checkpoint import load_model

    model, tok = load_model(root, root / "checkpoint.pth", variant="frame")
    assert tok.generation_eos_ids == (tok.eos_id, tok.backend.token_to_id("<|endoftext|>"))
    sd = torch.load(root / "checkpoint.pth", weights_only=True)["model"]
    assert any(k.startswith("llama_model.") for k in sd) and "fc_att.weight" in sd
    transformers = pytest.importorskip("transformers")
    for sub, cls in (
        ("vision", transformers.CLIPVisionModelWithProjection),
        ("audio", transformers.HubertModel),
        ("llm", transformers.Qwen2ForCausalLM),
    ):
        _, info = cls.from_pretrained(root / sub, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], (sub, info)
    with pytest.raises(ValueError, match="is not empty"):
        write_random_model_dir(root, "tiny")


def test_the_readme_python_example_runs_as_written(tmp_path):
    """The README's init-random command and Python snippet, run as a user would (console script included)."""
    text = README.read_text()
    block = re.search(
        r"```bash\n(affectrt init-random [^\n]+)\n(python benchmarks/make_clip\.py [^\n]+)\n```\n\n```python\n(.*?)```",
        text,
        re.S,
    )
    assert block, "the README's init-random example is missing"
    init, make_clip, code = block.groups()
    script = Path(sys.executable).parent / "affectrt"
    subprocess.run([str(script), *init.split()[1:]], cwd=tmp_path, check=True, capture_output=True)
    repo = README.parent
    subprocess.run(
        [sys.executable, str(repo / make_clip.split()[1]), *make_clip.split()[2:]], cwd=tmp_path, check=True
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "the example prints each clip's answer"


def test_infer_runs_on_the_written_folder(tmp_path, clip_path):
    root = write_random_model_dir(tmp_path / "m", "tiny")
    script = Path(sys.executable).parent / "affectrt"
    argv = [
        str(script),
        "infer",
        str(clip_path),
        "--model-dir",
        str(root),
        "--checkpoint",
        str(root / "checkpoint.pth"),
    ]
    out = subprocess.run([*argv, "--max-new-tokens", "4", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout)
    assert line["error"] is None and isinstance(line["answer"], str)
