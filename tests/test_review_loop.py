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


def load_script():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("review_loop", ROOT / "scripts" / "review_loop.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_loop_refuses_bad_settings_before_any_work():
    script = load_script()
    for argv in (["round", "--noise", "1.5"], ["round", "-n", "0"], ["curve", "--budgets", "100,x"]):
        with pytest.raises(SystemExit) as stopped:
            script.main(argv)
        assert stopped.value.code == 2
    with pytest.raises(SystemExit, match="cannot read the curve's figures"):
        script.main(["render", "/nonexistent/curve.json", "--markdown", "/nonexistent/x.md"])


def test_the_curve_renders_its_table_and_plot_between_the_markers(tmp_path):
    script = load_script()
    fig = {"marketplace_macro_f1": 0.6, "marketplace_clean_fpr": 0.1, "public_macro_f1": 0.7,
           "marketplace_diff": [0.04, 0.01, 0.08], "marketplace_mcnemar": {"p_value": 0.03}}
    data = {"control": {"marketplace_macro_f1": 0.56, "marketplace_clean_fpr": 0.18, "public_macro_f1": 0.68},
            "meta": {"commands": ["python scripts/review_loop.py curve"]},
            "points": [{"strategy": s, "n": n, "seed": 0, "review": {"actions": {"correct": n // 4}}, "after": fig}
                       for s in ("random", "uncertainty") for n in (100, 200)]}
    doc = tmp_path / "loop.md"
    doc.write_text(f"# Loop\n\nbefore\n{script.BEGIN}\nold table\n{script.END}\nafter\n")
    script.render(data, doc)
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Loop\n\nbefore\n") and text.endswith("after\n")
    assert "| uncertainty (seed 0) | 200 | 50 | 0.600 | +0.040 [+0.010, +0.080] | 0.03 |" in text
    assert "`python scripts/review_loop.py curve`" in text and (tmp_path / "loop.png").stat().st_size > 1000
