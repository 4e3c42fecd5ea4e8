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

JUDGED = ("accept", "correct")


def _policies(verdict: dict | None) -> set[str]:
    return {v["policy"] for v in (verdict or {}).get("violations", [])}


def chance_agreement(pairs: Sequence[tuple[str, str]]) -> float | None:
    """How often two raters would agree by chance, given how often each gives each label."""
    if not pairs:
        return None
    n = len(pairs)
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    return sum(first[label] * second[label] for label in first) / (n * n)


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels (None without pairs; 1.0 when both always agree on one label)."""
    if not pairs:
        return None
    observed = sum(a == b for a, b in pairs) / len(pairs)
    expected = chance_agreement(pairs)
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
    return {p: {"flagged": flagged[p], "kept": kept[p], "precision": kept[p] / flagged[p]} for p in sorted(flagged)}


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


def sample_weight(check: CaseCheck) -> float | None:
    """How many run records the check stands for (1 / its chance of being sampled), where the
    sampler recorded it (random and stratified samples); None for the others."""
    weight = (check.sample or {}).get("weight")
    return float(weight) if isinstance(weight, (int, float)) and weight > 0 else None


def violation_rates(checks: Iterable[CaseCheck]) -> dict[str, Any]:
    """Share of judged items with a violation (by the reviewer's verdict): per policy, region and day.

    When every judged check carries a sample weight, the shares are weighted back to the run (a
    stratified sample over-draws rare cells, so its raw share is not the run's rate); otherwise
    they are plain shares of the reviewed items. An overlap item's two reviews count as one item.
    `counts` holds the raw (checks with a violation, checks judged) per group, `weighted` says which.
    """
    judged = [c for c in checks if c.review_decision in JUDGED and c.reviewer_verdict]
    weights = [sample_weight(c) for c in judged]
    weighted = bool(judged) and all(w is not None for w in weights)
    # An overlap item reviewed twice is one item: its two verdicts share its weight.
    copies = Counter((c.queue, c.overlap_group) for c in judged if c.overlap_group)
    weights = [(w if weighted else 1.0) / copies.get((c.queue, c.overlap_group), 1) for c, w in zip(judged, weights)]
    out: dict[str, Any] = {"policy": {}, "region": {}, "day": {}, "counts": {"policy": {}, "region": {}, "day": {}},
                           "weighted": weighted, "judged": len(judged)}
    total = sum(weights)
    for policy in sorted({p for c in judged for p in _policies(c.reviewer_verdict)}):
        hits = [(c, w) for c, w in zip(judged, weights) if policy in _policies(c.reviewer_verdict)]
        if hits:
            out["policy"][policy] = sum(w for _, w in hits) / total
            out["counts"]["policy"][policy] = (len(hits), len(judged))
    for key, of in (("region", lambda c: c.item.get("region") or "none"), ("day", lambda c: c.updated_at[:10])):
        totals, hits, raw_totals, raw_hits = Counter(), Counter(), Counter(), Counter()
        for check, w in zip(judged, weights):
            violated = bool(check.reviewer_verdict["violations"])
            totals[of(check)] += w
            hits[of(check)] += w * violated
            raw_totals[of(check)] += 1
            raw_hits[of(check)] += violated
        out[key] = {k: hits[k] / totals[k] for k in sorted(totals)}
        out["counts"][key] = {k: (raw_hits[k], raw_totals[k]) for k in sorted(totals)}
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
        "agreement": {"pairs": len(pairs), "kappa": cohen_kappa(pairs), "chance": chance_agreement(pairs),
                      "agreed": sum(a == b for a, b in pairs),
                      "observed": sum(a == b for a, b in pairs) / len(pairs) if pairs else None},
        "judged": judged,
        "violation_rates": violation_rates(checks),
    }


def bar_chart(title: str, values: dict[str, float], *, counts: dict[str, tuple[int, int]] | None = None,
              empty: str = "no data yet", width: int = 560, bar_h: int = 18) -> str:
    """A horizontal bar chart of shares in [0, 1], as inline SVG text (labels escaped).

    Args:
        title: the chart's title.
        values: label -> share.
        counts: label -> (numerator, denominator), printed after each share: "80% (8/10)".
        empty: what the chart says when there is nothing to show, and why.
    """
    label_w, pad = 190, 6
    height = 28 + max(1, len(values)) * (bar_h + pad)
    scale = width - label_w - 110
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}" class="chart">',
             f'<text x="0" y="16" class="chart-title">{escape(title)}</text>']
    if not values:
        parts.append(f'<text x="0" y="40" class="chart-empty">{escape(empty)}</text>')
    for row, (label, value) in enumerate(values.items()):
        y = 28 + row * (bar_h + pad)
        w = 0 if value is None or math.isnan(value) else max(1, round(scale * min(1.0, value)))
        count = (counts or {}).get(label)
        text = ("n/a" if value is None or math.isnan(value) else f"{value:.0%}") + (f" ({count[0]}/{count[1]})" if count else "")
        parts += [f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{escape(str(label))}</text>',
                  f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" class="bar"/>',
                  f'<text x="{label_w + w + 4}" y="{y + bar_h - 5}" class="bar-value">{escape(text)}</text>']
    parts.append("</svg>")
    return "".join(parts)


def rate_basis(rates: dict[str, Any]) -> str:
    """How the violation rates were computed, for their chart titles."""
    return "weighted back to the run" if rates["weighted"] else "share of reviewed items, not weighted"


def charts(stats: dict[str, Any]) -> list[str]:
    """The dashboard's SVG charts, in page order; every bar carries its counts."""
    rates, agreement = stats["violation_rates"], stats["agreement"]
    judged = stats["judged"]
    override = {"override rate": stats["override_rate"]} if stats["override_rate"] is not None else {}
    corrected = stats["decisions"].get("correct", 0)
    pairs = agreement["pairs"]
    agree = {"observed agreement": agreement["observed"], "agreement expected by chance": agreement["chance"]} if pairs else {}
    agree_counts = {"observed agreement": (agreement["agreed"], pairs)} if pairs else {}
    basis = rate_basis(rates)
    no_judged = "no judged case check yet (accepted or corrected)"
    return [
        bar_chart("Model precision per policy (kept / flagged)", {p: v["precision"] for p, v in stats["precision"].items()},
                  counts={p: (v["kept"], v["flagged"]) for p, v in stats["precision"].items()},
                  empty="no judged case check has a model flag yet"),
        bar_chart("Override rate (corrected / judged)", override, counts={"override rate": (corrected, judged)}, empty=no_judged),
        bar_chart("Reviewer agreement on overlap items", agree, counts=agree_counts,
                  empty="no overlap item reviewed by two reviewers yet (sample with --overlap)"),
        bar_chart(f"Violation rate by policy ({basis})", rates["policy"], counts=rates["counts"]["policy"],
                  empty=no_judged if not rates["judged"] else "no reviewer found a violation"),
        bar_chart(f"Violation rate by region ({basis})", rates["region"], counts=rates["counts"]["region"], empty=no_judged),
        bar_chart(f"Violation rate by day ({basis})", rates["day"], counts=rates["counts"]["day"], empty=no_judged),
    ]


def kappa_note(agreement: dict[str, Any]) -> str | None:
    """Kappa in words: why high agreement can go with a kappa near 0."""
    if not agreement["pairs"]:
        return None
    kappa, chance, observed = agreement["kappa"], agreement["chance"], agreement["observed"]
    return (f"Cohen's kappa corrects agreement for chance: kappa = (observed - chance) / (1 - chance) = "
            f"({observed:.2f} - {chance:.2f}) / (1 - {chance:.2f}) = {kappa:.2f}, over {agreement['pairs']} overlap items. "
            "When nearly every item gets the same decision, chance agreement is already high, so a high observed "
            "agreement can still give a kappa near 0; below 0, the reviewers agree less than chance would.")
