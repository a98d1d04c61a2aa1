"""torchrun + DDP (and FSDP) on the CPU (gloo, 2 processes) = 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from affectrt.checkpoint import read_checkpoint
from affectrt.train.recipe import recipe_from_dict
from affectrt.train.runner import run_recipe

from .test_loop import recipe_dict

# Dropout off: each rank draws its own dropout masks, so only the dropout-free run can match exactly.
KW = dict(iters_per_epoch=3, batch_size=4)
MODEL = {"lora_dropout": 0.0}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, dataset_root, feature_cache):
    out = tmp_path_factory.mktemp("one")
    (res,) = run_recipe(
        recipe_from_dict(recipe_dict(out, dataset_root, feature_cache, MODEL, **KW)), progress=False
    )
    return res


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_equal_one(tmp_path, dataset_root, feature_cache, one_process, mode):
    data = recipe_dict(tmp_path / "two", dataset_root, feature_cache, MODEL, **KW)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "affectrt.cli", "train", str(tmp_path / "r.yaml"), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AFFECTRT_FSDP": "1" if mode == "fsdp" else "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "two" / "s1" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3  # rank 0 alone writes metrics and checkpoints
    want = torch.tensor(one_process.losses)
    torch.testing.assert_close(torch.tensor([r["loss"] for r in rows]), want, rtol=1e-5, atol=1e-5)
    a = read_checkpoint(one_process.final)[0]
    b = read_checkpoint(tmp_path / "two" / "s1" / "final.safetensors")[0]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    assert len(list((tmp_path / "two" / "s1").glob("checkpoint_00000*_loss_*.pth"))) == 2
