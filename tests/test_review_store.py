"""The case-check store on SQLite and on a real PostgreSQL server: migrations, audit log,
atomic claims and optimistic saves under real concurrency."""

import json
import sqlite3
import threading
import time
from datetime import datetime

import pytest
from jsonschema import Draft202012Validator
from review_services import entries, pg_server, store_url  # noqa: F401 (fixtures)

from moderation.errors import ConfigError, InputError
from moderation.review.db import MIGRATIONS, parse_url
from moderation.review.store import ReviewConflict, Store, StoreConfig
from moderation.schema import DEFAULT_POLICY_IDS, verdict_schema


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def test_store_urls():
    assert parse_url("runs/x.sqlite") == ("sqlite", "runs/x.sqlite")
    assert parse_url("sqlite:///runs/x.sqlite") == ("sqlite", "runs/x.sqlite")
    assert parse_url("sqlite:////tmp/x.sqlite") == ("sqlite", "/tmp/x.sqlite")
    assert parse_url("postgresql://u@h/db")[0] == "postgresql"
    with pytest.raises(ConfigError):
        parse_url("mysql://u@h/db")


def test_sqlite_store_uses_wal(tmp_path):
    Store(tmp_path / "w.sqlite").close()
    assert sqlite3.connect(tmp_path / "w.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_old_version_store_is_migrated_on_open_and_keeps_its_data(store_url):
    old = Store(store_url, migrate_to=1)
    assert old.db.version() == 1
    old.create_queue("q", entries(3), {"seed": 0})
    with pytest.raises(Exception):  # version 1 has no settings table
        old.db.query("SELECT * FROM settings")
    old.close()
    new = Store(store_url)
    assert new.db.version() == len(MIGRATIONS) == 4
    assert [c.item["id"] for c in new.checks("q")] == ["it-000", "it-001", "it-002"]
    assert new.setting("k", lambda: "v1") == "v1" and new.setting("k", lambda: "v2") == "v1"
    new.close()
    assert Store(store_url).db.version() == 4  # reopening applies nothing twice


def test_a_version_3_store_keeps_its_accounts_and_gains_session_versions(store_url):
    old = Store(store_url, migrate_to=3)
    old.db.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES ('ann', 'lead', 'h', 't')")
    old.close()
    new = Store(store_url)
    assert new.user("ann") == {"name": "ann", "role": "lead", "password_hash": "h", "session_version": 0, "disabled": 0}
    new.disable_user("ann")
    assert new.user("ann")["disabled"] == 1 and new.user("ann")["session_version"] == 1
    new.close()


def test_audit_log_is_append_only(store):
    store.create_queue("q", entries(2), {})
    check = store.claim_next("q", "ann")
    store.decide(check.check_id, "ann", check.version, "accept")
    actions = [row["action"] for row in store.audit_log()]
    assert actions == ["queue_create", "claim", "decide"]
    with pytest.raises(Exception, match="append-only"):
        with store.db.transaction():
            store.db.execute("UPDATE audit_log SET actor = 'mallory'")
    with pytest.raises(Exception, match="append-only"):
        with store.db.transaction():
            store.db.execute("DELETE FROM audit_log")
    assert len(store.audit_log()) == 3


def test_case_check_keeps_item_verdicts_provenance_reviewer_and_times(store):
    store.create_queue("q", entries(3), {})
    first = store.claim_next("q", "ann")
    done = store.decide(first.check_id, "ann", first.version, "accept", notes="clear replica")
    second = store.claim_next("q", "ann")
    corrected = store.decide(second.check_id, "ann", second.version, "correct",
                             correction={"decision": "review", "policies": ["misleading_claim"]})
    rec = done.export_record()
    assert rec["item"]["id"] == "it-000" and rec["item"]["kind"] == "listing" and rec["item"]["region"] == "EU"
    assert rec["review_decision"] == "accept" and rec["reviewer_verdict"] == rec["model_verdict"]
    assert rec["provenance"]["model"] == "fake-keywords" and rec["reviewer"] == "ann" and rec["notes"] == "clear replica"
    for stamp in (rec["created_at"], rec["updated_at"]):
        assert datetime.fromisoformat(stamp).utcoffset().total_seconds() == 0
    verdict = corrected.reviewer_verdict
    assert not list(Draft202012Validator(verdict_schema(DEFAULT_POLICY_IDS)).iter_errors(verdict))
    assert verdict["violations"][0]["evidence"] in corrected.item["title"] + corrected.item["description"]


def test_a_stale_save_is_refused_not_lost(store):
    store.create_queue("q", entries(1), {})
    check = store.claim_next("q", "ann")
    store.decide(check.check_id, "lead1", check.version, "escalate", lead=True)  # a lead acts first
    with pytest.raises(ReviewConflict):
        store.decide(check.check_id, "ann", check.version, "accept")
    assert store.get(check.check_id).review_decision == "escalate"


def test_an_expired_lease_passes_to_another_reviewer(store_url):
    store = Store(store_url, StoreConfig(lease_s=0.2))
    store.create_queue("q", entries(1), {})
    ann = store.claim_next("q", "ann")
    assert store.claim_next("q", "bob") is None  # held by ann
    time.sleep(0.3)
    bob = store.claim_next("q", "bob")
    assert bob.check_id == ann.check_id and bob.assigned_to == "bob"
    with pytest.raises(ReviewConflict):
        store.decide(ann.check_id, "ann", ann.version, "accept")
    store.decide(bob.check_id, "bob", bob.version, "skip")
    store.close()


def test_overlap_twins_go_to_two_different_reviewers(store):
    store.create_queue("q", entries(4, overlap_every=2), {})  # items 0 and 2 twice: 6 checks
    seen = {"ann": [], "bob": []}
    for reviewer in ["ann", "ann", "ann", "ann", "bob", "bob", "bob"]:
        check = store.claim_next("q", reviewer)
        if check:
            seen[reviewer].append(check.item["id"])
            store.decide(check.check_id, reviewer, check.version, "accept")
    assert sorted(seen["ann"]) == ["it-000", "it-001", "it-002", "it-003"]
    assert sorted(seen["bob"]) == ["it-000", "it-002"]  # only the twins ann could not take


def test_bad_decisions_are_refused(store):
    store.create_queue("q", entries(1), {})
    check = store.claim_next("q", "ann")
    with pytest.raises(InputError, match="needs 1 to 3 policies"):
        store.decide(check.check_id, "ann", check.version, "correct", correction={"decision": "remove", "policies": []})
    with pytest.raises(InputError, match="does not occur"):
        store.decide(check.check_id, "ann", check.version, "correct",
                     correction={"decision": "remove", "policies": ["spam"], "evidence": {"spam": "not in the item"}})
    with pytest.raises(InputError):
        store.decide(check.check_id, "ann", check.version, "approve")
    with pytest.raises(InputError, match="exists already"):
        store.create_queue("q", entries(1), {})
    with pytest.raises(InputError, match="queue name"):
        store.create_queue("a/b", entries(1), {})


def test_concurrent_reviewers_never_share_an_item_and_lose_no_write(store_url):
    """Eight reviewer threads, each with its own connection, drain one queue of 60 items."""
    setup = Store(store_url)
    setup.create_queue("q", entries(60), {})
    claimed: dict[str, list[str]] = {}
    errors = []
    barrier = threading.Barrier(8)

    def reviewer(name):
        try:
            barrier.wait()
            mine = claimed.setdefault(name, [])
            while (check := setup.claim_next("q", name)) is not None:
                mine.append(check.check_id)
                setup.decide(check.check_id, name, check.version, "accept", notes=name)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    all_claims = [c for ids in claimed.values() for c in ids]
    assert len(all_claims) == len(set(all_claims)) == 60  # nobody got an item twice
    done = setup.checks("q", status="done")
    assert len(done) == 60 and all(c.notes == c.reviewer for c in done)  # every write kept, by its author
    decides = [a for a in setup.audit_log() if a["action"] == "decide"]
    assert len(decides) == 60 and {a["actor"] for a in decides} == set(claimed) - {n for n, ids in claimed.items() if not ids}
    print(f"\n{parse_url(store_url)[0]}: 8 threads, 60 items, claims per reviewer "
          f"{sorted(len(v) for v in claimed.values())}, no double assignment, 60/60 decisions stored")
    setup.close()


def _drain(args):
    url, name = args
    store = Store(url)
    got = []
    while (check := store.claim_next("q", name)) is not None:
        got.append(check.check_id)
        store.decide(check.check_id, name, check.version, "accept")
    store.close()
    return got


def test_concurrent_processes_drain_one_queue(store_url):
    import multiprocessing

    Store(store_url).create_queue("q", entries(40), {})
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_drain, [(store_url, f"p{i}") for i in range(4)])
    claims = [c for got in results for c in got]
    assert len(claims) == len(set(claims)) == 40
    assert len(Store(store_url).checks("q", status="done")) == 40


def test_export_records_are_json(store):
    store.create_queue("q", entries(2), {})
    check = store.claim_next("q", "ann")
    rec = store.decide(check.check_id, "ann", check.version, "skip").export_record()
    assert rec["reviewer_verdict"] is None and json.loads(json.dumps(rec)) == rec
