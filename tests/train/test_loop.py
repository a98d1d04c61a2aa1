"""The loop on cached features: loss falls, fused = eager, crash + resume = uninterrupted, export, NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from affectrt.train.recipe import recipe_from_dict
from affectrt.train.runner import run_recipe


def recipe_dict(out: Path, dataset_root: Path, cache: Path, model: dict | None = None, **stage) -> dict:
    st = {"name": "s1", "dataset": {"root": str(dataset_root)}, "max_epoch": 1, "iters_per_epoch": 4,
          "batch_size": 2, "init_lr": 5e-3, "min_lr": 5e-3, "save_every": 100}  # fmt: skip
    st.update(stage)
    return {"name": "t", "output_dir": str(out), "plot": False, "features": {"cache": str(cache)},
            "model": {"preset": "tiny", "tokenizer": "bpe", **(model or {})}, "stages": [st]}  # fmt: skip


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_falls_and_outputs(tmp_path, dataset_root, feature_cache):
    r = recipe_from_dict(recipe_dict(tmp_path, dataset_root, feature_cache, iters_per_epoch=15, max_epoch=2))
    r.plot = True
    (res,) = run_recipe(r, progress=False)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < first - 0.5, res.losses
    rows = metrics(tmp_path / "s1" / "metrics.jsonl")
    assert len(rows) == 30 and {"loss", "lr", "samples_per_s", "epoch", "skipped_samples"} <= set(rows[0])
    assert rows[0]["lr"] == 5e-3
    out = sorted(p.name for p in (tmp_path / "s1").iterdir())
    assert "curve.png" in out and "final.safetensors" in out and "last.pt" in out
    assert sum(n.startswith("checkpoint_00000") and n.endswith(".pth") for n in out) == 3  # epoch 0, 1, 2
    # The broken clip was drawn at some point (8 samples, 60 draws): skipped and counted, never fatal.
    assert res.skipped_samples == rows[-1]["skipped_samples"] > 0


def _backends() -> list[str]:
    out = ["auto"]  # on the CPU: the fused op's differentiable reference; on a GPU the Triton kernels
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.importorskip("triton")
        out.append("triton")
    return out


@pytest.mark.parametrize("backend", _backends())
def test_fused_modules_train_like_eager(tmp_path, dataset_root, feature_cache, backend):
    runs = {}
    for name in ("module", backend):
        r = recipe_from_dict(
            recipe_dict(
                tmp_path / name, dataset_root, feature_cache, {"fusion_backend": name}, iters_per_epoch=3
            )
        )
        (res,) = run_recipe(r, progress=False)
        from affectrt.checkpoint import read_checkpoint

        runs[name] = (res.losses, read_checkpoint(res.final)[0])
    (l_ref, p_ref), (l_fused, p_fused) = runs["module"], runs[backend]
    torch.testing.assert_close(torch.tensor(l_fused), torch.tensor(l_ref), rtol=1e-5, atol=1e-5)
    assert p_ref.keys() == p_fused.keys()
    for k in p_ref:
        torch.testing.assert_close(p_fused[k], p_ref[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(
        not torch.equal(v, torch.zeros_like(v)) for k, v in p_ref.items() if "lora_B" in k
    )  # it trained


def test_crash_and_resume_is_bit_identical(tmp_path, dataset_root, feature_cache):
    kw = dict(iters_per_epoch=5, max_epoch=2, save_every=3)
    ref = recipe_from_dict(recipe_dict(tmp_path / "ref", dataset_root, feature_cache, **kw))
    run_recipe(ref, progress=False)

    data = recipe_dict(tmp_path / "crash", dataset_root, feature_cache, **kw)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "AFFECTRT_TRAIN_KILL_AFTER": "7"}
    proc = subprocess.run([sys.executable, "-m", "affectrt.cli", "train", str(tmp_path / "r.yaml"), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL: no clean-up ran
    crash = tmp_path / "crash" / "s1"
    assert (
        torch.load(crash / "last.pt", weights_only=False)["iteration"] == 6
    )  # the last save before the kill
    assert not list(crash.glob(".*tmp"))
    assert not (crash / "final.safetensors").exists()

    run_recipe(recipe_from_dict(data), resume=True, progress=False)
    a, b = metrics(tmp_path / "ref" / "s1" / "metrics.jsonl"), metrics(crash / "metrics.jsonl")
    assert [(r["iteration"], r["loss"], r["lr"]) for r in a] == [
        (r["iteration"], r["loss"], r["lr"]) for r in b
    ]
    from affectrt.checkpoint import read_checkpoint

    pa, pb = (
        read_checkpoint(tmp_path / "ref" / "s1" / "final.safetensors")[0],
        read_checkpoint(crash / "final.safetensors")[0],
    )
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_export_loads_in_the_inference_path(tmp_path, dataset_root, feature_cache):
    from affectrt.checkpoint import load_model, read_checkpoint
    from affectrt.config import get_preset
    from affectrt.pipeline import AffectGPTPipeline, ClipInput, default_generation
    from affectrt.testing.hf_models import write_hf_model_dir

    model_dir = write_hf_model_dir(get_preset("tiny"), tmp_path / "m")
    # Trained from the model folder (LLM only: no encoder weights are read; features from the cache).
    spec = {"model_dir": str(model_dir), "variant": "face", "preset": "tiny"}
    r = recipe_from_dict(recipe_dict(tmp_path / "o", dataset_root, feature_cache, spec, iters_per_epoch=2))
    (res,) = run_recipe(r, progress=False)
    (pth,) = (tmp_path / "o" / "s1").glob("checkpoint_000001_loss_*.pth")
    model, tok = load_model(model_dir, pth, variant="face")
    trained = read_checkpoint(res.final)[0]
    got = model.trainable_state_dict()
    assert got.keys() == trained.keys() and all(torch.equal(got[k], trained[k]) for k in got)
    raw = torch.load(pth, weights_only=True)
    assert raw["epoch"] == 1 and any(
        k.startswith("llama_model.base_model.model.model.layers.0") for k in raw["model"]
    )
    clip = ClipInput(face_npy=dataset_root / "openface_face" / "sample_00000" / "sample_00000.npy",
                     audio=dataset_root / "audio" / "sample_00000.wav")  # fmt: skip
    pipe = AffectGPTPipeline(model, tok)
    (answer,) = pipe.answer([clip], gen=default_generation(tok, max_new_tokens=4))
    answer = getattr(answer, "answer", answer)  # a string, or a per-clip result holding it
    assert isinstance(answer, str)
    from affectrt.cli import main

    argv = ["infer", str(clip.audio), "--face-npy", str(clip.face_npy), "--audio", str(clip.audio),
            "--model-dir", str(model_dir), "--checkpoint", str(pth), "--max-new-tokens", "2"]  # fmt: skip
    assert main(argv) == 0  # `affectrt infer --checkpoint` loads the exported file


def test_non_finite_loss_stops_or_skips(tmp_path, dataset_root, feature_cache, monkeypatch):
    from affectrt.train import sources
    from affectrt.train.loop import TrainingError

    real = sources.CachedSource.batch

    def nan_batch(self, examples, device):
        zv, za = real(self, examples, device)
        return zv * float("nan"), za

    monkeypatch.setattr(sources.CachedSource, "batch", nan_batch)
    with pytest.raises(TrainingError, match="loss is nan at iteration 0.*last good checkpoint"):
        run_recipe(recipe_from_dict(recipe_dict(tmp_path / "a", dataset_root, feature_cache)), progress=False)
    data = recipe_dict(tmp_path / "b", dataset_root, feature_cache, iters_per_epoch=2)
    data["nan"] = "skip"
    (res,) = run_recipe(recipe_from_dict(data), progress=False)
    assert res.skipped_steps == 2


def test_release_exact_mode_encodes_on_the_fly_in_train_mode(tmp_path, dataset_root):
    pytest.importorskip("transformers")
    from affectrt.config import get_preset
    from affectrt.testing.hf_models import write_hf_model_dir
    from affectrt.train.data import TrainingSet, read_samples
    from affectrt.train.sources import ReleaseExactSource

    model_dir = write_hf_model_dir(get_preset("tiny"), tmp_path / "m")
    spec = {"model_dir": str(model_dir), "variant": "face"}
    data = recipe_dict(tmp_path / "o", dataset_root, tmp_path / "unused", spec, iters_per_epoch=2)
    data["features"] = {"mode": "release-exact"}
    (res,) = run_recipe(recipe_from_dict(data), progress=False)
    assert len(res.losses) == 2 and all(torch.isfinite(torch.tensor(res.losses)))

    cfg = get_preset("tiny")
    src = ReleaseExactSource(str(model_dir), cfg, torch.device("cpu"), autocast=False)
    assert src.hubert.training and src.clip.training  # the release's model.train() reaches the encoders
    samples = read_samples(dataset_root, "mercaptionplus")
    ts = TrainingSet(
        samples,
        cfg,
        __import__("affectrt.text.tokenizer", fromlist=["x"]).byte_level_tokenizer(),
        fetch=src.fetch,
    )
    import random

    ex = [ts.draw(i, random.Random(i)) for i in (0, 1)]
    z1, z2 = src.batch(ex, torch.device("cpu")), src.batch(ex, torch.device("cpu"))
    assert z1[0].shape == (2, 8, 24) and z1[1].shape == (2, 8, 32)
    assert not torch.equal(z1[1], z2[1])  # HuBERT dropout / SpecAugment: stochastic training features
    seen = []
    src.hubert.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    src.batch(ex, torch.device("cpu"))
    x = seen[0]  # [B*T, S]: one mean / variance over the whole batch's windows (the release's 2-D rule)
    assert x.shape == (16, 32000)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std(unbiased=False)) - 1) < 1e-3
    assert float((x[:8].std(dim=None, unbiased=False) - 1).abs()) > 1e-3  # not per clip


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_scaler_skips(tmp_path, dataset_root, feature_cache, monkeypatch, amp):
    data = recipe_dict(tmp_path / "a", dataset_root, feature_cache, iters_per_epoch=2)
    data["amp"] = amp
    (res,) = run_recipe(recipe_from_dict(data), progress=False)
    assert all(torch.isfinite(torch.tensor(res.losses))) and res.skipped_steps == 0
    if amp == "fp16":  # a non-finite loss under the loss scaler: the step is skipped and counted
        from affectrt.train import sources

        real = sources.CachedSource.batch
        monkeypatch.setattr(
            sources.CachedSource,
            "batch",
            lambda self, ex, dev: tuple(t * float("inf") for t in real(self, ex, dev)),
        )
        data = recipe_dict(tmp_path / "b", dataset_root, feature_cache, iters_per_epoch=2)
        data["amp"] = "fp16"
        (res,) = run_recipe(recipe_from_dict(data), progress=False)
        assert res.skipped_steps == 2


def test_later_stage_starts_from_the_previous_one(tmp_path, dataset_root, feature_cache, monkeypatch):
    import affectrt.checkpoint as ck

    data = recipe_dict(tmp_path, dataset_root, feature_cache, iters_per_epoch=2)
    second = dict(data["stages"][0], name="s2", init_lr=1e-3, min_lr=1e-3)
    data["stages"].append(second)
    loaded = []
    real = ck.load_checkpoint
    monkeypatch.setattr(
        ck, "load_checkpoint", lambda model, path: (loaded.append(Path(path)), real(model, path))
    )
    r1, r2 = run_recipe(recipe_from_dict(data), progress=False)
    assert loaded == [r1.final]
    assert r2.final.parent.name == "s2" and len(r2.losses) == 2
    loaded.clear()
    assert run_recipe(recipe_from_dict(data), resume=True, progress=False) == []  # both done: nothing to do
