"""Batched generation against transformers' ``generate`` on a tiny random Qwen2."""

from __future__ import annotations

import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers.generation.logits_process import (  # noqa: E402
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from affectrt.generate import (  # noqa: E402
    GenerationConfig,
    apply_repetition_penalty,
    generate,
    top_k_filter,
    top_p_filter,
)
from affectrt.models.qwen2 import Qwen2ForCausalLM, qwen2_config_from_hf  # noqa: E402
from affectrt.testing.hf_models import tiny_qwen2  # noqa: E402

VOCAB, SEQ, NEW = 256, 9, 12


@pytest.fixture(scope="module")
def pair():
    hf = tiny_qwen2(VOCAB)  # a wide init: no near-ties to flip a greedy choice
    ours = Qwen2ForCausalLM(qwen2_config_from_hf(hf.config.to_dict())).eval()
    ours.load_hf_state_dict(hf.state_dict())
    return hf, ours


@pytest.fixture(scope="module")
def batch(pair):
    _, ours = pair
    ids = torch.randint(0, VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, SEQ, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :5] = 0
    with torch.no_grad():
        emb = ours.embed_tokens(ids)
    return ids, emb, mask


def hf_generate(hf, **kw) -> list[list[int]]:
    with torch.no_grad():
        out = hf.generate(pad_token_id=0, eos_token_id=None, max_new_tokens=NEW, **kw)
    return out.tolist()


def test_greedy_equals_hf(pair, batch):
    hf, ours = pair
    _, emb, mask = batch
    want = hf_generate(hf, inputs_embeds=emb, attention_mask=mask, do_sample=False)
    assert generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW)) == want


def test_batched_rows_equal_alone_and_input_ids(pair, batch):
    _, ours = pair
    ids, emb, mask = batch
    gen = GenerationConfig(max_new_tokens=NEW)
    batched = generate(ours, emb, mask, gen)
    assert generate(ours, attention_mask=mask, gen=gen, input_ids=ids) == batched
    for b in range(3):
        n = int(mask[b].sum())
        assert generate(ours, emb[b : b + 1, SEQ - n :], None, gen) == [batched[b]]


def test_seeded_sampling_reproducible_and_equal_to_hf(pair, batch):
    hf, ours = pair
    _, emb, mask = batch
    gen = GenerationConfig(max_new_tokens=NEW, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=5)
    a, b = generate(ours, emb, mask, gen), generate(ours, emb, mask, gen)
    assert a == b
    other = generate(ours, emb, mask, GenerationConfig(**{**gen.__dict__, "seed": 6}))
    assert other != a
    # Same filters, same float32 probabilities, same CPU RNG stream -> HF draws the same tokens.
    torch.manual_seed(5)
    want = hf_generate(
        hf, inputs_embeds=emb, attention_mask=mask, do_sample=True, temperature=0.8, top_k=20, top_p=0.9
    )
    assert a == want


def test_repetition_penalty_equals_hf_with_prompt_ids(pair, batch):
    hf, ours = pair
    ids, _, mask = batch
    gen = GenerationConfig(max_new_tokens=NEW, repetition_penalty=1.5)
    got = generate(ours, attention_mask=mask, gen=gen, input_ids=ids)
    want = hf_generate(hf, input_ids=ids, attention_mask=mask, do_sample=False, repetition_penalty=1.5)
    assert got == [row[SEQ:] for row in want]
    assert got != generate(ours, attention_mask=mask, gen=GenerationConfig(max_new_tokens=NEW), input_ids=ids)


def test_per_row_stop_on_multi_token_sequence_and_eos(pair, batch):
    _, ours = pair
    _, emb, mask = batch
    free = generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW))
    stop = tuple(free[0][3:5])  # a two-token sequence row 0 produces at steps 3-4

    def first_end(row: list[int], seq: tuple[int, ...]) -> int | None:
        n = len(seq)
        return next((i + n for i in range(len(row) - n + 1) if tuple(row[i : i + n]) == seq), None)

    got = generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW, stop_sequences=(stop,)))
    for row_free, row in zip(free, got):
        end = first_end(row_free, stop)
        assert row == row_free[: end or NEW]  # includes the stop tokens; other rows run on unchanged
    assert len(got[0]) <= 5 and tuple(got[0][-2:]) == stop

    eos = free[1][2]
    got = generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW, eos_token_id=(999, eos)))
    for row_free, row in zip(free, got):
        end = row_free.index(eos) + 1 if eos in row_free else NEW
        assert row == row_free[:end]
    assert got[1][-1] == eos
    assert generate(ours, emb, mask, GenerationConfig(max_new_tokens=0)) == [[], [], []]


def test_checking_for_the_end_every_few_steps_changes_nothing(pair, batch, monkeypatch):
    """On a GPU the loop asks whether all rows stopped only every 8 steps (each ask is a host sync): the rows
    that stopped keep being fed pad and are cut at their own stop, so the results are the same."""
    import affectrt.generate as generate_module

    _, ours = pair
    _, emb, mask = batch
    free = generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW))
    gen = GenerationConfig(max_new_tokens=NEW, eos_token_id=tuple({row[1] for row in free}))
    every_step = generate(ours, emb, mask, gen)
    assert max(len(r) for r in every_step) < NEW  # every row stops early
    monkeypatch.setitem(generate_module._STOP_CHECK_EVERY, "cpu", 8)
    assert generate(ours, emb, mask, gen) == every_step


def test_stopped_rows_leave_the_batch_with_the_same_answers(pair, batch, monkeypatch):
    """Greedy decoding drops stopped rows (and their cache rows) from the batch: the answers equal those of
    the loop that keeps feeding them pad (taken when a step function is given), rows stopping at different
    steps and on checks every step or every few, and the steps after a drop run only the rows left."""
    import affectrt.generate as generate_module
    from affectrt.models.kv_cache import StaticKVCache

    _, ours = pair
    ids, emb, mask = batch
    free = generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW))
    eos = (free[1][2], free[2][6])  # rows 1 and 2 stop at different steps, row 0 may run on
    kept, real = [], StaticKVCache.keep_rows

    def spy(cache, rows):
        kept.append(rows.tolist())
        real(cache, rows)

    monkeypatch.setattr(StaticKVCache, "keep_rows", spy)
    for every in (1, 3):
        monkeypatch.setitem(generate_module._STOP_CHECK_EVERY, "cpu", every)
        for gen in (
            GenerationConfig(max_new_tokens=NEW, eos_token_id=eos),
            GenerationConfig(max_new_tokens=NEW, eos_token_id=eos, repetition_penalty=1.5),
        ):
            kept.clear()
            rows_in_steps: list[int] = []

            def step(rows_in_steps=rows_in_steps, **kw):
                rows_in_steps.append(kw["input_ids"].shape[0])
                return ours(**kw)

            padded = generate(ours, emb, mask, gen, step=step)  # a step function: no rows dropped
            assert kept == [] and set(rows_in_steps) == {3}
            got = generate(ours, emb, mask, gen)
            assert got == padded
            assert generate(ours, attention_mask=mask, gen=gen, input_ids=ids) == generate(
                ours, attention_mask=mask, gen=gen, input_ids=ids, step=ours
            )
            assert kept and all(len(k) < 3 for k in kept)  # rows did leave
            assert min(len(r) for r in got) < max(len(r) for r in got)


def test_decode_attends_only_over_the_filled_slots(pair, batch, monkeypatch):
    """With NaN in every slot not yet written, the answers are unchanged: attention never reads past the
    filled prefix (reading a masked NaN slot would still give NaN, since 0 · NaN = NaN)."""
    from affectrt.models.kv_cache import StaticKVCache

    _, ours = pair
    _, emb, mask = batch
    gen = GenerationConfig(max_new_tokens=NEW)
    clean = generate(ours, emb, mask, gen)
    real = StaticKVCache.for_model

    def poisoned(model, batch_size, max_len):
        cache = real(model, batch_size, max_len)
        cache.k.fill_(float("nan"))
        cache.v.fill_(float("nan"))
        return cache

    monkeypatch.setattr(StaticKVCache, "for_model", staticmethod(poisoned))
    assert generate(ours, emb, mask, gen) == clean


def test_filters_equal_hf_warpers():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 50, generator=g)
    scores[0, :10] = 1.5  # ties at the cut
    for k in (1, 5, 20, 60):
        want = TopKLogitsWarper(top_k=k)(None, scores.clone())
        torch.testing.assert_close(top_k_filter(scores, k), want, atol=0, rtol=0)
    for p in (0.1, 0.5, 0.9, 0.999):
        want = TopPLogitsWarper(top_p=p)(None, scores.clone())
        torch.testing.assert_close(top_p_filter(scores, p), want, atol=0, rtol=0)
    seen_ids = torch.randint(0, 50, (4, 6), generator=g)
    seen = torch.zeros(4, 50, dtype=torch.bool).scatter(1, seen_ids, True)
    want = RepetitionPenaltyLogitsProcessor(penalty=1.3)(seen_ids, scores.clone())
    torch.testing.assert_close(apply_repetition_penalty(scores, seen, 1.3), want, atol=0, rtol=0)


def test_release_config_and_validation():
    gen = GenerationConfig.release(eos_token_id=7, stop_sequences=((1,), (2, 3)))
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.max_new_tokens) == (
        True,
        1.0,
        0.9,
        20,
        1200,
    )
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=1.5)
    with pytest.raises(ValueError, match="empty"):
        GenerationConfig(stop_sequences=((),))


def test_decode_steps_run_the_given_step_function(pair, batch):
    _, ours = pair
    _, emb, mask = batch
    calls = []

    def step(**kw):
        calls.append(kw["input_ids"].shape)
        return ours(**kw)

    got = generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW), step=step)
    assert got == generate(ours, emb, mask, GenerationConfig(max_new_tokens=NEW))
    # the prefill runs the model itself; each further token runs the step, one token per row
    assert calls == [torch.Size([3, 1])] * (NEW - 1)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_decode_step_equals_eager_and_hf(pair, batch):
    from affectrt.compile import compiled_decode_step

    hf, ours = pair
    _, emb, mask = batch
    step = compiled_decode_step(ours)
    for rows in (slice(0, 1), slice(1, 3)):  # batch 1 and a padded batch of 2: new shapes, one dynamic graph
        e, m = emb[rows], mask[rows]
        want = hf_generate(hf, inputs_embeds=e, attention_mask=m, do_sample=False)
        assert generate(ours, e, m, GenerationConfig(max_new_tokens=NEW), step=step) == want
