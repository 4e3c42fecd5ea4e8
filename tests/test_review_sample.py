"""Sampling a run into a review queue: strategies, seeds, audit rate, overlap, the join with the dump."""

import dataclasses
import json
import random

import pytest
from conftest import DEMO, read_jsonl, write_jsonl

from moderation.cli import main
from moderation.errors import ConfigError, InputError
from moderation.review.sample import SampleConfig, difference, join_items, margin, queue_entries, sample_run
from moderation.review.store import Store
from moderation.runfile import RunRecord, load_run


def record(i, decision="allow", policies=(), severity="high", scores=None):
    verdict = {"decision": decision, "rationale": "r",
               "violations": [{"policy": p, "severity": severity, "evidence": "x"} for p in policies]}
    rec = {"schema_version": "1", "id": f"it-{i:04d}", "line": i, "kind": "listing", "verdict": verdict,
           "provenance": {"model": "m"}}
    if scores is not None:
        rec["scores"] = scores
    return RunRecord.from_json(rec)


@pytest.fixture
def run_records():
    rng = random.Random(7)
    out = []
    for i in range(1, 201):
        kind = rng.choice(["allow"] * 6 + ["remove", "review", "restrict"])
        policies = [] if kind == "allow" else [rng.choice(["spam", "counterfeit_ip", "fraud_scam"])]
        out.append(record(i, kind, policies))
    return out


def ids(picked):
    return [r.id for r, _ in picked]


def test_sampling_is_reproducible_and_independent_of_file_order(tmp_path, run_records):
    path_a = write_jsonl(tmp_path / "a.jsonl", [r.to_json() for r in run_records])
    shuffled = run_records[:]
    random.Random(1).shuffle(shuffled)
    path_b = write_jsonl(tmp_path / "b.jsonl", [r.to_json() for r in shuffled])
    for strategy in ("random", "stratified", "uncertainty"):
        config = SampleConfig(strategy=strategy, n=20, seed=3)
        first = ids(sample_run(load_run(path_a), config))
        assert first == ids(sample_run(load_run(path_b), config))
        assert len(first) == len(set(first)) == 20
    other = ids(sample_run(load_run(path_a), SampleConfig(strategy="random", n=20, seed=4)))
    assert other != ids(sample_run(load_run(path_a), SampleConfig(strategy="random", n=20, seed=3)))


def test_stratified_covers_every_decision_and_policy_cell(run_records):
    picked = sample_run(run_records, SampleConfig(strategy="stratified", n=20, seed=0))
    cells = {why["stratum"] for _, why in picked}
    everything = {why["stratum"] for _, why in sample_run(run_records, SampleConfig(strategy="stratified", n=200))}
    assert cells == everything and len(everything) == 10  # allow/none + 3 decisions x 3 policies
    # Equal allocation: no cell gets more than one above another unless it ran out.
    counts = {c: sum(1 for _, w in picked if w["stratum"] == c) for c in cells}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_uncertainty_uses_scores_near_the_thresholds():
    recs = [record(i, scores={"violation": 0.5, "policies": {"spam": s}}) for i, s in enumerate([0.05, 0.48, 0.9, 0.61, 0.3], 1)]
    for r in recs:
        r.scores["violation"] = 0.0  # far from 0.5: policies decide
    picked = sample_run(recs, SampleConfig(strategy="uncertainty", n=2))
    assert ids(picked) == ["it-0002", "it-0004"]  # 0.48 and 0.61 are nearest 0.5
    shifted = sample_run(recs, SampleConfig(strategy="uncertainty", n=1, thresholds={"spam": 0.88}))
    assert ids(shifted) == ["it-0003"] and shifted[0][1]["margin"] == pytest.approx(0.02)
    assert margin(record(9), {}) is None
    # With policy thresholds the overall violation score (0.5 here) is no threshold's neighbour.
    heads_like = record(10, scores={"violation": 0.5, "policies": {"spam": 0.5}})
    assert margin(heads_like, {"spam": 0.9}) == pytest.approx(0.4) and margin(heads_like, {}) == 0.0


def test_uncertainty_without_scores_prefers_the_models_hedged_decisions(run_records):
    picked = sample_run(run_records, SampleConfig(strategy="uncertainty", n=10))
    assert {r.verdict["decision"] for r, _ in picked} == {"review"}
    assert all("proxy_tier" in why for _, why in picked)


def test_disagreement_samples_only_where_two_runs_differ(run_records):
    other = json.loads(json.dumps([r.to_json() for r in run_records]))
    other[0]["verdict"] = {"decision": "remove", "violations": [{"policy": "spam", "severity": "low", "evidence": "x"}], "rationale": "r"}
    flipped = next(r for r in other[1:] if r["verdict"]["violations"])
    flipped["verdict"]["violations"][0]["policy"] = "adult_sexual"
    picked = sample_run(run_records, SampleConfig(strategy="disagreement", n=10), [RunRecord.from_json(r) for r in other])
    assert sorted(ids(picked)) == sorted([other[0]["id"], flipped["id"]])
    assert picked[0][1]["differs_in"] == "decision" and picked[0][1]["other_verdict"]["decision"] == "remove"
    assert difference(run_records[5], run_records[5]) is None
    with pytest.raises(ConfigError, match="--compare"):
        sample_run(run_records, SampleConfig(strategy="disagreement", n=10))


def test_audit_rate_and_error_records(run_records):
    errors = [RunRecord.from_json({"schema_version": "1", "id": f"bad-{i}", "line": 900 + i, "error": {"stage": "model", "reason": "x"}})
              for i in range(10)]
    recs = run_records + errors
    assert len(sample_run(recs, SampleConfig(audit_rate=0.05))) == 10  # ceil(0.05 * 200 verdicts)
    picked = sample_run(recs, SampleConfig(audit_rate=1.0, include_errors=True))
    assert len(picked) == 210
    with pytest.raises(ConfigError):
        SampleConfig(n=5, audit_rate=0.1)
    with pytest.raises(ConfigError):
        SampleConfig(strategy="newest", n=5)


def test_overlap_puts_a_share_of_items_in_two_slots(run_records):
    picked = sample_run(run_records, SampleConfig(n=20))
    items = {r.line: {"id": r.id, "kind": "listing", "title": "t"} for r, _ in picked}
    entries = queue_entries(picked, items, SampleConfig(n=20, overlap=0.25))
    assert len(entries) == 25
    groups = [e["overlap_group"] for e in entries if e["overlap_group"]]
    assert len(groups) == 10 and len(set(groups)) == 5


def test_join_refuses_a_dump_that_was_not_the_one_moderated(tmp_path):
    dump = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "title": "one"}, {"id": "b", "title": "two"}])
    assert join_items([dataclasses.replace(record(2), id="b")], dump)[2]["title"] == "two"
    with pytest.raises(InputError, match="is --input the dump"):
        join_items([dataclasses.replace(record(2), id="zzz")], dump)


def test_cli_sample_creates_a_queue_from_a_fake_run(tmp_path, capsys):
    run = tmp_path / "demo.jsonl"
    assert main(["run", str(DEMO), "-o", str(run), "--backend", "fake", "--no-progress"]) == 0
    db = tmp_path / "review.sqlite"
    args = ["review", "sample", str(run), "--input", str(DEMO), "-n", "24", "--strategy", "stratified",
            "--overlap", "0.25", "--db", str(db), "-o", str(tmp_path / "queue.jsonl")]
    assert main(args) == 0
    assert "24 items, 6 overlap twins" in capsys.readouterr().out
    checks = Store(db).checks("demo-stratified-s0")
    assert len(checks) == 30 == len(read_jsonl(tmp_path / "queue.jsonl"))
    by_id = {json.loads(line)["id"]: json.loads(line) for line in DEMO.read_text().splitlines()}
    for check in checks:
        assert check.item["title" if check.item["kind"] == "listing" else "kind"] == by_id[check.item["id"]].get(
            "title" if check.item["kind"] == "listing" else "kind")
        assert check.provenance["backend"] == "fake"
    assert main(args) == 2  # the queue exists: refused, not duplicated
