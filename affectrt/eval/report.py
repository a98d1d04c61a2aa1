"""The MER-UniBench table in the paper's layout, JSON + CSV, and a bar chart against the paper (MODEL_SPEC §6).

Rows: the paper's AffectGPT (A, V, T) row, this run's best-over-checkpoints row (the paper's protocol,
§4.5: per-dataset oracle checkpoint) and its fixed-checkpoint row (one checkpoint for every dataset, the
honest number). Columns: the nine test sets in the paper's order (HIT for the basic-emotion sets, WAF for
sentiment, F_s for OV-MERD+), then the mean over the nine; values ×100. The mean is over the datasets
scored; with fewer than nine it is labelled ``Mean (k/9)``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from affectrt.eval.datasets import DATASETS
from affectrt.eval.scoreonly import SECONDARY, DatasetResult

# Table 2 of the paper (primary metric ×100, order of DATASETS), MODEL_SPEC §6.1.
PAPER_AFFECTGPT = {
    "AffectGPT (A,T)": (72.94, 73.41, 56.63, 55.68, 83.46, 80.74, 82.99, 83.75, 59.98),
    "AffectGPT (V,T)": (74.58, 75.29, 57.63, 62.19, 82.39, 81.57, 87.20, 86.29, 61.65),
    "AffectGPT (A,V,T)": (78.54, 78.80, 55.65, 60.54, 81.30, 80.90, 88.49, 86.18, 62.52),
}
PAPER_ROW = "AffectGPT (A,V,T)"
METRIC_NAMES = {"basic": "HIT", "sentiment": "WAF", "fine": "F_s"}


def _pct(x: float) -> float:
    return round(100 * x, 2) if x is not None and not math.isnan(x) else math.nan


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def table_rows(results: Sequence[DatasetResult]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(header, [(row label, values ×100 per column + mean)]) for the paper row and the two selections."""
    keys = [r.key for r in results]
    header = [DATASETS[k].title for k in keys]
    header.append("Mean" if len(keys) == len(DATASETS) else f"Mean ({len(keys)}/{len(DATASETS)})")
    order = list(DATASETS)
    paper = [PAPER_AFFECTGPT[PAPER_ROW][order.index(k)] for k in keys]
    rows = [(f"paper {PAPER_ROW}", [*paper, round(_mean(paper), 2)])]
    best = [_pct(r.value("best")) for r in results]
    rows.append(("best over checkpoints (paper protocol)", [*best, round(_mean(best), 2)]))
    fixed_stems = {r.fixed for r in results}
    label = f"fixed: {fixed_stems.pop()}" if len(fixed_stems) == 1 else "fixed checkpoint (per dataset)"
    fixed = [_pct(r.value("fixed")) for r in results]
    rows.append((label, [*fixed, round(_mean(fixed), 2)]))
    return header, rows


def format_table(results: Sequence[DatasetResult]) -> str:
    """The table as text, plus the secondary metrics (ACC; Precision_s, Recall_s) of the same checkpoints."""
    header, rows = table_rows(results)
    width = max(len(label) for label, _ in rows)
    cols = [max(len(h), 7) for h in header]
    lines = [" " * width + "  " + "  ".join(h.rjust(c) for h, c in zip(header, cols))]
    metric = [METRIC_NAMES[r.task] for r in results] + ["-"]
    lines.append(" " * width + "  " + "  ".join(m.rjust(c) for m, c in zip(metric, cols)))
    for label, values in rows:
        lines.append(label.ljust(width) + "  " + "  ".join(f"{v:.2f}".rjust(c) for v, c in zip(values, cols)))
    for r in results:
        for which in ("best", "fixed"):
            extra = ", ".join(f"{m} {_pct(r.value(which, m)):.2f}" for m in SECONDARY[r.task])
            if extra:
                stem = r.best if which == "best" else r.fixed
                lines.append(f"  {r.title} {which} ({stem}): {extra}")
    return "\n".join(lines)


def _json_safe(x: object) -> object:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_reports(
    results: Sequence[DatasetResult], out_dir: str | Path, chart: bool = True
) -> dict[str, Path]:
    """Write ``report.json``, ``report.csv`` and (when matplotlib is installed) ``report.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(results)
    data = {
        "table": {"columns": header, "rows": [{"label": label, "values": values} for label, values in rows]},
        "datasets": {
            r.key: {
                "title": r.title,
                "task": r.task,
                "metric": r.primary,
                "run_dir": r.run_dir,
                "n_samples": r.n_samples,
                "best": r.best,
                "fixed": r.fixed,
                "checkpoints": r.checkpoints,
            }
            for r in results
        },
        "paper": {k: dict(zip(DATASETS, v)) for k, v in PAPER_AFFECTGPT.items()},
        "notes": "values in 'table' are ×100; per-checkpoint metrics are fractions; null = NaN",
    }
    paths = {"json": out / "report.json", "csv": out / "report.csv"}
    paths["json"].write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", *header])
        for label, values in rows:
            w.writerow([label, *("" if math.isnan(v) else f"{v:.2f}" for v in values)])
    if chart:
        png = write_chart(header, rows, out / "report.png")
        if png is not None:
            paths["png"] = png
    return paths


def write_chart(
    header: Sequence[str], rows: Sequence[tuple[str, Sequence[float]]], path: Path
) -> Path | None:
    """Grouped bars per dataset (paper row, best, fixed); returns None, with a message, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "affectrt: matplotlib is not installed: no chart written (pip install 'affectrt[plot]')",
            file=sys.stderr,
        )
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(header)), 4.0))
    n = len(rows)
    width = 0.8 / n
    for i, (label, values) in enumerate(rows):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(header))]
        ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=label)
    ax.set_xticks(range(len(header)))
    ax.set_xticklabels(header, rotation=30, ha="right")
    ax.set_ylabel("score ×100 (HIT / WAF / F_s)")
    ax.set_ylim(0, 100)
    ax.set_title("MER-UniBench")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
