import importlib.util
import json
import pickle

import jsonschema
import numpy as np
import pytest
from conftest import ROOT, listing, read_jsonl, write_jsonl

from moderation.backends.fake import item_text_of
from moderation.baselines import TfidfBaseline
from moderation.batch import BatchRunner, ChunkModerator, screen_verdict
from moderation.cli import main
from moderation.datasets import LabelledItem
from moderation.errors import ConfigError
from moderation.evalsets import load_set
from moderation.items import Item, read_items
from moderation.policy import load_policy
from moderation.schema import DEFAULT_POLICY_IDS, verdict_schema
from moderation.screen import Screen, ScreenSettings, choose_threshold, dev_figures, fit_screen, load_screen

SMALL = 3000  # TF-IDF features: keeps every fit in this file to a second or two
POLICY = load_policy()


@pytest.fixture(scope="module")
def marketplace():
    return load_set("marketplace", "train"), load_set("marketplace", "dev")


@pytest.fixture(scope="module")
def fitted(marketplace):
    train, dev = marketplace
    return fit_screen(train, dev, DEFAULT_POLICY_IDS, 0.05, max_features=SMALL)


def item(i: int, title: str) -> Item:
    return Item(id=f"s-{i}", kind="listing", fields={"title": title})


def labelled(i: int, title: str, violations=(), source="toy") -> LabelledItem:
    return LabelledItem(item(i, title), frozenset(violations), "dev", source, "test")


# Threshold choice


def test_threshold_is_the_largest_that_skips_at_most_the_allowed_violations():
    violating_scores = np.arange(1, 101) / 100  # 0.01 .. 1.00
    scores = np.concatenate([violating_scores, [0.001, 0.5, 0.9]])
    violating = np.array([True] * 100 + [False] * 3)
    assert choose_threshold(scores, violating, 0.0) == pytest.approx(0.01)  # nothing violating below it
    assert choose_threshold(scores, violating, 0.01) == pytest.approx(0.02)  # exactly one skipped: 0.01
    assert choose_threshold(scores, violating, 0.05) == pytest.approx(0.06)
    t = choose_threshold(scores, violating, 0.05)
    f = dev_figures(scores, violating, t)
    assert f["skipped_violations"] == 5 and f["recall_loss"] == pytest.approx(0.05)
    assert f["cleared"] == 6 and f["clean_cleared_share"] == pytest.approx(1 / 3)


def test_threshold_with_ties_never_goes_over_the_bound():
    scores = np.array([0.1, 0.1, 0.1, 0.3, 0.05])
    violating = np.array([True, True, True, True, False])
    t = choose_threshold(scores, violating, 0.5)  # two may be skipped, but the three at 0.1 tie
    assert t == pytest.approx(0.1)
    assert dev_figures(scores, violating, t)["skipped_violations"] == 0


def test_threshold_needs_violations_and_a_sane_bound():
    with pytest.raises(ConfigError, match="no violation"):
        choose_threshold(np.array([0.2, 0.3]), np.array([False, False]), 0.01)
    with pytest.raises(ConfigError, match="max_recall_loss"):
        ScreenSettings(max_recall_loss=1.0)
    with pytest.raises(ConfigError, match="criterion"):
        ScreenSettings(criterion="mean")


def test_fit_reports_dev_figures_that_respect_the_bound(fitted, marketplace):
    _, dev = marketplace
    pooled = fitted.card["dev"]["pooled"]
    assert pooled["items"] == len(dev) and pooled["violating"] == sum(bool(li.gold_violations) for li in dev)
    assert pooled["recall_loss"] <= 0.05 and fitted.card["dev"]["per_set"]["marketplace"] == pooled
    scores = fitted.violation_scores([li.item for li in dev])
    assert pooled["cleared"] == int((scores < fitted.threshold).sum())


def test_every_set_criterion_bounds_each_set():
    train = [labelled(i, f"replica rolex watch {i}", {"counterfeit_ip"}) for i in range(12)] + \
            [labelled(100 + i, f"wooden chair oak {i}") for i in range(12)]
    dev = [labelled(200, "replica rolex", {"counterfeit_ip"}, "a"), labelled(201, "wooden oak chair", source="a"),
           labelled(202, "oak chair replica", {"counterfeit_ip"}, "b"), labelled(203, "chair", source="b")]
    pooled = fit_screen(train, dev, DEFAULT_POLICY_IDS, 0.5, max_features=SMALL)
    every = fit_screen(train, dev, DEFAULT_POLICY_IDS, 0.5, criterion="every-set", max_features=SMALL)
    assert every.threshold <= pooled.threshold
    for figures in every.card["dev"]["per_set"].values():
        assert figures["recall_loss"] <= 0.5


# Scoring, clear, save and load


def test_scores_match_the_tfidf_baseline(marketplace):
    train, dev = marketplace
    items = [li.item for li in dev]
    baseline = TfidfBaseline(DEFAULT_POLICY_IDS, max_features=SMALL).fit(train)
    screen = fit_screen(train, dev, DEFAULT_POLICY_IDS, 0.05, max_features=SMALL)
    np.testing.assert_allclose(screen.scorer.score(items), baseline.score(items), rtol=1e-9, atol=1e-12)
    assert np.array_equal(screen.violation_scores(items), baseline.score(items).max(1))


def test_clear_says_none_for_the_llm_and_why_for_cleared_items(fitted):
    items = [li.item for li in load_set("marketplace", "test")[:40]]
    scores = fitted.violation_scores(items)
    screen = Screen(fitted.scorer, DEFAULT_POLICY_IDS, float(np.median(scores)), {}, "abc")
    cleared = screen.clear(items)
    assert len(cleared) == len(items) and screen.clear([]) == []
    for info, score in zip(cleared, scores):
        if score < screen.threshold:
            assert info == {"name": "tfidf", "score": score, "threshold": screen.threshold, "sha": "abc"}
        else:
            assert info is None
    assert 0 < sum(info is not None for info in cleared) < len(items)


def test_save_load_round_trip_scores_identically(fitted, tmp_path):
    items = [li.item for li in load_set("marketplace", "test")]
    sha = fitted.save(tmp_path / "s")
    loaded = load_screen(tmp_path / "s", POLICY)
    assert loaded.sha == sha and loaded.threshold == fitted.threshold
    assert loaded.card["dev"] == fitted.card["dev"] and loaded.card["settings"]["max_features"] == SMALL
    assert np.array_equal(loaded.scorer.score(items), fitted.scorer.score(items))
    assert loaded.clear(items) == fitted.clear(items)
    again = pickle.loads(pickle.dumps(loaded))  # Ray actors may receive the object itself
    assert np.array_equal(again.violation_scores(items), loaded.violation_scores(items))
    with np.load(tmp_path / "s" / "model.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_load_rejects_missing_corrupt_or_foreign_screens(fitted, tmp_path):
    with pytest.raises(ConfigError, match="expected screen.json and model.npz"):
        load_screen(tmp_path / "nowhere", POLICY)
    fitted.save(tmp_path / "s")
    card = json.loads((tmp_path / "s" / "screen.json").read_text())
    (tmp_path / "s" / "model.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="unreadable"):
        load_screen(tmp_path / "s", POLICY)
    fitted.save(tmp_path / "s")
    (tmp_path / "s" / "screen.json").write_text(json.dumps({**card, "policies": card["policies"][:-1]}))
    with pytest.raises(ConfigError, match="fitted for another taxonomy.*Marketplace content policy"):
        load_screen(tmp_path / "s", POLICY)
    (tmp_path / "s" / "screen.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        load_screen(tmp_path / "s", POLICY)
    arrays = dict(np.load(tmp_path / "s" / "model.npz"))
    np.savez(tmp_path / "s" / "model.npz", **{**arrays, "idf": arrays["idf"][:5]})
    (tmp_path / "s" / "screen.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="do not fit together"):
        load_screen(tmp_path / "s", POLICY)


# The cascade in the batch runner


def test_cleared_items_never_reach_the_backend(fitted, make_moderator, tmp_path):
    items = [li.item for li in load_set("marketplace", "test")[:30]]
    scores = fitted.violation_scores(items)
    screen = Screen(fitted.scorer, DEFAULT_POLICY_IDS, float(np.median(scores)), {}, "abc")
    moderator = make_moderator(scores=False)
    records = [r.to_json() for r in ChunkModerator(moderator, screen=screen).records([(i + 1, it) for i, it in enumerate(items)])]
    sent = [item_text_of(r) for call in moderator.backend.calls for r in call]
    cleared = {r["id"] for r in records if "screen" in r}
    assert 0 < len(cleared) < len(items)
    to_llm = {json.dumps(it.content(), ensure_ascii=False) for it in items if it.id not in cleared}
    assert len(sent) == len(set(sent)) == len(to_llm) and set(sent) == to_llm  # each content once, none cleared
    for r in records:
        if r["id"] in cleared:
            assert r["verdict"]["decision"] == "allow" and r["screen"]["score"] < r["screen"]["threshold"]
            jsonschema.validate(r["verdict"], verdict_schema(DEFAULT_POLICY_IDS))


def test_a_screen_verdict_is_schema_valid_whatever_the_screen_name():
    info = {"name": "a-much-longer-embedding-classifier-name", "score": 0.00012345, "threshold": 0.0383}
    jsonschema.validate(screen_verdict(info), verdict_schema(DEFAULT_POLICY_IDS))


def test_run_with_screen_flag_writes_screen_fields(fitted, tmp_path, capsys):
    fitted.save(tmp_path / "screen")
    rows = [listing(i) for i in range(6)] + [{"id": "x", "title": "AAA replica Rolex, WhatsApp me"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress", "--screen", str(tmp_path / "screen")]) == 0
    records = {r["id"]: r for r in read_jsonl(out)}
    expected = fitted.violation_scores([it for _, it in read_items(src)]) < fitted.threshold
    assert 0 < expected.sum() < len(rows)
    assert ["screen" in records[r["id"]] for r in rows] == list(expected)
    assert "screen" not in records["x"] and records["x"]["verdict"]["decision"] != "allow"
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["this_run"]["screened"] == int(expected.sum())


def test_batch_runner_counts_screened_items(fitted, make_moderator, tmp_path):
    items = [li.item for li in load_set("marketplace", "test")[:20]]
    screen = Screen(fitted.scorer, DEFAULT_POLICY_IDS, 1.01, {}, "abc")  # clears everything
    moderator = make_moderator()
    stats = BatchRunner(moderator, screen=screen).run([(i + 1, it) for i, it in enumerate(items)], tmp_path / "o.jsonl")
    assert stats.screened == stats.processed == 20 and moderator.backend.calls == []


# CLI and benchmark


def test_screen_fit_cli_writes_a_loadable_screen_and_a_card(tmp_path, capsys):
    out = tmp_path / "screen"
    assert main(["screen", "fit", "--sets", "marketplace", "--max-features", str(SMALL), "--max-recall-loss", "0.05",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    screen = load_screen(out, POLICY)
    assert f"threshold {screen.threshold:.6f}" in printed and "| marketplace |" in printed and "**pooled**" in printed
    assert screen.card["train_sets"] == ["marketplace"] and screen.card["settings"]["max_recall_loss"] == 0.05
    assert screen.sha in (out / "README.md").read_text()
    assert main(["screen", "fit", "--sets", "nope", "-o", str(out)]) == 2


def test_benchmark_script_smoke_with_the_fake_backend(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_cascade", ROOT / "scripts" / "benchmark_cascade.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "cascade"
    assert bench.main(["--backend", "fake", "--sample", "10", "--sets", "marketplace,sms_spam", "--fit-sets",
                       "marketplace,sms_spam", "--max-features", str(SMALL), "--out-dir", str(out), "--no-progress"]) == 0
    result = json.loads((out / "cascade.json").read_text())
    rows = result["results"]
    assert set(rows) == {"marketplace", "sms_spam", "pooled"} and rows["pooled"]["items"] == 20
    for name in ("marketplace", "sms_spam"):
        cascade = read_jsonl(out / "runs" / f"{name}.cascade.jsonl")
        assert rows[name]["reached_llm"] == sum("screen" not in r for r in cascade)
        assert len(read_jsonl(out / "runs" / f"{name}.llm_only.jsonl")) == 10
    pooled = rows["pooled"]
    assert pooled["reached_llm"] == rows["marketplace"]["reached_llm"] + rows["sms_spam"]["reached_llm"]
    assert pooled["change"]["recall"] == pytest.approx(pooled["cascade"]["recall"] - pooled["llm_only"]["recall"])
    assert result["meta"]["screen"]["threshold"] == load_screen(out / "screen", POLICY).threshold
    assert "| pooled | 20 |" in (out / "cascade.md").read_text()
