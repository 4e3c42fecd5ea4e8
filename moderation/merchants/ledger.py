"""From run files, the dumps they moderated and case checks to per-merchant violations that count or not.

Run files hold no item fields, so each run is joined with its dump (by line and id, as
`moderation review sample` does) to learn which merchant owns each item. A verdict's time is
the run's date (`--run-date`, else the run file's modification time). Across runs an item's
latest verdict is its model verdict; a finished case check on the item (the latest one, appeals
included) overrides it: accept confirms it, correct replaces it, skip and escalate leave it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation.errors import InputError
from moderation.merchants.enforcement import Enforcement
from moderation.review.sample import join_items
from moderation.runfile import load_run

logger = logging.getLogger(__name__)

APPEALS_QUEUE = "appeals"
# Who owns an item: listings name their seller, videos their creator, chats their channel;
# a merchant profile is the merchant itself (its shop name, else its id).
OWNER_FIELD = {"listing": "seller", "creator_video": "creator", "live_chat": "channel", "merchant": "name"}


def owner(item: dict[str, Any]) -> str | None:
    """The merchant an item record belongs to, or None when the item names none."""
    value = item.get(OWNER_FIELD.get(item.get("kind", ""), ""))
    if item.get("kind") == "merchant" and not value:
        value = item.get("id")
    return (str(value).strip() or None) if value else None


def parse_time(text: str | datetime) -> datetime:
    """A timezone-aware time from ISO-8601 text (a date alone is midnight UTC)."""
    if isinstance(text, datetime):
        stamp = text
    else:
        try:
            stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"not an ISO-8601 date or time: {text!r}") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@dataclass
class ItemVerdict:
    """The model's verdict on one merchant's item, from one run."""

    merchant: str
    item: dict[str, Any]
    verdict: dict[str, Any]
    scores: dict[str, Any] | None
    at: str
    run: str


@dataclass
class Violation:
    """One policy of an item's effective verdict (or one a reviewer removed), and whether it counts."""

    merchant: str
    item_id: str
    policy: str
    severity: str
    at: str
    source: str  # model | reviewer | appeal
    counts: bool
    why: str
    score: float | None = None
    region: str | None = None
    language: str | None = None
    kind: str | None = None
    check_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunInput:
    """A run file, the dump it moderated, and when its verdicts were made."""

    run: Path
    dump: Path
    date: str | None = None  # ISO date; None: the run file's modification time

    def when(self) -> str:
        if self.date:
            return parse_time(self.date).isoformat()
        return datetime.fromtimestamp(self.run.stat().st_mtime, UTC).isoformat(timespec="seconds")


def read_run(source: RunInput, **read_options) -> tuple[list[ItemVerdict], Counter]:
    """The item verdicts of one run joined with its dump, and counts of what was left out."""
    records = load_run(source.run)
    items = join_items(records, source.dump, **read_options)
    when, skipped, out = source.when(), Counter(), []
    for record in records:
        item = items.get(record.line)
        if record.verdict is None:
            skipped["model error"] += 1
        elif item is None:
            skipped["item not in dump"] += 1
        elif owner(item) is None:
            skipped["no merchant field"] += 1
        else:
            out.append(ItemVerdict(owner(item), item, record.verdict, record.scores, when, str(source.run)))
    if skipped:
        logger.info("%s: left out %s", source.run, dict(skipped))
    return out, skipped


def latest_per_item(verdicts: list[ItemVerdict]) -> dict[str, ItemVerdict]:
    """Each item's latest verdict across runs (by time; a later run given wins ties)."""
    latest: dict[str, ItemVerdict] = {}
    for v in verdicts:
        key = v.item["id"]
        if key not in latest or parse_time(v.at) >= parse_time(latest[key].at):
            latest[key] = v
    return latest


def latest_checks(checks) -> dict[str, Any]:
    """The latest finished accept/correct case check per item id (skip and escalate decide nothing)."""
    latest: dict[str, Any] = {}
    for check in checks:
        if check.status != "done" or check.review_decision not in ("accept", "correct"):
            continue
        key = check.item.get("id")
        if key not in latest or check.updated_at >= latest[key].updated_at:
            latest[key] = check
    return latest


def _policies(verdict: dict[str, Any] | None) -> dict[str, str]:
    return {v["policy"]: v["severity"] for v in (verdict or {}).get("violations", [])}


def model_violations(v: ItemVerdict, config: Enforcement, thresholds: dict[str, float],
                     count_unscored: bool) -> list[Violation]:
    """The model verdict's policies, each counted when its decision and score pass the rules."""
    out = []
    policy_scores = (v.scores or {}).get("policies") or {}
    for policy, severity in _policies(v.verdict).items():
        threshold = thresholds.get(policy, config.default_threshold)
        score = policy_scores.get(policy)
        if v.verdict["decision"] not in config.model_decisions:
            counts, why = False, f"model decision {v.verdict['decision']} does not count without a reviewer"
        elif score is None:
            counts = count_unscored
            why = "no score; counted (--count-unscored)" if counts else "no score and no reviewer confirmation"
        else:
            counts = score >= threshold
            why = f"score {score:.3f} {'>=' if counts else '<'} threshold {threshold:.3f}"
        out.append(_violation(v.merchant, v.item, policy, severity, v.at, "model", counts, why, score))
    return out


def reviewed_violations(merchant: str, item: dict[str, Any], at: str, check, before: dict[str, Any] | None) -> list[Violation]:
    """A reviewer's verdict on an item: its policies count; those it dropped are shown as removed."""
    appeal = check.queue == APPEALS_QUEUE
    source = "appeal" if appeal else "reviewer"
    after = _policies(check.reviewer_verdict)
    counted_why = ("upheld on appeal" if check.review_decision == "accept" else "set by appeal reviewer") if appeal \
        else ("confirmed by reviewer" if check.review_decision == "accept" else "set by reviewer correction")
    out = [_violation(merchant, item, p, s, at, source, True, counted_why, None, check.check_id)
           for p, s in after.items()]
    for policy, severity in _policies(before).items():
        if policy not in after:
            why = "overturned on appeal" if appeal else "removed by reviewer correction"
            out.append(_violation(merchant, item, policy, severity, at, source, False, why, None, check.check_id))
    return out


def _violation(merchant, item, policy, severity, at, source, counts, why, score, check_id=None) -> Violation:
    return Violation(merchant, item["id"], policy, severity, at, source, counts, why, score,
                     item.get("region"), item.get("language"), item.get("kind"), check_id)


def effective_violations(verdicts: list[ItemVerdict], checks, config: Enforcement, thresholds: dict[str, float],
                         *, count_unscored: bool = False) -> tuple[list[Violation], dict[str, dict[str, Any]]]:
    """Every merchant's violations after reviewer precedence, and the items seen (id -> item record).

    Case checks on items no run covers still count, dated by the check's creation.
    """
    latest = latest_per_item(verdicts)
    reviewed = latest_checks(checks)
    out, items = [], {}
    for item_id, v in latest.items():
        items[item_id] = {**v.item, "_merchant": v.merchant, "_at": v.at}
        check = reviewed.get(item_id)
        if check is None:
            out += model_violations(v, config, thresholds, count_unscored)
        else:
            out += reviewed_violations(v.merchant, v.item, v.at, check, check.model_verdict or v.verdict)
    for item_id, check in reviewed.items():
        if item_id in latest or owner(check.item) is None:
            continue
        merchant = owner(check.item)
        items[item_id] = {**check.item, "_merchant": merchant, "_at": check.created_at}
        out += reviewed_violations(merchant, check.item, check.created_at, check, check.model_verdict)
    return out, items
