"""Fixtures: a synthetic dataset in the release layout (one broken .wav) and its tiny-preset feature cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from .train_synth import NAMES, make_dataset


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("mer2025-dataset"), bad=(NAMES[5],))


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory, dataset_root) -> Path:
    """The tiny preset's features of ``dataset_root`` (one bad clip skipped)."""
    from affectrt.features import FeatureCache, compute_features
    from affectrt.train.data import read_samples
    from affectrt.train.model import ModelSpec, build_model

    model, _ = build_model(ModelSpec(preset="tiny"), with_encoders=True)
    cache_dir = tmp_path_factory.mktemp("features")
    compute_features(
        model,
        read_samples(dataset_root, "mercaptionplus"),
        FeatureCache(cache_dir),
        batch_size=4,
        progress=False,
    )
    return cache_dir
