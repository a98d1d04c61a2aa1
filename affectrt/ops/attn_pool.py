"""Attention-pooling token compression (MODEL_SPEC §1.4): the per-modality "attention" fusion.

Given features Z [B, T, D], a score vector w [D] and a bias b [1]:

    s_t   = Z[:, t, :] · w + b            (B, T)   -- raw linear scores: no softmax
    out   = Σ_t s_t · Z[:, t, :]          (B, D)

The release computes exactly this (``video_attention_mlp`` / ``audio_attention_mlp`` = ``nn.Linear(D, 1)``
followed by a weighted sum); the output scale grows with T.
"""

from __future__ import annotations

import torch
from torch import Tensor


def attn_pool_ref(z: Tensor, weight: Tensor, bias: Tensor, upcast: bool = False) -> Tensor:
    """The definition in plain PyTorch. ``upcast=True`` computes in float64.

    Shapes: z [B, T, D], weight [D] or [1, D], bias [1] -> [B, D].
    """
    out_dtype = z.dtype
    if upcast:
        z, weight, bias = z.double(), weight.double(), bias.double()
    scores = torch.nn.functional.linear(z, weight.reshape(1, -1), bias.reshape(1))  # [B, T, 1]
    out = (scores * z).sum(dim=1)
    return out.to(out_dtype) if upcast else out


def attn_pool(z: Tensor, weight: Tensor, bias: Tensor, backend: str = "auto") -> Tensor:
    """Attention pooling Σ_t (Z_t·w + b) Z_t; see the module docstring. [B,T,D] -> [B,D]."""
    if backend not in ("auto", "eager"):
        raise ValueError(f"attn_pool: unknown backend {backend!r}")
    return attn_pool_ref(z, weight, bias)
