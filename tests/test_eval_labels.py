"""`moderation eval --labels`: a team's own labelled dump scored like the built-in sets."""

import csv
import json

import pytest
from conftest import ROOT

from moderation.cli import main
from moderation.errors import ConfigError
from moderation.labels import LabelOptions, read_labelled
from moderation.policy import load_policy
from moderation.schema import DECISIONS

POLICY = load_policy()

# (kind, title, description, text, gold policies, gold decision, region, language)
ROWS = [
    ("listing", "AAA replica Rolex", "Mirror copy, looks real", "", "counterfeit_ip", "remove", "EU", "en"),
    ("listing", "Oak dining table", "Solid oak, seats six", "", "", "allow", "EU", "en"),
    ("listing", "Réplica bolso Gucci", "Copia AAA", "", "counterfeit_ip", "remove", "MX", "es"),
    ("listing", "Kinderfahrrad", "Gut erhalten, 20 Zoll", "", "", "allow", "EU", "de"),
    ("merchant", "Quick Cash Shop", "Pay by gift card only, WhatsApp me", "", "off_platform_transaction;fraud_scam", "remove", "US", "en"),
    ("merchant", "Green Leaf Garden", "Plants and seeds, shipped in the UK", "", "", "allow", "UK", "en"),
    ("creator_video", "Unboxing", "A new drill", "Today I open a drill from my favourite shop.", "", "allow", "US", "en"),
    ("creator_video", "Follow me", "", "free followers, click here, subscribe to my channel", "spam", "remove", "SG", "en"),
    ("live_chat", "", "", "hi all\nclick here for free followers", "spam", "remove", "SG", "en"),
    ("live_chat", "", "", "great stream\nsee you tomorrow", "", "allow", "UK", "en"),
]


def write_labelled_csv(path, rows, prefix):
    """A platform's export: generic text columns, its own id and gold column names."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "kind", "title", "description", "text", "policies", "action", "region", "language"])
        for i, row in enumerate(rows):
            writer.writerow([f"{prefix}{i}", *row])
    return path


def test_eval_scores_a_labelled_csv_end_to_end_with_every_system(tmp_path):
    test = write_labelled_csv(tmp_path / "team.csv", ROWS, "t")
    train = write_labelled_csv(tmp_path / "train.csv", ROWS * 3, "r")
    dev = write_labelled_csv(tmp_path / "dev.csv", ROWS, "d")
    out = tmp_path / "ev"
    code = main(["eval", "--labels", str(test), "--train", str(train), "--dev", str(dev),
                 "--columns", "id=sku,violations=policies,decision=action", "--backend", "fake",
                 "--bootstrap", "20", "--out-dir", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    results = {r["system"]: r for r in metrics["results"]}
    assert set(results) == {"rules", "tfidf", "llm", "llm@dev-thresholds"}
    assert all(r["set"] == "team" and r["n"] == len(ROWS) for r in results.values())
    llm = results["llm"]
    assert llm["metrics"]["schema_valid_rate"] == 1.0 and "decision_accuracy" in llm["metrics"]
    assert llm["metrics"]["clean_fpr"] == 0.0 and llm["metrics"]["counterfeit_ip/recall"] == 1.0
    # Every report has a breakdown by language, kind and region, whose groups add up to the set.
    for result in results.values():
        assert set(result["breakdown"]) == {"language", "kind", "region"}
        assert sum(g["n"] for g in result["breakdown"]["kind"].values()) == len(ROWS)
    assert llm["breakdown"]["kind"]["listing"] == {**llm["breakdown"]["kind"]["listing"], "n": 4, "violating": 2}
    assert metrics["meta"]["tfidf_trained_on"].startswith("30 train items of") and "10 dev items" in metrics["meta"]["thresholds_from"]
    assert (out / "thresholds" / "team.json").is_file() and (out / "runs" / "team.jsonl").is_file()
    report = (out / "report.md").read_text()
    assert "team" in report and "by language" in report and "by region" in report
    assert (out / "report.html").stat().st_size > 0


def test_a_single_label_column_stands_for_one_policy(tmp_path):
    path = tmp_path / "scam.csv"
    path.write_text("id,title,is_scam\na,Send a deposit by wire first,1\nb,Oak table,0\nc,Gift cards only,yes\n")
    labelled = read_labelled(path, LabelOptions(columns="label=is_scam", label_policy="fraud_scam"), POLICY)
    assert [sorted(li.gold_violations) for li in labelled.split("test")] == [["fraud_scam"], [], ["fraud_scam"]]
    assert all(li.gold_decision is None for li in labelled.split("test"))
    with pytest.raises(ConfigError, match="needs --label-policy"):
        read_labelled(path, LabelOptions(columns="label=is_scam"), POLICY)


def test_rows_with_bad_gold_are_left_out_and_counted(tmp_path):
    path = tmp_path / "team.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "title": "Replica bag", "violations": ["counterfeit_ip"], "decision": "remove"},
        {"id": "b", "title": "Lamp", "violations": "weapons"},
        {"id": "c", "title": "Chair"},
        {"id": "d", "title": "Desk", "violations": [], "decision": "delete"},
    ]) + "\n")
    labelled = read_labelled(path, LabelOptions(), POLICY)
    assert [li.item.id for li in labelled.split("test")] == ["a"]
    assert labelled.skipped == {"unknown policy id 'weapons' in violations (not an id or label_map entry of the policy file)": 1,
                                "no gold: no 'violations' or 'label' column value": 1,
                                f"decision 'delete' is not one of {list(DECISIONS)}": 1}


def test_the_kyc_set_runs_through_the_same_path(tmp_path):
    out = tmp_path / "kyc"
    code = main(["eval", "--labels", str(ROOT / "eval_sets/kyc/shops.jsonl"), "--kind", "merchant", "--systems", "rules,llm",
                 "--policy", str(ROOT / "prompts/kyc.yaml"), "--prompt", str(ROOT / "prompts/kyc.v1.txt"), "--backend", "fake",
                 "--bootstrap", "20", "--out-dir", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The file's split column: its 18 test shops are scored, its 6 dev shops choose the LLM's thresholds.
    assert {r["system"]: r["n"] for r in metrics["results"]} == {"rules": 18, "llm": 18, "llm@dev-thresholds": 18}
    assert set(metrics["results"][0]["breakdown"]["region"]) >= {"EU", "US", "UK"}
