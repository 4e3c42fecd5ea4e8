"""The review loop's oracle reviewer, through the review app's real routes (FastAPI's TestClient)."""

import pytest
from review_services import entries

from moderation.errors import InputError
from moderation.review import auth
from moderation.review.app import create_app
from moderation.review.oracle import Gold, OracleReviewer, parse_check_page
from moderation.review.store import Store

PASSWORD = "oracle password 1"
REPLICA = Gold("remove", frozenset({"counterfeit_ip"}))
CLEAN = Gold("allow", frozenset())


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "checks.sqlite"))
    s.add_user("oracle", "reviewer", auth.hash_password(PASSWORD))
    s.create_queue("q", entries(9), {})  # it-000, it-003, it-006 flagged as counterfeit by the model
    yield s
    s.close()


def oracle(store, gold, noise=0.0):
    from fastapi.testclient import TestClient

    reviewer = OracleReviewer(TestClient(create_app(store)), "oracle", PASSWORD, gold, noise=noise)
    reviewer.login()
    return reviewer


def test_the_oracle_accepts_right_verdicts_and_corrects_wrong_ones_to_the_gold_through_the_app(store):
    # Gold: it-003 is really clean (the model was wrong); it-004 is really a counterfeit (the model missed it).
    gold = {f"it-{i:03d}": REPLICA if i in (0, 6, 4) else CLEAN for i in range(9)}
    counts = oracle(store, gold).review("q")
    assert counts == {"accept": 7, "correct": 2}
    done = {c.item["id"]: c for c in store.checks("q")}
    assert all(c.status == "done" and c.reviewer == "oracle" for c in done.values())
    assert done["it-003"].review_decision == "correct" and done["it-003"].reviewer_verdict["decision"] == "allow"
    fixed = done["it-004"].reviewer_verdict
    assert done["it-004"].review_decision == "correct"
    assert fixed["decision"] == "remove" and [v["policy"] for v in fixed["violations"]] == ["counterfeit_ip"]
    assert done["it-000"].review_decision == "accept"
    # every save went through the audited store, as a person's would
    assert [e["action"] for e in store.audit_log()].count("decide") == 9


def test_a_noisy_oracle_is_wrong_on_about_its_share_and_items_without_gold_are_skipped(store):
    gold = {f"it-{i:03d}": REPLICA if i % 3 == 0 else CLEAN for i in range(8)}  # it-008 has no gold
    counts = oracle(store, gold, noise=1.0).review("q")
    assert counts == {"correct": 8, "skip (no gold)": 1}  # every right verdict "corrected" to a wrong one
    flipped = {c.item["id"]: c.reviewer_verdict for c in store.checks("q") if c.review_decision == "correct"}
    assert flipped["it-000"]["decision"] == "allow" and flipped["it-001"]["decision"] == "remove"


def test_a_wrong_password_or_a_page_that_is_no_check_page_fails_loudly(store):
    from fastapi.testclient import TestClient

    with pytest.raises(InputError, match="login as oracle failed: HTTP 401"):
        OracleReviewer(TestClient(create_app(store)), "oracle", "wrong", {}).login()
    with pytest.raises(InputError, match="not an editable check page"):
        parse_check_page("<html><body>Queue finished</body></html>")
    with pytest.raises(ValueError, match="noise"):
        OracleReviewer(None, "oracle", PASSWORD, {}, noise=1.5)


def test_the_check_page_parser_reads_an_escaped_id(store):
    store.create_queue("odd", [{**entries(1)[0], "item": {**entries(1)[0]["item"], "id": "a&b <c>"}}], {})
    reviewer = oracle(store, {"a&b <c>": REPLICA})
    assert reviewer.review("odd") == {"accept": 1}
    assert store.checks("odd")[0].review_decision == "accept"
