"""Merchant health from counted violations: points with decay, tier, escalations, and the explanation."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from moderation.merchants.enforcement import Enforcement, Strike, age_days, health
from moderation.merchants.ledger import Violation, parse_time


def strike_of(v: Violation) -> Strike:
    return Strike(v.item_id, v.policy, v.severity, parse_time(v.at), v.source)


def explain_row(config: Enforcement, v: Violation, now: datetime, under_appeal: set[tuple[str, str]]) -> dict[str, Any]:
    """One violation as an explanation line: its points, decay factor and decayed points."""
    age = age_days(parse_time(v.at), now)
    base = config.points(v.policy, v.severity)
    factor = config.decay(age) if v.counts and age >= 0 else 0.0
    return {**v.to_dict(), "age_days": round(age, 2), "points": base, "decay": round(factor, 4),
            "decayed_points": round(base * factor, 4), "under_appeal": (v.item_id, v.policy) in under_appeal,
            "future": age < 0}


def merchant_health(config: Enforcement, merchant: str, violations: list[Violation], items: list[dict[str, Any]],
                    now: datetime, under_appeal: set[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """One merchant's health record: tier, points, escalations and every violation explained.

    Strikes under a pending appeal still count until the appeal is decided.
    """
    counted = [v for v in violations if v.counts]
    result = health(config, [strike_of(v) for v in counted], now)
    rows = sorted((explain_row(config, v, now, under_appeal) for v in violations),
                  key=lambda r: (not r["counts"], -r["decayed_points"], r["item_id"], r["policy"]))
    return {
        "merchant": merchant, "tier": result.tier, "points": result.points, "points_tier": result.points_tier,
        "escalations": list(result.escalations), "pending_review": result.pending_review,
        "items": len(items), "strikes": len(counted), "region": _mode(i.get("region") for i in items),
        "language": _mode(i.get("language") for i in items), "violations": rows,
    }


def _mode(values) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


def score_all(config: Enforcement, violations: list[Violation], items: dict[str, dict[str, Any]], now: datetime,
              under_appeal: set[tuple[str, str]] = frozenset()) -> dict[str, dict[str, Any]]:
    """Health of every merchant that owns at least one item, keyed by merchant."""
    by_merchant: dict[str, list[Violation]] = defaultdict(list)
    for v in violations:
        by_merchant[v.merchant].append(v)
    owned: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items.values():
        owned[item["_merchant"]].append(item)
    return {m: merchant_health(config, m, by_merchant.get(m, []), owned[m], now, under_appeal) for m in sorted(owned)}
