"""Where a training batch's encoder features come from (two modes; ``cached`` is the default).

``cached`` (default): Z_v / Z_a read from the feature cache (:mod:`affectrt.features`), computed once with the
encoders in eval mode and HuBERT's input normalised per clip — the inference rule. Deterministic and far
faster (the frozen encoders are most of a step's cost). This deliberately differs from the release, whose
``model.train()`` also puts the frozen encoders in train mode and whose batch normalises audio jointly: its
training features carry accidental noise (MODEL_SPEC §8).

``release-exact``: the encoders run on the fly for every batch as the release trains them: the Hugging Face
CLIP and HuBERT models of the model directory (``transformers`` needed) in **train mode** (HuBERT dropout,
LayerDrop and SpecAugment as its ``config.json`` sets them), HuBERT's input normalised jointly over all
B·8 windows of the batch (the 2-D tensor rule, eps 1e-7), faces/frames as uint8 -> /255 -> CLIP mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from affectrt.features import CachedFeatures, FeatureCache, feature_settings
from affectrt.train.data import Example, SampleError, TrainSample


class CachedSource:
    """fetch(sample) -> (Z_v, Z_a) from the cache; batch(examples) -> stacked [B,T,d] tensors."""

    mode = "cached"

    def __init__(
        self, cache_dir: str, cfg, dtype: str = "float32", encoder_weights: str | None = None
    ) -> None:
        self.lookup = CachedFeatures(FeatureCache(cache_dir), feature_settings(cfg, dtype), encoder_weights)

    def fetch(self, sample: TrainSample) -> tuple[Tensor, Tensor]:
        try:
            return self.lookup(sample)
        except LookupError as e:
            raise SampleError("bad-media", str(e)) from None

    def batch(self, examples: Sequence[Example], device: torch.device) -> tuple[Tensor, Tensor]:
        zv = torch.stack([e.features[0] for e in examples]).to(device)
        za = torch.stack([e.features[1] for e in examples]).to(device)
        return zv, za


class ReleaseExactSource:
    """Encoders on the fly in train mode with the batch-joint HuBERT normalisation (see the module doc)."""

    mode = "release-exact"

    def __init__(self, model_dir: str, cfg, device: torch.device, autocast: bool) -> None:
        import transformers

        from affectrt.checkpoint import AUDIO_DIRS, VISION_DIRS, find_subdir

        self.cfg = cfg
        self.device = device
        self.autocast = autocast
        vision = find_subdir(model_dir, VISION_DIRS, "CLIP vision")
        audio = find_subdir(model_dir, AUDIO_DIRS, "HuBERT audio")
        self.clip = transformers.CLIPModel.from_pretrained(vision).to(device).requires_grad_(False)
        self.hubert = transformers.HubertModel.from_pretrained(audio).to(device).requires_grad_(False)
        # The release's model.train() reaches the encoders: their dropout / LayerDrop / SpecAugment are on.
        self.clip.train()
        self.hubert.train()

    def fetch(self, sample: TrainSample):
        """Decoded media of one clip: uint8 faces/frames [T,224,224,3] and raw audio windows [T,S]."""
        from affectrt.media.audio import load_audio_windows
        from affectrt.pipeline import MediaTensors

        m = self.cfg.media
        try:
            if self.cfg.visual_input == "face":
                from affectrt.media.faces import load_faces

                visual = load_faces(sample.face, n_frames=m.n_frames, size=m.image_size)
            else:
                from affectrt.media.video import read_frames

                visual = read_frames(sample.video, n_frames=m.n_frames, size=m.image_size)
            audio = load_audio_windows(sample.audio, m.sample_rate, m.n_audio_clips, m.clip_seconds)
        except Exception as e:  # unreadable media: the attempt fails, as in the release
            raise SampleError("bad-media", f"{type(e).__name__}: {e}") from None
        return MediaTensors(visual=visual, audio=audio)

    def batch(self, examples: Sequence[Example], device: torch.device) -> tuple[Tensor, Tensor]:
        import numpy as np

        from affectrt.media.audio import joint_normalize
        from affectrt.media.preprocess import clip_pixels

        m = self.cfg.media
        visual = torch.from_numpy(np.stack([e.features.visual for e in examples])).to(self.device)
        pixels = clip_pixels(visual, m)  # [B,T,3,H,W]
        windows = torch.stack([e.features.audio for e in examples])  # [B,T,S]
        b, t = windows.shape[:2]
        # One mean/variance over every window of the whole batch, as the release's feature extractor does.
        audio = joint_normalize(windows.reshape(b * t, -1), eps=m.audio_norm_eps).to(self.device)
        dev = self.device.type
        with torch.no_grad(), torch.autocast(dev, dtype=torch.float16, enabled=self.autocast):
            zv = self.clip.get_image_features(pixel_values=pixels.flatten(0, 1))
            if not isinstance(zv, Tensor):  # newer transformers return a model output
                zv = zv.pooler_output
            hs = self.hubert(audio, output_hidden_states=True).hidden_states
            za = torch.stack(hs[-4:]).mean(0).mean(1)
        return zv.view(b, t, -1).float().to(device), za.view(b, t, -1).float().to(device)
