import json

import numpy as np
import pytest
from conftest import write_jsonl

from moderation.cli import main
from moderation.datasets import LabelledItem
from moderation.evalsets import load_set
from moderation.evaluate import evaluate_baseline, injection_robustness, sample, score_labels
from moderation.items import Item
from moderation.schema import DEFAULT_POLICY_IDS


def li(i, violations=(), split="test", tags=()):
    return LabelledItem(Item(f"x{i}", "listing", {"title": f"item {i}"}), frozenset(violations), split, "t", "MIT",
                        tags=tuple(tags))


class ScoreByTitle:
    """A tunable fake model: spam score = number in the title / 100."""

    name, tunable = "fake", True

    def score(self, items):
        s = np.zeros((len(items), len(DEFAULT_POLICY_IDS)))
        s[:, DEFAULT_POLICY_IDS.index("spam")] = [int(it.fields["title"].split()[1]) / 100 for it in items]
        return s


def test_thresholds_are_chosen_on_dev_and_cannot_see_test_labels(policy):
    dev = [li(i, ["spam"] if i >= 60 else [], "dev") for i in range(100)]
    test = [li(i, ["spam"] if i >= 30 else []) for i in range(100)]
    poisoned = [li(i, ["spam"] if i < 30 else []) for i in range(100)]  # the opposite test labels
    a = evaluate_baseline(ScoreByTitle(), "s", dev, test, policy, n_boot=10)
    b = evaluate_baseline(ScoreByTitle(), "s", dev, poisoned, policy, n_boot=10)
    assert a.thresholds == b.thresholds and a.thresholds["spam"] == pytest.approx(0.6)
    other_dev = [li(i, ["spam"] if i >= 20 else [], "dev") for i in range(100)]
    assert evaluate_baseline(ScoreByTitle(), "s", other_dev, test, policy, n_boot=10).thresholds["spam"] == pytest.approx(0.2)


def test_injection_robustness_compares_with_plain_misses(policy):
    items = [li(0, ["spam"], tags=["adversarial:injection"]), li(1, ["spam"], tags=["adversarial:injection"]),
             li(2, ["spam"]), li(3, ["spam"]), li(4, [])]
    scores = np.zeros((5, len(DEFAULT_POLICY_IDS)))
    scores[[1, 2, 3], DEFAULT_POLICY_IDS.index("spam")] = 1.0
    labels = score_labels(items, scores, np.full(len(DEFAULT_POLICY_IDS), 0.5), np.ones(5, dtype=bool), policy)
    assert injection_robustness(items, labels) == {"injection_success_rate": 0.5, "injection_items": 2,
                                                   "plain_violation_miss_rate": 0.0}


def test_sample_is_fixed_and_independent_of_order():
    items = [li(i) for i in range(50)]
    assert [x.item.id for x in sample(items, 10)] == [x.item.id for x in sample(items[::-1], 10)]
    assert sample(items, None) is items


def test_eval_command_end_to_end_with_fake_llm(tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["eval", "--sets", "marketplace", "--systems", "rules,tfidf,llm", "--backend", "fake", "--sample", "40",
                 "--bootstrap", "30", "--out-dir", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    systems = {r["system"] for r in metrics["results"]}
    assert systems == {"rules", "tfidf", "llm"} and all(r["n"] == 40 for r in metrics["results"])
    llm = next(r for r in metrics["results"] if r["system"] == "llm")
    assert "macro_f1" in llm["intervals"] and llm["metrics"]["schema_valid_rate"] == 1.0
    assert metrics["meta"]["llm"]["backend"] == "fake"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")
    assert (out / "f1_marketplace.png").stat().st_size > 1000 and (out / "report.md").is_file()
    assert "### marketplace (n = 40)" in capsys.readouterr().out


def test_eval_compare_reports_flips_and_mcnemar(tmp_path, capsys):
    test = load_set("marketplace", "test")[:30]

    def run_file(path, flag_all):
        rows = []
        for n, x in enumerate(test, start=1):
            violations = [{"policy": "spam", "severity": "low", "evidence": "x"}] if flag_all else []
            rows.append({"schema_version": "1", "id": x.item.id, "line": n,
                         "verdict": {"decision": "remove" if flag_all else "allow", "violations": violations, "rationale": ""}})
        return write_jsonl(path, rows)

    a, b = run_file(tmp_path / "a.jsonl", False), run_file(tmp_path / "b.jsonl", True)
    assert main(["eval", "compare", str(a), str(b), "--set", "marketplace", "--json", str(tmp_path / "c.json")]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["n"] == 30 and result["mcnemar"]["p_value"] <= 1
    clean = sum(not x.gold_violations for x in test)
    only_spam = sum(x.gold_violations == {"spam"} for x in test)
    assert len(result["flipped"]) == clean + only_spam
    assert "McNemar" in capsys.readouterr().out


def test_benchmark_script_writes_a_results_table(tmp_path):
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("benchmark_accuracy", ROOT / "scripts" / "benchmark_accuracy.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    results = tmp_path / "results.md"
    code = script.run(["--sample", "25", "--out-dir", str(tmp_path / "b"), "--results", str(results), "--",
                       "--sets", "marketplace", "--systems", "rules", "--bootstrap", "20", "--no-progress"])
    text = results.read_text()
    assert code == 0 and "# Accuracy results" in text and "scripts/benchmark_accuracy.py --sample 25" in text
    assert "### marketplace (n = 25)" in text and "| rules |" in text
