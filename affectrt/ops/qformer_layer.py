"""One post-LN layer of the query-only BERT Q-Former (MODEL_SPEC §1.5b), on the fused cross-attention.

For queries h [B, K, H] and encoder states x [B, N, E] (weights named as in the release's state dict,
relative to ``bert.encoder.layer.<i>.``):

    h ← LN_s(h + O_s · MHA(h W_qᵀ, h, W_k, W_v))                  self-attention among the K queries
    h ← LN_c(h + O_c · MHA(h W_q'ᵀ, x, W_k', W_v', key_mask))     cross-attention, W_k', W_v': E → H
    h ← LN_f(h + W_o · GELU_erf(W_i h))                            query FFN H → I → H

Every linear has a bias; LN has eps ``eps``. Both attentions run through :func:`affectrt.ops.cross_attn`
(self-attention is the same op with x = h), so K and V are never materialised. This is the inference /
dropout-free form: the model falls back to its eager modules when dropout is active in training.

Under autocast the projections run in the autocast dtype; the encoder states and K/V weights are cast to
the query projection's dtype before the attention, as autocast would cast them for their ``nn.Linear``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

from affectrt.ops.cross_attn import cross_attn

# The weight names one layer needs (each with ".weight" and ".bias").
LINEARS = (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "crossattention.self.query", "crossattention.self.key", "crossattention.self.value",
    "crossattention.output.dense", "intermediate_query.dense", "output_query.dense",
)  # fmt: skip
NORMS = ("attention.output.LayerNorm", "crossattention.output.LayerNorm", "output_query.LayerNorm")


def _lin(w: Mapping[str, Tensor], name: str, h: Tensor) -> Tensor:
    return F.linear(h, w[name + ".weight"], w[name + ".bias"])


def _ln(w: Mapping[str, Tensor], name: str, h: Tensor, eps: float) -> Tensor:
    return F.layer_norm(h, h.shape[-1:], w[name + ".weight"], w[name + ".bias"], eps)


def _check(h: Tensor, x: Tensor, weights: Mapping[str, Tensor]) -> None:
    missing = [f"{n}.{p}" for n in LINEARS + NORMS for p in ("weight", "bias") if f"{n}.{p}" not in weights]
    if missing:
        raise KeyError(f"qformer_layer: weights lack {missing}; pass the layer's state dict (release names)")
    if h.dim() != 3 or x.dim() != 3 or h.shape[0] != x.shape[0]:
        raise ValueError(
            f"qformer_layer: h must be [B, K, H] and x [B, N, E] with the same B, got {tuple(h.shape)} "
            f"and {tuple(x.shape)}"
        )


def qformer_layer(
    h: Tensor,
    x: Tensor,
    weights: Mapping[str, Tensor],
    num_heads: int,
    eps: float,
    key_mask: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """One Q-Former layer (module docstring): h [B, K, H], x [B, N, E], key_mask [B, N] | None -> [B, K, H].

    ``weights``: the layer's parameters by release name (e.g. ``dict(layer.named_parameters())``);
    ``backend`` is passed to both attentions.
    """
    _check(h, x, weights)
    h = _attend_ln(weights, "attention", h, h, None, num_heads, backend, eps)
    h = _attend_ln(weights, "crossattention", h, x, key_mask, num_heads, backend, eps)
    f = F.gelu(_lin(weights, "intermediate_query.dense", h))
    return _ln(weights, "output_query.LayerNorm", h + _lin(weights, "output_query.dense", f), eps)


def _attend_ln(w, block, h, x, key_mask, num_heads, backend, eps) -> Tensor:
    q = _lin(w, block + ".self.query", h)
    k, v = block + ".self.key", block + ".self.value"
    dt = q.dtype  # autocast may have made it half precision
    kv = (w[k + ".weight"], w[k + ".bias"], w[v + ".weight"], w[v + ".bias"])
    ctx = cross_attn(q, x.to(dt), *(t.to(dt) for t in kv), key_mask, num_heads, backend)
    return _ln(w, block + ".output.LayerNorm", h + _lin(w, block + ".output.dense", ctx), eps)
