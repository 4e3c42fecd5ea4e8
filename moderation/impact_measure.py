"""What a re-decided policy change moves: tallies, the review queue, merchant tiers, what the case checks say of it
(rates with Wilson intervals) and the sample of changed items to review first.

Everything here reads `ItemImpact` records (a run's record before and after, made by moderation.impact) and writes
plain dicts, the report's data; moderation.impact_report turns them into Markdown, HTML and plots. The settings
of the measuring (`ImpactSettings`) and the record it reads (`ItemImpact`) are defined here, not in
moderation.impact, because impact's `assess` calls these functions: the imports run one way, impact -> here.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError
from moderation.merchants.ledger import RunInput, owner
from moderation.policy import Policy
from moderation.runfile import RunRecord

# No store to measure it from: one reviewer-day, assumed as 8 hours at 50 checks an hour. The review app is not
# the limit (docs/review.md measured 299-459 decisions a minute through it); a person is. Measure yours (--db).
DEFAULT_REVIEW_THROUGHPUT = 400.0
REVIEW = "review"  # the decision that holds an item for a human moderator: what fills the review queue
DIRECTIONS = ("newly_flagged", "newly_cleared", "decision_changed", "policies_changed")
STATUS_ORDER = ("unmeasured", "thin", "measured")  # worst first; a change with no decision change is "no change"
DIMENSIONS = ("kind", "region", "language")

Decision = tuple[str, tuple[str, ...]]  # (decision, policies)


@dataclass(frozen=True)
class ImpactSettings:
    """How the impact is measured and reported."""

    review_throughput: float | None = field(default=None, metadata={"type": float, "help": (
        "case checks the review team finishes per day; default: measured from --db's audit log (median per active "
        f"day), else {DEFAULT_REVIEW_THROUGHPUT:g} (an assumption: one reviewer, 8 hours at 50 an hour)")})
    days: float | None = field(default=None, metadata={"type": float, "help": (
        "days of traffic the runs hold, for volumes per day; default: their distinct dates (--run-date, else the "
        "files' modification dates)")})
    min_checks: int = field(default=30, metadata={"help": "an estimate on fewer case checks is marked thin, and a "
                                                          "review sample is proposed for it"})
    sample_size: int = field(default=100, metadata={"help": (
        "changed items proposed for review per direction (newly flagged, newly cleared, decision or policies "
        "changed); 100 give a 95%% Wilson interval at most 0.2 wide")})
    confidence: float = field(default=0.95, metadata={"help": "confidence of the intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the proposed review sample"})

    def __post_init__(self):
        for name in ("review_throughput", "days"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"ImpactSettings.{name} must be a positive number, got {value!r}")
        for name in ("min_checks", "sample_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"ImpactSettings.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"ImpactSettings.confidence must be in [0.5, 1), got {self.confidence!r}")

    def z(self, confidence: float | None = None) -> float:
        return statistics.NormalDist().inv_cdf(1 - (1 - (confidence or self.confidence)) / 2)


@dataclass
class ItemImpact:
    """One record of a run: its verdict (before), its verdict decided again (after), and why not where not."""

    run: str
    record: RunRecord
    item: dict[str, Any] | None  # the dump's item, where --input was given
    before: Decision | None  # None: an error record
    after: Decision | None  # None: not decided again (`why`)
    why: str  # re-decided | screened | unscored | overlay | error

    @property
    def changed(self) -> bool:
        return self.before is not None and self.after is not None and self.after != self.before

    @property
    def direction(self) -> str | None:
        if not self.changed:
            return None
        flagged_before, flagged_after = self.before[0] != "allow", self.after[0] != "allow"
        if flagged_before != flagged_after:
            return "newly_flagged" if flagged_after else "newly_cleared"
        return "decision_changed" if self.before[0] != self.after[0] else "policies_changed"

    def group(self, dimension: str) -> str:
        value = (self.item or {}).get(dimension) if dimension != "kind" else self.record.kind
        return str(value) if value else "unknown"


# -- what changes -------------------------------------------------------------------------------
def tallies(impacts: list[ItemImpact]) -> dict[str, Any]:
    """Counts of what changes: transitions, directions, per policy, per kind, region and language."""
    changed = [i for i in impacts if i.changed]
    by_policy: dict[str, Counter] = defaultdict(Counter)
    for i in changed:
        for p in set(i.after[1]) - set(i.before[1]):
            by_policy[p]["flagged"] += 1
        for p in set(i.before[1]) - set(i.after[1]):
            by_policy[p]["cleared"] += 1
    return {
        "records": len(impacts),
        "how": dict(Counter(i.why for i in impacts)),
        "changed": len(changed),
        "directions": {d: sum(1 for i in changed if i.direction == d) for d in DIRECTIONS},
        "transitions": dict(Counter(f"{i.before[0]} -> {i.after[0]}" for i in changed
                                    if i.before[0] != i.after[0]).most_common()),
        "matrix": {f"{b} -> {a}": n for (b, a), n in
                   Counter((i.before[0], i.after[0]) for i in impacts if i.before and i.after).items()},
        "by_policy": {p: {"flagged": c["flagged"], "cleared": c["cleared"]} for p, c in sorted(by_policy.items())},
        **{f"by_{d}": _by_dimension(impacts, d) for d in DIMENSIONS},
    }


def _by_dimension(impacts: list[ItemImpact], dimension: str) -> dict[str, dict[str, int]]:
    groups: dict[str, Counter] = defaultdict(Counter)
    for i in impacts:
        counts = groups[i.group(dimension)]
        counts["items"] += 1
        counts["changed"] += i.changed
        counts[i.direction or "unchanged"] += 1
        counts["not_re_decided"] += i.after is None and i.why != "error"
    keys = ("items", "changed", *DIRECTIONS, "not_re_decided")
    return {g: {k: c[k] for k in keys} for g, c in sorted(groups.items(), key=lambda kv: -kv[1]["items"])}


def run_days(sources: list[RunInput], days: float | None = None) -> tuple[float, str]:
    """Days of traffic the runs hold, and how that is known: `days` when given (--days), else their distinct dates."""
    if days:
        return days, "set (--days)"
    dates = sorted({s.when()[:10] for s in sources})
    how = "--run-date" if all(s.date for s in sources) else "the run files' dates (--run-date, else modification time)"
    return float(len(dates)), f"{len(dates)} distinct date(s) of the runs, from {how}: {', '.join(dates)}"


def measured_throughput(store) -> tuple[float, str] | None:
    """The review team's finished case checks per active day (median over the last 28 such days) in a store's
    audit log, or None when it records no decision."""
    per_day = Counter(r["at"][:10] for r in store.audit_log() if r["action"] in ("decide", "redecide", "import"))
    if not per_day:
        return None
    recent = [per_day[d] for d in sorted(per_day)[-28:]]
    return float(statistics.median(recent)), (f"measured: median of finished case checks per active day over the "
                                              f"last {len(recent)} active days in the review store's audit log")


def review_throughput(store, given: float | None = None) -> tuple[float, str]:
    """Case checks the review team finishes per day, and how that is known: `given` (--review-throughput), else
    measured from the store's audit log, else assumed (DEFAULT_REVIEW_THROUGHPUT)."""
    if given:
        return given, "set (--review-throughput)"
    return (measured_throughput(store) if store else None) or (
        DEFAULT_REVIEW_THROUGHPUT, "assumed, with no store to measure it from: one reviewer, 8 hours at 50 an hour; "
                                   "measure yours with --db, or set --review-throughput")


def review_queue(impacts: list[ItemImpact], days: tuple[float, str], throughput: tuple[float, str]) -> dict[str, Any]:
    """Items held for review (decision `review`) before and after, per day, and in reviewer-days per day."""
    before = sum(1 for i in impacts if i.before and i.before[0] == REVIEW)
    after = sum(1 for i in impacts if (i.after or i.before) and (i.after or i.before)[0] == REVIEW)
    n_days, rate = days[0], throughput[0]
    return {"before": before, "after": after, "days": n_days, "days_source": days[1], "throughput": rate,
            "throughput_source": throughput[1], "per_day_before": before / n_days, "per_day_after": after / n_days,
            "load_before": before / n_days / rate, "load_after": after / n_days / rate,
            "not_re_decided": sum(1 for i in impacts if i.after is None and i.why != "error")}


# -- merchants ----------------------------------------------------------------------------------
def verdict_after(i: ItemImpact, policy: Policy) -> dict[str, Any] | None:
    """The verdict a record gets under the proposal, as far as strikes read it: decision, policies, severities."""
    if i.after is None or i.why != "re-decided":
        return i.record.verdict
    return {"decision": i.after[0], "violations": [{"policy": p, "severity": policy.entry(p).severity, "evidence": ""}
                                                   for p in i.after[1]], "rationale": ""}


def merchant_tiers(impacts: list[ItemImpact], policy: Policy, sources: list[RunInput], config, checks: list,
                   strike_thresholds: dict[str, float], count_unscored: bool, now: datetime) -> dict[str, Any]:
    """Each merchant's health tier before and after, under the strike rules of `moderation merchants` (reviewed
    verdicts take precedence, as there), over these runs only; `policy`: the proposed one (its severities)."""
    from moderation.merchants.health import score_all
    from moderation.merchants.ledger import ItemVerdict, effective_violations

    if not any(i.item for i in impacts):
        return {"available": False, "why": "no --input: the dumps name each item's merchant"}
    dates = {str(s.run): s.when() for s in sources}
    sides = {"before": [], "after": []}
    for i in impacts:
        merchant = owner(i.item) if i.item else None
        if merchant is None or i.before is None:
            continue
        for side, verdict in (("before", i.record.verdict), ("after", verdict_after(i, policy))):
            sides[side].append(ItemVerdict(merchant, i.item, verdict, i.record.scores, dates[i.run], i.run))
    health = {side: score_all(config, *effective_violations(v, checks, config, strike_thresholds,
                                                             count_unscored=count_unscored), now)
              for side, v in sides.items()}
    order = config.tier_names
    changes = [{"merchant": m, "from": h["tier"], "to": health["after"][m]["tier"], "points_before": h["points"],
                "points_after": health["after"][m]["points"]}
               for m, h in health["before"].items() if h["tier"] != health["after"][m]["tier"]]
    changes.sort(key=lambda c: (-abs(order.index(c["to"]) - order.index(c["from"])), c["merchant"]))
    return {"available": True, "merchants": len(health["before"]), "as_of": now.isoformat(timespec="seconds"),
            "enforcement_version": config.version,
            "tiers_before": dict(Counter(h["tier"] for h in health["before"].values())),
            "tiers_after": dict(Counter(h["tier"] for h in health["after"].values())), "changes": changes,
            "tier_names": list(order)}


# -- case checks --------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials (None for n = 0)."""
    if n == 0:
        return None
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(k: int, n: int, items: int, settings: ImpactSettings) -> dict[str, Any]:
    """A rate over n case checks of a group of `items` changed items, with its interval and status."""
    status = "no change" if not items else "unmeasured" if n == 0 else "thin" if n < settings.min_checks else "measured"
    out = {"items": items, "checks": n, "positives": k, "status": status, "rate": None, "interval": None,
           "expected": None}
    interval = wilson(k, n, settings.z())
    if interval:
        out.update(rate=k / n, interval=list(interval), expected=[items * interval[0], items * interval[1]])
    return out


def estimates(impacts: list[ItemImpact], rows: list[tuple[Decision, Decision, Decision]], finished: int,
              settings: ImpactSettings) -> dict[str, Any]:
    """What the case checks say of the change: per direction and per policy, a rate with its interval, and the
    recall lost on the newly cleared items. `rows`: (before, after, reviewer's) per usable checked item
    (moderation.impact.checked); `finished`: the store's finished checks, usable or not."""
    changed = Counter(i.direction for i in impacts if i.changed)
    flagged = lambda d: d[0] != "allow"  # noqa: E731
    groups = {
        # precision: the reviewer flags it too
        "newly_flagged": [flagged(t) for b, a, t in rows if flagged(a) and not flagged(b)],
        # violations missed: the reviewer flags what the change clears
        "newly_cleared": [flagged(t) for b, a, t in rows if flagged(b) and not flagged(a)],
        # agreement: the reviewer takes the new decision
        "decision_changed": [t[0] == a[0] for b, a, t in rows if flagged(a) and flagged(b) and a[0] != b[0]],
        # agreement: the reviewer's policies hold every policy the change adds and none it drops
        "policies_changed": [set(a[1]) - set(b[1]) <= set(t[1]) and not (set(b[1]) - set(a[1])) & set(t[1])
                             for b, a, t in rows if flagged(a) and a[0] == b[0] and a[1] != b[1]],
    }
    out = {d: estimate(sum(v), len(v), changed[d], settings) for d, v in groups.items()}
    out["decision_changed"]["kept_old"] = sum(t[0] == b[0] for b, a, t in rows if flagged(a) and flagged(b) and a[0] != b[0])
    still = [flagged(t) for b, a, t in rows if flagged(a) and flagged(b)]
    kept = sum(1 for i in impacts if i.before and i.after and flagged(i.before) and flagged(i.after))
    out["still_flagged"] = estimate(sum(still), len(still), kept, settings)
    out["recall_lost"] = recall_lost(out["newly_cleared"], out["still_flagged"], settings)
    out["by_policy"] = policy_estimates(rows, impacts, settings)
    out["checks"] = {"finished": finished, "usable": len(rows)}
    return out


def recall_lost(cleared: dict[str, Any], still: dict[str, Any], settings: ImpactSettings) -> dict[str, Any]:
    """The share of the violations caught now that the change clears: lost / (lost + kept), lost = newly cleared
    items x their violation rate, kept = items flagged before and after x their precision. Its interval combines
    the two rates' Wilson bounds, each at the confidence halfway to 1 (so jointly at least the confidence)."""
    if not cleared["items"]:
        return {"status": "no change", "rate": 0.0, "interval": None, "checks": 0}
    out = {"status": "unmeasured", "rate": None, "interval": None, "checks": cleared["checks"] + still["checks"]}
    if not cleared["checks"] or (still["items"] and not still["checks"]):
        return out
    z = settings.z(1 - (1 - settings.confidence) / 2)
    c_lo, c_hi = wilson(cleared["positives"], cleared["checks"], z)
    # nothing stays flagged: every violation caught now is among the cleared, whatever the kept precision
    s_lo, s_hi = wilson(still["positives"], still["checks"], z) if still["items"] else (0.0, 0.0)

    def share(c: float, s: float) -> float:
        lost, kept = cleared["items"] * c, still["items"] * s
        return lost / (lost + kept) if lost + kept else 0.0

    status = min((e["status"] for e in (cleared, still) if e["status"] in STATUS_ORDER), key=STATUS_ORDER.index)
    return {**out, "status": status, "rate": share(cleared["rate"], still["rate"] or 0.0),
            "interval": [share(c_lo, s_hi), share(c_hi, s_lo)]}


def policy_estimates(rows: list, impacts: list[ItemImpact], settings: ImpactSettings) -> dict[str, dict[str, Any]]:
    """Per policy: the precision of its new flags, and the violation rate of the flags it drops."""
    items: dict[tuple[str, str], int] = Counter()
    for i in impacts:
        if i.changed:
            items.update([(p, "flagged") for p in set(i.after[1]) - set(i.before[1])])
            items.update([(p, "cleared") for p in set(i.before[1]) - set(i.after[1])])
    out: dict[str, dict[str, Any]] = {}
    for policy, side in sorted(items):
        hits = [policy in t[1] for b, a, t in rows
                if policy in (a[1] if side == "flagged" else b[1]) and policy not in (b[1] if side == "flagged" else a[1])]
        out.setdefault(policy, {})[side] = estimate(sum(hits), len(hits), items[(policy, side)], settings)
    return out


def overall_status(result: dict[str, Any]) -> str:
    """The weakest status of the parts of the change that move any item: "no change", or unmeasured / thin /
    measured. Items the scores cannot decide (a new overlay, a new policy) make it unmeasured."""
    est = result["estimates"]
    parts = [est[d]["status"] for d in DIRECTIONS if est[d]["items"]]
    parts += [g["status"] for sides in est["by_policy"].values() for g in sides.values() if g["items"]]
    if result["tallies"]["how"].get("overlay") or result["change"]["unscored_policies"]:
        parts.append("unmeasured")
    if not parts:
        return "no change"
    return min(parts, key=STATUS_ORDER.index)


# -- the proposed sample ------------------------------------------------------------------------
def write_sample(impacts: list[ItemImpact], est: dict[str, Any], out_dir: Path, settings: ImpactSettings,
                 dumps: dict[str, str | None], policy_path: str | None = None, proposed_path: str | None = None,
                 checked_ids: frozenset[str] = frozenset()) -> dict[str, Any]:
    """For each direction (and each policy's new or dropped flags) with fewer than `min_checks` checks, a seeded
    sample of up to `sample_size` of its changed items, as run files (one per run, its records as they are, so the
    dump's lines and ids still match) that `moderation review sample FILE --input DUMP --audit-rate 1` queues whole;
    and the items a changed overlay needs scored again, as dumps for `moderation run`. `dumps`: each run's dump;
    `checked_ids`: items checked already, left out."""
    rng, picked = random.Random(settings.seed), {}
    for group, members in _groups(impacts, est):
        if group["items"] and group["checks"] < settings.min_checks:
            pool = sorted((i for i in impacts if i.changed and members(i) and id(i) not in picked
                           and i.record.id not in checked_ids),
                          key=lambda i: (i.run, str(i.record.id), i.record.line))
            picked.update((id(i), i) for i in rng.sample(pool, min(len(pool), settings.sample_size)))
    picked = list(picked.values())
    files, commands = [], []
    policy_flag = f" --policy {policy_path}" if policy_path else ""
    for run, chosen in _by_run(picked).items():
        path = out_dir / f"review-sample-{_stem(run)}.jsonl"
        path.write_text("".join(json.dumps(i.record.to_json(), ensure_ascii=False) + "\n"
                                for i in sorted(chosen, key=lambda i: i.record.line)))
        files.append(str(path))
        commands.append(f"moderation review sample {path} --input {dumps.get(run) or 'DUMP'}{policy_flag} "
                        f"--audit-rate 1 --queue impact-{_stem(run)}")
    rescore = {"items": 0, "files": [], "commands": []}
    proposed_flag = f" --policy {proposed_path}" if proposed_path else ""
    for run, chosen in _by_run([i for i in impacts if i.why == "overlay"]).items():
        path = out_dir / f"rescore-{_stem(run)}.jsonl"
        path.write_text("".join(json.dumps(i.item, ensure_ascii=False) + "\n" for i in chosen))
        rescore["items"] += len(chosen)
        rescore["files"].append(str(path))
        rescore["commands"].append(f"moderation run {path} -o {out_dir / f'rescored-{_stem(run)}.jsonl'}{proposed_flag}")
    return {"items": len(picked), "by_direction": dict(Counter(i.direction for i in picked)), "files": files,
            "commands": commands, "rescore": rescore}


def _groups(impacts: list[ItemImpact], est: dict[str, Any]):
    """(estimate, which changed items it is about) per direction, then per policy and side."""
    for direction in DIRECTIONS:
        yield est[direction], lambda i, d=direction: i.direction == d
    for policy, sides in est["by_policy"].items():
        if "flagged" in sides:
            yield sides["flagged"], lambda i, p=policy: p in i.after[1] and p not in i.before[1]
        if "cleared" in sides:
            yield sides["cleared"], lambda i, p=policy: p in i.before[1] and p not in i.after[1]


def _by_run(impacts: list[ItemImpact]) -> dict[str, list[ItemImpact]]:
    out: dict[str, list[ItemImpact]] = defaultdict(list)
    for i in impacts:
        out[i.run].append(i)
    return dict(out)


def _stem(run: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(run).stem)


def changed_row(i: ItemImpact) -> dict[str, Any]:
    """A changed item as the report's JSON lists it."""
    return {"run": i.run, "id": i.record.id, "line": i.record.line, "direction": i.direction,
            "from": i.before[0], "to": i.after[0], "from_policies": list(i.before[1]), "to_policies": list(i.after[1]),
            **{d: i.group(d) for d in DIMENSIONS}, "merchant": owner(i.item) if i.item else None}
