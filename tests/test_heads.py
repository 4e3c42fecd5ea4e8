"""Policy heads: pooled hidden states of a (tiny, random) causal LM plus TF-IDF, stored as arrays."""

import json

import numpy as np
import pytest
import torch

from moderation.baselines import TfidfBaseline
from moderation.errors import ConfigError
from moderation.heads import CARD_FILE, HEADS_FILE, PREFIX_END, HiddenFeatures, PolicyHeads, has_heads, load_heads, save_heads, user_text
from moderation.items import Item
from moderation.machine import resolve_dtype
from moderation.policy import load_policy
from moderation.schema import DEFAULT_POLICY_IDS
from moderation.screen import TfidfScorer

POLICY = load_policy()

SPAM = ["WIN a free cruise, text CLAIM now", "FREE iPhone!!! click the link, claim today", "You won $1000, reply WIN"]
CLEAN = ["Oak dining table, seats six", "Children's picture books, set of ten", "Stainless steel water bottle"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random LlamaForCausalLM (hidden 32, 4 layers) with the default model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from moderation.model import prepare_base_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_base_model())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def labels(n_spam, n_clean):
    y = np.zeros((n_spam + n_clean, len(DEFAULT_POLICY_IDS)), dtype=int)
    y[:n_spam, DEFAULT_POLICY_IDS.index("spam")] = 1
    return y


def test_pooled_features_do_not_depend_on_the_batch(tiny_model):
    features = HiddenFeatures(tiny_model, layers=(2, 4), batch_tokens=64)
    assert len(features.model.layers) == 4 and features.dim == 64
    alone = features([CLEAN[0]])
    together = features([SPAM[1] * 3, CLEAN[0], SPAM[0]])  # padded beside a longer text, in another order
    assert together.shape == (3, 64)
    np.testing.assert_allclose(alone[0], together[1], atol=0.05)
    with pytest.raises(ConfigError, match="layer 9"):
        HiddenFeatures(tiny_model, layers=(9,))


def test_a_shared_prompt_prefix_is_computed_once_and_gives_the_features_of_the_whole_text(tiny_model):
    features = HiddenFeatures(tiny_model, layers=(2, 4), batch_tokens=64)
    rules = "Extra rules for region UK:\n- restricted here: knives\nModerate this listing item.\n" + PREFIX_END
    texts = [rules + SPAM[0] + "\n</item>", rules + CLEAN[0] + "\n</item>", "no prefix here: " + CLEAN[1]]
    shared = features(texts)
    whole = [features._pooled([list(features._tokens(t)[0]) + features._tokens(t)[1]], None)[0] for t in texts]
    np.testing.assert_allclose(shared, np.array(whole), atol=0.05)
    assert [len(features._tokens(t)[0]) > 0 for t in texts] == [True, True, False]
    assert features.last_tokens == sum(len(p) + len(o) for p, o in map(features._tokens, texts))


def test_heads_separate_what_they_were_fitted_on_and_score_zero_without_positives():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(1.0, 1.0, (40, 8)), rng.normal(-1.0, 1.0, (40, 8))])
    heads = PolicyHeads.fit(x, labels(40, 40))
    scores = heads.score(x)
    spam = DEFAULT_POLICY_IDS.index("spam")
    assert scores[:40, spam].mean() > 0.8 > 0.2 > scores[40:, spam].mean()
    assert scores[:, DEFAULT_POLICY_IDS.index("self_harm")].max() < 1e-6  # no positives: never flags


def test_saved_heads_load_and_score_like_the_fitted_ones(tmp_path, tiny_model):
    texts, y = SPAM * 4 + CLEAN * 4, labels(12, 12)
    features = HiddenFeatures(tiny_model, layers=(2, 4))
    heads = PolicyHeads.fit(features(texts), y)
    lexical = TfidfScorer.from_baseline(TfidfBaseline(DEFAULT_POLICY_IDS, max_features=500).fit_texts(texts, y))
    expected = (heads.score(features(texts)) + lexical.score_texts(texts)) / 2
    assert not has_heads(tmp_path)
    sha = save_heads(tmp_path, heads, lexical, {"model": tiny_model, "layers": [2, 4]}, DEFAULT_POLICY_IDS)
    scorer = load_heads(tmp_path, POLICY)
    assert has_heads(tmp_path) and scorer.sha == sha
    np.testing.assert_allclose(scorer.policy_scores(texts), expected, atol=1e-4)
    messages = [[{"role": "system", "content": "rules"}, {"role": "user", "content": t}] for t in (SPAM[0], CLEAN[0])]
    first, second = scorer.score(messages)
    assert set(first["policies"]) == set(DEFAULT_POLICY_IDS) and first["scorer"] == "heads"
    assert first["policies"]["spam"] > second["policies"]["spam"]
    assert first["violation"] == max(first["policies"].values())
    assert user_text(messages[0]) == SPAM[0]


def test_broken_or_foreign_heads_are_config_errors(tmp_path, tiny_model):
    texts, y = SPAM * 2 + CLEAN * 2, labels(6, 6)
    features = HiddenFeatures(tiny_model, layers=(2,))
    lexical = TfidfScorer.from_baseline(TfidfBaseline(DEFAULT_POLICY_IDS, max_features=200).fit_texts(texts, y))
    save_heads(tmp_path, PolicyHeads.fit(features(texts), y), lexical, {"model": tiny_model, "layers": [2]}, DEFAULT_POLICY_IDS)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "layers": [2, 4]}))
    with pytest.raises(ConfigError, match="features"):
        load_heads(tmp_path, POLICY)
    (tmp_path / CARD_FILE).write_text(json.dumps({**card, "policies": ["spam"]}))
    with pytest.raises(ConfigError, match="fitted for another taxonomy.*Marketplace content policy"):
        load_heads(tmp_path, POLICY)
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    (tmp_path / HEADS_FILE).write_bytes(b"not an npz")
    with pytest.raises(ConfigError, match="unreadable"):
        load_heads(tmp_path, POLICY)


class FixedScorer:
    """Scores from a function of the user message, for pipeline tests."""

    sha = "f" * 64

    def __init__(self, spam_score):
        self.spam_score = spam_score

    def score(self, messages, progress=None):
        out = []
        for m in messages:
            policies = {p: 0.0 for p in DEFAULT_POLICY_IDS}
            policies["spam"] = self.spam_score(user_text(m))
            out.append({"violation": max(policies.values()), "policies": policies, "scorer": "heads"})
        return out


def test_a_scorer_decides_with_the_default_action_and_is_in_provenance(make_moderator, policy):
    quote = json.dumps({"decision": "allow", "violations": [], "rationale": "Spam giveaway."})
    moderator = make_moderator(respond=lambda r: quote, thresholds={"spam": 0.5}, rationale="llm",
                               scorer=FixedScorer(lambda text: 0.9 if "WIN" in text else 0.1))
    spam, clean = moderator.moderate([Item("s", "listing", {"title": SPAM[0]}), Item("c", "listing", {"title": CLEAN[0]})])
    assert clean.verdict["decision"] == "allow" and clean.scores["policies"]["spam"] == 0.1
    assert spam.verdict["decision"] == policy.entry("spam").default_action
    assert [v["policy"] for v in spam.verdict["violations"]] == ["spam"] and spam.verdict["violations"][0]["evidence"]
    assert len(moderator.backend.calls) == 1  # only the flagged item was generated
    provenance = moderator.provenance()
    assert provenance["scorer_sha"] == FixedScorer.sha and provenance["decided_by"] == "scores"
    assert moderator.with_adapter(None).scorer is moderator.scorer
    assert make_moderator(scorer=FixedScorer(lambda t: 0.0), scores=False).scorer is None


def test_score_first_records_of_a_run_validate_and_every_flagged_item_has_a_generated_verdict_with_evidence(
        make_moderator, tmp_path):
    from jsonschema import Draft202012Validator

    from moderation.batch import BatchRunner, RunOptions
    from moderation.pipeline import ALLOW_RATIONALE
    from moderation.runfile import read_output
    from moderation.schema import verdict_schema

    thresholds = {"spam": 0.5}
    moderator = make_moderator(thresholds=thresholds, scorer=FixedScorer(lambda text: 0.9 if "WIN" in text else 0.1),
                               rationale="llm")  # generated rationales: the default, built, generates nothing
    items = [Item(f"s{i}", "listing", {"title": t}) for i, t in enumerate(SPAM + CLEAN)]
    BatchRunner(moderator, RunOptions(chunk_size=2, thresholds=thresholds)).run([(i + 1, item) for i, item in enumerate(items)], tmp_path / "out.jsonl")
    records = list(read_output(tmp_path / "out.jsonl"))
    validator = Draft202012Validator(verdict_schema(DEFAULT_POLICY_IDS))
    assert len(records) == len(items)
    for record, item in zip(records, items):
        assert not list(validator.iter_errors(record["verdict"]))
        assert record["provenance"]["decided_by"] == "scores" and record["provenance"]["scorer_sha"] == FixedScorer.sha
        if record["flagged"]:
            assert record["verdict"]["decision"] != "allow" and record["verdict"]["rationale"] != ALLOW_RATIONALE
            assert all(v["evidence"] and v["evidence"].lower() in item.text().lower() for v in record["verdict"]["violations"])
        else:
            assert record["verdict"]["rationale"] == ALLOW_RATIONALE
    flagged = sum("WIN" in t for t in SPAM + CLEAN)
    assert sum(bool(r["flagged"]) for r in records) == flagged == sum(len(call) for call in moderator.backend.calls) > 0


def test_run_scores_with_the_heads_named_by_the_heads_flag(tmp_path, tiny_model):
    from moderation.cli import main
    from moderation.runfile import read_output

    texts, y = SPAM * 4 + CLEAN * 4, labels(12, 12)
    lexical = TfidfScorer.from_baseline(TfidfBaseline(DEFAULT_POLICY_IDS, max_features=500).fit_texts(texts, y))
    sha = save_heads(tmp_path, PolicyHeads.fit(HiddenFeatures(tiny_model, layers=(2,))(texts), y), lexical,
                     {"model": tiny_model, "layers": [2]}, DEFAULT_POLICY_IDS)
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps({"id": f"i{n}", "title": t}) + "\n" for n, t in enumerate(SPAM + CLEAN)))
    (tmp_path / "t.json").write_text(json.dumps({"spam": 0.5}))
    out = tmp_path / "out.jsonl"
    assert main(["run", str(dump), "-o", str(out), "--backend", "fake", "--heads", str(tmp_path),
                 "--thresholds", str(tmp_path / "t.json"), "--no-progress"]) == 0
    records = list(read_output(out))
    assert {r["provenance"]["scorer_sha"] for r in records} == {sha}
    assert all(r["scores"]["scorer"] == "heads" for r in records)
    assert [bool(r["flagged"]) for r in records] == [True] * 3 + [False] * 3
    assert main(["run", str(dump), "-o", str(tmp_path / "x.jsonl"), "--backend", "fake", "--heads", str(tmp_path),
                 "--no-scores"]) == 2


def test_the_feature_cache_runs_the_model_only_on_new_texts_and_gives_the_same_features(tmp_path, tiny_model):
    from finetune.fit_heads import FeatureCache

    cache = FeatureCache(tmp_path, tiny_model, (2, 4), resolve_dtype())  # the machine's format, as HiddenFeatures
    first, speed = cache(SPAM)
    assert speed["feature_rows"] == 3
    again, speed = cache([CLEAN[0], SPAM[1], CLEAN[0]])
    assert speed["feature_rows"] == 1  # only the clean text is new, and it is computed once
    np.testing.assert_array_equal(again[1], first[1])
    np.testing.assert_array_equal(again[0], again[2])
    np.testing.assert_allclose(again, HiddenFeatures(tiny_model, (2, 4))([CLEAN[0], SPAM[1], CLEAN[0]]), atol=1e-5)
    assert cache([SPAM[2]])[1] == {}  # all known: no model pass
    assert FeatureCache(tmp_path, tiny_model, (2,), resolve_dtype()).dir != cache.dir  # other layers, other features
    other = "float32" if resolve_dtype() == "bfloat16" else "bfloat16"
    assert FeatureCache(tmp_path, tiny_model, (2, 4), other).dir != cache.dir  # another format, other features


def test_the_feature_model_runs_in_the_chosen_format_and_both_formats_agree(tiny_model):
    texts = ["WIN a free cruise, text CLAIM now", "Oak dining table, seats six", "Replica watch, 1:1, DM me"]
    fp32, bf16 = HiddenFeatures(tiny_model, (2, 4), dtype="float32"), HiddenFeatures(tiny_model, (2, 4), dtype="bfloat16")
    assert next(fp32.model.parameters()).dtype == torch.float32 and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert HiddenFeatures(tiny_model, (2,)).dtype == resolve_dtype()
    a, b = fp32(texts), bf16(texts)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
