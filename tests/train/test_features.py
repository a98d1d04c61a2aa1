"""The feature cache: hits, invalidation, bad clips, concurrent shards; the model without encoder weights."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from affectrt.features import CachedFeatures, FeatureCache, compute_features, feature_settings
from affectrt.train.data import read_samples
from affectrt.train.model import ModelSpec, build_model

from .train_synth import NAMES


def test_cache_hit_invalidation_and_bad_clip(dataset_root, tmp_path, caplog):
    model, _ = build_model(ModelSpec(preset="tiny"), with_encoders=True)
    samples = read_samples(dataset_root, "mercaptionplus")[:4] + [
        read_samples(dataset_root, "mercaptionplus")[5]
    ]
    cache = FeatureCache(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="affectrt.features"):
        first = compute_features(model, samples, cache, batch_size=2, progress=False)
    assert first.computed == 4 and first.cached == 0
    assert [n for n, _ in first.failed] == [NAMES[5]]
    assert NAMES[5] in caplog.text and "cannot open" in caplog.text  # name and reason logged
    again = compute_features(model, samples, FeatureCache(tmp_path / "c"), batch_size=2, progress=False)
    assert again.computed == 0 and again.cached == 4  # second run: all hits

    # The cached values are the inference path's features.
    from affectrt.pipeline import AffectGPTPipeline, ClipInput

    pipe = AffectGPTPipeline(model, None)
    s = samples[1]
    zv, za = pipe.encode(pipe.preprocess([pipe.load_media(ClipInput(face_npy=s.face, audio=s.audio))], [""]))
    got = CachedFeatures(FeatureCache(tmp_path / "c"), feature_settings(model.cfg))(s)
    torch.testing.assert_close(got[0], zv[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], za[0], rtol=0, atol=0)

    # A changed preprocessing setting gives new keys: everything is recomputed.
    model.cfg = model.cfg.replace(media=model.cfg.media.__class__(n_frames=4))
    changed = compute_features(model, samples[:2], FeatureCache(tmp_path / "c"), batch_size=2, progress=False)
    assert changed.computed == 2 and changed.cached == 0


def test_missing_features_are_a_sample_error(feature_cache, dataset_root):
    from affectrt.config import get_preset
    from affectrt.train.sources import CachedSource

    src = CachedSource(str(feature_cache), get_preset("tiny"))
    samples = read_samples(dataset_root, "mercaptionplus")
    zv, za = src.fetch(samples[0])
    assert zv.shape == (8, 24) and za.shape == (8, 32)
    from affectrt.train.data import SampleError

    with pytest.raises(SampleError, match="media unreadable.*cannot open"):
        src.fetch(samples[5])


def test_concurrent_writers_and_resume(tmp_path):
    a, b = FeatureCache(tmp_path), FeatureCache(tmp_path)
    a.put({"k1": (torch.ones(8, 2), torch.zeros(8, 3))})
    b.put({"k2": (torch.zeros(8, 2), torch.ones(8, 3))})
    assert not list(tmp_path.glob("shards/.*tmp"))  # no temporary files left
    c = FeatureCache(tmp_path)
    assert "k1" in c and "k2" in c and len(c) == 2
    a.refresh()
    assert "k2" in a


def test_model_without_encoder_weights(tmp_path):
    from affectrt.config import get_preset
    from affectrt.testing.hf_models import write_hf_model_dir

    root = write_hf_model_dir(get_preset("tiny"), tmp_path / "m")
    shutil.rmtree(root / "vision")
    shutil.rmtree(root / "audio")
    # d_v, d_a from the preset's release dims when the folders are absent; from the folders otherwise.
    model, tok = build_model(ModelSpec(model_dir=str(root), variant="face"), with_encoders=False)
    assert model.visual_encoder is None and model.acoustic_encoder is None
    assert model.cfg.llm.hidden_size == 64 and model.cfg.video_dim == 768
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("fusion.") or ".lora_" in n for n in trainable)
    with pytest.raises(RuntimeError, match="without encoder weights"):
        model.encode_audio(torch.zeros(1, 8, 32000))
