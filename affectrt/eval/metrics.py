"""MER-UniBench metrics, exactly as the release computes them (MODEL_SPEC §4.2-4.4).

Labels are parsed with :func:`~affectrt.eval.wheel.string_to_list`, lower-cased and stripped, then mapped
onto each of the five emotion wheels with G_k (:mod:`affectrt.eval.wheel`); "" results are dropped.

- Fine-grained (OV-MERD+), per wheel k over the samples with G_i ≠ ∅:
  prec_i = |G_i ∩ P_i| / |P_i|, rec_i = |G_i ∩ P_i| / |G_i| (both 0 when P_i = ∅);
  P_k = mean_i prec_i, R_k = mean_i rec_i, F_k = 2·P_k·R_k / (P_k + R_k)  (NaN when P_k + R_k = 0);
  F_s, Precision_s, Recall_s = the means over k of F_k, P_k, R_k.
- Basic emotions (MER2023, MER2024, MELD, IEMOCAP), per wheel k over the samples with G_i ≠ ∅ (so neutral
  ground truth is skipped): HIT_k = mean_i |G_i ∩ P_i|; HIT = mean_k HIT_k.
- Sentiment (MOSI, MOSEI, SIMS, SIMS v2): the judge's word maps to +1/-1/0 by exact string equality
  (``positive``, ``negative``, ``neutral``; anything else, e.g. ``Positive`` or ``positive.``, is 0); samples
  with ground-truth valence 0 are dropped; y = gt > 0, ŷ = pred > 0 (a neutral prediction is the negative
  class); WAF = support-weighted F1 over the classes, ACC = mean(y == ŷ).

A mean over no samples is NaN (NumPy's ``mean([])``). Scores are fractions; reports multiply by 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from affectrt.eval.wheel import N_WHEELS, EmotionWheels, default_wheels, normalise_labels

SENTIMENT_VALUES = {"positive": 1, "negative": -1, "neutral": 0}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _harmonic(p: float, r: float) -> float:
    # The release divides NumPy floats: 0/0 is NaN (with a warning), which then makes F_s NaN.
    return 2 * p * r / (p + r) if p + r != 0 else math.nan


def _prediction(name2pred: Mapping[str, object], name: str, what: str) -> object:
    try:
        return name2pred[name]
    except KeyError:
        raise KeyError(
            f"{what}: no prediction for test sample {name!r}; the answers or judge outputs are incomplete "
            "(rerun the evaluation to fill them in)"
        ) from None


def fine_grained_scores(
    name2gt: Mapping[str, object],
    name2pred: Mapping[str, object],
    wheels: EmotionWheels | None = None,
    what: str = "predictions",
) -> dict[str, float]:
    """Set-level F_s with its Precision_s and Recall_s (fractions), plus per-wheel values and counts.

    ``name2gt``: name -> ground-truth label list (a string such as ``"happy, relaxed"`` or a list);
    ``name2pred``: name -> the judge's label string (``"[happy, calm]"``) for every ground-truth name.
    """
    wheels = wheels or default_wheels()
    gts = {n: normalise_labels(v) for n, v in name2gt.items()}
    preds = {n: normalise_labels(_prediction(name2pred, n, what)) for n in name2gt}
    out: dict[str, float] = {}
    fs, ps, rs = [], [], []
    for k in range(N_WHEELS):
        prec, rec = [], []
        for name, gt_labels in gts.items():
            g = wheels.sectors(gt_labels, k)
            if not g:
                continue
            p = wheels.sectors(preds[name], k)
            if not p:
                prec.append(0.0)
                rec.append(0.0)
            else:
                hit = len(g & p)
                prec.append(hit / len(p))
                rec.append(hit / len(g))
        pk, rk = _mean(prec), _mean(rec)
        fk = _harmonic(pk, rk)
        out[f"fscore_w{k + 1}"], out[f"precision_w{k + 1}"], out[f"recall_w{k + 1}"] = fk, pk, rk
        out[f"n_w{k + 1}"] = len(prec)
        fs.append(fk)
        ps.append(pk)
        rs.append(rk)
    out.update(fscore=_mean(fs), precision=_mean(ps), recall=_mean(rs))
    return out


def hit_rate(
    name2gt: Mapping[str, object],
    name2pred: Mapping[str, object],
    wheels: EmotionWheels | None = None,
    what: str = "predictions",
) -> dict[str, float]:
    """HIT (fraction) over the five wheels, per-wheel HIT_k and kept-sample counts, and the unreported mscore.

    ``name2gt``: name -> one label string (``"happy"``); MELD's integer labels must already be mapped to
    strings (:mod:`affectrt.eval.datasets` does). mscore_i = |P ∩ G| / |P ∩ C| (0 when P ∩ C = ∅), with C the
    wheel images of the distinct ground-truth strings, taken as stored (not lower-cased), as the release does.
    """
    wheels = wheels or default_wheels()
    distinct = sorted({str(v) for v in name2gt.values()})
    preds = {n: normalise_labels(_prediction(name2pred, n, what)) for n in name2gt}
    out: dict[str, float] = {}
    hits_k, mscores_k = [], []
    for k in range(N_WHEELS):
        candidates = wheels.sectors(distinct, k)
        hits, mscores = [], []
        for name, gt in name2gt.items():
            g = wheels.sectors(normalise_labels(gt), k)
            if not g:
                continue  # "we only calculate non-neutral label hit rate"
            p = wheels.sectors(preds[name], k)
            hits.append(float(len(p & g)))
            pc = len(p & candidates)
            mscores.append(len(p & g) / pc if pc else 0.0)
        out[f"hit_w{k + 1}"] = _mean(hits)
        out[f"n_w{k + 1}"] = len(hits)
        hits_k.append(_mean(hits))
        mscores_k.append(_mean(mscores))
    out.update(hit=_mean(hits_k), mscore=_mean(mscores_k))
    return out


def sentiment_value(word: object) -> int:
    """+1 / -1 / 0 for exactly ``positive`` / ``negative`` / ``neutral``; every other string is 0."""
    return SENTIMENT_VALUES.get(word, 0) if isinstance(word, str) else 0


def weighted_f1(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    """Support-weighted F1 over the labels seen in either list (``sklearn.metrics.f1_score(average='weighted')``).

    F1_c = 2·TP_c / (2·TP_c + FP_c + FN_c) (0 when that is 0/0); WAF = Σ_c n_c·F1_c / Σ_c n_c with n_c the
    number of true samples of class c. NaN for empty input.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"weighted_f1: {len(y_true)} true labels but {len(y_pred)} predictions")
    if not y_true:
        return math.nan
    total = 0.0
    for c in set(y_true) | set(y_pred):
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
        support = tp + fn
        denom = 2 * tp + fp + fn
        total += support * (2 * tp / denom if denom else 0.0)
    return total / len(y_true)


def accuracy(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    """Fraction of equal pairs (``sklearn.metrics.accuracy_score``); NaN for empty input."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"accuracy: {len(y_true)} true labels but {len(y_pred)} predictions")
    return _mean([float(t == p) for t, p in zip(y_true, y_pred)])


def sentiment_scores(
    name2val: Mapping[str, float], name2sentiment: Mapping[str, object], what: str = "predictions"
) -> dict[str, float]:
    """WAF and ACC (fractions) on the samples with non-zero ground-truth valence, plus counts.

    ``name2val``: name -> ground-truth valence; ``name2sentiment``: name -> the judge's sentiment word.
    ``n_error`` counts predictions that are not exactly one of the three words (the release prints them as
    "error sample" and scores them as 0, i.e. as the negative class).
    """
    y_true, y_pred, errors = [], [], 0
    for name, val in name2val.items():
        word = _prediction(name2sentiment, name, what)
        if word not in SENTIMENT_VALUES:
            errors += 1
        if val == 0:
            continue
        y_true.append(val > 0)
        y_pred.append(sentiment_value(word) > 0)
    return {
        "waf": weighted_f1(y_true, y_pred),
        "acc": accuracy(y_true, y_pred),
        "n": len(y_true),
        "n_error": errors,
    }
