"""The case-check store: queues of sampled items, reviewers' decisions, an append-only audit log.

Concurrency rules:
- claiming the next item is one write transaction (BEGIN IMMEDIATE on SQLite, a row lock taken
  with FOR UPDATE SKIP LOCKED on PostgreSQL), so an item is never handed to two reviewers;
  a claim is a lease that another reviewer may take over once it expires;
- saving a decision is a compare-and-set on the row's `version`: a save based on a stale read
  fails with ReviewConflict instead of overwriting someone else's work.
Every change writes an audit row in the same transaction.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError, InputError, ModerationError
from moderation.items import Item
from moderation.review.db import Database
from moderation.review.verdicts import Taxonomy, reviewer_verdict

logger = logging.getLogger(__name__)

ROLES = ("reviewer", "lead")
QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")  # used in URLs as it is


class ReviewConflict(ModerationError):
    """A write lost a race: the case check changed since it was read, or is someone else's."""


def now_iso(delta_s: float = 0) -> str:
    """UTC time as ISO-8601 text; such strings sort in time order, so SQL compares them."""
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StoreConfig:
    """How the store hands out work."""

    lease_s: float = field(default=900.0, metadata={"help": "Seconds a claimed item stays with its reviewer."})

    def __post_init__(self):
        if not self.lease_s > 0:
            raise ConfigError(f"StoreConfig.lease_s must be positive, got {self.lease_s!r}")


@dataclass
class CaseCheck:
    """One sampled item in a queue, with the model's verdict and (once reviewed) the reviewer's."""

    check_id: str
    queue: str
    position: int
    item: dict[str, Any]
    model_verdict: dict[str, Any] | None
    provenance: dict[str, Any]
    sample: dict[str, Any]
    overlap_group: str | None
    status: str
    assigned_to: str | None
    review_decision: str | None
    reviewer_verdict: dict[str, Any] | None
    reviewer: str | None
    notes: str
    created_at: str
    updated_at: str
    version: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CaseCheck:
        loads = lambda v: None if v is None else json.loads(v)  # noqa: E731
        return cls(
            check_id=row["check_id"], queue=row["queue"], position=row["position"], item=json.loads(row["item"]),
            model_verdict=loads(row["model_verdict"]), provenance=json.loads(row["provenance"]),
            sample=json.loads(row["sample"]), overlap_group=row["overlap_group"], status=row["status"],
            assigned_to=row["assigned_to"], review_decision=row["review_decision"],
            reviewer_verdict=loads(row["reviewer_verdict"]), reviewer=row["reviewer"], notes=row["notes"],
            created_at=row["created_at"], updated_at=row["updated_at"], version=row["version"],
        )

    def export_record(self) -> dict[str, Any]:
        """The case-check export contract (one JSONL line; see docs/review.md)."""
        return {
            "check_id": self.check_id, "queue": self.queue, "item": self.item, "model_verdict": self.model_verdict,
            "provenance": self.provenance, "review_decision": self.review_decision,
            "reviewer_verdict": self.reviewer_verdict, "reviewer": self.reviewer, "notes": self.notes,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


class Store:
    """Case checks, queues, users and the audit log in SQLite (a path) or PostgreSQL (a URL).

    `create=False`: open an existing store only (for commands that read one), never make one.
    """

    def __init__(self, url: str | Path, config: StoreConfig | None = None, *, migrate_to: int | None = None,
                 create: bool = True):
        self.url = str(url)
        self.config = config or StoreConfig()
        self.db = Database(url, migrate_to=migrate_to, create=create)

    def close(self) -> None:
        self.db.close()

    def audit(self, actor: str, action: str, check_id: str | None = None, **detail) -> None:
        self.db.execute("INSERT INTO audit_log (at, actor, action, check_id, detail) VALUES (?, ?, ?, ?, ?)",
                        (now_iso(), actor, action, check_id, json.dumps(detail, ensure_ascii=False, sort_keys=True)))

    def audit_log(self, check_id: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE check_id = ?", (check_id,)) if check_id else ("", ())
        rows = self.db.query(f"SELECT * FROM audit_log {where} ORDER BY id", params)
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]

    # -- settings and users --------------------------------------------------------------
    def setting(self, key: str, default_factory) -> str:
        """A stored setting, created from default_factory() on first use (race-free)."""
        with self.db.transaction():
            row = self.db.one("SELECT value FROM settings WHERE key = ?", (key,))
            if row:
                return row["value"]
            value = default_factory()
            self.db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, value))
            return value

    def add_user(self, name: str, role: str, password_hash: str, actor: str = "cli") -> None:
        if role not in ROLES:
            raise InputError(f"role must be one of {list(ROLES)}, got {role!r}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise InputError(f"user name must be 1-64 letters, digits, '.', '-' or '_', got {name!r}")
        with self.db.transaction():
            existed = self.db.one("SELECT name FROM users WHERE name = ?", (name,))
            if existed:  # a new password or role (or a re-enabled account) ends the sessions it had
                self.db.execute("UPDATE users SET role = ?, password_hash = ?, disabled = 0,"
                                " session_version = session_version + 1 WHERE name = ?", (role, password_hash, name))
            else:
                self.db.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                                (name, role, password_hash, now_iso()))
            self.audit(actor, "user_update" if existed else "user_add", user=name, role=role)

    def user(self, name: str) -> dict[str, Any] | None:
        """The account: name, role, password_hash, session_version, disabled (None if there is none)."""
        return self.db.one("SELECT name, role, password_hash, session_version, disabled FROM users WHERE name = ?", (name,))

    def disable_user(self, name: str, actor: str = "cli") -> None:
        """Disable an account: it cannot log in, and its sessions end at once (`user add` enables it again).

        Raises:
            InputError: there is no such account.
        """
        with self.db.transaction():
            if not self.db.execute("UPDATE users SET disabled = 1, session_version = session_version + 1"
                                   " WHERE name = ?", (name,)):
                raise InputError(f"no account {name!r}")
            self.audit(actor, "user_disable", user=name)

    def end_sessions(self, name: str, reason: str) -> None:
        """End every session of an account (logout ends them on every device)."""
        with self.db.transaction():
            self.db.execute("UPDATE users SET session_version = session_version + 1 WHERE name = ?", (name,))
            self.audit(name, reason, user=name)

    # -- queues --------------------------------------------------------------------------
    def create_queue(self, name: str, entries: list[dict[str, Any]], params: dict[str, Any], actor: str = "cli") -> int:
        """Add a queue of sampled entries ({item, model_verdict, provenance, sample, overlap_group}).

        Raises:
            InputError: a queue of that name exists already.
        """
        if not QUEUE_NAME.fullmatch(name):
            raise InputError(f"queue name must be 1-100 letters, digits, '.', '-' or '_', got {name!r}")
        stamp = now_iso()
        with self.db.transaction():
            if self.db.one("SELECT name FROM queues WHERE name = ?", (name,)):
                raise InputError(f"queue {name!r} exists already; pick another --queue name")
            self.db.execute("INSERT INTO queues (name, created_at, created_by, params) VALUES (?, ?, ?, ?)",
                            (name, stamp, actor, json.dumps(params, sort_keys=True)))
            for position, entry in enumerate(entries):
                self.insert_check(name, position, entry, stamp)
            self.audit(actor, "queue_create", queue=name, items=len(entries), params=params)
        return len(entries)

    def insert_check(self, queue: str, position: int, entry: dict[str, Any], stamp: str) -> str:
        check_id = entry.get("check_id") or uuid.uuid4().hex
        dumps = lambda v: None if v is None else json.dumps(v, ensure_ascii=False)  # noqa: E731
        self.db.execute(
            "INSERT INTO case_checks (check_id, queue, position, item_id, item, model_verdict, provenance, sample,"
            " overlap_group, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (check_id, queue, position, entry["item"]["id"], dumps(entry["item"]), dumps(entry.get("model_verdict")),
             dumps(entry.get("provenance") or {}), dumps(entry.get("sample") or {}), entry.get("overlap_group"),
             stamp, stamp),
        )
        return check_id

    def queues(self) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT q.name, q.created_at, COUNT(c.check_id) AS total,"
            " SUM(CASE WHEN c.status = 'done' THEN 1 ELSE 0 END) AS done"
            " FROM queues q LEFT JOIN case_checks c ON c.queue = q.name GROUP BY q.name, q.created_at ORDER BY q.created_at")
        return [{**r, "done": int(r["done"] or 0)} for r in rows]

    def taxonomy(self, queue: str) -> Taxonomy:
        """The taxonomy a queue's corrections are made in: the policy file `review sample` read (a queue
        from before taxonomies were stored: the shipped policy file's)."""
        row = self.db.one("SELECT params FROM queues WHERE name = ?", (queue,))
        if row is None:
            raise InputError(f"no queue {queue!r}")
        stored = json.loads(row["params"] or "{}").get("taxonomy")
        if stored is None:
            from moderation.policy import load_policy

            return Taxonomy.of(load_policy())
        return Taxonomy.from_json(stored)

    def progress(self, queue: str, reviewer: str | None = None) -> dict[str, int]:
        row = self.db.one(
            "SELECT COUNT(*) AS total, SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END) AS done,"
            " SUM(CASE WHEN status = 'done' AND reviewer = ? THEN 1 ELSE 0 END) AS mine"
            " FROM case_checks WHERE queue = ?", (reviewer, queue))
        return {"total": int(row["total"] or 0), "done": int(row["done"] or 0), "mine": int(row["mine"] or 0)}

    # -- case checks ---------------------------------------------------------------------
    def get(self, check_id: str) -> CaseCheck:
        row = self.db.one("SELECT * FROM case_checks WHERE check_id = ?", (check_id,))
        if row is None:
            raise InputError(f"no case check {check_id!r}")
        return CaseCheck.from_row(row)

    def checks(self, queue: str | None = None, *, status: str | None = None, reviewer: str | None = None) -> list[CaseCheck]:
        clauses, params = [], []
        for column, value in (("queue", queue), ("status", status), ("reviewer", reviewer)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.query(f"SELECT * FROM case_checks {where} ORDER BY queue, position, check_id", params)
        return [CaseCheck.from_row(r) for r in rows]

    def claim_next(self, queue: str, reviewer: str) -> CaseCheck | None:
        """Hand the reviewer their current item, or atomically the next free one (None: no work left).

        An item whose overlap twin this reviewer holds or has reviewed is not handed to them,
        so the two slots of an overlap item go to two different reviewers.
        """
        now = now_iso()
        with self.db.transaction():
            held = self.db.one("SELECT check_id FROM case_checks WHERE queue = ? AND status = 'assigned'"
                               " AND assigned_to = ? AND lease_until >= ? ORDER BY position LIMIT 1", (queue, reviewer, now))
            check_id = held["check_id"] if held else self._free_check(queue, reviewer, now)
            if check_id is None:
                return None
            # Renewing one's own lease keeps the version, so a page opened before stays valid.
            bump = "" if held else ", version = version + 1"
            self.db.execute(f"UPDATE case_checks SET status = 'assigned', assigned_to = ?, lease_until = ?{bump},"
                            " updated_at = ? WHERE check_id = ?", (reviewer, now_iso(self.config.lease_s), now, check_id))
            if not held:
                self.audit(reviewer, "claim", check_id, queue=queue)
        return self.get(check_id)

    def _free_check(self, queue: str, reviewer: str, now: str) -> str | None:
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        row = self.db.one(
            "SELECT c.check_id FROM case_checks c WHERE c.queue = ?"
            " AND (c.status = 'pending' OR (c.status = 'assigned' AND c.lease_until < ?))"
            " AND NOT EXISTS (SELECT 1 FROM case_checks o WHERE c.overlap_group IS NOT NULL"
            " AND o.overlap_group = c.overlap_group AND o.queue = c.queue AND o.check_id <> c.check_id"
            " AND (o.assigned_to = ? OR o.reviewer = ?))"
            f" ORDER BY c.position LIMIT 1{lock}", (queue, now, reviewer, reviewer))
        return row["check_id"] if row else None

    def decide(
        self,
        check_id: str,
        reviewer: str,
        version: int,
        review_decision: str,
        *,
        notes: str = "",
        correction: dict[str, Any] | None = None,
        lead: bool = False,
        redecide: bool = False,
    ) -> CaseCheck:
        """Record a reviewer's decision on an open case check they hold; with `lead` (the app's access
        table gives the account anyone's checks), on any check, a finished one too with `redecide`
        (the audit row then keeps the decision, verdict and reviewer it replaced).

        Raises:
            ReviewConflict: the check changed since `version` was read, is not held by `reviewer`
                (without `lead`), or is finished and `lead` or `redecide` was not given.
            InputError: the decision or correction is not valid.
        """
        check = self.get(check_id)
        if check.status == "done" and not lead:
            raise ReviewConflict(f"case check {check_id} is finished ({check.review_decision} by {check.reviewer}); "
                                 "only a lead may change a finished review")
        if check.status == "done" and not redecide:
            raise ReviewConflict(f"case check {check_id} is finished ({check.review_decision} by {check.reviewer}); "
                                 "confirm that you want to change that review")
        item = Item.from_record(check.item)
        verdict = reviewer_verdict(review_decision, item, check.model_verdict, self.taxonomy(check.queue), **(correction or {}))
        # Without `lead`, the row must still be open and held by this reviewer when it is written.
        owner = "" if lead else " AND status = 'assigned' AND assigned_to = ?"
        params = [json.dumps(verdict, ensure_ascii=False) if verdict is not None else None, review_decision,
                  reviewer, notes[:2000], now_iso(), check_id, version] + ([] if lead else [reviewer])
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE case_checks SET status = 'done', reviewer_verdict = ?, review_decision = ?, reviewer = ?,"
                " notes = ?, lease_until = NULL, updated_at = ?, version = version + 1"
                f" WHERE check_id = ? AND version = ?{owner}", params)
            if changed != 1:
                raise ReviewConflict(f"case check {check_id} changed since it was opened (version {version}); reload it")
            changed = {"previous_reviewer": check.reviewer, "previous_verdict": check.reviewer_verdict} \
                if check.status == "done" else {}
            self.audit(reviewer, "redecide" if changed else "decide", check_id, decision=review_decision, verdict=verdict,
                       notes=notes[:2000], previous=check.review_decision, version=version + 1, **changed)
        return self.get(check_id)

    def import_decision(self, check_id: str, reviewer: str, review_decision: str, verdict: dict | None,
                        notes: str, source: str) -> bool:
        """Store a decision made elsewhere (Label Studio). Returns False when the check was done already."""
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE case_checks SET status = 'done', reviewer_verdict = ?, review_decision = ?, reviewer = ?,"
                " notes = ?, assigned_to = ?, lease_until = NULL, updated_at = ?, version = version + 1"
                " WHERE check_id = ? AND status <> 'done'",
                (json.dumps(verdict, ensure_ascii=False) if verdict is not None else None, review_decision, reviewer,
                 notes[:2000], reviewer, now_iso(), check_id))
            if changed:
                self.audit(reviewer, "import", check_id, decision=review_decision, verdict=verdict, source=source)
        return bool(changed)
