"""Accuracy metrics over multi-label policy verdicts, with bootstrap intervals.

Everything here is pure: label matrices and score matrices in, numbers out. Labels are an
(items x policies) boolean matrix; scores an (items x policies) float matrix in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from moderation.schema import DECISIONS


@dataclass(frozen=True)
class Labels:
    """Gold and predicted labels for one set of items, aligned row by row."""

    gold: np.ndarray  # bool (n, P)
    pred: np.ndarray  # bool (n, P), after thresholds
    scores: np.ndarray  # float (n, P)
    gold_decision: np.ndarray  # object (n,): decision or None
    pred_decision: np.ndarray  # object (n,): decision or None (error)
    valid: np.ndarray  # bool (n,): the system returned a verdict
    policies: tuple[str, ...]  # the taxonomy: the policy of each column

    def __len__(self) -> int:
        return len(self.gold)

    def take(self, idx: np.ndarray) -> Labels:
        arrays = (self.gold, self.pred, self.scores, self.gold_decision, self.pred_decision, self.valid)
        return Labels(*(a[idx] for a in arrays), self.policies)


def label_matrix(sets: Sequence[frozenset[str] | set[str]], policies: Sequence[str]) -> np.ndarray:
    """(items x policies) 0/1 matrix of a taxonomy's policies.

    Raises:
        ValueError: a label is not one of `policies`.
    """
    index = {p: i for i, p in enumerate(policies)}
    matrix = np.zeros((len(sets), len(policies)), dtype=bool)
    for row, labels in enumerate(sets):
        for label in labels:
            if label not in index:
                raise ValueError(f"label {label!r} is not a policy of the taxonomy {list(policies)}")
            matrix[row, index[label]] = True
    return matrix


def _safe_div(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.full_like(a, np.nan), where=b > 0)


def prf(gold: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-policy precision, recall and F1 (NaN where undefined)."""
    tp = (gold & pred).sum(0)
    precision = _safe_div(tp, pred.sum(0))
    recall = _safe_div(tp, gold.sum(0))
    f1 = _safe_div(2 * tp, gold.sum(0) + pred.sum(0))
    return precision, recall, f1


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the policies the gold labels contain at all."""
    return _nanmean(np.where(gold.any(0), prf(gold, pred)[2], np.nan))


def point_metrics(labels: Labels) -> dict[str, float]:
    """Every scalar metric for one sample of items."""
    gold, pred = labels.gold, labels.pred
    precision, recall, f1 = prf(gold, pred)
    present = gold.sum(0) > 0  # macro-F1 over the policies the set labels at all
    tp, gp, pp = (gold & pred).sum(), gold.sum(), pred.sum()
    out = {
        "micro_f1": float(2 * tp / (gp + pp)) if gp + pp else math.nan,
        "macro_f1": macro_f1(gold, pred),
        "schema_valid_rate": float(labels.valid.mean()) if len(labels) else math.nan,
    }
    has_decision = np.array([d is not None for d in labels.gold_decision])
    if has_decision.any():
        out["decision_accuracy"] = float(np.mean(labels.gold_decision[has_decision] == labels.pred_decision[has_decision]))
    clean = ~gold.any(1)
    if clean.any():
        out["clean_fpr"] = float(pred[clean].any(1).mean())
    item_gold, item_score = gold.any(1), labels.scores.max(1)
    if item_gold.any() and (~item_gold).any():
        for target in (0.01, 0.05):
            out[f"tpr_at_{int(target * 100)}pct_fpr"] = tpr_at_fpr(item_gold, item_score, target)
    for i, policy in enumerate(labels.policies):
        if present[i] or pred[:, i].any():
            out[f"{policy}/precision"] = float(precision[i])
            out[f"{policy}/recall"] = float(recall[i])
            out[f"{policy}/f1"] = float(f1[i])
    return out


GROUP_METRICS = ("macro_f1", "micro_f1", "clean_fpr", "decision_accuracy")


def group_metrics(labels: Labels) -> dict[str, float]:
    """The few metrics a breakdown (by language, kind or region) shows per group, with its counts:
    items, violating items, and the share of violating items flagged with any policy."""
    gold_any, pred_any = labels.gold.any(1), labels.pred.any(1)
    point = point_metrics(labels)
    out = {"n": len(labels), "violating": int(gold_any.sum()),
           "violation_recall": float(pred_any[gold_any].mean()) if gold_any.any() else math.nan}
    out.update({k: point[k] for k in GROUP_METRICS if k in point})
    return out


def ranking_metrics(labels: Labels) -> dict[str, float]:
    """Per-policy AUPRC and ROC-AUC from scores, and their macro means (policies with both classes)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    out, auprc, auroc = {}, [], []
    for i, policy in enumerate(labels.policies):
        y = labels.gold[:, i]
        if y.all() or not y.any():
            continue
        ap = float(average_precision_score(y, labels.scores[:, i]))
        auc = float(roc_auc_score(y, labels.scores[:, i]))
        out[f"{policy}/auprc"], out[f"{policy}/roc_auc"] = ap, auc
        auprc.append(ap)
        auroc.append(auc)
    if auprc:
        out["macro_auprc"], out["macro_roc_auc"] = float(np.mean(auprc)), float(np.mean(auroc))
    return out


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over equal-width bins."""
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if not len(y):
        return math.nan
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(y[inside].mean() - p[inside].mean())
    return float(total / len(y))


def calibration_metrics(labels: Labels) -> dict[str, float]:
    """ECE of the per-policy scores (pooled over the policies the set labels), on valid items."""
    present = labels.gold.any(0)
    valid = labels.valid
    if not present.any() or not valid.any():
        return {}
    return {"ece": ece(labels.gold[valid][:, present], labels.scores[valid][:, present])}


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, observed frequency, count) per non-empty bin, for a reliability diagram."""
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    conf, freq, count = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf.append(p[inside].mean())
            freq.append(y[inside].mean())
            count.append(inside.sum())
    return np.array(conf), np.array(freq), np.array(count)


def tpr_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    """Best true-positive rate among thresholds whose false-positive rate is at most max_fpr."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def bootstrap(
    labels: Labels, metric_fn: Callable[[Labels], dict[str, float]], n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of every metric over item-level resamples."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    n = len(labels)
    for _ in range(n_boot):
        for key, value in metric_fn(labels.take(rng.integers(0, n, n))).items():
            samples.setdefault(key, []).append(value)
    intervals = {}
    for key, values in samples.items():
        arr = np.array(values, dtype=float)
        arr = arr[~np.isnan(arr)]
        if len(arr) >= max(10, n_boot // 10):
            intervals[key] = (float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5)))
    return intervals


def choose_thresholds(scores: np.ndarray, gold: np.ndarray, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-policy thresholds that maximise F1 on a dev split (0.5 where dev has no positives).

    Takes only dev scores and labels: nothing about the test split can reach it.
    """
    grid = np.asarray(grid if grid is not None else np.linspace(0.05, 0.95, 19))
    thresholds = np.full(scores.shape[1], 0.5)
    for i in range(scores.shape[1]):
        if not gold[:, i].any():
            continue
        f1s = [_safe_div(2 * (gold[:, i] & (scores[:, i] >= t)).sum(), gold[:, i].sum() + (scores[:, i] >= t).sum()) for t in grid]
        thresholds[i] = float(grid[int(np.nanargmax(np.nan_to_num(np.array(f1s, dtype=float), nan=-1)))])
    return thresholds


def decide(pred: np.ndarray, valid: np.ndarray, severity_action: dict[str, str], policies: Sequence[str]) -> np.ndarray:
    """A decision per item from predicted policies: the strongest default action, allow when none."""
    order = {d: i for i, d in enumerate(DECISIONS)}
    out = np.empty(len(pred), dtype=object)
    for row in range(len(pred)):
        if not valid[row]:
            out[row] = None
            continue
        actions = [severity_action[policies[i]] for i in np.flatnonzero(pred[row])]
        out[row] = max(actions, key=order.__getitem__) if actions else "allow"
    return out


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired per-item correctness."""
    from scipy.stats import binomtest

    b = int((correct_a & ~correct_b).sum())
    c = int((~correct_a & correct_b).sum())
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"a_only_correct": b, "b_only_correct": c, "p_value": p}


def paired_macro_f1(gold: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """macro-F1 of B minus A on the same items, with its 95% paired-bootstrap interval."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(gold), len(gold))
        diffs.append(macro_f1(gold[idx], b[idx]) - macro_f1(gold[idx], a[idx]))
    diffs = np.array(diffs)
    diffs = diffs[~np.isnan(diffs)]
    return macro_f1(gold, b) - macro_f1(gold, a), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))
