"""--compile: the compiled decode step serves one-clip batches only, and only where the fused eager step
(affectrt/models/fused_decode.py, faster) does not apply; a missing C++ compiler is a usage error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from affectrt.checkpoint import load_model
from affectrt.generate import GenerationConfig
from affectrt.pipeline import AffectGPTPipeline, ClipInput


def _counting_compile(monkeypatch) -> list[int]:
    import affectrt.pipeline as pipeline_module

    calls = []

    def fake_compile(llm):  # stands in for torch.compile: counts the steps it is asked to run
        def step(**kw):
            calls.append(kw["input_ids"].shape[0])
            return llm(**kw)

        return step

    monkeypatch.setattr(pipeline_module, "compiled_decode_step", fake_compile)
    return calls


def test_the_compiled_step_serves_one_clip_batches_only(tiny_model_dir, clip_path, monkeypatch):
    from affectrt.models import fused_decode

    calls = _counting_compile(monkeypatch)
    monkeypatch.setattr(
        fused_decode, "supported", lambda llm: False
    )  # as for a bf16 LLM or without affectrt._C
    model, tok = load_model(tiny_model_dir, variant="frame")
    eager = AffectGPTPipeline(model, tok)
    compiled = AffectGPTPipeline(model, tok, compile_model=True)
    gen = GenerationConfig(max_new_tokens=6)
    clip = ClipInput(video=clip_path, subtitle="hi", name="a")
    assert compiled.answer([clip], gen=gen)[0].answer == eager.answer([clip], gen=gen)[0].answer
    assert calls == [1] * 5  # every step after the prefill
    calls.clear()
    compiled.answer([clip, ClipInput(video=clip_path, subtitle="hello there", name="b")], gen=gen)
    assert calls == []  # batches of several rows decode eagerly (faster there)


def test_the_fused_eager_step_serves_where_it_applies(tiny_model_dir, clip_path, monkeypatch):
    from affectrt.models import fused_decode

    if not fused_decode.available():
        import pytest

        pytest.skip("affectrt._C without the decode-glue kernels")
    calls = _counting_compile(monkeypatch)
    model, tok = load_model(tiny_model_dir, variant="frame")
    compiled = AffectGPTPipeline(model, tok, compile_model=True)
    compiled.answer(
        [ClipInput(video=clip_path, subtitle="hi", name="a")], gen=GenerationConfig(max_new_tokens=6)
    )
    with torch.inference_mode():  # as generate asks (the packs serve inference only)
        assert fused_decode.supported(model.llm)
    assert calls == []


def test_compile_without_a_cpp_compiler_is_a_usage_error(clip_path, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    script = Path(sys.executable).parent / "affectrt"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "affectrt.cli"]
    env = {**os.environ, "PATH": str(empty)}
    result = subprocess.run(
        [*cmd, "infer", str(clip_path), "--compile"], capture_output=True, text=True, env=env
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("affectrt: --compile: ") and "C++ compiler" in lines[0]
