"""Trends over the synthetic marketplace's seven days, scored by the documented synthetic scorer
(eval_sets/synthetic_marketplace/generate.py, no model): the planted scam script is raised as
emerging the day it grows and not before, the scorer's simulated change is raised as drift on
day 6 only, and the review app shows the same figures."""

import argparse
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from moderation import trends as tr
from moderation.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "eval_sets" / "synthetic_marketplace"
DUMPS = [DATA / f"day-{d}.jsonl" for d in range(1, 8)]
TRUTH = json.loads((DATA / "truth.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("synthetic_marketplace", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def thresholds(runs):
    return json.loads((runs[0].parent / "thresholds.json").read_text())


@pytest.fixture(scope="module")
def result(runs, thresholds):
    return tr.trends(tr.order_periods(runs, DUMPS), thresholds=thresholds)


def test_wilson_intervals_match_known_values():
    low, high = tr.wilson(0, 10)
    assert low == pytest.approx(0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    assert tr.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert tr.wilson(0, 0) == (0.0, 1.0)


def test_psi_and_ks_are_zero_for_one_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    hist = lambda x: np.bincount(np.clip((x * tr.BINS).astype(int), 0, tr.BINS - 1), minlength=tr.BINS)  # noqa: E731
    a, b = hist(rng.beta(2, 8, 5000)), hist(rng.beta(2, 8, 5000))
    shifted = hist(np.clip(rng.beta(2, 8, 5000) + 0.15, 0, 1))
    assert tr.psi(a, a) == 0 and tr.ks(a, a) == (0.0, 1.0)
    assert tr.psi(a, b) < 0.02 and tr.ks(a, b)[1] > 0.01
    assert tr.psi(a, shifted) > 0.5 and tr.ks(a, shifted)[0] > 0.4 and tr.ks(a, shifted)[1] < 1e-10


def test_the_planted_script_emerges_the_day_it_grows_and_not_before(result):
    template = TRUTH["template"]
    first = f"day-{template['first_emerging_day']}"
    emerging = result["emerging"]
    assert emerging and emerging[0]["period"] == first
    days = [e["period"] for e in emerging]
    assert all(int(d.split("-")[1]) >= template["first_emerging_day"] for d in days)  # days 1-3: nothing
    planted = {i for ids in template["items"].values() for i in ids}
    for e in emerging:  # every cluster raised is the planted script, and shows it
        assert all(x["item"] in planted for x in e["examples"]), e
        assert "bluekey" in e["terms"][:3]  # the code word leads the distinctive terms
    assert emerging[0]["counts"][:4] == template["items_per_day"][:4]
    assert emerging[0]["near_threshold"] and emerging[0]["flagged"]  # items under threshold join the cluster


def test_a_steady_flagged_cluster_is_seen_but_never_emerging(result):
    steady = {i for ids in TRUTH["steady"]["items"].values() for i in ids}
    emerged = {e["cluster"] for e in result["emerging"]}
    clusters = [c for c in result["clusters"] if set(c["counts"].values()) == {TRUTH["steady"]["items_per_day"][0]}]
    assert clusters and not {c["id"] for c in clusters} & emerged
    assert "Disposable vape" in clusters[0]["example"] and steady


def test_the_scorer_change_is_drift_on_day_6_and_nothing_else_alerts(result):
    drift = TRUTH["scorer_drift"]
    alerts = result["alerts"]
    assert {(a["period"], a["type"]) for a in alerts} == {(f"day-{drift['first_alert_day']}", "drift")}
    assert {a["policy"] for a in alerts} <= {drift["policy"], "any"}
    assert any(a["dimension"] == "all" and a["policy"] == drift["policy"] for a in alerts)
    spam = [r for r in result["rates"] if r["dimension"] == "all" and r["policy"] == "spam"]
    assert all(r["flagged"] == 0 for r in spam)  # the shift moved scores, not flags: no rate alert


def test_rates_carry_wilson_intervals_per_policy_kind_region_and_language(result):
    rows = result["rates"]
    assert {r["dimension"] for r in rows} == {"all", "kind", "region", "language"}
    fraud = next(r for r in rows if r["period"] == "day-7" and r["dimension"] == "all" and r["policy"] == "fraud_scam")
    assert fraud["low"] < fraud["rate"] < fraud["high"] and fraud["flagged"] > 0
    assert (fraud["low"], fraud["high"]) == pytest.approx(tr.wilson(fraud["flagged"], fraud["n"]))


def test_a_rate_alert_needs_a_real_move(runs, thresholds):
    """Two copies of day 1 against day 7 with every scam doubled: the fraud rate alert fires."""
    base = tr.trends(tr.order_periods([runs[0], runs[0]], [DUMPS[0], DUMPS[0]], dates=["2025-03-01", "2025-03-02"]),
                     thresholds=thresholds)
    assert base["alerts"] == [] and base["emerging"] == []
    moved = tr.trends(tr.order_periods([runs[1], runs[6]], [DUMPS[1], DUMPS[6]]), thresholds=thresholds,
                      settings=tr.TrendSettings(rate_bound=0.02, min_n=30))
    assert any(a["type"] == "rate" and a["policy"] == "fraud_scam" and a["dimension"] == "all" for a in moved["alerts"])


def test_periods_follow_the_dates_given_else_the_names(runs):
    shuffled = [runs[3], runs[0], runs[1]]
    assert [p.name for p in tr.order_periods(shuffled)] == ["day-1", "day-2", "day-4"]
    dated = tr.order_periods(shuffled, dates=["2025-03-01", "2025-03-03", "2025-03-02"])
    assert [p.run.name for p in dated] == ["day-4.jsonl", "day-2.jsonl", "day-1.jsonl"]
    assert [p.name for p in tr.order_periods([Path("day-10.jsonl"), Path("day-9.jsonl")])] == ["day-9", "day-10"]


def test_bad_inputs_are_refused_with_what_is_wrong(runs, tmp_path):
    from moderation.policy import load_policy

    with pytest.raises(InputError, match="run file not found"):
        tr.trends(tr.order_periods([runs[0], tmp_path / "missing.jsonl"]))
    with pytest.raises(ConfigError, match="at least two run files"):
        tr.trends(tr.order_periods([runs[0]]))
    with pytest.raises(ConfigError, match="one dump"):
        tr.order_periods(runs[:2], DUMPS[:1])
    other = load_policy(ROOT / "prompts" / "examples" / "local-services.yaml")
    with pytest.raises(ConfigError, match="another taxonomy.*--policy"):
        tr.trends(tr.order_periods(runs[:2]), policy=other)
    not_a_run = tmp_path / "dump.jsonl"
    not_a_run.write_text(DUMPS[0].read_text())
    with pytest.raises(InputError, match="not a moderation output record"):
        tr.trends(tr.order_periods([runs[0], not_a_run]))
    with pytest.raises(ConfigError, match="TrendSettings.reference"):
        tr.TrendSettings(reference="last")


def test_the_command_writes_json_markdown_html_and_plots(runs, tmp_path, capsys):
    from moderation.trends_cli import add_trends_parser, cmd_trends

    parser = argparse.ArgumentParser(prog="moderation")
    add_trends_parser(parser.add_subparsers(dest="command"))
    stem = tmp_path / "out" / "trends"
    inputs = [a for d in DUMPS for a in ("--input", str(d))]
    args = parser.parse_args(["trends", *map(str, runs), *inputs, "--thresholds", str(runs[0].parent / "thresholds.json"),
                              "-o", str(stem), "--no-progress"])
    assert cmd_trends(args) == 0
    printed = capsys.readouterr().out
    assert "EMERGING day-4" in printed and "ALERT day-6 drift all=all spam" in printed
    result = tr.read_json(stem.with_suffix(".json"))
    assert result["emerging"][0]["period"] == "day-4"
    markdown = (tmp_path / "out" / "trends.md").read_text()
    assert "## Emerging clusters" in markdown and "BlueKey" in markdown and "![trends-rates.png](trends-rates.png)" in markdown
    page = (tmp_path / "out" / "trends.html").read_text()
    assert page.count("<svg") == 3 and "BlueKey" in page
    assert all((tmp_path / "out" / f"trends-{n}.png").stat().st_size > 1000 for n in ("rates", "drift", "emerging"))


def test_the_review_dashboard_shows_the_trends_file(result, tmp_path):
    from fastapi.testclient import TestClient

    from moderation.review import auth
    from moderation.review.app import ReviewSettings, create_app
    from moderation.review.store import Store

    result = json.loads(json.dumps(result))
    result["emerging"][0]["examples"][0]["text"] = "<script>alert(1)</script> BlueKey"
    path = tr.write_json(result, tmp_path / "trends.json")
    store = Store(tmp_path / "r.sqlite")
    store.add_user("lee", "lead", auth.hash_password("pw-123456789"))
    store.add_user("ann", "reviewer", auth.hash_password("pw-123456789"))

    def login(app, name):
        c = TestClient(app)
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        c.post("/login", data={"name": name, "password": "pw-123456789", "csrf_token": token})
        return c

    lead = login(create_app(store, ReviewSettings(trends_json=str(path))), "lee")
    assert 'href="/dashboard?view=trends"' in lead.get("/dashboard").text
    page = lead.get("/dashboard?view=trends")
    assert page.status_code == 200 and page.text.count("<svg") == 3
    assert "Emerging clusters" in page.text and "day-4" in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert login(create_app(store, ReviewSettings(trends_json=str(path))), "ann").get("/dashboard?view=trends").status_code == 403
    missing = login(create_app(store, ReviewSettings(trends_json=str(tmp_path / "none.json"))), "lee")
    assert "trends file not found" in missing.get("/dashboard?view=trends").text
    assert not math.isnan(result["drift"][0]["psi"])


def test_a_missing_run_file_or_dump_is_a_clear_error(tmp_path):
    from moderation.errors import InputError

    run = tmp_path / "day-1.jsonl"
    run.write_text("")
    with pytest.raises(InputError, match="run file not found: .*day-2"):
        tr.check_files([run, tmp_path / "day-2.jsonl"])
    with pytest.raises(InputError, match=r"dump \(--input\) not found"):
        tr.check_files([run], [tmp_path / "missing-dump.jsonl"])
    tr.check_files([run])
