"""A preallocated (static) key/value cache for batched decoding.

Static shapes let the decode step run under CUDA graphs / ``torch.compile`` without re-allocation: the
cache holds ``max_len`` slots per row, a step writes its keys/values at ``cache_position`` and attends
over all slots, the not-yet-written and padded ones hidden by the attention mask (see
:func:`attention_mask_for_cache`).
"""

from __future__ import annotations

import torch
from torch import Tensor


class StaticKVCache:
    """Keys and values ``k``, ``v``: [layers, B, kv_heads, max_len, head_dim] in the model dtype.

    Rows are left-padded prompts; slot ``t`` of every row holds sequence index ``t`` (prompt padding
    included), so one ``cache_position`` vector serves the whole batch.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        shape = (num_layers, batch_size, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        # Slots attended: 0 .. length-1 (None: all). The decode loop knows on the host how many slots are
        # filled, so attention reads only those instead of the whole cache (with the release's 1200 new
        # tokens most of the cache is empty for most of the answer).
        self.length: int | None = None

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_len: int) -> StaticKVCache:
        """A cache sized for ``model`` (a :class:`~affectrt.models.qwen2.Qwen2ForCausalLM`)."""
        cfg = model.cfg
        w = model.embed_tokens.weight
        return cls(cfg.num_layers, batch_size, cfg.num_kv_heads, max_len, cfg.head_dim, w.dtype, w.device)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def attend_len(self) -> int:
        """The number of slots attention reads: ``length`` when set, else ``max_len``."""
        return self.max_len if self.length is None else self.length

    def update(self, layer: int, cache_position: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k``, ``v`` [B, kv_heads, L, head_dim] at slots ``cache_position`` [L] of ``layer``.

        Returns the layer's first ``attend_len`` slots to attend over (views, no copy).
        """
        kc, vc = self.k[layer], self.v[layer]
        kc.index_copy_(2, cache_position, k.to(kc.dtype))
        vc.index_copy_(2, cache_position, v.to(vc.dtype))
        n = self.attend_len
        return kc[:, :, :n], vc[:, :, :n]

    def keep_rows(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` (ascending int64 indices), in that order, as rows 0 .. n-1.

        Moves the filled slots (the first ``attend_len``) of the kept rows to the front of the buffers, which
        then become views of their first n rows: no allocation of a new cache, and the slots past the filled
        prefix, which no step reads before writing them, are not moved. Each layer's [n, kv_heads, max_len,
        head_dim] block stays contiguous (the layers keep their old stride).
        """
        n, filled = rows.numel(), self.attend_len
        for name in ("k", "v"):
            t = getattr(self, name)
            t[:, :n, :, :filled] = t[:, rows, :, :filled]  # the right side is a copy: rows may overlap [0, n)
            setattr(self, name, t[:, :n])

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


def attention_mask_for_cache(
    padding_mask: Tensor | None, query_pos: Tensor, num_keys: int, batch_size: int
) -> Tensor:
    """Boolean mask [B, 1, Lq, num_keys] (True = attend) for queries at slots ``query_pos`` [Lq].

    allowed[b, q, k] = k <= query_pos[q] and (padding_mask[b, k] or k == query_pos[q]).

    ``padding_mask`` [B, S] (1 = real token) may be shorter than ``num_keys``; missing slots count as
    not attendable (they are in the future anyway). Letting a query always see its own slot keeps the
    rows of padding queries finite (a fully masked softmax row would give NaN, and NaN keys/values of
    padding slots would then leak into real rows through 0·NaN); real queries never see padding keys.
    """
    device = query_pos.device
    keys = torch.arange(num_keys, device=device)
    causal = keys[None, :] <= query_pos[:, None]  # [Lq, K]
    diag = keys[None, :] == query_pos[:, None]
    if padding_mask is None:
        return causal[None, None].expand(batch_size, 1, -1, -1)
    pad = padding_mask.to(device=device, dtype=torch.bool)
    if pad.shape[1] < num_keys:
        pad = torch.nn.functional.pad(pad, (0, num_keys - pad.shape[1]), value=False)
    elif pad.shape[1] > num_keys:
        raise ValueError(
            f"attention_mask has {pad.shape[1]} columns but only {num_keys} key slots exist; pass a "
            "mask of at most the cache length (or the sequence length without a cache)"
        )
    allowed = causal[None] & (pad[:, None, :] | diag[None])  # [B, Lq, K]
    return allowed[:, None]
