"""Batched generation with a static KV cache and a per-row stop (MODEL_SPEC §5.1, §8).

One left-padded batch is prefilled into a :class:`~affectrt.models.kv_cache.StaticKVCache` of
``L + max_new_tokens`` slots, then decoded one token per step. Each row stops on its own as soon as its
generated ids END WITH one of ``stop_sequences`` (or it emits an ``eos_token_id``) and the loop ends once
every row has stopped. Greedy decoding with the model's own step drops stopped rows from the batch (and
their cache rows) at the next check, so the steps after it compute only the rows still answering; otherwise
(sampling, whose random stream follows the batch's rows as HF's does, or a given ``step``, e.g. a compiled
one with fixed shapes) a stopped row keeps being fed the pad token and its output is ignored.

Token choice per step follows ``transformers`` (``GenerationMixin._sample``): the last position's logits
in float32 -> repetition penalty -> [sampling only] temperature -> top-k -> top-p -> argmax, or
``multinomial(softmax)`` drawn from a ``torch.Generator`` seeded with ``seed`` (reproducible runs).

The release samples with temperature 1, top-p 0.9, repetition penalty 1.0 and the model folder's top-k
(20 for Qwen2.5-Instruct), and stops on ``<|im_end|>``, ``###``, ``##``+``#`` and ``#``+``##``
(see :meth:`GenerationConfig.release`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from affectrt.models.kv_cache import StaticKVCache


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. ``top_k=0`` and ``top_p=1.0`` disable those filters (as in HF)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    # A row stops once its generated ids end with any of these token-id tuples.
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    eos_token_id: int | tuple[int, ...] | None = None
    # Fed to stopped rows; defaults to the (first) eos id, else 0.
    pad_token_id: int | None = None

    @classmethod
    def release(
        cls,
        eos_token_id: int | tuple[int, ...] | None,
        stop_sequences: tuple[tuple[int, ...], ...] = (),
        **overrides: object,
    ) -> GenerationConfig:
        """The release's settings (``inference_hybird.py``): sampling, T=1, top-p 0.9, top-k 20, 1200 tokens."""
        base = dict(
            max_new_tokens=1200,
            do_sample=True,
            temperature=1.0,
            top_p=0.9,
            top_k=20,
            repetition_penalty=1.0,
            stop_sequences=stop_sequences,
            eos_token_id=eos_token_id,
        )
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError("stop_sequences must not contain an empty sequence")

    @property
    def eos_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        return () if e is None else ((e,) if isinstance(e, int) else tuple(e))


# ----- logits processing (HF semantics) -------------------------------------------------------------------


def apply_repetition_penalty(scores: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """For tokens with ``seen`` [B, V] True: s < 0 -> s·penalty, else s / penalty (CTRL; HF)."""
    if penalty == 1.0:
        return scores
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


def top_k_filter(scores: Tensor, k: int, min_keep: int = 1) -> Tensor:
    """Keep the k largest scores per row (ties with the k-th kept too), the rest -inf (HF TopK)."""
    k = min(max(k, min_keep), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: Tensor, p: float, min_keep: int = 1) -> Tensor:
    """Nucleus filter (HF TopP): sort ascending, drop tokens whose cumulative prob is <= 1 - p."""
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - p)
    remove[..., -min_keep:] = False
    remove = remove.scatter(-1, sorted_idx, remove)
    return scores.masked_fill(remove, float("-inf"))


def process_scores(logits: Tensor, seen: Tensor | None, gen: GenerationConfig) -> Tensor:
    """float32 logits [B, V] -> the scores the next token is chosen from."""
    scores = logits
    if seen is not None:
        scores = apply_repetition_penalty(scores, seen, gen.repetition_penalty)
    if gen.do_sample:
        if gen.temperature != 1.0:
            scores = scores / gen.temperature
        if gen.top_k:
            scores = top_k_filter(scores, gen.top_k)
        if gen.top_p < 1.0:
            scores = top_p_filter(scores, gen.top_p)
    return scores


def _ends_with_stop(out: Tensor, n_done: int, stops: list[Tensor]) -> Tensor:
    """[B] bool: the first ``n_done`` generated ids of each row end with one of ``stops``."""
    hit = torch.zeros(out.shape[0], dtype=torch.bool, device=out.device)
    for s in stops:
        n = s.numel()
        if n <= n_done:
            hit |= (out[:, n_done - n : n_done] == s).all(-1)
    return hit


# ----- the loop -------------------------------------------------------------------------------------------

# Steps between "has every row stopped?" checks, per device type: a check is a host sync on a GPU.
_STOP_CHECK_EVERY = {"cpu": 1}


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    inputs_embeds: Tensor | None = None,
    attention_mask: Tensor | None = None,
    gen: GenerationConfig | None = None,
    progress: bool = False,
    *,
    input_ids: Tensor | None = None,
    step: Callable[..., Tensor] | None = None,
) -> list[list[int]]:
    """Generate for a left-padded batch; returns each row's generated ids.

    - ``inputs_embeds`` [B, L, d] (model dtype) or ``input_ids`` [B, L] (embedded by the model).
    - ``attention_mask`` [B, L], 1 = real token, 0 = left padding (default: all ones).
    - The returned ids INCLUDE the stop sequence / eos that ended a row; a row that hit
      ``max_new_tokens`` returns all of them.
    - Repetition penalty counts the generated ids, plus the prompt ids when ``input_ids`` is given
      (what HF does; with ``inputs_embeds`` HF has no prompt ids either).
    - ``step``: runs each decode step in place of ``model`` (same arguments and logits), e.g. a compiled
      ``model.forward`` (:func:`affectrt.compile.compiled_decode_step`); the prefill always runs ``model``.
    """
    gen = gen or GenerationConfig()
    if (inputs_embeds is None) == (input_ids is None):
        raise ValueError("generate: pass exactly one of inputs_embeds and input_ids")
    device = model.embed_tokens.weight.device
    if inputs_embeds is None:
        input_ids = input_ids.to(device)
        inputs_embeds = model.embed_tokens(input_ids)
    inputs_embeds = inputs_embeds.to(device)
    B, L, _ = inputs_embeds.shape
    if attention_mask is None:
        attention_mask = torch.ones(B, L, dtype=torch.long, device=device)
    if attention_mask.shape != (B, L):
        raise ValueError(
            f"generate: attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, L)}"
        )
    if gen.max_new_tokens == 0:
        return [[] for _ in range(B)]

    V = model.cfg.vocab_size
    max_len = L + gen.max_new_tokens
    cache = StaticKVCache.for_model(model, B, max_len)
    # Slots after the prompt are all real tokens; causality hides the not-yet-written ones.
    mask = torch.ones(B, max_len, dtype=torch.long, device=device)
    mask[:, :L] = attention_mask.to(device)
    eos = gen.eos_ids
    pad_id = gen.pad_token_id if gen.pad_token_id is not None else (eos[0] if eos else 0)
    pad_id = pad_id if 0 <= pad_id < V else 0  # stopped rows are fed it: it must be embeddable
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    stops = [torch.tensor(s, dtype=torch.long, device=device) for s in gen.stop_sequences]
    generator = None
    if gen.do_sample and gen.seed is not None:
        generator = torch.Generator(device=device).manual_seed(gen.seed)

    seen = None
    if gen.repetition_penalty != 1.0:
        seen = torch.zeros(B, V + 1, dtype=torch.bool, device=device)  # column V absorbs ids >= V
        if input_ids is not None:
            ids = torch.where(mask[:, :L].bool(), input_ids.clamp(max=V), V)
            seen.scatter_(1, ids, True)

    out = torch.full((B, gen.max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), gen.max_new_tokens, dtype=torch.long, device=device)

    cache.length = L
    h = model.forward_hidden(
        inputs_embeds=inputs_embeds,
        attention_mask=mask,
        kv_cache=cache,
        cache_position=torch.arange(L, device=device),
    )
    logits = model.logits_from_hidden(h[:, -1]).float()
    steps = range(gen.max_new_tokens)
    if progress:
        try:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="generate", unit="tok")
        except ImportError:
            pass
    # One device tensor for the position of the token fed next, advanced in place (no host → device copy per
    # token). On CUDA the loop asks whether every row has stopped only every few steps: each question is a
    # host sync, and a stopped row just keeps being fed the pad token until then.
    pos = torch.full((1,), L, dtype=torch.long, device=device)
    # The decode steps' mask and positions, built once: slot s >= L is a real token, so a row's position there
    # is its prompt's real tokens + (s - L), what forward_hidden's cumsum(mask) - 1 gives, and the query at slot
    # s attends the real slots up to s.
    step_mask = mask.bool()[:, None, None, :]
    row_pos = mask[:, :L].sum(-1, keepdim=True)
    decode_step = model if step is None else step
    check_every = _STOP_CHECK_EVERY.get(device.type, 8)
    # Rows still in the batch (their original indices) and the answers of the rows already dropped.
    compact = step is None and not gen.do_sample
    rows = list(range(B))
    answers: list[list[int] | None] = [None] * B
    for i in steps:
        scores = process_scores(logits, None if seen is None else seen[:, :V], gen)
        if gen.do_sample:
            nxt = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = torch.where(finished, pad_id, nxt)
        out[:, i] = nxt
        if seen is not None:
            seen.scatter_(1, nxt.clamp(max=V)[:, None], True)
        stop_now = ~finished & (torch.isin(nxt, eos_t) | _ends_with_stop(out, i + 1, stops))
        lengths = torch.where(stop_now, i + 1, lengths)
        finished |= stop_now
        if i + 1 == gen.max_new_tokens:
            break
        if (i + 1) % check_every == 0:
            n_done = int(finished.sum())  # the step's one host sync
            if n_done == len(rows):
                break
            if compact and n_done:
                keep = (~finished).nonzero()[:, 0]
                for j, (ids, n, done) in enumerate(zip(out.tolist(), lengths.tolist(), finished.tolist())):
                    if done:
                        answers[rows[j]] = ids[:n]
                rows = [rows[j] for j in keep.tolist()]
                out, lengths, finished, nxt = out[keep], lengths[keep], finished[keep], nxt[keep]
                step_mask, row_pos = step_mask[keep], row_pos[keep]
                if seen is not None:
                    seen = seen[keep]
                cache.keep_rows(keep)
        cache.length = L + i + 1  # the slots filled once this token is written: a host int, no sync
        logits = decode_step(
            input_ids=nxt[:, None],
            attention_mask=step_mask[..., : cache.length],
            position_ids=row_pos,
            kv_cache=cache,
            cache_position=pos,
        )
        logits = logits[:, -1].float()
        pos += 1
        row_pos += 1
    if progress and hasattr(steps, "close"):
        steps.close()
    for j, (ids, n) in enumerate(zip(out.tolist(), lengths.tolist())):
        answers[rows[j]] = ids[:n]
    return answers
