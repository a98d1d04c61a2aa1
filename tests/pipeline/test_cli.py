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
    line = json.loads(captured.out)
    assert line["name"] == "clip" and isinstance(line["answer"], str) and line["error"] is None


def test_infer_face_model_with_model_dir(capsys, clip_path, face_npy, tiny_model_dir):
    argv = ["infer", str(clip_path), "--face-npy", str(face_npy), "--model-dir", str(tiny_model_dir)]
    assert main([*argv, "--max-new-tokens", "3", "--question", "description"]) == 0
    assert "untrained" in capsys.readouterr().err


def test_infer_bad_media_is_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["infer", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("broken\terror: ") and "broken.mp4" in captured.out
    assert "1 of 1 clip(s) failed" in captured.err


def test_infer_silent_video_names_the_file(capsys, silent_clip_path):
    assert main(["infer", str(silent_clip_path)]) == 1
    assert "silent.mp4" in capsys.readouterr().out


def test_infer_many_files_and_folders_in_one_batch(capsys, clip_path, silent_clip_path, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "b.mp4").write_bytes(clip_path.read_bytes())
    (folder / "notes.txt").write_text("not a video")
    out = tmp_path / "answers.jsonl"
    argv = [
        "infer",
        str(folder),
        str(clip_path),
        str(silent_clip_path),
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 1  # the silent clip failed, the others are answered
    lines = capsys.readouterr().out.splitlines()
    assert [x.split("\t")[0] for x in lines] == ["b", "clip", "silent"]
    assert "error: " in lines[2] and "error" not in lines[0]
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["name"] for r in records] == ["b", "clip", "silent"] and records[0]["answer"] == records[1][
        "answer"
    ]


def test_printed_answers_escape_control_characters():
    from affectrt.cli_serve import printable

    assert printable("a\nb\x1b[31mc\t") == "a\\nb\\x1b[31mc\\t"


def test_infer_with_onnx_encoders_matches_torch(capsys, clip_path, tmp_path):
    import pytest

    pytest.importorskip("onnxruntime", reason="ONNX Runtime (dev extra) is not installed")
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    base = [
        "infer",
        str(clip_path),
        "--subtitle",
        "hi",
        "--max-new-tokens",
        "5",
        "--json",
        "--init-seed",
        "3",
    ]
    assert main(base) == 0
    torch_answer = json.loads(capsys.readouterr().out)["answer"]
    out = tmp_path / "onnx"
    assert main(["export", "--onnx", str(out), "--preset", "tiny", "--seed", "3", "--variant", "frame"]) == 0
    capsys.readouterr()
    assert main([*base, "--encoders", "onnx", "--artifacts", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == torch_answer
    # artifacts of other weights are refused with a clear message
    assert main([*base[:-2], "--init-seed", "4", "--encoders", "onnx", "--artifacts", str(out)]) == 2
    assert "weights" in capsys.readouterr().err


def test_batch_command_writes_results_and_resumes(capsys, clip_path, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk")
    listing = tmp_path / "clips.csv"
    listing.write_text(f"name,video,subtitle\nok,{clip_path},hello\nbroken,bad.mp4,hi\n")
    out = tmp_path / "out.jsonl"
    argv = ["batch", str(listing), "--out", str(out), "--max-new-tokens", "3"]
    assert main(argv) == 1  # one clip failed
    records = {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["ok"]["error"] is None and isinstance(records["ok"]["answer"], str)
    assert "bad.mp4" in records["broken"]["error"]
    assert "1 answered, 1 failed" in capsys.readouterr().err
    assert records["ok"]["model"] == "random:tiny:0" and records["ok"]["variant"] == "frame"
    assert main(argv) == 1  # nothing left to do: the results file is not rewritten
    assert len(out.read_text().splitlines()) == 2
    bad.write_bytes(clip_path.read_bytes())  # the user fixes the file, then retries the failures
    assert main([*argv, "--retry-failed"]) == 0
    assert json.loads(out.read_text().splitlines()[-1])["error"] is None


def test_infer_with_merged_lora(capsys, clip_path, face_npy, tiny_model_dir):
    argv = ["infer", str(clip_path), "--face-npy", str(face_npy), "--model-dir", str(tiny_model_dir)]
    assert main([*argv, "--max-new-tokens", "3", "--merge-lora", "--json"]) == 0
    assert "answer" in json.loads(capsys.readouterr().out)


def test_info_is_short_unless_verbose(capsys):
    from affectrt.build_info import build_info

    assert main(["info"]) == 0
    short = capsys.readouterr().out
    assert "registers" not in short
    kernels = (build_info().get("cuda") or {}).get("kernels", [])
    assert main(["info", "--verbose"]) == 0
    assert ("registers" in capsys.readouterr().out) == bool(kernels)


def test_export_prints_results_on_stdout_and_progress_on_stderr(capsys, tmp_path):
    import pytest

    pytest.importorskip("onnxscript")
    out = tmp_path / "onnx"
    assert main(["export", "--onnx", str(out), "--pieces", "fusion", "--no-check"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "fusion.onnx")]
    assert "wrote" in captured.err and "RANDOM" in captured.err


def test_ctrl_c_keeps_results_and_says_how_to_resume(capsys, clip_path, tmp_path, monkeypatch):
    import affectrt.pipeline as pipeline

    def interrupted(pipe, clips, out_path, **kwargs):
        with open(out_path, "a") as f:
            f.write(json.dumps({"name": clips[0].name, "answer": "calm", "error": None}) + "\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_batch_job", interrupted)
    listing = tmp_path / "clips.csv"
    listing.write_text(f"name,video\na,{clip_path}\nb,{clip_path}\n")
    out = tmp_path / "out.jsonl"
    assert main(["batch", str(listing), "--out", str(out), "--max-new-tokens", "2"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; 1 result(s) kept in {out}; rerun to resume" in err and "Traceback" not in err
