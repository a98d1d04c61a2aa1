"""The fused fusion head's weights in the kernels' folded form, as named fields (no Triton import here, so
``affectrt.ops`` can use it while ``import affectrt`` stays lean)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class FusedWeights(NamedTuple):
    """The 16 tensors the forward kernels read (the gate folded into one 2 × 2dm map, MODEL_SPEC §1.5a).

    Attention weights are [d] vectors, biases [N] contiguous; matrices [N, K] of any strides.
    """

    video_att_w: Tensor  # [dv]
    video_att_b: Tensor  # [1]
    video_proj_w: Tensor  # [D, dv]
    video_proj_b: Tensor  # [D]
    audio_att_w: Tensor  # [da]
    audio_att_b: Tensor  # [1]
    audio_proj_w: Tensor  # [D, da]
    audio_proj_b: Tensor  # [D]
    multi_video_w: Tensor  # [dm, dv]
    multi_video_b: Tensor  # [dm]
    multi_audio_w: Tensor  # [dm, da]
    multi_audio_b: Tensor  # [dm]
    gate_w: Tensor  # [2, 2dm]  W2·W1
    gate_b: Tensor  # [2]       W2·b1 + b2
    multi_proj_w: Tensor  # [D, dm]
    multi_proj_b: Tensor  # [D]

    @staticmethod
    def empty_like_shapes(dv: int, da: int, dm: int, D: int, dtype: torch.dtype, device) -> FusedWeights:
        """Uninitialised weights of these widths (for ``meta`` tensors in the AOT compile)."""
        shapes = [(dv,), (1,), (D, dv), (D,), (da,), (1,), (D, da), (D,), (dm, dv), (dm,), (dm, da), (dm,)]
        shapes += [(2, 2 * dm), (2,), (D, dm), (D,)]
        return FusedWeights(*(torch.empty(s, dtype=dtype, device=device) for s in shapes))
