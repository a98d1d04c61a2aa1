"""Metrics on hand-computed cases (expected values worked out in the comments, never by the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from affectrt.eval.metrics import accuracy, fine_grained_scores, hit_rate, sentiment_scores, weighted_f1
from affectrt.eval.wheel import default_wheels, string_to_list

# ----- string_to_list -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("[happy, sad]", ["happy", "sad"]),
        ("happy,sad", ["happy", "sad"]),
        ("['Happy', \"sad\" ,, ]", ["Happy", "sad"]),  # quotes split too; no lower-casing
        ("[[happy]]", ["[happy]"]),  # only one bracket each side is dropped
        ("[]", []),
        ("", []),
        (None, []),
        (float("nan"), []),
        (["a", " b"], ["a", " b"]),  # a list passes through unchanged
        (np.str_("[calm]"), ["calm"]),
        ("[happy, happy]", ["happy", "happy"]),  # no de-duplication
    ],
)
def test_string_to_list(value, expected):
    assert string_to_list(value) == expected


# ----- the mapping on the miniature tables -----------------------------------------------------------------


def test_mini_mapping(mini_wheels):
    w = mini_wheels
    for k in range(4):
        assert [w.sector(x, k) for x in ("happy", "gladly", "sadness", "anger", "neutral", "xyz")] == [
            "positive",
            "positive",
            "negative",
            "negative",
            "",
            "",
        ]
    assert [w.sector(x, 4) for x in ("happiness", "glad", "sad", "angry", "neutral")] == [
        "joy",
        "joy",
        "sorrow",
        "",
        "",
    ]
    assert w.sector("cheerful", 0) == ""  # a wheel word that is not a key of format.csv is dropped


# ----- fine-grained F_s ------------------------------------------------------------------------------------


def test_fine_grained_hand_computed(mini_wheels):
    gt = {"s1": "happy, sad", "s2": "angry", "s3": "neutral", "s4": "glad"}
    pred = {"s1": "[happier, xyz]", "s2": "[]", "s3": "[happy]", "s4": "[Sadness, anger]"}
    # Wheels 1-4: s1 G={pos,neg} P={pos}: prec 1, rec 1/2; s2 G={neg} P={}: 0, 0; s3 G={} skipped;
    #   s4 G={pos} P={neg}: 0, 0  ->  P = 1/3, R = 1/6, F = 2(1/3)(1/6)/(1/2) = 2/9
    # Wheel 5: s1 G={joy,sorrow} P={joy}: 1, 1/2; s2 G={} skipped (angry is off wheel 5); s3 skipped;
    #   s4 G={joy} P={sorrow}: 0, 0  ->  P = 1/2, R = 1/4, F = 2(1/8)/(3/4) = 1/3
    s = fine_grained_scores(gt, pred, mini_wheels)
    assert s["fscore"] == pytest.approx((4 * 2 / 9 + 1 / 3) / 5)
    assert s["precision"] == pytest.approx((4 / 3 + 1 / 2) / 5)
    assert s["recall"] == pytest.approx((4 / 6 + 1 / 4) / 5)
    assert s["fscore_w1"] == pytest.approx(2 / 9) and s["fscore_w5"] == pytest.approx(1 / 3)
    assert (s["n_w1"], s["n_w5"]) == (3, 2)


def test_fine_grained_f_is_from_averaged_p_and_r(mini_wheels):
    # s1: P={pos} G={pos,neg}: prec 1, rec 1/2 (per-sample F 2/3); s2: P={pos,neg} G={neg}: prec 1/2, rec 1
    # (per-sample F 2/3). Averaged: P = 3/4, R = 3/4 -> F = 3/4, not the mean of per-sample F (2/3).
    gt = {"s1": "happy, sad", "s2": "sad"}
    pred = {"s1": "happy", "s2": "happy, sadder"}
    s = fine_grained_scores(gt, pred, mini_wheels)
    assert s["fscore_w1"] == pytest.approx(3 / 4)


def test_fine_grained_empty_predictions_give_nan(mini_wheels):
    # Every P_i empty: P_k = R_k = 0 on every wheel, so F_k = 0/0 = NaN and F_s is NaN (as in NumPy).
    s = fine_grained_scores({"a": "happy", "b": "sad"}, {"a": "[]", "b": ""}, mini_wheels)
    assert math.isnan(s["fscore"])
    assert s["precision"] == 0 and s["recall"] == 0


def test_fine_grained_missing_prediction_names_the_sample(mini_wheels):
    with pytest.raises(KeyError, match="'b'"):
        fine_grained_scores({"a": "happy", "b": "sad"}, {"a": "[happy]"}, mini_wheels)


# ----- HIT -------------------------------------------------------------------------------------------------


def test_hit_rate_hand_computed(mini_wheels):
    gt = {"s1": "happy", "s2": "neutral", "s3": "angry", "s4": "sad"}
    pred = {"s1": "[glad, sad]", "s2": "[happy]", "s3": "[happy]", "s4": ""}
    # Wheels 1-4: s1 hit 1; s2 skipped (neutral); s3 G={neg} P={pos}: 0; s4 P={}: 0  -> 1/3
    # Wheel 5: s1 hit 1; s2 skipped; s3 skipped (angry off wheel 5); s4 0  -> 1/2
    s = hit_rate(gt, pred, mini_wheels)
    assert s["hit"] == pytest.approx((4 / 3 + 1 / 2) / 5)
    assert (s["n_w1"], s["n_w5"]) == (3, 2)


def test_hit_rate_neutral_only_ground_truth_is_nan(mini_wheels):
    s = hit_rate({"a": "neutral", "b": "Neutral"}, {"a": "[happy]", "b": "[neutral]"}, mini_wheels)
    assert math.isnan(s["hit"]) and s["n_w1"] == 0


def test_hit_rate_off_wheel_prediction_is_a_miss(mini_wheels):
    s = hit_rate({"a": "happy"}, {"a": "[bewildered, zzz]"}, mini_wheels)
    assert s["hit"] == 0


# ----- sentiment -------------------------------------------------------------------------------------------


def test_sentiment_hand_computed():
    val = {"a": 1.2, "b": -0.4, "c": 0.0, "d": 2.0, "e": -1.0, "f": 0.6}
    pred = {
        "a": "positive",
        "b": "Positive",
        "c": "negative",
        "d": "positive.",
        "e": "neutral",
        "f": "negative",
    }
    # c is dropped (valence 0). "Positive" and "positive." count as 0 -> not positive.
    # (true, pred): a (T,T) b (F,F) d (T,F) e (F,F) f (T,F): ACC 3/5.
    # class T: tp 1 fp 0 fn 2 -> F1 1/2, support 3; class F: tp 2 fp 2 fn 0 -> F1 2/3, support 2.
    # WAF = (3·1/2 + 2·2/3) / 5 = 17/30
    s = sentiment_scores(val, pred)
    assert s["acc"] == pytest.approx(3 / 5)
    assert s["waf"] == pytest.approx(17 / 30)
    assert (s["n"], s["n_error"]) == (5, 2)


def test_sentiment_neutral_prediction_is_the_negative_class():
    s = sentiment_scores({"a": 1.0, "b": -1.0}, {"a": "neutral", "b": "neutral"})
    # (T,F), (F,F): ACC 1/2; T: tp 0 fn 1 -> 0; F: tp 1 fp 1 -> 2/3, support 1 -> WAF 1/3
    assert s["acc"] == pytest.approx(1 / 2) and s["waf"] == pytest.approx(1 / 3)


def test_weighted_f1_and_accuracy_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        for p_true in (0.0, 0.3, 1.0):
            t = list(rng.random(n) < p_true)
            p = list(rng.random(n) < 0.5)
            assert weighted_f1(t, p) == pytest.approx(sk.f1_score(t, p, average="weighted", zero_division=0))
            assert accuracy(t, p) == pytest.approx(sk.accuracy_score(t, p))


# ----- the release's tables --------------------------------------------------------------------------------


def test_release_tables_sizes_and_quirks():
    w = default_wheels()
    assert len(w.format_map) == 7386 and len(w.synonym_map) == 1255
    assert all(b in w.synonym_map for bases in w.format_map.values() for b in bases)
    level1 = [sorted(set(wheel.values())) for wheel in w.wheels]
    assert level1[0] == sorted(["mad", "disgusted", "sad", "happy", "surprised", "scared"])
    assert level1[1] == sorted(["fearful", "angry", "disgusted", "sad", "surprised", "happy", "bad"])
    assert level1[2] == sorted(["mad", "scared", "joyful", "powerful", "peaceful", "sad"])
    assert level1[3] == sorted(["joy", "genius", "anger", "sad", "fear", "disgust"])
    assert level1[4] == sorted(["mad", "scared", "sad", "peaceful", "powerful", "joyful"])
    # MODEL_SPEC §4.1 / §8, observed by running the release:
    assert [w.sector("neutral", k) for k in range(5)] == [""] * 5
    assert [w.sector("fear", k) for k in (1, 2, 3, 4)] == ["happy", "joyful", "genius", "joyful"]
    assert [w.sector("surprise", k) for k in (2, 3, 4)] == ["powerful", "fear", ""]
    assert (w.sector("disgust", 2), w.sector("disgust", 4)) == ("", "")
    assert w.sector("happy", 4) == "powerful" and w.sector("joy", 4) == "powerful"
    # a word under two sectors keeps the later one (wheel 2)
    assert w.wheels[1]["overwhelmed"] == "bad"
    assert [w.wheels[1][x] for x in ("inferior", "disappointed", "embarrassed")] == ["sad"] * 3
