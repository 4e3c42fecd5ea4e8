"""Fairness statistics: Wilson intervals, Holm adjustment, and flagging of a known over-enforced group."""

import json
import random

import pytest

from moderation.cli import main
from moderation.errors import ConfigError
from moderation.merchants.fairness import FairnessConfig, fairness, holm, wilson, z_test_greater


def test_wilson_interval_matches_known_values():
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_z_test_is_one_sided_and_holm_is_monotone():
    assert z_test_greater(30, 100, 10, 100) < 0.001
    assert z_test_greater(10, 100, 30, 100) > 0.99
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def synthetic(over: str, seed: int = 0):
    """Six languages with a 10% overturn rate, except `over` at 40%; 120 appeals each."""
    rng = random.Random(seed)
    rows = []
    for lang in ("en", "fr", "de", "es", "pt", "zh"):
        rate = 0.4 if lang == over else 0.1
        rows += [{"region": "EU", "language": lang, "hit": rng.random() < rate} for _ in range(120)]
    return rows


def test_the_over_enforced_language_and_only_it_is_flagged():
    rows = synthetic("pt")
    result = fairness(rows, rows, FairnessConfig())
    flagged = [(f["table"], f["group"]) for f in result["flagged"]]
    assert flagged == [("enforcement_by_language", "pt"), ("overturn_by_language", "pt")]
    pt = next(r for r in result["tables"]["overturn_by_language"] if r["group"] == "pt")
    assert pt["ci"][0] < pt["rate"] < pt["ci"][1] and pt["p_holm"] < 0.05


def test_no_group_is_flagged_when_rates_are_equal():
    rows = [{"region": "EU", "language": lang, "hit": i < 12} for lang in ("en", "fr", "de") for i in range(120)]
    assert fairness(rows, rows)["flagged"] == []


def test_false_flags_under_the_null_stay_near_alpha():
    """Same true rate everywhere: Holm keeps the chance of any false flag per table at about alpha or less."""
    tables_with_a_flag = sum(bool(fairness(synthetic("none", seed), [])["flagged"]) for seed in range(300))
    assert tables_with_a_flag / 300 <= 0.08


def test_small_groups_are_shown_but_not_tested():
    rows = [{"region": "BR", "language": "pt", "hit": True}] * 3 + [{"region": "US", "language": "en", "hit": False}] * 50
    row = next(r for r in fairness(rows, [])["tables"]["enforcement_by_region"] if r["group"] == "BR")
    assert row["p"] is None and not row["flag"]
    with pytest.raises(ConfigError, match="alpha"):
        FairnessConfig(alpha=1.5)


def test_fairness_over_eval_runs(tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--sets", "marketplace", "--systems", "llm", "--backend", "fake", "--out-dir", str(out),
                 "--bootstrap", "10", "--sample", "60", "--no-progress"]) == 0
    stem = tmp_path / "fair"
    assert main(["merchants", "fairness", "--eval-runs", str(out / "runs"), "-o", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert sum(r["n"] for r in result["tables"]["enforcement_by_language"]) == 60
    assert "backend fake" in result["source"] and "(a false positive)" in stem.with_suffix(".md").read_text()
