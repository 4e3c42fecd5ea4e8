"""Merchant health in the case-check store: inputs, health snapshots, tier transitions, appeals.

Tables come from migration step 3 of moderation/review/db.py. Appeals are case checks in the
review store's `appeals` queue, so reviewers decide them in the review app like any other check;
every filing, resolution and tier change is also written to the store's append-only audit log.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from moderation.errors import InputError
from moderation.merchants.enforcement import Enforcement
from moderation.merchants.health import score_all
from moderation.merchants.ledger import (
    APPEALS_QUEUE,
    ItemVerdict,
    effective_violations,
    latest_checks,
    latest_per_item,
    parse_time,
)
from moderation.review.store import Store, now_iso

logger = logging.getLogger(__name__)
PARAMS_KEY = "merchants.score_params"


class MerchantStore:
    """Merchant tables over a review Store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db

    # -- inputs: the latest model verdict per item --------------------------------------
    def save_inputs(self, verdicts: list[ItemVerdict]) -> int:
        """Keep each item's latest model verdict (newer runs replace older ones)."""
        latest = latest_per_item(self.inputs() + verdicts)
        with self.db.transaction():
            self.db.execute("DELETE FROM merchant_inputs")
            for item_id, v in latest.items():
                self.db.execute("INSERT INTO merchant_inputs (item_id, merchant, at, run, record) VALUES (?, ?, ?, ?, ?)",
                                (item_id, v.merchant, v.at, v.run, json.dumps(asdict(v), ensure_ascii=False)))
        return len(latest)

    def inputs(self) -> list[ItemVerdict]:
        return [ItemVerdict(**json.loads(r["record"])) for r in self.db.query("SELECT record FROM merchant_inputs")]

    # -- scoring parameters, kept so that an appeal recomputes health the same way -------
    def save_params(self, params: dict[str, Any]) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM settings WHERE key = ?", (PARAMS_KEY,))
            self.db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (PARAMS_KEY, json.dumps(params)))

    def params(self) -> dict[str, Any]:
        row = self.db.one("SELECT value FROM settings WHERE key = ?", (PARAMS_KEY,))
        return json.loads(row["value"]) if row else {}

    # -- health and transitions ------------------------------------------------------------
    def recompute(self, config: Enforcement, now: datetime, *, thresholds: dict[str, float] | None = None,
                  count_unscored: bool | None = None, actor: str = "cli") -> dict[str, Any]:
        """Health of every merchant from stored inputs and the current case checks; saved with transitions.

        Returns:
            {"health": {merchant: record}, "transitions": [...], "appeals_resolved": [...]}.
        """
        saved = self.params()
        thresholds = saved.get("thresholds", {}) if thresholds is None else thresholds
        count_unscored = saved.get("count_unscored", False) if count_unscored is None else count_unscored
        resolved = self.sync_appeals(actor)
        violations, items = effective_violations(self.inputs(), self.store.checks(), config, thresholds,
                                                 count_unscored=count_unscored)
        records = score_all(config, violations, items, now, self.under_appeal())
        transitions = self.save_health(records, now, config.version, actor)
        return {"health": records, "transitions": transitions, "appeals_resolved": resolved}

    def save_health(self, records: dict[str, dict[str, Any]], now: datetime, version: str, actor: str) -> list[dict]:
        """Replace the health snapshots; record a transition (and an audit row) for each tier change."""
        previous = {r["merchant"]: r["tier"] for r in self.db.query("SELECT merchant, tier FROM merchant_health")}
        stamp, as_of, changes = now_iso(), now.isoformat(), []
        with self.db.transaction():
            for merchant, record in records.items():
                old = previous.get(merchant)
                self.db.execute("DELETE FROM merchant_health WHERE merchant = ?", (merchant,))
                self.db.execute("INSERT INTO merchant_health (merchant, tier, points, as_of, computed_at, config_version,"
                                " record) VALUES (?, ?, ?, ?, ?, ?, ?)", (merchant, record["tier"], record["points"],
                                as_of, stamp, version, json.dumps(record, ensure_ascii=False)))
                if old != record["tier"]:
                    reason = _reason(record)
                    self.db.execute("INSERT INTO merchant_transitions (merchant, at, as_of, from_tier, to_tier, points,"
                                    " reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (merchant, stamp, as_of, old, record["tier"], record["points"], reason))
                    self.store.audit(actor, "merchant_tier", None, merchant=merchant, from_tier=old,
                                      to_tier=record["tier"], points=record["points"], reason=reason)
                    changes.append({"merchant": merchant, "from_tier": old, "to_tier": record["tier"],
                                    "points": record["points"], "reason": reason})
        return changes

    def health(self, merchant: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE merchant = ?", (merchant,)) if merchant else ("", ())
        rows = self.db.query(f"SELECT record, as_of FROM merchant_health {where} ORDER BY merchant", params)
        return [{**json.loads(r["record"]), "as_of": r["as_of"]} for r in rows]

    def transitions(self, merchant: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE merchant = ?", (merchant,)) if merchant else ("", ())
        return self.db.query(f"SELECT merchant, at, as_of, from_tier, to_tier, points, reason FROM merchant_transitions"
                             f" {where} ORDER BY id", params)

    # -- appeals ---------------------------------------------------------------------------
    def file_appeal(self, merchant: str, item_ids: list[str], reason: str = "", actor: str = "cli") -> list[dict]:
        """Send the merchant's counted verdicts on these items back to review, in the `appeals` queue.

        Raises:
            InputError: the merchant has no health record yet, an item is not theirs or has no counted
                strike, or it is under appeal already.
        """
        record = next(iter(self.health(merchant)), None)
        if record is None:
            raise InputError(f"no health record for merchant {merchant!r}: run `moderation merchants score` first")
        pending = {a["item_id"] for a in self.appeals(merchant) if a["status"] == "pending"}
        entries = [self._appeal_entry(merchant, record, item_id, reason, pending) for item_id in item_ids]
        filed = []
        with self.db.transaction():
            self._ensure_queue(actor)
            position = (self.db.one("SELECT MAX(position) AS p FROM case_checks WHERE queue = ?", (APPEALS_QUEUE,))
                        or {}).get("p")
            for offset, (entry, appeal) in enumerate(entries, start=1 + (position if position is not None else -1)):
                check_id = self.store.insert_check(APPEALS_QUEUE, offset, entry, now_iso())
                appeal["check_id"] = check_id
                self.db.execute(
                    "INSERT INTO merchant_appeals (appeal_id, merchant, item_id, check_id, policies, reason, status,"
                    " region, language, filed_by, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (appeal["appeal_id"], merchant, appeal["item_id"], check_id, json.dumps(appeal["policies"]),
                     reason[:2000], appeal["region"], appeal["language"], actor, now_iso()))
                self.store.audit(actor, "appeal_file", check_id, appeal_id=appeal["appeal_id"], merchant=merchant,
                                  item_id=appeal["item_id"], policies=appeal["policies"], reason=reason[:2000])
                filed.append({**appeal, "status": "pending"})
        return filed

    def _appeal_entry(self, merchant, record, item_id, reason, pending) -> tuple[dict, dict]:
        counted = [v for v in record["violations"] if v["item_id"] == item_id and v["counts"]]
        if not counted:
            raise InputError(f"merchant {merchant!r} has no counted strike on item {item_id!r}")
        if item_id in pending:
            raise InputError(f"item {item_id!r} is under appeal already")
        item, verdict, provenance = self._current(item_id)
        appeal = {"appeal_id": uuid.uuid4().hex[:12], "merchant": merchant, "item_id": item_id,
                  "policies": sorted({v["policy"] for v in counted}), "region": item.get("region"),
                  "language": item.get("language")}
        # The review page shows sample.strategy: there the reviewer reads who appeals and why.
        sample = {"strategy": f"appeal by {merchant}: {reason[:300] or '(no reason given)'}",
                  "appeal_id": appeal["appeal_id"], "merchant": merchant, "reason": reason[:2000],
                  "policies": appeal["policies"]}
        return {"item": item, "model_verdict": verdict, "provenance": provenance, "sample": sample}, appeal

    def _current(self, item_id: str) -> tuple[dict, dict, dict]:
        """The item record and its effective verdict now (the latest reviewer verdict, else the model's)."""
        check = latest_checks(self.store.checks()).get(item_id)
        if check is not None:
            return check.item, check.reviewer_verdict, {**check.provenance, "appealed_from": check.check_id}
        row = self.db.one("SELECT record FROM merchant_inputs WHERE item_id = ?", (item_id,))
        v = ItemVerdict(**json.loads(row["record"]))
        return v.item, v.verdict, {"run": v.run, "at": v.at}

    def _ensure_queue(self, actor: str) -> None:
        if not self.db.one("SELECT name FROM queues WHERE name = ?", (APPEALS_QUEUE,)):
            self.db.execute("INSERT INTO queues (name, created_at, created_by, params) VALUES (?, ?, ?, ?)",
                            (APPEALS_QUEUE, now_iso(), actor, json.dumps({"kind": "merchant appeals"})))
            self.store.audit(actor, "queue_create", queue=APPEALS_QUEUE, items=0, params={"kind": "merchant appeals"})

    def appeals(self, merchant: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE merchant = ?", (merchant,)) if merchant else ("", ())
        rows = self.db.query(f"SELECT * FROM merchant_appeals {where} ORDER BY created_at, appeal_id", params)
        return [{**r, "policies": json.loads(r["policies"])} for r in rows]

    def under_appeal(self) -> set[tuple[str, str]]:
        return {(a["item_id"], p) for a in self.appeals() if a["status"] == "pending" for p in a["policies"]}

    def sync_appeals(self, actor: str = "cli") -> list[dict[str, Any]]:
        """Close pending appeals whose case check a reviewer decided: accept upholds; a correction that
        drops an appealed policy overturns; skip and escalate leave the appeal pending."""
        resolved = []
        for appeal in (a for a in self.appeals() if a["status"] == "pending"):
            check = self.store.get(appeal["check_id"])
            if check.status != "done" or check.review_decision not in ("accept", "correct"):
                continue
            kept = {v["policy"] for v in (check.reviewer_verdict or {}).get("violations", [])}
            status = "overturned" if set(appeal["policies"]) - kept else "upheld"
            with self.db.transaction():
                changed = self.db.execute("UPDATE merchant_appeals SET status = ?, resolved_at = ? WHERE appeal_id = ?"
                                          " AND status = 'pending'", (status, now_iso(), appeal["appeal_id"]))
                if changed:
                    self.store.audit(check.reviewer or actor, f"appeal_{status}", check.check_id,
                                      appeal_id=appeal["appeal_id"], merchant=appeal["merchant"],
                                      item_id=appeal["item_id"], policies=appeal["policies"], kept=sorted(kept))
            resolved.append({**appeal, "status": status, "reviewer": check.reviewer})
        return resolved


def decide_appeal(mstore: MerchantStore, appeal_id: str, reviewer: str, overturn: bool, config: Enforcement,
                  now: datetime, notes: str = "") -> dict[str, Any]:
    """Decide an appeal without the review app: uphold (accept) or overturn (correct to allow), then recompute.

    Returns:
        recompute()'s result.
    """
    appeal = next((a for a in mstore.appeals() if a["appeal_id"] == appeal_id), None)
    if appeal is None:
        raise InputError(f"no appeal {appeal_id!r}")
    check = mstore.store.get(appeal["check_id"])
    if overturn:
        mstore.store.decide(check.check_id, reviewer, check.version, "correct", notes=notes,
                            correction={"decision": "allow", "policies": []}, lead=True)
    else:
        mstore.store.decide(check.check_id, reviewer, check.version, "accept", notes=notes, lead=True)
    return mstore.recompute(config, now, actor=reviewer)


def _reason(record: dict[str, Any]) -> str:
    if record["tier"] != record["points_tier"]:
        rules = [e["rule"] for e in record["escalations"] if e["tier"] == record["tier"]]
        return f"escalation {', '.join(rules)}"
    return f"{record['points']:.2f} decayed points"


def as_of(text: str | None) -> datetime:
    """--now: an ISO date or time, or the current time."""
    from datetime import UTC

    return parse_time(text) if text else datetime.now(UTC)
