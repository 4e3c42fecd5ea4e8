"""The lead dashboard: every bar with its counts, violation rates of a stratified sample weighted
back to the run, and kappa explained next to the agreement it corrects."""

import pytest
from review_services import entries

from moderation.review import dashboard
from moderation.review.sample import SampleConfig, sample_run
from moderation.review.store import Store
from moderation.runfile import RunRecord


def weighted_store(tmp_path):
    """A stratified queue: 2 picks from a cell of 100 allowed items, 2 from a cell of 2 removed items."""
    rows = entries(4)
    for i, entry in enumerate(rows):
        entry["sample"] = {"strategy": "stratified", "stratum": "x", "weight": 50.0 if i < 2 else 1.0}
    store = Store(tmp_path / "w.sqlite")
    store.create_queue("q", rows, {})
    while (check := store.claim_next("q", "ann")) is not None:
        violates = check.sample["weight"] == 1.0
        correction = {"decision": "remove" if violates else "allow", "policies": ["spam"] if violates else []}
        store.decide(check.check_id, "ann", check.version, "correct", correction=correction)
    return store


def test_dashboard_weights_a_stratified_sample_back_to_the_run(tmp_path):
    stats = dashboard.summary(weighted_store(tmp_path).checks("q"))
    rates = stats["violation_rates"]
    # Raw share 2/4 = 50%; weighted (2 x 1) / (2 x 50 + 2 x 1) = 2%.
    assert rates["weighted"] and rates["policy"]["spam"] == pytest.approx(2 / 102)
    assert rates["counts"]["policy"]["spam"] == (2, 4)
    svg = dashboard.charts(stats)[3]
    assert "weighted back to the run" in svg and "2% (2/4)" in svg


def test_dashboard_bars_carry_counts_and_kappa_is_explained(tmp_path):
    store = Store(tmp_path / "d.sqlite")
    store.create_queue("q", entries(6, overlap_every=1), {})
    for reviewer in ("ann", "bob"):
        while (check := store.claim_next("q", reviewer)) is not None:
            store.decide(check.check_id, reviewer, check.version, "accept")
    stats = dashboard.summary(store.checks())
    precision, override, agreement = dashboard.charts(stats)[:3]
    assert "100% (4/4)" in precision and "0% (0/12)" in override and "100% (6/6)" in agreement
    assert "not weighted" in dashboard.charts(stats)[3]  # these entries carry no sample weights
    note = dashboard.kappa_note(stats["agreement"])
    assert "corrects agreement for chance" in note and "over 6 overlap items" in note
    assert "no overlap item reviewed" in dashboard.bar_chart("t", {}, empty="no overlap item reviewed by two reviewers yet")


def test_random_and_stratified_samples_record_how_many_run_records_each_pick_stands_for():
    spam = {"decision": "remove", "violations": [{"policy": "spam", "severity": "low", "evidence": "x"}], "rationale": "r"}
    clean = {"decision": "allow", "violations": [], "rationale": "r"}
    records = [RunRecord(id=f"r{i:03d}", line=i, verdict=spam if i < 4 else clean) for i in range(100)]
    stratified = sample_run(records, SampleConfig(strategy="stratified", n=8))
    assert {why["stratum"]: why["weight"] for _, why in stratified} == {"remove/spam": 1.0, "allow/none": 24.0}
    assert {why["weight"] for _, why in sample_run(records, SampleConfig(n=10))} == {10.0}


def test_an_overlap_item_reviewed_twice_counts_once_in_the_violation_rate(tmp_path):
    store = Store(tmp_path / "o.sqlite")
    store.create_queue("q", entries(3, overlap_every=3), {})  # it-000 twice (a replica), it-001 and it-002 once
    for reviewer in ("ann", "bob"):
        while (check := store.claim_next("q", reviewer)) is not None:
            store.decide(check.check_id, reviewer, check.version, "accept")
    rates = dashboard.summary(store.checks())["violation_rates"]
    # 1 of 3 items violates; counting both reviews of the replica would say 2 of 4.
    assert rates["policy"]["counterfeit_ip"] == pytest.approx(1 / 3) and rates["counts"]["policy"]["counterfeit_ip"] == (2, 4)
