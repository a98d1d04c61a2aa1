"""Release CSV layouts, string_to_list, the hybird label type and the 1024-token rule."""

from __future__ import annotations

import csv
import random

import pytest

from affectrt.config import get_preset
from affectrt.text.tokenizer import byte_level_tokenizer
from affectrt.train.data import DataError, SampleError, TrainingSet, read_samples, string_to_list

from .train_synth import NAMES


def test_string_to_list_is_the_release_rule():
    assert string_to_list("[happy, excited]") == ["happy", "excited"]
    assert string_to_list("['sad', \"worried\"]") == ["sad", "worried"]
    assert string_to_list("") == [] and string_to_list(None) == []
    assert string_to_list(["a", "b"]) == ["a", "b"]
    assert string_to_list("[Happy, happy,, ]") == ["Happy", "happy"]  # no lower-casing, no de-duplication


def test_mercaptionplus_layout(dataset_root):
    samples = read_samples(dataset_root, "mercaptionplus")
    assert [s.name for s in samples] == NAMES  # file order
    s0, s2 = samples[0], samples[2]
    assert s0.openset == ("happy", "excited") and s0.subtitle == "I said number 0."
    assert s2.openset == () and s2.subtitle == ""  # empty openset -> neutral later; NaN subtitle -> ""
    assert s0.face == dataset_root / "openface_face" / NAMES[0] / f"{NAMES[0]}.npy"
    assert s0.audio == dataset_root / "audio" / f"{NAMES[0]}.wav"


def test_emer_layouts_and_errors(tmp_path):
    v1 = tmp_path / "EMER" / "dataset-v1"
    v1.mkdir(parents=True)
    with open(v1 / "gt-eng.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["names", "emotions", "subtitles", "reasons"], ["a", "[sad]", "hi", "He cries."]]
        )
    (s,) = read_samples(tmp_path, "emer-v1")
    assert (s.name, s.openset, s.subtitle, s.reason) == ("a", ("sad",), "hi", "He cries.")
    v2 = tmp_path / "EMER" / "dataset-v2"
    v2.mkdir(parents=True)
    with open(v2 / "final-EMER-reason.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "chinese", "english"], ["b", "他哭了", "He is crying."]])
    (s,) = read_samples(tmp_path, "emer-v2")
    assert s.openset is None and s.reason == "He is crying."
    with pytest.raises(DataError, match="track2_train_ovmerd.csv: file not found"):
        read_samples(tmp_path, "ovmerd")
    with pytest.raises(DataError, match="unknown dataset layout"):
        read_samples(tmp_path, "bogus")


def test_hybird_draws_both_answers_and_long_samples_are_replaced(dataset_root):
    cfg = get_preset("tiny")
    tok = byte_level_tokenizer()
    samples = read_samples(dataset_root, "mercaptionplus")
    data = TrainingSet(samples, cfg, tok, "hybird", max_length=1024)
    kinds = {data.draw(0, random.Random(k)).label_type for k in range(20)}
    assert kinds == {"description", "ovlabel"}
    ex = TrainingSet(samples, cfg, tok, "ovlabel").draw(2, random.Random(0))
    assert ex.answer == "The character's emotional state is neutral."
    # Sample 0's prompt is about 470 byte tokens: with a 480-token limit only short answers fit; a too-long
    # sample is replaced by a random other one (never truncated), and counted.
    tight = TrainingSet(samples, cfg, tok, "description", max_length=len(tok.encode("x" * 470)) + 30)
    with pytest.raises(SampleError, match="max_length"):
        tight.attempt(0, random.Random(0))
    ex = tight.draw(0, random.Random(0))
    assert ex.name != NAMES[0] and tight.skips.count >= 1
    never = TrainingSet(samples, cfg, tok, "description", max_length=10)
    with pytest.raises(RuntimeError, match="10 attempts"):
        never.draw(0, random.Random(0))
