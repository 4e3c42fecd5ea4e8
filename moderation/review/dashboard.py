"""Dashboard figures from case checks, and the server-side SVG charts that show them.

Precision per policy: of the model's flags that reviewers judged (accepted or corrected), the
share the reviewer kept. Override rate: corrected / (accepted + corrected). Agreement: Cohen's
kappa between the two reviewers of each overlap item, on the final decision.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from moderation.review.store import CaseCheck
from moderation.schema import POLICY_IDS

JUDGED = ("accept", "correct")


def _policies(verdict: dict | None) -> set[str]:
    return {v["policy"] for v in (verdict or {}).get("violations", [])}


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels (None without pairs; 1.0 when both always agree on one label)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in first) / (n * n)
    if expected == 1:
        return 1.0
    return (observed - expected) / (1 - expected)


def precision_by_policy(checks: Iterable[CaseCheck]) -> dict[str, dict[str, float | int]]:
    flagged, kept = Counter(), Counter()
    for check in checks:
        if check.review_decision in JUDGED and check.model_verdict:
            final = _policies(check.reviewer_verdict)
            for policy in _policies(check.model_verdict):
                flagged[policy] += 1
                kept[policy] += policy in final
    return {p: {"flagged": flagged[p], "kept": kept[p], "precision": kept[p] / flagged[p]} for p in POLICY_IDS if flagged[p]}


def agreement_pairs(checks: Iterable[CaseCheck]) -> list[tuple[str, str]]:
    """(decision of reviewer A, decision of reviewer B) per overlap item both judged."""
    groups: dict[str, list[CaseCheck]] = defaultdict(list)
    for check in checks:
        if check.overlap_group and check.review_decision in JUDGED and check.reviewer_verdict:
            groups[(check.queue, check.overlap_group)].append(check)
    pairs = []
    for members in groups.values():
        if len(members) == 2 and members[0].reviewer != members[1].reviewer:
            a, b = sorted(members, key=lambda c: c.reviewer or "")
            pairs.append((a.reviewer_verdict["decision"], b.reviewer_verdict["decision"]))
    return pairs


def violation_rates(checks: Iterable[CaseCheck]) -> dict[str, dict[str, float]]:
    """Share of judged items with a violation (by the reviewer's verdict): per policy, region and day."""
    judged = [c for c in checks if c.review_decision in JUDGED and c.reviewer_verdict]
    by_policy = Counter(p for c in judged for p in _policies(c.reviewer_verdict))
    out: dict[str, dict[str, float]] = {"policy": {}, "region": {}, "day": {}}
    if judged:
        out["policy"] = {p: by_policy[p] / len(judged) for p in POLICY_IDS if by_policy[p]}
    for key, of in (("region", lambda c: c.item.get("region") or "none"), ("day", lambda c: c.updated_at[:10])):
        totals, hits = Counter(), Counter()
        for check in judged:
            totals[of(check)] += 1
            hits[of(check)] += bool(check.reviewer_verdict["violations"])
        out[key] = {k: hits[k] / totals[k] for k in sorted(totals)}
    return out


def summary(checks: Sequence[CaseCheck]) -> dict[str, Any]:
    decisions = Counter(c.review_decision for c in checks if c.status == "done")
    judged = decisions["accept"] + decisions["correct"]
    pairs = agreement_pairs(checks)
    return {
        "checks": len(checks),
        "done": sum(decisions.values()),
        "decisions": dict(decisions),
        "override_rate": decisions["correct"] / judged if judged else None,
        "precision": precision_by_policy(checks),
        "agreement": {"pairs": len(pairs), "kappa": cohen_kappa(pairs),
                      "observed": sum(a == b for a, b in pairs) / len(pairs) if pairs else None},
        "violation_rates": violation_rates(checks),
    }


def bar_chart(title: str, values: dict[str, float], *, width: int = 520, bar_h: int = 18) -> str:
    """A horizontal bar chart of shares in [0, 1], as inline SVG text (labels escaped)."""
    label_w, pad = 190, 6
    height = 28 + max(1, len(values)) * (bar_h + pad)
    scale = width - label_w - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" class="chart">',
             f'<text x="0" y="16" class="chart-title">{escape(title)}</text>']
    if not values:
        parts.append('<text x="0" y="40" class="chart-empty">no data yet</text>')
    for row, (label, value) in enumerate(values.items()):
        y = 28 + row * (bar_h + pad)
        w = 0 if value is None or math.isnan(value) else max(1, round(scale * min(1.0, value)))
        parts += [f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{escape(str(label))}</text>',
                  f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" class="bar"/>',
                  f'<text x="{label_w + w + 4}" y="{y + bar_h - 5}">{value:.0%}</text>']
    parts.append("</svg>")
    return "".join(parts)


def charts(stats: dict[str, Any]) -> list[str]:
    """The dashboard's SVG charts, in page order."""
    rates = stats["violation_rates"]
    override = {"override rate": stats["override_rate"]} if stats["override_rate"] is not None else {}
    kappa = stats["agreement"]["kappa"]
    agreement = {"observed agreement": stats["agreement"]["observed"]} if stats["agreement"]["pairs"] else {}
    if kappa is not None:
        agreement["Cohen's kappa (floored at 0)"] = max(0.0, kappa)
    return [
        bar_chart("Model precision per policy (case checks)", {p: v["precision"] for p, v in stats["precision"].items()}),
        bar_chart("Override rate (corrected / judged)", override),
        bar_chart("Reviewer agreement on overlap items", agreement),
        bar_chart("Violation rate by policy", rates["policy"]),
        bar_chart("Violation rate by region", rates["region"]),
        bar_chart("Violation rate by day", rates["day"]),
    ]
