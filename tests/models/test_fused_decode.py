"""The decode step with its glue in C++ (affectrt/models/fused_decode.py) against the module path and against
transformers; where it applies and where it falls back."""

from __future__ import annotations

import copy

import pytest
import torch

from affectrt.generate import GenerationConfig, generate
from affectrt.models import fused_decode
from affectrt.models.kv_cache import StaticKVCache
from affectrt.models.lora import merge_lora
from affectrt.models.packed import DERIVED_ATTR, pack_projections
from affectrt.models.qwen2 import Qwen2ForCausalLM
from tests.models.test_packed import CFG, lora_llm

pytestmark = pytest.mark.skipif(
    not fused_decode.available(), reason="affectrt._C without the decode-glue kernels"
)

STEPS = 4


def _spy(monkeypatch) -> list[bool]:
    """Record whether each decode step took the fused path."""
    ran, real = [], fused_decode.run_layers

    def spy(*args, **kw):
        out = real(*args, **kw)
        ran.append(out is not None)
        return out

    monkeypatch.setattr(fused_decode, "run_layers", spy)
    return ran


def _decode(model, batch: int) -> tuple[list[torch.Tensor], StaticKVCache]:
    """A left-padded prefill, then STEPS decode steps as generate runs them: the final hidden states of each."""
    g = torch.Generator().manual_seed(batch)
    L = 7
    ids = torch.randint(0, 96, (batch, L), generator=g)
    new = torch.randint(0, 96, (batch, STEPS), generator=g)
    full = torch.ones(batch, L + STEPS, dtype=torch.long)
    full[0, :3] = 0  # row 0 left-padded
    cache = StaticKVCache.for_model(model, batch, L + STEPS)
    cache.length = L
    step_mask, row_pos = full.bool()[:, None, None, :], full[:, :L].sum(-1, keepdim=True)
    outs = []
    with torch.inference_mode():
        model.forward_hidden(
            input_ids=ids, attention_mask=full, kv_cache=cache, cache_position=torch.arange(L)
        )
        for i in range(STEPS):
            cache.length = L + i + 1
            outs.append(
                model.forward_hidden(
                    input_ids=new[:, i : i + 1],
                    attention_mask=step_mask[..., : cache.length],
                    position_ids=row_pos + i,
                    kv_cache=cache,
                    cache_position=torch.tensor([L + i]),
                )
            )
    return outs, cache


@pytest.mark.parametrize("variant", ["lora", "merged", "no_lora", "some_targets", "rows_layout"])
@pytest.mark.parametrize("batch", [1, 5])
def test_fused_step_equals_the_module_path(variant, batch, monkeypatch):
    from affectrt.models import packed

    if variant == "some_targets":
        model = lora_llm(targets=("q_proj", "v_proj", "down_proj"))
    elif variant == "no_lora":
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(CFG).eval()
    else:
        model = lora_llm()
    if variant == "merged":
        merge_lora(model)
    if variant == "rows_layout":  # the stacks of weights that live in memory: nn.Linear's layout, rows_linear
        monkeypatch.setattr(packed, "ROWS_KERNEL_MIN_BYTES", 0)
    ref = copy.deepcopy(model)
    pack_projections(model)
    pack_projections(ref)
    ran = _spy(monkeypatch)
    got, got_cache = _decode(model, batch)
    assert ran == [True] * (1 + STEPS)  # the prefill too
    monkeypatch.setattr(fused_decode, "run_layers", lambda *a, **k: None)
    want, want_cache = _decode(ref, batch)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got_cache.k, want_cache.k, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got_cache.v, want_cache.v, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["unpacked", "bf16_base", "mixed_scales", "grad", "dropout"])
def test_falls_back_where_it_does_not_apply(case, monkeypatch):
    model = lora_llm()
    if case == "bf16_base":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_" not in name:
                    p.data = p.data.to(torch.bfloat16)
    if case == "mixed_scales":  # a per-column scale tensor in the qkv stack
        model.layers[0].self_attn.k_proj.scale = 5.0
    if case != "unpacked":
        pack_projections(model)
    if case == "dropout":
        model.train()
    ran = _spy(monkeypatch)
    ids = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(0))
    if case == "grad":  # forward_hidden does not even ask: the layers run with autograd
        cache = StaticKVCache.for_model(model, 2, 6)
        cache.length = 5
        with torch.enable_grad():
            model.forward_hidden(input_ids=ids, kv_cache=cache, cache_position=torch.arange(5))
            cache.length = 6
            h = model.forward_hidden(input_ids=ids[:, :1], kv_cache=cache, cache_position=torch.tensor([5]))
        assert ran == [] and h.requires_grad
        return
    with torch.inference_mode():
        generate(model, input_ids=ids, gen=GenerationConfig(max_new_tokens=3))
    assert ran == [False] * 3  # asked at the prefill and both decode steps, declined each time


@pytest.mark.parametrize("change", ["merge", "replace", "lora_b", "dropout"])
def test_the_kept_plan_is_dropped_when_the_model_changes(change, monkeypatch):
    """The plan is built once and checked every step: a change after a first answer is never served stale."""
    model = lora_llm()
    pack_projections(model)
    ids = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(0))
    gen = GenerationConfig(max_new_tokens=3)
    ran = _spy(monkeypatch)
    with torch.inference_mode():
        generate(model, input_ids=ids, gen=gen)
    assert ran == [True] * 3
    with torch.no_grad():
        if change == "merge":
            merge_lora(model)
        elif change == "replace":  # a new tensor for one weight: the pack no longer aliases it
            w = model.layers[1].mlp.down_proj.base_layer.weight
            w.data = w.data * 2
        elif change == "lora_b":  # a new tensor for one adapter
            b = model.layers[0].self_attn.v_proj.lora_B
            b.data = b.data + 1
        else:
            model.train()
    ran.clear()
    with torch.inference_mode():
        got = generate(model, input_ids=ids, gen=gen)
    assert ran == [False] * 3
    if change != "dropout":
        monkeypatch.setattr(fused_decode, "run_layers", lambda *a, **k: None)
        with torch.inference_mode():
            assert got == generate(model, input_ids=ids, gen=gen)


def test_re_packing_frees_the_old_stacks_at_once():
    """The kept plan holds the packs; re-packing must not leave the old stacks alive until the next step."""
    import weakref

    model = lora_llm()
    pack_projections(model)
    ids = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        generate(model, input_ids=ids, gen=GenerationConfig(max_new_tokens=2))
    old = weakref.ref(model.layers[0].self_attn.packs["qkv"].w.t)
    merge_lora(model)
    pack_projections(model)
    assert old() is None


def _hf_pair_and_batch(rows: int, seed: int, pads: dict[int, int]):
    """transformers' tiny Qwen2, ours with its weights (packed), and a left-padded batch of its embeddings:
    (hf, ours, emb [rows, 9, d], mask [rows, 9]) with pads[r] padding slots in row r."""
    pytest.importorskip("transformers")
    from affectrt.models.qwen2 import qwen2_config_from_hf
    from affectrt.testing.hf_models import tiny_qwen2

    hf = tiny_qwen2(256)
    ours = Qwen2ForCausalLM(qwen2_config_from_hf(hf.config.to_dict())).eval()
    ours.load_hf_state_dict(hf.state_dict())
    pack_projections(ours)
    ids = torch.randint(0, 256, (rows, 9), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(rows, 9, dtype=torch.long)
    for r, n in pads.items():
        mask[r, :n] = 0
    with torch.no_grad():
        emb = ours.embed_tokens(ids)
    return hf, ours, emb, mask


def test_greedy_tokens_equal_transformers(monkeypatch):
    hf, ours, emb, mask = _hf_pair_and_batch(3, 1, {1: 3})
    with torch.no_grad():
        want = hf.generate(
            inputs_embeds=emb, attention_mask=mask, pad_token_id=0, eos_token_id=None, max_new_tokens=12,
            do_sample=False,
        ).tolist()  # fmt: skip
    ran = _spy(monkeypatch)
    assert generate(ours, emb, mask, GenerationConfig(max_new_tokens=12)) == want
    assert ran == [True] * 12  # the prefill and 11 decode steps


def test_the_fused_step_runs_on_a_cache_whose_stopped_rows_were_dropped(monkeypatch):
    """generate drops stopped rows (StaticKVCache.keep_rows leaves a view of the first rows): the steps after
    it still take the fused path, and the answers equal transformers', which keeps the stopped rows."""
    hf, ours, emb, mask = _hf_pair_and_batch(4, 2, {1: 3, 3: 5})
    free = generate(ours, emb, mask, GenerationConfig(max_new_tokens=12))
    eos = [free[0][2], free[3][5]]
    with torch.no_grad():
        want = hf.generate(
            inputs_embeds=emb, attention_mask=mask, pad_token_id=0, eos_token_id=eos, max_new_tokens=12,
            do_sample=False,
        ).tolist()  # fmt: skip
    ran, sizes, real = _spy(monkeypatch), [], StaticKVCache.keep_rows

    def keep_rows(cache, rows):
        real(cache, rows)
        sizes.append(cache.batch_size)
        assert not cache.k.is_contiguous()  # a view of the first rows, as the fused path must take

    monkeypatch.setattr(StaticKVCache, "keep_rows", keep_rows)
    got = generate(ours, emb, mask, GenerationConfig(max_new_tokens=12, eos_token_id=tuple(eos)))
    trimmed = [row[: next((i + 1 for i, t in enumerate(row) if t in eos), len(row))] for row in want]
    assert got == trimmed
    assert sizes and min(sizes) < 4 and all(ran)


# ----- the whole step in one call (csrc/decode_step.h) -------------------------------------------------------


def _whole_step_calls(monkeypatch) -> list[int]:
    """Record the rows M of each call of the whole-step kernel."""
    ext, calls = fused_decode.cpu_ext(), []
    real = ext.dec_step

    def spy(plan, *args):
        calls.append(args[-1])
        return real(plan, *args)

    monkeypatch.setattr(ext, "dec_step", spy)
    return calls


@pytest.mark.skipif(not fused_decode.sgemm_address(), reason="torch's CPU library exports no sgemm_")
@pytest.mark.parametrize("layout", ["columns", "rows", "rows_linear"])
@pytest.mark.parametrize("batch", [1, 5])
def test_whole_step_equals_the_per_layer_loop_bit_for_bit(layout, batch, monkeypatch):
    """Decode steps run as one C++ call; it does what the per-layer loop does, in the same order, through the
    same BLAS: the hidden states and the cache are the same bits (the prefill takes the loop either way)."""
    from affectrt.models import packed

    if layout != "columns":
        monkeypatch.setattr(packed, "columns_layout", lambda *a, **k: False)
    if layout == "rows_linear":  # the stacks that stream their rows: rows_linear's kernel, from C++ too
        monkeypatch.setattr(packed, "ROWS_KERNEL_MIN_BYTES", 0)
    model = lora_llm()
    pack_projections(model)
    with torch.inference_mode():
        plan = fused_decode._plan(model)
    assert plan is not None and plan.step is not None
    calls = _whole_step_calls(monkeypatch)
    got, got_cache = _decode(model, batch)
    assert calls == [batch] * STEPS
    monkeypatch.setattr(plan, "step", None)  # the per-layer loop
    want, want_cache = _decode(model, batch)
    assert len(calls) == STEPS
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(got_cache.k, want_cache.k) and torch.equal(got_cache.v, want_cache.v)


def test_without_sgemm_the_steps_take_the_per_layer_loop(monkeypatch):
    """A torch build that exports no sgemm_: no whole-step plan, and the answers are the same."""
    model = lora_llm()
    pack_projections(model)
    ids = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(0))
    gen = GenerationConfig(max_new_tokens=4)
    with torch.inference_mode():
        want = generate(model, input_ids=ids, gen=gen)
    monkeypatch.setattr(fused_decode, "sgemm_address", lambda: 0)
    model.__dict__.pop(DERIVED_ATTR, None)  # the kept plan was built with sgemm
    calls, ran = _whole_step_calls(monkeypatch), _spy(monkeypatch)
    with torch.inference_mode():
        assert generate(model, input_ids=ids, gen=gen) == want
        assert fused_decode._plan(model).step is None
    assert calls == [] and ran == [True] * 4


def test_the_step_plan_rejects_a_layer_without_four_gemms():
    ext = fused_decode.cpu_ext()
    if not fused_decode.sgemm_address() or not hasattr(ext, "DecStepPlan"):
        pytest.skip("no whole-step kernel in this build")
    gemm = (0, 0, 4, 4, 1, 1, 0)
    lora = (0, 0, 0, 0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="4 GEMMs and 4 LoRA terms, got 3 and 4"):
        ext.DecStepPlan(
            [([gemm] * 3, [lora] * 4, 0, 0)], 0, fused_decode.sgemm_address(), 4, 1, 1, 4, 8, 1e-6
        )
    with pytest.raises(ValueError, match="sgemm is a null pointer"):
        ext.DecStepPlan([], 0, 0, 4, 1, 1, 4, 8, 1e-6)


# per adapter block (cols / 2 columns): whole 32-column tiles, a tile and a remainder, a remainder only
@pytest.mark.parametrize("cols", [128, 104, 40])
def test_the_lora_term_is_the_same_bits_whatever_the_rows_per_call(cols):
    """The glue kernels compute the LoRA term of up to four rows per pass over B: a row's result must not
    depend on which rows share its pass (7 rows at once against one call per row; every tile size 1-4)."""
    ext = fused_decode.cpu_ext()
    g = torch.Generator().manual_seed(cols)
    M, rank, inter = 7, 8, cols // 2
    n = 2 * inter
    b = torch.randn(rank, n, generator=g)
    blocks = torch.tensor([[0, 3, 0, inter], [3, 5, inter, inter]], dtype=torch.int64)  # two adapters
    lora = (b.data_ptr(), rank, n, 0, 1.7, blocks.data_ptr(), len(blocks))
    y = torch.randn(M, n + rank, generator=g)
    together, out = y.clone(), torch.empty(M, inter)
    ext.dec_silu_mul(together.data_ptr(), n + rank, lora, out.data_ptr(), M, inter)
    one_by_one, out1 = y.clone(), torch.empty(M, inter)
    for m in range(M):
        ext.dec_silu_mul(one_by_one[m].data_ptr(), n + rank, lora, out1[m].data_ptr(), 1, inter)
    assert torch.equal(together, one_by_one) and torch.equal(out, out1)
    # and it is the term: z + (a @ B)·s, up to float32 rounding
    want = y[:, :n] + (y[:, n:] @ torch.block_diag(b[:3, :inter], b[3:, inter:])) * 1.7
    torch.testing.assert_close(together[:, :n], want, atol=1e-5, rtol=1e-5)
