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
