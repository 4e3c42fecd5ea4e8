import json
import math

import numpy as np
import pytest
from conftest import listing, read_jsonl, write_jsonl

from moderation.batch import BatchRunner, RunOptions
from moderation.items import read_items
from moderation.metrics import ece, reliability
from moderation.schema import DECISIONS, DEFAULT_POLICY_IDS
from moderation.scoring import LabelProbe, TokenScorer, combine, policy_prefix


# A toy tokenizer: each character is a token, except "ab" which merges into one (id 1000),
# so labels "abc" / "abd" / "x" share a first token and need a second probe.
def encode(text: str) -> list[int]:
    out, i = [], 0
    while i < len(text):
        if text.startswith("ab", i):
            out.append(1000)
            i += 2
        else:
            out.append(ord(text[i]))
            i += 1
    return out


class Engine:
    """Next-token log-probs from a fixed table keyed by the last token; records what it was asked."""

    def __init__(self, table):
        self.table = table
        self.asks = []

    def __call__(self, asks, adapters):
        self.asks.append((asks, adapters))
        return [{c: self.table.get((ids[-1], c), -50.0) for c in cands} for ids, cands in asks]


def scorer(engine):
    return TokenScorer(encode, chat_ids=lambda messages: [7, 7], next_logprobs=engine)


def test_label_probabilities_follow_the_token_trie_and_sum_to_one():
    # After the prefix '"': P(ab)=0.75, P(x)=0.25; after "ab": P(c)=0.2, P(d)=0.8.
    table = {(ord("="), 1000): math.log(3), (ord("="), ord("x")): 0.0,
             (1000, ord("c")): math.log(1), (1000, ord("d")): math.log(4)}
    engine = Engine(table)
    probs = scorer(engine).label_probs([LabelProbe([], "=", ("abc", "abd", "x"), adapter="eu")])[0]
    assert probs == pytest.approx({"abc": 0.15, "abd": 0.6, "x": 0.25})
    assert len(engine.asks) == 2  # one step at the root, one where "abc"/"abd" branch
    assert engine.asks[0][1] == ["eu"]
    assert engine.asks[1][0][0][0] == [7, 7, ord("="), 1000]  # prompt + prefix + the shared token


def test_a_label_forced_by_the_tokens_needs_no_engine_step():
    engine = Engine({})
    probs = scorer(engine).label_probs([LabelProbe([], "=", ("abc",))])[0]
    assert probs == {"abc": 1.0}
    assert engine.asks == []


def test_labels_that_tokenize_alike_are_refused():
    with pytest.raises(ValueError, match="tokenize the same"):
        scorer(Engine({})).label_probs([LabelProbe([], "=", ("ab", "ab"))])


def test_scores_combine_p_violation_with_the_policy_distribution():
    decision = {"allow": 0.25, "review": 0.25, "restrict": 0.25, "remove": 0.25}
    policy = {p: 0.0 for p in DEFAULT_POLICY_IDS} | {"fraud_scam": 0.8, "spam": 0.2}
    scores = combine(decision, policy, DEFAULT_POLICY_IDS)
    assert scores["violation"] == 0.75
    assert scores["policies"]["fraud_scam"] == pytest.approx(0.6)
    assert scores["policies"]["spam"] == pytest.approx(0.15)
    assert sum(scores["policies"].values()) == pytest.approx(0.75)


def test_policy_prefix_is_a_prefix_of_a_real_verdict():
    verdict = {"decision": "remove", "violations": [{"policy": "spam", "severity": "low", "evidence": "x"}], "rationale": ""}
    assert json.dumps(verdict, separators=(",", ":")).startswith(policy_prefix("remove") + "spam")


def test_run_records_carry_scores_and_flags_from_thresholds(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(1), {"id": "s", "title": "Replica Rolex, AAA copy, whatsapp me"}])
    out = tmp_path / "out.jsonl"
    runner = BatchRunner(make_moderator(), RunOptions(thresholds={"counterfeit_ip": 0.3, "spam": 0.3}))
    runner.run(read_items(src), out)
    records = {r["id"]: r for r in read_jsonl(out)}
    flagged = records["s"]
    assert set(flagged["scores"]["decisions"]) == set(DECISIONS)
    assert set(flagged["scores"]["policies"]) == set(DEFAULT_POLICY_IDS)
    assert flagged["scores"]["policies"]["counterfeit_ip"] > 0.3 > flagged["scores"]["policies"]["spam"]
    assert flagged["flagged"] == ["counterfeit_ip"]
    assert records["it-0001"]["flagged"] == []


def test_no_scores_when_turned_off(tmp_path, make_moderator):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(1)])
    BatchRunner(make_moderator(scores=False)).run(read_items(src), tmp_path / "out.jsonl")
    assert "scores" not in read_jsonl(tmp_path / "out.jsonl")[0]


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = rng.uniform(size=20000) < p
    assert ece(y, p) < 0.02
    assert ece(y, np.where(p > 0.5, 1.0, 0.0)) > 0.2
    conf, freq, count = reliability(y, p)
    assert count.sum() == 20000 and np.all(np.abs(conf - freq) < 0.05)


def test_eval_chooses_llm_thresholds_on_dev_and_run_applies_them(tmp_path):
    from conftest import DEMO

    from moderation.cli import main

    out_dir = tmp_path / "eval"
    assert main(["eval", "--sets", "marketplace", "--systems", "llm", "--backend", "fake", "--sample", "30",
                 "--llm-dev", "30", "--bootstrap", "50", "--out-dir", str(out_dir), "--no-progress"]) == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    systems = {r["system"]: r for r in metrics["results"]}
    assert set(systems) == {"llm", "llm@dev-thresholds"}
    assert "ece" in systems["llm"]["metrics"] and systems["llm"]["speed"]["scored_share"] == 1.0
    assert (out_dir / "calibration_marketplace.png").stat().st_size > 0
    thresholds = out_dir / "thresholds" / "marketplace.json"
    assert set(json.loads(thresholds.read_text())) == set(DEFAULT_POLICY_IDS)
    out = tmp_path / "run.jsonl"
    assert main(["run", str(DEMO), "-o", str(out), "--backend", "fake", "--thresholds", str(thresholds), "--no-progress"]) == 0
    assert all("flagged" in r for r in read_jsonl(out) if "verdict" in r)


def test_bad_thresholds_file_is_a_usage_error(tmp_path, capsys):
    from conftest import DEMO

    from moderation.cli import main

    bad = tmp_path / "t.json"
    bad.write_text('{"spam": 3}')
    assert main(["run", str(DEMO), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--thresholds", str(bad)]) == 2
    assert "number in [0, 1]" in capsys.readouterr().err


def test_one_thresholds_reader_checks_policy_ids_and_range_for_every_command(tmp_path):
    from moderation.errors import ConfigError
    from moderation.policy import load_policy
    from moderation.scoring import load_thresholds

    policy = load_policy()
    good = tmp_path / "t.json"
    good.write_text('{"spam": 0.4, "fraud_scam": 1}')
    assert load_thresholds(good, policy) == {"spam": 0.4, "fraud_scam": 1.0}
    for text, problem in (('{"spam": 1.5}', "bad entries"), ('{"spamm": 0.5}', "another taxonomy"), ("[0.5]", "expected"),
                          ("{", "")):
        good.write_text(text)
        with pytest.raises(ConfigError, match=f"--thresholds {good}.*{problem}"):
            load_thresholds(good, policy)
    with pytest.raises(ConfigError, match="review sample --thresholds"):
        load_thresholds(tmp_path / "missing.json", policy, "review sample --thresholds")
