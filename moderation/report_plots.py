"""The evaluation report's plots: PNG files, each with a caption that says what it shows and its n,
or, where a plot cannot be drawn, the reason instead of an empty frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moderation.evaluate import SystemResult
from moderation.schema import DECISIONS


@dataclass(frozen=True)
class Figure:
    """One plot of a set's section: its file, or None with the caption saying why it is not drawn."""

    set_name: str
    title: str
    caption: str
    path: Path | None
    series: int = 0  # what the plot draws: curves, bars with a value, or items in a matrix (0: an empty frame)


def plot_set(set_name: str, rs: list[SystemResult], out_dir: Path) -> list[Figure]:
    """Every plot of one set, in page order."""
    import matplotlib

    matplotlib.use("Agg")
    figures = [_plot_pr(set_name, rs, out_dir / f"pr_{set_name}.png")]
    if policies_shown(rs):
        figures.append(_plot_f1_bars(set_name, rs, out_dir / f"f1_{set_name}.png"))
    figures.append(_plot_reliability(set_name, rs, out_dir / f"calibration_{set_name}.png"))
    for r in rs:
        if any(d is not None for d in r.labels.gold_decision):  # only sets that label decisions
            figures.append(_plot_confusion(r, out_dir / f"confusion_{set_name}_{r.system}.png"))
    return figures


def policies_shown(rs: list[SystemResult]) -> list[str]:
    """The policies a set labels or a system flags (those with a per-policy F1 entry)."""
    return [p for p in rs[0].labels.policies if any(f"{p}/f1" in r.metrics for r in rs)]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_pr(set_name: str, rs: list[SystemResult], path: Path) -> Figure:
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = rs[0].labels
    present = labels.gold.any(0)
    n, positives = len(labels), int(labels.gold.any(1).sum())
    title = "Precision-recall, all policies pooled"
    if not present.any():
        return Figure(set_name, title, f"Not drawn: none of the {n} test items violates a policy, so precision and "
                                       "recall are undefined here; read the false-positive rate on clean items instead.", None)
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rs:
        y, s = r.labels.gold[:, present].ravel(), r.labels.scores[:, present].ravel()
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=f"{r.system} (micro AUPRC {average_precision_score(y, s):.2f})")
    ax.set(xlabel="recall", ylabel="precision", title=f"{set_name}: {title.lower()}", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    caption = (f"Each (item, policy) pair of the {int(present.sum())} policies this set labels is one point: "
               f"{n} items, {positives} of them violating, {int(labels.gold[:, present].sum())} violating pairs. "
               "Rules give 0/1 scores, so their curve has a single corner.")
    return Figure(set_name, title, caption, _save(fig, path), len(ax.lines))


def _plot_f1_bars(set_name: str, rs: list[SystemResult], path: Path) -> Figure:
    import matplotlib.pyplot as plt

    policies = policies_shown(rs)
    fig, ax = plt.subplots(figsize=(9, 4))
    width, drawn = 0.8 / len(rs), 0
    for k, r in enumerate(rs):
        x = np.arange(len(policies)) + k * width
        values = [r.metrics.get(f"{p}/f1", math.nan) for p in policies]
        bars = ax.bar(x, np.nan_to_num(values), width, label=r.system)
        drawn += sum(not math.isnan(v) for v in values)
        for xi, value, bar in zip(x, values, bars):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            ax.text(xi, (0 if math.isnan(value) else value) + 0.01, text, ha="center", va="bottom", fontsize=6,
                    rotation=90, color=bar.get_facecolor())
    ax.set_xticks(np.arange(len(policies)) + 0.4 - width / 2, policies, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="F1", ylim=(0, 1.15), title=f"{set_name}: F1 per policy")
    ax.legend(fontsize=8, ncols=len(rs))
    gold = rs[0].labels.gold.sum(0)
    counts = ", ".join(f"{p} {int(gold[rs[0].labels.policies.index(p)])}" for p in policies)
    caption = (f"F1 per policy on {rs[0].n} items; positives per policy: {counts}. A bar at 0 labelled 0.00 is a "
               "policy the system got wholly wrong; 'n/a' means F1 is undefined (no gold and no predicted item).")
    return Figure(set_name, "F1 per policy", caption, _save(fig, path), drawn)


def _plot_reliability(set_name: str, rs: list[SystemResult], path: Path) -> Figure:
    """Reliability diagram: observed violation frequency against score, per system."""
    import matplotlib.pyplot as plt

    from moderation.metrics import reliability

    title = "Calibration"
    drawn = [r for r in rs if "ece" in r.metrics]
    if not drawn:
        return Figure(set_name, title, "Not drawn: no system has scores on items of a policy this set labels.", None)
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in drawn:
        present, valid = r.labels.gold.any(0), r.labels.valid
        conf, freq, count = reliability(r.labels.gold[valid][:, present], r.labels.scores[valid][:, present])
        ax.plot(conf, freq, marker="o", label=f"{r.system} (ECE {r.metrics['ece']:.3f})")
    series = len(ax.lines)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="score (10 equal-width bins)", ylabel="share of pairs that violate", title=f"{set_name}: calibration",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    caption = (f"Per score bin, the share of (item, policy) pairs that truly violate, over the policies this set "
               f"labels ({rs[0].n} items); the dotted diagonal is perfect calibration. ECE = count-weighted mean gap.")
    return Figure(set_name, title, caption, _save(fig, path), series)


def confusion(r: SystemResult) -> np.ndarray:
    """Gold decision (rows, DECISIONS) against predicted decision (columns, DECISIONS then error)."""
    rows, cols = list(DECISIONS), [*DECISIONS, "error"]
    matrix = np.zeros((len(rows), len(cols)), dtype=int)
    for gold, pred in zip(r.labels.gold_decision, r.labels.pred_decision):
        if gold is not None:
            matrix[rows.index(gold), cols.index(pred if pred is not None else "error")] += 1
    return matrix


def confusion_cells(r: SystemResult) -> list[tuple[int, str]]:
    """(count, text colour) per cell, row by row: white on the dark half of the colour map,
    near-black on the light half, so every number is readable on its cell."""
    matrix = confusion(r)
    return [(int(v), "white" if v > matrix.max() / 2 else "#111111") for v in matrix.ravel()]


def _plot_confusion(r: SystemResult, path: Path) -> Figure:
    import matplotlib.pyplot as plt

    matrix = confusion(r)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.max()))
    for (i, j), (v, colour) in zip(np.ndindex(matrix.shape), confusion_cells(r)):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=10, color=colour, fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(matrix.shape[1]), [*DECISIONS, "error"])
    ax.set_yticks(range(matrix.shape[0]), list(DECISIONS))
    ax.set(xlabel="predicted decision", ylabel="gold decision", title=f"{r.set_name}: {r.system} decisions")
    labelled = int(matrix.sum())
    caption = (f"{r.system}: decisions on the {labelled} items with a gold decision; the diagonal (bold) is right, "
               f"{int(np.trace(matrix))} of {labelled}. 'error': no valid verdict.")
    return Figure(r.set_name, f"Decisions: {r.system}", caption, _save(fig, path), labelled)
