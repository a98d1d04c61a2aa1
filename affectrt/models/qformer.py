"""Query-only BERT Q-Former of the AffectGPT release (MODEL_SPEC §1.4 "qformer", §1.5b).

The release builds a LAVIS ``BertLMHeadModel`` and then deletes the word and position embeddings, the
LM head and the text FFNs, so only the query path is left. That path, for query tokens Q [B,K,H] and
encoder states X [B,N,E] (post-LN BERT layers, cross-attention in every layer):

    Q ← Dropout(LN(Q))                                              embeddings
    per layer:
        Q ← LN(Q + Dropout(O_s · MHA(Q W_q, Q W_k, Q W_v)))          self-attention among the K queries
        Q ← LN(Q + Dropout(O_c · MHA(Q W_q', X W_k', X W_v')))       cross-attention, W_k', W_v': E → H
        Q ← LN(Q + Dropout(W_o'' GELU(W_i'' Q)))                     query FFN H → I → H (erf GELU)

MHA(q, k, v) = softmax(q kᵀ / √(H/heads) + mask) v per head; the mask adds dtype-min at padded encoder
positions (the release passes an all-ones mask).

Module and parameter names follow the release's state dict so checkpoints load by name, e.g.
``bert.embeddings.LayerNorm.weight``, ``bert.encoder.layer.0.attention.self.query.weight``,
``bert.encoder.layer.0.crossattention.self.key.weight``, ``bert.encoder.layer.0.intermediate_query.dense``
and ``bert.encoder.layer.0.output_query.LayerNorm``. The persistent ``bert.embeddings.position_ids`` buffer
(int64 [1,512], unused by the query path) is kept because the released checkpoints carry it.

Each layer runs the fused op :func:`affectrt.ops.qformer_layer.qformer_layer` (K/V never materialised)
unless ``fused=False`` or dropout is active (training with ``cfg.dropout > 0``): then the eager modules
below run, with BERT's attention-probability dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectrt.config import QFormerConfig
from affectrt.ops.qformer_layer import qformer_layer

# bert-base-uncased's max_position_embeddings: the length of the position_ids buffer in checkpoints.
BERT_MAX_POSITIONS = 512
# bert-base-uncased's initializer_range (weights are randomly initialised in the release).
INITIALIZER_RANGE = 0.02


class QFormerSelfAttention(nn.Module):
    """Multi-head attention projections; keys/values come from ``kv_width``-wide states. [B,K,H] -> [B,K,H]."""

    def __init__(self, cfg: QFormerConfig, kv_width: int):
        super().__init__()
        if cfg.hidden_size % cfg.num_heads != 0:
            raise ValueError(
                f"QFormerConfig: hidden_size {cfg.hidden_size} is not a multiple of num_heads {cfg.num_heads}"
            )
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.dropout_p = cfg.dropout
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def forward(self, x: Tensor, kv: Tensor, keep: Tensor | None = None) -> Tensor:
        """x [B,K,H], kv [B,N,kv_width], keep [B,1,1,N] bool (False = padded key) or None -> [B,K,H]."""
        b, k, h = x.shape
        n = kv.shape[1]
        q = self.query(x).view(b, k, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.key(kv).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        val = self.value(kv).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        mask_bias = None
        if keep is not None:
            # Additive dtype-min at padded keys, as the release's inverted mask: a fully padded row stays
            # finite (uniform) instead of NaN. Built in q's dtype, which autocast may have changed.
            mask_bias = torch.where(
                keep, torch.zeros((), dtype=q.dtype, device=q.device), torch.finfo(q.dtype).min
            )
        # Attention-probability dropout as in BERT (drops whole keys per query), training only.
        out = F.scaled_dot_product_attention(
            q, key, val, attn_mask=mask_bias, dropout_p=self.dropout_p if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(b, k, h)


class QFormerAddNorm(nn.Module):
    """BERT's output block: LN(residual + Dropout(dense(h))). [B,K,in] , [B,K,H] -> [B,K,H]."""

    def __init__(self, in_features: int, cfg: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class QFormerAttention(nn.Module):
    """Attention sub-block (release names ``self`` and ``output``): LN(x + O·MHA(x, kv))."""

    def __init__(self, cfg: QFormerConfig, kv_width: int):
        super().__init__()
        self.self = QFormerSelfAttention(cfg, kv_width)
        self.output = QFormerAddNorm(cfg.hidden_size, cfg)

    def forward(self, x: Tensor, kv: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.output(self.self(x, kv, keep), x)


class QFormerIntermediate(nn.Module):
    """GELU(dense(x)): [B,K,H] -> [B,K,I]. BERT's "gelu" is the exact erf form."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class QFormerLayer(nn.Module):
    """One post-LN layer of the query path: self-attention, cross-attention, query FFN.

    ``fused`` (default True): run :func:`qformer_layer` when no dropout is active; same parameters.
    """

    def __init__(self, cfg: QFormerConfig, encoder_width: int, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.num_heads, self.eps, self.dropout_p = cfg.num_heads, cfg.layer_norm_eps, cfg.dropout
        self.attention = QFormerAttention(cfg, cfg.hidden_size)
        self.crossattention = QFormerAttention(cfg, encoder_width)
        self.intermediate_query = QFormerIntermediate(cfg)
        self.output_query = QFormerAddNorm(cfg.intermediate_size, cfg)

    def forward(self, q: Tensor, enc: Tensor, enc_keep: Tensor | None) -> Tensor:
        """q [B,K,H], enc [B,N,E], enc_keep [B,N] bool (False = padded key) or None -> [B,K,H]."""
        if self.fused and not (self.training and self.dropout_p > 0):
            return qformer_layer(q, enc, dict(self.named_parameters()), self.num_heads, self.eps, enc_keep)
        q = self.attention(q, q)
        q = self.crossattention(q, enc, None if enc_keep is None else enc_keep[:, None, None, :])
        return self.output_query(self.intermediate_query(q), q)


class QFormerEmbeddings(nn.Module):
    """Query embeddings: Dropout(LN(query_tokens)); word/position tables are gone in the release."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        # Unused by the query path but persistent: released checkpoints carry it (MODEL_SPEC §8).
        self.register_buffer("position_ids", torch.arange(BERT_MAX_POSITIONS).expand(1, -1).clone())

    def forward(self, query_tokens: Tensor) -> Tensor:
        return self.dropout(self.LayerNorm(query_tokens))


class QFormerEncoder(nn.Module):
    def __init__(self, cfg: QFormerConfig, encoder_width: int):
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(cfg, encoder_width) for _ in range(cfg.num_layers))


class QFormerBert(nn.Module):
    """Holds ``embeddings`` and ``encoder`` under the release's ``bert.`` prefix."""

    def __init__(self, cfg: QFormerConfig, encoder_width: int):
        super().__init__()
        self.embeddings = QFormerEmbeddings(cfg)
        self.encoder = QFormerEncoder(cfg, encoder_width)


class QFormer(nn.Module):
    """Query-only Q-Former; see the module docstring. The learned query tokens live with the caller."""

    def __init__(self, cfg: QFormerConfig, encoder_width: int):
        super().__init__()
        self.cfg = cfg
        self.encoder_width = encoder_width
        self.bert = QFormerBert(cfg, encoder_width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT initialisation (the release random-initialises the Q-Former): Linear N(0, 0.02), zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=INITIALIZER_RANGE)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(
        self, query_tokens: Tensor, encoder_hidden: Tensor, encoder_mask: Tensor | None = None
    ) -> Tensor:
        """query_tokens [B,K,H], encoder_hidden [B,N,E], encoder_mask [B,N] (nonzero/True = attend) -> [B,K,H]."""
        h, e = self.cfg.hidden_size, self.encoder_width
        if query_tokens.ndim != 3 or query_tokens.shape[-1] != h:
            raise ValueError(f"QFormer: query_tokens must be [B, K, {h}], got {tuple(query_tokens.shape)}")
        if encoder_hidden.ndim != 3 or encoder_hidden.shape[-1] != e:
            raise ValueError(
                f"QFormer: encoder_hidden must be [B, N, {e}], got {tuple(encoder_hidden.shape)}"
            )
        if encoder_hidden.shape[0] != query_tokens.shape[0]:
            raise ValueError(
                f"QFormer: batch sizes differ: query_tokens {query_tokens.shape[0]}, "
                f"encoder_hidden {encoder_hidden.shape[0]}; expand the query tokens to the batch"
            )
        enc_keep = None
        if encoder_mask is not None:
            if encoder_mask.shape != encoder_hidden.shape[:2]:
                raise ValueError(
                    f"QFormer: encoder_mask must be [B, N] = {tuple(encoder_hidden.shape[:2])}, "
                    f"got {tuple(encoder_mask.shape)}"
                )
            enc_keep = encoder_mask.to(torch.bool)
        q = self.bert.embeddings(query_tokens)
        for layer in self.bert.encoder.layer:
            q = layer(q, encoder_hidden, enc_keep)
        return q
