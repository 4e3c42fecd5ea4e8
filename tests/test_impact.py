"""`moderation impact`: a policy change decided again from stored scores, measured against case checks.

The acceptance check: the decisions impact gives for a proposed change are exactly those a fresh
moderation with the proposal makes, with a stub scorer (policy heads' path: default actions decide) and
with the fake backend's token probes (decision probabilities decide). No real model is loaded.
"""

import argparse
import json
import random
from pathlib import Path

import pytest
import yaml

from moderation.backends.base import BackendConfig
from moderation.backends.fake import FakeBackend
from moderation.batch import BatchRunner
from moderation.errors import ConfigError, InputError
from moderation.heads import user_text
from moderation.impact import ImpactRequest, assess, parse_pairs
from moderation.impact_cli import add_impact_parser, cmd_impact
from moderation.impact_measure import ImpactSettings, estimate, recall_lost, wilson
from moderation.impact_report import write_report
from moderation.items import read_items
from moderation.pipeline import Moderator, thresholds_sha
from moderation.policy import DEFAULT_POLICY, load_policy
from moderation.review.sample import SampleConfig, join_items, queue_entries
from moderation.review.store import Store
from moderation.review.verdicts import Taxonomy
from moderation.runfile import RunRecord, read_records

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"
GRID = (0.1, 0.3, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.9)  # repeated values: ties between policies, scores at thresholds
N_ITEMS = 90


class StoredScorer:
    """Policy-head-style scores (no decision probabilities) looked up by the key in an item's title; a text
    without a key (an occluded clause) scores 0 everywhere."""

    sha = "5" * 64

    def __init__(self, table, policies):
        self.table, self.policies = table, tuple(policies)

    def score(self, messages, progress=None):
        out = []
        for m in messages:
            text = user_text(m)
            values = next((v for k, v in self.table.items() if k in text), {})
            scores = {p: values.get(p, 0.0) for p in self.policies}
            out.append({"violation": max(scores.values()), "policies": scores, "scorer": "heads"})
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, policy):
    """A dump of N_ITEMS listings (9 sellers, 3 regions, 2 languages) and a score table over it."""
    rng = random.Random(11)
    rows, table = [], {}
    for i in range(N_ITEMS):
        key = f"zq{i:04d}x"
        table[key] = {p: (rng.choice(GRID) if rng.random() < 0.12 else 0.05) for p in policy.ids}
        rows.append({"id": f"it-{i:04d}", "title": f"Vintage lamp number {key} in good shape",
                     "description": "Works well. Collect from the town centre.", "price": 10 + i,
                     "seller": f"seller_{i % 9}", "region": ("EU", "US", "SG")[i % 3], "language": ("en", "de")[i % 2]})
    folder = tmp_path_factory.mktemp("impact")
    dump = folder / "dump.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"dir": folder, "dump": dump, "table": table}


CURRENT = {p: 0.6 for p in load_policy().ids}
CURRENT["spam"], CURRENT["fraud_scam"] = 0.5, 0.7


def moderate(world, policy, template, thresholds, name, scorer=True, dump=None):
    """A fresh run (the batch runner, as `moderation run`) with these thresholds; its records by id."""
    scorer = StoredScorer(world["table"], policy.ids) if scorer else None
    moderator = Moderator(FakeBackend(BackendConfig()), policy, template, thresholds=thresholds, scorer=scorer)
    out = world["dir"] / f"{name}.jsonl"
    BatchRunner(moderator).run(read_items(dump or world["dump"]), out, restart=True)
    return out


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def decisions(path):
    return {r.id: (r.verdict["decision"], tuple(v["policy"] for v in r.verdict["violations"])) for r in read_records(path)}


def after(assessment):
    return {i.record.id: i.after for i in assessment.impacts}


@pytest.fixture(scope="module")
def current_run(world, policy, template):
    return moderate(world, policy, template, CURRENT, "current")


def request(world, run, **kw):
    base = {"run": (str(run),), "input": (str(world["dump"]),), "run_date": ("2026-11-20",), "now": "2026-11-23",
            "current_thresholds": write_json(world["dir"] / "current.json", CURRENT)}
    return ImpactRequest(**{**base, **kw})


# -- the acceptance check ------------------------------------------------------------------------
def test_a_threshold_file_gives_exactly_the_decisions_of_a_fresh_run_with_it(world, policy, template, current_run):
    proposed = {p: t for p, t in reversed(list(CURRENT.items()))}  # another order: ties follow it
    proposed.update(spam=0.45, fraud_scam=0.9, prohibited_item=0.3, adult_sexual=0.55)
    del proposed["hate_harassment"]  # a policy without a threshold is never flagged
    path = write_json(world["dir"] / "proposed.json", proposed)
    assessment = assess(request(world, current_run, thresholds=path))
    fresh = decisions(moderate(world, policy, template, proposed, "fresh-file"))
    assert after(assessment) == fresh
    directions = assessment.result["tallies"]["directions"]
    assert directions["newly_flagged"] and directions["newly_cleared"] and directions["decision_changed"]
    assert assessment.result["current_reproduced"]["same"] == N_ITEMS  # the before side is the stored verdicts


def test_threshold_pairs_over_the_current_ones_give_a_fresh_runs_decisions(world, policy, template, current_run):
    pairs = ("spam=0.3", "counterfeit_ip=0.65", "misleading_claim=0.45")
    assessment = assess(request(world, current_run, threshold=pairs))
    fresh = decisions(moderate(world, policy, template, {**CURRENT, **parse_pairs(pairs, policy)}, "fresh-pairs"))
    assert after(assessment) == fresh and assessment.result["tallies"]["changed"] > 5
    written = json.loads((write_report(assessment, world["dir"] / "out-pairs")[3]).read_text())
    assert list(written) == list(CURRENT) and written["spam"] == 0.3  # thresholds.json: for `run --thresholds`


def test_a_policy_file_change_gives_a_fresh_runs_decisions(world, policy, template, current_run):
    data = yaml.safe_load(Path(DEFAULT_POLICY).read_text())
    for entry in data["policies"]:
        entry["default_action"] = {"spam": "review", "misleading_claim": "restrict", "prohibited_item": "restrict"}.get(
            entry["id"], entry["default_action"])
    data["policies"] = [e for e in data["policies"] if e["id"] != "self_harm"]
    path = world["dir"] / "proposed-policy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    assessment = assess(request(world, current_run, proposed_policy=str(path)))
    proposed = load_policy(path)
    fresh = decisions(moderate(world, proposed, template, {p: t for p, t in CURRENT.items() if p != "self_harm"},
                               "fresh-policy"))
    assert after(assessment) == fresh
    assert assessment.result["tallies"]["directions"]["decision_changed"] > 0
    assert assessment.result["change"]["policy"]["removed"] == ["self_harm"]


def test_token_probe_scores_give_a_fresh_runs_decisions(tmp_path, policy, template):
    """The fake backend's probes carry decision probabilities, which then decide (not default actions)."""
    world = {"dir": tmp_path, "dump": tmp_path / "demo.jsonl", "table": {}}
    world["dump"].write_text("".join(DEMO.read_text().splitlines(keepends=True)[:80]))
    thresholds = {p: 0.5 for p in policy.ids}
    run = moderate(world, policy, template, thresholds, "probes-current", scorer=False)
    proposed = {**thresholds, "counterfeit_ip": 0.85, "off_platform_transaction": 0.3, "fraud_scam": 0.2}
    assessment = assess(request(world, run, current_thresholds=write_json(tmp_path / "t.json", thresholds),
                                thresholds=write_json(tmp_path / "p.json", proposed)))
    fresh = decisions(moderate(world, policy, template, proposed, "probes-fresh", scorer=False))
    assert after(assessment) == fresh and assessment.result["tallies"]["changed"] > 0
    assert all(r.scores.get("decisions") for r in read_records(run) if r.scores)


def test_the_runs_records_carry_the_thresholds_hash_impact_checks(current_run):
    assert {r.provenance["thresholds_sha"] for r in read_records(current_run)} == {thresholds_sha(CURRENT)}


# -- bad input -----------------------------------------------------------------------------------
def test_bad_thresholds_are_refused_with_the_bad_value(world, current_run):
    with pytest.raises(ConfigError, match="not_a_policy"):
        assess(request(world, current_run, threshold=("not_a_policy=0.5",)))
    with pytest.raises(ConfigError, match="1.5"):
        assess(request(world, current_run, threshold=("spam=1.5",)))
    with pytest.raises(ConfigError, match="POLICY=VALUE"):
        assess(request(world, current_run, threshold=("spam",)))
    with pytest.raises(ConfigError, match="not policies of"):
        assess(request(world, current_run, thresholds=write_json(world["dir"] / "bad.json", {"weapons": 0.5})))
    with pytest.raises(ConfigError, match="bad entries"):
        assess(request(world, current_run, thresholds=write_json(world["dir"] / "bad2.json", {"spam": -0.1})))


def test_a_run_of_another_taxonomy_is_refused(world, current_run, tmp_path):
    other = ROOT / "prompts" / "examples" / "local-services.yaml"
    with pytest.raises(ConfigError, match="another taxonomy"):
        assess(request(world, current_run, policy=str(other), current_thresholds=None, threshold=("spam=0.5",)))


def test_runs_without_scores_are_refused(world, policy, template, tmp_path):
    moderator = Moderator(FakeBackend(BackendConfig()), policy, template, scores=False)
    out = tmp_path / "noscores.jsonl"
    BatchRunner(moderator).run(read_items(world["dump"]), out)
    with pytest.raises(InputError, match="no-scores"):
        assess(request(world, out, current_thresholds=None, threshold=("spam=0.5",)))


def test_empty_input_and_missing_change_are_refused(world, current_run, tmp_path):
    with pytest.raises(ConfigError, match="at least one run"):
        ImpactRequest()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        assess(request(world, empty, threshold=("spam=0.5",)))
    with pytest.raises(ConfigError, match="no change"):
        assess(request(world, current_run))
    with pytest.raises(ConfigError, match="one --input per --run"):
        ImpactRequest(run=("a.jsonl", "b.jsonl"), input=("a-dump.jsonl",))


def test_current_thresholds_other_than_the_runs_are_refused(world, current_run):
    wrong = write_json(world["dir"] / "wrong.json", {**CURRENT, "spam": 0.51})
    with pytest.raises(ConfigError, match="not the thresholds the runs were made with"):
        assess(request(world, current_run, current_thresholds=wrong, threshold=("spam=0.4",)))
    with pytest.raises(ConfigError, match="--current-thresholds"):  # not the shipped ones: say which file to give
        assess(request(world, current_run, current_thresholds=None, threshold=("spam=0.4",)))


@pytest.mark.parametrize("settings", [{"review_throughput": 0}, {"days": -1}, {"min_checks": 0}, {"confidence": 1.0}])
def test_settings_are_validated_naming_the_field(settings):
    with pytest.raises(ConfigError, match=f"ImpactSettings.{next(iter(settings))}"):
        ImpactSettings(**settings)


# -- no case checks: unmeasured, and a sample to review first ------------------------------------
def test_without_case_checks_the_change_is_unmeasured_and_a_sample_is_proposed(world, current_run, policy, tmp_path):
    assessment = assess(request(world, current_run, threshold=("spam=0.3", "fraud_scam=0.9")),
                        ImpactSettings(sample_size=5))
    result = assessment.result
    assert result["status"] == "unmeasured"
    assert all(result["estimates"][d]["status"] == "unmeasured" for d in ("newly_flagged", "newly_cleared"))
    write_report(assessment, tmp_path / "out")
    md = (tmp_path / "out" / "impact.md").read_text()
    assert "Status: unmeasured" in md and "safe" not in md.replace("not known to be safe", "").replace("not safe", "")
    # the sample is a run file that `moderation review sample` queues whole
    [sample] = result["sample"]["files"]
    lines = Path(sample).read_text().splitlines()
    changed = {(r["id"]) for r in result["changed_items"]}
    assert 0 < len(lines) <= 5 * 4 and all(RunRecord.from_json(json.loads(x)).id in changed for x in lines)
    from moderation.review import cli as review_cli

    parser = argparse.ArgumentParser()
    review_cli.add_parser(parser.add_subparsers(dest="command"))
    db = tmp_path / "review.sqlite"
    args = parser.parse_args(["review", "sample", sample, "--input", str(world["dump"]), "--audit-rate", "1",
                              "--db", str(db), "--queue", "impact-sample"])
    assert review_cli.cmd_review(args) == 0
    assert len(Store(db, create=False).checks("impact-sample")) == len(lines)


# -- case checks: precision, violations missed, recall lost --------------------------------------
def fill_store(db, run, dump, policy, truth):
    """A queue of every record of `run`, and a finished check on each item `truth` names: accept when the truth
    is the model's verdict, else correct to it."""
    records = list(read_records(run))
    entries = queue_entries([(r, {}) for r in records], join_items(records, dump), SampleConfig(n=1))
    store = Store(db)
    store.create_queue("all", entries, {"taxonomy": Taxonomy.of(policy).to_json()})
    for check in store.checks("all"):
        if check.item["id"] not in truth:
            continue
        decision, policies = truth[check.item["id"]]
        model = (check.model_verdict["decision"], [v["policy"] for v in check.model_verdict["violations"]])
        if (decision, policies) == model:
            store.decide(check.check_id, "lead", check.version, "accept", lead=True)
        else:
            store.decide(check.check_id, "lead", check.version, "correct", lead=True,
                         correction={"decision": decision, "policies": policies})
    return store


def test_case_checks_give_precision_violations_missed_and_recall_lost(world, current_run, policy, tmp_path):
    change = ("spam=0.3", "misleading_claim=0.3", "counterfeit_ip=0.3", "hate_harassment=0.3", "fraud_scam=0.95",
              "prohibited_item=0.95", "restricted_item=0.95")
    dry = assess(request(world, current_run, threshold=change))
    by = {d: [i for i in dry.impacts if i.direction == d] for d in ("newly_flagged", "newly_cleared")}
    kept = [i for i in dry.impacts if i.before[0] != "allow" and i.after[0] != "allow"]
    assert len(by["newly_flagged"]) >= 5 and len(by["newly_cleared"]) >= 4 and len(kept) >= 4
    truth = {}
    for n, i in enumerate(by["newly_flagged"][:5]):  # 3 of 5 newly flagged are real violations
        truth[i.record.id] = ("remove", list(i.after[1])) if n < 3 else ("allow", [])
    for n, i in enumerate(by["newly_cleared"][:4]):  # 1 of 4 newly cleared was a real violation
        truth[i.record.id] = ("remove", list(i.before[1])) if n < 1 else ("allow", [])
    for i in kept[:4]:  # the still flagged ones are right
        truth[i.record.id] = (i.before[0], list(i.before[1]))
    db = tmp_path / "checks.sqlite"
    fill_store(db, current_run, world["dump"], policy, truth)
    result = assess(request(world, current_run, threshold=change, db=str(db)), ImpactSettings(min_checks=3)).result
    est = result["estimates"]
    assert (est["newly_flagged"]["positives"], est["newly_flagged"]["checks"]) == (3, 5)
    assert est["newly_flagged"]["interval"] == pytest.approx([0.2307, 0.8824], abs=1e-4)  # Wilson 3/5 at 95%
    assert (est["newly_cleared"]["positives"], est["newly_cleared"]["checks"]) == (1, 4)
    n_cleared, n_kept = len(by["newly_cleared"]), len(kept)
    lost = n_cleared * 0.25
    assert est["recall_lost"]["rate"] == pytest.approx(lost / (lost + n_kept * 1.0))
    low, high = est["recall_lost"]["interval"]
    assert low < est["recall_lost"]["rate"] < high
    assert est["newly_flagged"]["status"] == est["newly_cleared"]["status"] == "measured"  # min_checks 3
    # with the default 30 checks wanted, a sample is proposed, of items not checked already
    assessment = assess(request(world, current_run, threshold=change, db=str(db)))
    write_report(assessment, tmp_path / "out")
    sampled = {json.loads(x)["id"] for f in assessment.result["sample"]["files"] for x in Path(f).read_text().splitlines()}
    assert sampled and not sampled & set(truth)


def test_checks_outside_the_runs_count_only_when_scored_the_same_way(world, current_run, policy, template, tmp_path):
    change = ("spam=0.3", "fraud_scam=0.9")
    first = [r for r in read_records(current_run)][: N_ITEMS // 2]
    half = tmp_path / "half.jsonl"
    half.write_text("".join(json.dumps(r.to_json()) + "\n" for r in first))
    other = [r for r in read_records(current_run)][N_ITEMS // 2:]
    other_run = tmp_path / "other.jsonl"
    other_run.write_text("".join(json.dumps(r.to_json()) + "\n" for r in other))
    truth = {r.id: ("allow", []) for r in other}
    db = tmp_path / "other.sqlite"
    fill_store(db, other_run, world["dump"], policy, truth)
    base = request(world, half, threshold=change, db=str(db))
    assert assess(base).result["estimates"]["checks"] == {"finished": len(other), "usable": len(other)}
    store = Store(db)  # the same checks, scored by another scorer: not usable
    store.db.execute("UPDATE case_checks SET provenance = REPLACE(provenance, ?, ?)", (StoredScorer.sha, "6" * 64))
    assert assess(base).result["estimates"]["checks"]["usable"] == 0


# -- merchants, review queue, regions, new policies ----------------------------------------------
def test_merchant_tiers_and_review_queue_follow_the_change(world, current_run, tmp_path):
    strict = ("spam=0.05", "fraud_scam=0.05", "counterfeit_ip=0.05")  # everything flagged: strikes everywhere
    result = assess(request(world, current_run, threshold=strict), ImpactSettings(review_throughput=20, days=2)).result
    m = result["merchants"]
    assert m["available"] and m["merchants"] == 9 and m["changes"]
    assert all(m["tier_names"].index(c["to"]) > m["tier_names"].index(c["from"]) for c in m["changes"])
    q = result["review_queue"]
    before = sum(1 for r in read_records(current_run) if r.verdict["decision"] == "review")
    assert q["before"] == before and q["per_day_before"] == before / 2 and q["load_before"] == before / 2 / 20
    assert result["tallies"]["by_region"].keys() == {"EU", "US", "SG"}
    assert sum(g["changed"] for g in result["tallies"]["by_language"].values()) == result["tallies"]["changed"]


def test_throughput_is_measured_from_the_stores_audit_log(world, current_run, policy, tmp_path):
    db = tmp_path / "t.sqlite"
    fill_store(db, current_run, world["dump"], policy, {f"it-{i:04d}": ("allow", []) for i in range(7)})
    q = assess(request(world, current_run, threshold=("spam=0.3",), db=str(db))).result["review_queue"]
    assert q["throughput"] == 7 and q["throughput_source"].startswith("measured")
    q = assess(request(world, current_run, threshold=("spam=0.3",))).result["review_queue"]
    assert q["throughput"] == 400 and q["throughput_source"].startswith("assumed")


def test_a_changed_region_overlay_sends_its_items_to_be_scored_again(world, current_run, tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"SG": {"name": "Singapore", "restricted": ["durian on public transport"]}}))
    assessment = assess(request(world, current_run, region_overlay=str(overlay)))
    how = assessment.result["tallies"]["how"]
    assert how["overlay"] == N_ITEMS // 3 and assessment.result["status"] == "unmeasured"
    write_report(assessment, tmp_path / "out")
    [rescore] = assessment.result["sample"]["rescore"]["files"]
    assert {json.loads(x)["region"] for x in Path(rescore).read_text().splitlines()} == {"SG"}
    with pytest.raises(ConfigError, match="--input"):
        assess(request(world, current_run, region_overlay=str(overlay), input=(), run_date=()))


def test_a_new_policy_is_unmeasured_not_silently_zero(world, current_run, tmp_path):
    data = yaml.safe_load(Path(DEFAULT_POLICY).read_text())
    new = dict(data["policies"][-1], id="weapons_parts", title="Weapon parts")
    data["policies"].append(new)
    path = tmp_path / "plus.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    result = assess(request(world, current_run, proposed_policy=str(path), threshold=("weapons_parts=0.0",))).result
    assert result["change"]["unscored_policies"] == ["weapons_parts"] and result["status"] == "unmeasured"
    assert "weapons_parts" not in result["tallies"]["by_policy"]  # a threshold of 0 flags nothing it has no score for


# -- the report and the command ------------------------------------------------------------------
def test_wilson_interval():
    assert wilson(0, 0, 1.96) is None
    low, high = wilson(10, 10, 1.959964)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)


def test_recall_lost_without_checks_is_unmeasured_and_is_all_when_nothing_stays_flagged():
    settings = ImpactSettings(min_checks=2)
    cleared = estimate(2, 4, 10, settings)
    assert recall_lost(cleared, estimate(0, 0, 20, settings), settings)["status"] == "unmeasured"
    assert recall_lost(cleared, estimate(0, 0, 0, settings), settings)["rate"] == 1.0
    assert recall_lost(estimate(0, 0, 0, settings), estimate(3, 3, 20, settings), settings)["status"] == "no change"


def test_the_command_writes_json_markdown_html_and_plots(world, current_run, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_impact_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "report"
    args = parser.parse_args(["impact", "--run", str(current_run), "--input", str(world["dump"]), "--run-date",
                              "2026-11-20", "--current-thresholds", write_json(tmp_path / "c.json", CURRENT),
                              "--threshold", "spam=0.3", "--threshold", "fraud_scam=0.9", "-o", str(out),
                              "--no-progress"])
    assert cmd_impact(args) == 0
    printed = capsys.readouterr().out
    assert "status: UNMEASURED" in printed and "moderation review sample" in printed
    data = json.loads((out / "impact.json").read_text())
    assert data["status"] == "unmeasured" and data["tallies"]["changed"] == len(data["changed_items"])
    page = (out / "impact.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "Status: unmeasured" in page
    for name in ("transitions.png", "policies.png", "review_queue.png", "estimates.png", "merchant_tiers.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    args.run = []
    with pytest.raises(ConfigError, match="at least one run"):
        cmd_impact(args)
