"""ONNX export of each piece on the tiny preset, ONNX Runtime CPU parity, sidecars, runners and the CLI.

The three float32 files are exported once per session (~10 s on 2 cores); the other tests reuse them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import pytest
import torch

for _mod in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(
        _mod, reason=f"ONNX export tests need {_mod} (pip install 'affectrt[export]' onnxruntime)"
    )

from affectrt.config import MediaConfig, get_preset  # noqa: E402
from affectrt.export.cli import ExportModel, main  # noqa: E402
from affectrt.export.onnx_export import TOLERANCE, export_onnx, export_piece  # noqa: E402
from affectrt.export.runners import load_encoders  # noqa: E402
from affectrt.export.sidecar import StaleArtifactError, read_sidecar, sidecar_path, weights_hash  # noqa: E402
from affectrt.export.trt_build import default_profiles, tensorrt_unavailable_reason  # noqa: E402
from affectrt.export.wrappers import PIECES, example_inputs  # noqa: E402
from affectrt.models.affectgpt import AffectGPT  # noqa: E402

BATCHES = (1, 2, 3)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max|got − want| / max|want|: the error measure of the export check."""
    return ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6)).item()


@pytest.fixture(scope="session")
def model() -> AffectGPT:
    torch.manual_seed(0)
    return AffectGPT(get_preset("tiny"), with_lora=False).eval()


@pytest.fixture(scope="session")
def onnx_dir(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(model, out, dtype="float32", log=lambda *_: None)
    return out


@pytest.mark.parametrize("piece", PIECES)
def test_export_checked_against_pytorch(onnx_dir, piece):
    # export_onnx runs ONNX Runtime CPU vs PyTorch at 1, 2 and 3 clips and records it in the sidecar.
    meta = read_sidecar(onnx_dir / f"{piece}.onnx")
    check = meta["check"]
    assert check["checker"] == "ok" and check["provider"] == "CPUExecutionProvider"
    assert sorted(int(b) for b in check["batches"]) == list(BATCHES)
    assert max(check["batches"].values()) <= TOLERANCE["float32"], check
    assert check["passed"]


def test_sidecar_records_everything(model, onnx_dir):
    meta = read_sidecar(onnx_dir / "vision.onnx")
    assert meta["piece"] == "vision" and meta["kind"] == "onnx" and meta["dtype"] == "float32"
    assert meta["weights_sha256"] == weights_hash(model.visual_encoder)
    assert meta["inputs"] == [{"name": "pixels", "shape": ["clips", 8, 3, 224, 224], "dtype": "float32"}]
    assert meta["outputs"][0]["name"] == "z_video" and meta["outputs"][0]["shape"] == ["clips", 8, 24]
    assert meta["dynamic_axes"] == {"pixels": {"0": "clips"}, "z_video": {"0": "clips"}}
    assert meta["config"]["vision"]["hidden_size"] == 32
    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "affectrt"):
        assert name in meta["versions"]
    assert meta["versions"]["onnx"] is not None
    # SDPA as MatMul -> Softmax -> MatMul, the pattern TensorRT fuses into one attention kernel.
    assert meta["onnx_ops"]["Softmax"] == get_preset("tiny").vision.num_layers
    fusion = read_sidecar(onnx_dir / "fusion.onnx")
    assert [t["name"] for t in fusion["outputs"]] == ["multi", "audio", "video"]
    assert "ReduceSum" in fusion["onnx_ops"]  # attn_pool's custom op translated to standard ops


def test_onnx_runner_equals_pytorch_model(model, onnx_dir):
    backend = load_encoders("onnx", onnx_dir, model, "cpu")
    cfg = model.cfg
    with torch.no_grad():
        for n in BATCHES:
            (pixels,) = example_inputs(cfg, "vision", n, seed=10 + n)
            (windows,) = example_inputs(cfg, "audio", n, seed=20 + n)
            z_v, z_a = backend.encode_video(pixels), backend.encode_audio(windows)
            ref_v, ref_a = model.encode_video(pixels), model.encode_audio(windows)
            assert z_v.shape == ref_v.shape == (n, cfg.media.n_frames, cfg.video_dim)
            assert z_a.shape == ref_a.shape == (n, cfg.media.n_audio_clips, cfg.audio_dim)
            assert rel_err(z_v, ref_v) < 1e-4 and rel_err(z_a, ref_a) < 1e-4
            feats, ref = backend.fuse(ref_v, ref_a), model.multimodal_embeddings(ref_v, ref_a)
            assert feats.keys() == ref.keys() == {"<MultiHere>", "<AudioHere>", "<FaceHere>"}
            for key in ref:
                assert feats[key].shape == ref[key].shape
                assert rel_err(feats[key], ref[key]) < 1e-4, key


def test_torch_backend_is_the_model(model):
    backend = load_encoders("torch", None, model)
    (pixels,) = example_inputs(model.cfg, "vision", 1)
    with torch.no_grad():
        torch.testing.assert_close(backend.encode_video(pixels), model.encode_video(pixels), rtol=0, atol=0)


def test_runner_refuses_wrong_input_shape(model, onnx_dir):
    backend = load_encoders("onnx", onnx_dir, model, "cpu", pieces=("audio",))
    with pytest.raises(ValueError, match=r"audio.onnx: input windows must be \('clips', 8, 32000\)"):
        backend.encode_audio(torch.zeros(1, 8, 16000))


def test_stale_weights_refused(model, onnx_dir):
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.fusion.audio_llama_proj.bias.add_(1.0)
    with pytest.raises(StaleArtifactError, match=r"(?s)fusion\.onnx: stale.*weights_sha256"):
        load_encoders("onnx", onnx_dir, changed, "cpu")
    # Unchanged pieces still load.
    load_encoders("onnx", onnx_dir, changed, "cpu", pieces=("vision", "audio"))


def test_config_mismatch_refused(model, onnx_dir):
    cfg = model.cfg.replace(media=MediaConfig(n_frames=4))
    other = ExportModel(cfg, model.visual_encoder, model.acoustic_encoder, model.fusion)
    with pytest.raises(
        StaleArtifactError, match=r"vision\.onnx.*\n.*config\.frames: artifact has 8, model has 4"
    ):
        load_encoders("onnx", onnx_dir, other, "cpu", pieces=("vision",))


def test_replaced_or_unlabelled_file_refused(model, onnx_dir, tmp_path):
    shutil.copy(onnx_dir / "audio.onnx", tmp_path / "audio.onnx")
    with pytest.raises(StaleArtifactError, match="sidecar audio.onnx.json is missing"):
        load_encoders("onnx", tmp_path, model, "cpu", pieces=("audio",))
    shutil.copy(sidecar_path(onnx_dir / "fusion.onnx"), sidecar_path(tmp_path / "audio.onnx"))
    with pytest.raises(
        StaleArtifactError, match=r"(?s)file size.*piece: artifact has 'fusion', model has 'audio'"
    ):
        load_encoders("onnx", tmp_path, model, "cpu", pieces=("audio",))
    with pytest.raises(
        FileNotFoundError, match="vision.onnx: not found; write it with `affectrt export --onnx"
    ):
        load_encoders("onnx", tmp_path, model, "cpu", pieces=("vision",))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_fusion_export(model, tmp_path, dtype):
    if dtype == "bfloat16":  # ORT CPU has no bf16 kernels: the sidecar must say it was NOT checked
        with pytest.warns(UserWarning, match="not checked against PyTorch"):
            path = export_piece(model, "fusion", tmp_path, dtype=dtype)
        check = read_sidecar(path)["check"]
        assert check == {
            "checker": "ok",
            "checked": False,
            "reason": "ONNX Runtime CPU has no bfloat16 kernels",
        }
        return
    path = export_piece(model, "fusion", tmp_path, dtype=dtype)
    meta = read_sidecar(path)
    assert meta["dtype"] == dtype and all(t["dtype"] == dtype for t in meta["inputs"] + meta["outputs"])
    assert meta["check"]["checker"] == "ok" and meta["check"]["checked"] and meta["check"]["passed"]
    assert max(meta["check"]["batches"].values()) <= TOLERANCE[dtype]
    backend = load_encoders("onnx", tmp_path, model, "cpu", pieces=("fusion",))
    z_v, z_a = example_inputs(model.cfg, "fusion", 2)
    with torch.no_grad():
        feats, ref = backend.fuse(z_v, z_a), model.multimodal_embeddings(z_v, z_a)
    for key in ref:
        assert feats[key].dtype == torch.float16 and rel_err(feats[key], ref[key]) < TOLERANCE[dtype]


def test_a_file_ort_cannot_load_is_recorded_as_unchecked(model, tmp_path, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    import affectrt.export.onnx_export as onnx_export

    def refuse(path):
        raise Fail("no kernel for this op")

    monkeypatch.setattr(onnx_export, "_ort_session", refuse)
    with pytest.warns(UserWarning, match="not checked against PyTorch"):
        path = export_piece(model, "fusion", tmp_path)
    check = read_sidecar(path)["check"]
    assert check["checked"] is False and "passed" not in check and "no kernel for this op" in check["reason"]


def test_qformer_fusion_exports(tmp_path):
    cfg = get_preset("tiny")
    f = dataclasses.replace(cfg.fusion, video_fusion="qformer", audio_fusion="mean", multi_fusion="qformer")
    torch.manual_seed(1)
    model = AffectGPT(cfg.replace(fusion=f, visual_input="frame"), with_lora=False).eval()
    path = export_piece(model, "fusion", tmp_path)
    assert read_sidecar(path)["check"]["passed"]
    z_v, z_a = example_inputs(model.cfg, "fusion", 3)
    with torch.no_grad():
        feats = load_encoders("onnx", tmp_path, model, pieces=("fusion",)).fuse(z_v, z_a)
        ref = model.multimodal_embeddings(z_v, z_a)
    assert feats.keys() == ref.keys() and "<FrameHere>" in feats
    for key in ref:
        assert rel_err(feats[key], ref[key]) < 1e-4


def test_cli_onnx_and_bad_arguments(tmp_path, capsys):
    assert main(["export", "--onnx", str(tmp_path), "--pieces", "fusion", "--preset", "tiny"]) == 0
    assert (tmp_path / "fusion.onnx").is_file() and (tmp_path / "fusion.onnx.json").is_file()
    assert main(["export", "--onnx", str(tmp_path), "--pieces", "llm"]) == 2
    assert "--pieces 'llm': choose from vision, audio, fusion" in capsys.readouterr().err


def test_cli_model_dir_and_checkpoints(tmp_path):
    pytest.importorskip("transformers", reason="writing a Hugging Face model folder needs transformers")
    from affectrt.checkpoint import load_model, save_checkpoint
    from affectrt.export.cli import load_export_model
    from affectrt.export.wrappers import source_module
    from affectrt.testing.hf_models import randomize_trainable, release_state_dict, write_hf_model_dir

    model_dir = write_hf_model_dir(get_preset("tiny"), tmp_path / "model")
    model, _ = load_model(model_dir, variant="face")
    randomize_trainable(model)
    torch.save({"model": release_state_dict(model)}, tmp_path / "ckpt.pth")
    save_checkpoint(model, tmp_path / "ckpt.safetensors")
    # Export loads only the encoders and the fusion head, with exactly the weights load_model gives.
    for ckpt in ("ckpt.pth", "ckpt.safetensors"):
        light = load_export_model(model_dir, tmp_path / ckpt, "face")
        for name in PIECES:
            assert weights_hash(source_module(light, name)) == weights_hash(source_module(model, name)), name
    out = tmp_path / "onnx"
    args = [
        "export",
        "--onnx",
        str(out),
        "--model-dir",
        str(model_dir),
        "--checkpoint",
        str(tmp_path / "ckpt.pth"),
    ]
    assert main([*args, "--pieces", "fusion"]) == 0
    backend = load_encoders("onnx", out, model, pieces=("fusion",))
    z_v, z_a = example_inputs(model.cfg, "fusion", 2)
    with torch.no_grad():
        feats, ref = backend.fuse(z_v, z_a), model.multimodal_embeddings(z_v, z_a)
    for key in ref:
        assert rel_err(feats[key], ref[key]) < 1e-4
    assert main(["export", "--onnx", str(out), "--model-dir", str(tmp_path / "nowhere")]) == 2


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT and a GPU are present here")
def test_cli_trt_without_tensorrt_keeps_onnx(tmp_path, capsys):
    code = main(
        ["export", "--trt", str(tmp_path), "--pieces", "fusion", "--preset", "tiny", "--batch-max", "4"]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "cannot build TensorRT engines" in err and "fusion.onnx" in err
    meta = json.loads((tmp_path / "fusion.onnx.json").read_text())
    assert meta["check"]["passed"] and not list(tmp_path.glob("*.plan"))


def test_default_profiles():
    assert [(p.name, p.min, p.opt, p.max) for p in default_profiles(8)] == [
        ("latency", 1, 1, 1),
        ("throughput", 1, 8, 8),
    ]
    assert [p.name for p in default_profiles(1)] == ["latency"]
    with pytest.raises(ValueError):
        default_profiles(0)


# ------------------------------------------------------------------------------------ TensorRT (GPU)

needs_trt = pytest.mark.skipif(
    tensorrt_unavailable_reason() is not None, reason=f"TensorRT: {tensorrt_unavailable_reason()}"
)


@pytest.mark.tensorrt
@needs_trt
def test_trt_engines_match_pytorch(model, onnx_dir, tmp_path):
    from affectrt.export.trt_build import build_engines

    for f in onnx_dir.glob("*.onnx*"):
        shutil.copy(f, tmp_path / f.name)
    build_engines({p: tmp_path / f"{p}.onnx" for p in PIECES}, batch_max=4, log=lambda *_: None)
    assert (tmp_path / "timing.cache").is_file()
    meta = read_sidecar(tmp_path / "vision.plan")
    assert meta["kind"] == "tensorrt" and [p["name"] for p in meta["profiles"]] == ["latency", "throughput"]
    gpu = copy.deepcopy(model).cuda()
    backend = load_encoders("trt", tmp_path, gpu, "cuda")
    with torch.no_grad():
        for n in (1, 3, 6):  # 6 > batch_max: split into chunks
            (pixels,) = example_inputs(model.cfg, "vision", n, device="cuda")
            (windows,) = example_inputs(model.cfg, "audio", n, device="cuda")
            assert rel_err(backend.encode_video(pixels), gpu.encode_video(pixels)) < 1e-3
            assert rel_err(backend.encode_audio(windows), gpu.encode_audio(windows)) < 1e-3
            z_v, z_a = gpu.encode_video(pixels), gpu.encode_audio(windows)
            feats, ref = backend.fuse(z_v, z_a), gpu.multimodal_embeddings(z_v, z_a)
            for key in ref:
                assert rel_err(feats[key], ref[key]) < 1e-3
    changed = copy.deepcopy(gpu)
    with torch.no_grad():
        changed.visual_encoder.proj.weight.mul_(2)
    with pytest.raises(StaleArtifactError, match=r"vision\.plan"):
        load_encoders("trt", tmp_path, changed, "cuda", pieces=("vision",))


def test_random_export_model_equals_random_affectgpt():
    # `affectrt export --preset P --seed S` exports the weights `affectrt infer --preset P --seed S` builds.
    from affectrt.export.cli import random_export_model
    from affectrt.export.wrappers import source_module

    light = random_export_model("tiny", "frame", seed=3)
    torch.manual_seed(3)
    full = AffectGPT(get_preset("tiny").replace(visual_input="frame"))
    for name in PIECES:
        assert weights_hash(source_module(light, name)) == weights_hash(source_module(full, name)), name
