import json

from affectrt.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["core"]["torch"]
    names = {op["op"] for op in data["ops"]}
    assert "attn_pool" in names
    eager = [b for op in data["ops"] for b in op["backends"] if b["backend"] == "eager"]
    assert eager and all(b["available"] for b in eager)


def test_infer_random_tiny_model(capsys, clip_path):
    assert main(["infer", str(clip_path), "--subtitle", "hi", "--max-new-tokens", "4", "--json"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM weights" in captured.err
    assert json.loads(captured.out)["question"] == "ovlabel"


def test_infer_face_model_with_model_dir(capsys, clip_path, face_npy, tiny_model_dir):
    argv = ["infer", str(clip_path), "--face-npy", str(face_npy), "--model-dir", str(tiny_model_dir)]
    assert main([*argv, "--max-new-tokens", "3", "--question", "description"]) == 0
    assert "untrained" in capsys.readouterr().err


def test_infer_bad_media_is_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["infer", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.mp4" in err


def test_infer_silent_video_names_the_file(capsys, silent_clip_path):
    assert main(["infer", str(silent_clip_path)]) == 2
    assert "silent.mp4" in capsys.readouterr().err


def test_infer_with_onnx_encoders_matches_torch(capsys, clip_path, tmp_path):
    import pytest

    pytest.importorskip("onnxruntime", reason="ONNX Runtime (dev extra) is not installed")
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    base = ["infer", str(clip_path), "--subtitle", "hi", "--max-new-tokens", "5", "--json", "--seed", "3"]
    assert main(base) == 0
    torch_answer = json.loads(capsys.readouterr().out)["answer"]
    out = tmp_path / "onnx"
    assert main(["export", "--onnx", str(out), "--preset", "tiny", "--seed", "3", "--variant", "frame"]) == 0
    capsys.readouterr()
    assert main([*base, "--encoders", "onnx", "--artifacts", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == torch_answer
    # artifacts of other weights are refused with a clear message
    assert main([*base[:-2], "--seed", "4", "--encoders", "onnx", "--artifacts", str(out)]) == 2
    assert "weights" in capsys.readouterr().err


def test_batch_command_writes_results_and_resumes(capsys, clip_path, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk")
    listing = tmp_path / "clips.csv"
    listing.write_text(f"name,video,subtitle\nok,{clip_path},hello\nbroken,bad.mp4,hi\n")
    out = tmp_path / "out.jsonl"
    argv = ["batch", str(listing), "--out", str(out), "--max-new-tokens", "3"]
    assert main(argv) == 0
    records = {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["ok"]["error"] is None and isinstance(records["ok"]["answer"], str)
    assert "bad.mp4" in records["broken"]["error"]
    assert "1 answered, 1 failed" in capsys.readouterr().err
    assert main(argv) == 0  # nothing left to do: the results file is not rewritten
    assert len(out.read_text().splitlines()) == 2


def test_infer_with_merged_lora(capsys, clip_path, face_npy, tiny_model_dir):
    argv = ["infer", str(clip_path), "--face-npy", str(face_npy), "--model-dir", str(tiny_model_dir)]
    assert main([*argv, "--max-new-tokens", "3", "--merge-lora", "--json"]) == 0
    assert "answer" in json.loads(capsys.readouterr().out)
