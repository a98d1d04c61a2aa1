"""Turning sampled uint8 frames into CLIP's input, exactly as the release's CLIP wrapper does (MODEL_SPEC §1.3).

The release casts each 224×224 frame to uint8, goes through PIL and ``CLIPImageProcessor``: resize of the
short side to 224 and centre crop are no-ops at 224, so the effective transform is rescale then normalise,
computed as the processor does it: ``float32(float64(x) * (1/255))``, then ``(x - mean) / std`` in float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from affectrt.config import MediaConfig


def clip_pixels(frames: np.ndarray | Tensor, media: MediaConfig | None = None) -> Tensor:
    """uint8 frames [..., H, W, 3] (channels last) -> float32 [..., 3, H, W] normalised for CLIP.

    Channel order is kept: RGB frames stay RGB and OpenFace faces stay BGR (the release never swaps them).
    """
    media = media or MediaConfig()
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(
            f"frames: expected uint8 [..., H, W, 3], got {x.dtype} {tuple(x.shape)}; pass the decoder's "
            "uint8 output"
        )
    scaled = (x.to(torch.float64) * (1.0 / 255.0)).to(torch.float32)
    mean = torch.tensor(media.clip_mean, dtype=torch.float32, device=x.device)
    std = torch.tensor(media.clip_std, dtype=torch.float32, device=x.device)
    return ((scaled - mean) / std).movedim(-1, -3).contiguous()
