import json

import pytest

from affectrt.pipeline import AffectGPTPipeline, ClipInput, default_generation, run_batch_job


@pytest.fixture(scope="module")
def pipe():
    import torch

    from affectrt.config import get_preset
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.text.tokenizer import byte_level_tokenizer

    torch.manual_seed(0)
    return AffectGPTPipeline(
        AffectGPT(get_preset("tiny").replace(visual_input="frame")), byte_level_tokenizer()
    )


def test_batch_job_records_bad_media_and_resumes(pipe, clip_path, silent_clip_path, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00" * 100)
    clips = [
        ClipInput(video=clip_path, subtitle="one", name="a"),
        ClipInput(video=bad, subtitle="two", name="b"),
        ClipInput(video=silent_clip_path, subtitle="three", name="c"),
        ClipInput(video=clip_path, subtitle="four", name="d"),
    ]
    out = tmp_path / "results.jsonl"
    gen = default_generation(pipe.tokenizer, max_new_tokens=4)
    results = run_batch_job(pipe, clips[:3], out, gen=gen, batch_size=2, progress=False)
    assert results["a"].answer is not None and results["a"].error is None
    assert "corrupt.mp4" in results["b"].error
    assert "silent.mp4" in results["c"].error  # no audio track: a per-clip error, not a crash
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["name"] for r in lines) == ["a", "b", "c"]

    # a rerun with one more clip only processes the new one
    results = run_batch_job(pipe, clips, out, gen=gen, batch_size=2, progress=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["name"] for r in lines].count("a") == 1 and lines[-1]["name"] == "d"
    assert results["d"].answer == pipe.answer([clips[3]], gen=gen)[0].answer
    assert {k: lines[-1][k] for k in ("question", "variant")} == {"question": "ovlabel", "variant": "frame"}
    assert lines[-1]["seconds"] > 0

    # --retry-failed: only the failed clips run again; their new lines supersede the old ones
    results = run_batch_job(pipe, clips, out, gen=gen, batch_size=2, progress=False, retry_failed=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["name"] for r in lines[4:]] == ["b", "c"] and results["b"].error is not None


def test_pipe_answer_keeps_every_clip_when_one_is_bad(pipe, clip_path, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"not a video")
    gen = default_generation(pipe.tokenizer, max_new_tokens=4)
    good = ClipInput(video=clip_path, subtitle="one", name="good")
    results = pipe.answer([good, ClipInput(video=bad, name="bad"), good], gen=gen)
    assert [r.name for r in results] == ["good", "bad", "good"]
    assert results[0].answer == results[2].answer == pipe.answer([good], gen=gen)[0].answer
    assert results[1].answer is None and "corrupt.mp4" in results[1].error


def test_two_jobs_cannot_write_one_output(pipe, clip_path, tmp_path):
    import fcntl

    out = tmp_path / "r.jsonl"
    with out.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another job is writing this file"):
            run_batch_job(pipe, [ClipInput(video=clip_path)], out, progress=False)


def test_batch_job_rejects_duplicate_names(pipe, clip_path, tmp_path):
    clips = [ClipInput(video=clip_path), ClipInput(video=clip_path)]
    with pytest.raises(ValueError, match="unique"):
        run_batch_job(pipe, clips, tmp_path / "r.jsonl", progress=False)
