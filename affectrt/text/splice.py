"""Building token batches and splicing the multimodal embeddings into ``inputs_embeds`` (MODEL_SPEC §1.7, §8).

Inference: ``prompt`` tokenized with ``add_special_tokens=False`` and no ``<|im_start|>``; rows are left-padded
so a batch decodes like each row alone. Training: ``<|im_start|> + prompt + answer + "###" + <|im_end|>``,
prompt and answer tokenized separately, right-padded with ``<|im_end|>`` (pad == eos, so the attention mask
also hides each row's final eos, as in the release); labels are -100 over bos, prompt and padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from affectrt.text.tokenizer import STOP_STRING, Tokenizer

IGNORE_INDEX = -100


@dataclass
class TokenBatch:
    """input_ids [B, L] int64, attention_mask [B, L] bool, labels [B, L] int64 or None."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None = None


def inference_batch(tokenizer: Tokenizer, prompts: Sequence[str]) -> TokenBatch:
    """Left-padded prompt ids (pad = eos) and their mask, for batched generation."""
    rows = tokenizer.encode_batch(prompts)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, length - len(r) :] = True
    return TokenBatch(ids, mask)


def training_batch(
    tokenizer: Tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int | None = None
) -> TokenBatch:
    """The release's collated training batch (``__getitem__`` + ``collater``).

    Raises ``ValueError`` for a sample longer than ``max_length`` tokens (the release re-samples it).
    """
    ids_rows, label_rows = [], []
    for k, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        p = tokenizer.encode(prompt)
        a = tokenizer.encode(answer + STOP_STRING)
        if max_length is not None and len(p) + len(a) > max_length:
            raise ValueError(
                f"sample {k}: {len(p) + len(a)} tokens exceeds max_length={max_length}; "
                "shorten the subtitle/answer or raise max_length"
            )
        ids_rows.append([tokenizer.bos_id, *p, *a, tokenizer.eos_id])
        label_rows.append([IGNORE_INDEX] * (1 + len(p)) + [*a, tokenizer.eos_id])
    length = max(len(r) for r in ids_rows)
    ids = torch.full((len(ids_rows), length), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(ids_rows), length), IGNORE_INDEX, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(ids_rows, label_rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(lab)] = torch.tensor(lab)
    return TokenBatch(ids, ids.ne(tokenizer.pad_id), labels)


def placeholder_positions(input_ids: Tensor, token_id: int, k: int, name: str = "placeholder") -> Tensor:
    """Start index of each row's run of ``k`` consecutive ``token_id`` tokens. [B, L] -> [B].

    Raises ``ValueError`` (like the release) if a row holds a different count or a non-contiguous run.
    """
    hits = input_ids == token_id
    counts = hits.sum(dim=1)
    if bool((counts != k).any()):
        bad = int(torch.nonzero(counts != k)[0, 0])
        raise ValueError(
            f"row {bad}: expected {k} {name} token(s), found {int(counts[bad])}; the prompt template and "
            "the number of query tokens disagree"
        )
    starts = hits.float().argmax(dim=1)
    offsets = torch.arange(k, device=input_ids.device)
    run = input_ids.gather(1, starts[:, None] + offsets[None, :]) if k else input_ids[:, :0]
    if bool((run != token_id).any()):
        raise ValueError(f"the {k} {name} tokens of a row are not contiguous")
    return starts


def embed_with_placeholders(
    embed_tokens: torch.nn.Embedding,
    input_ids: Tensor,
    features: Mapping[int, Tensor],
) -> Tensor:
    """Embed ``input_ids`` and overwrite each placeholder run with its features.

    ``features`` maps a placeholder token id to embeddings [B, K, D]. As in the release, placeholder ids are
    set to 0 before the lookup (their ids may lie beyond the trained rows) and the rows are then replaced.
    Returns inputs_embeds [B, L, D] in the embedding's dtype.
    """
    ids = input_ids.clone()
    for token_id in features:
        ids[ids == token_id] = 0
    embeds = embed_tokens(ids)
    for token_id, feats in features.items():
        k = feats.shape[1]
        starts = placeholder_positions(input_ids, token_id, k)
        rows = torch.arange(ids.shape[0], device=ids.device)[:, None]
        cols = starts[:, None] + torch.arange(k, device=ids.device)[None, :]
        embeds = embeds.index_put((rows.expand(-1, k), cols), feats.to(embeds.dtype))
    return embeds
