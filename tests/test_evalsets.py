import json
from collections import Counter

import pytest

from moderation.errors import ConfigError
from moderation.evalsets import MARKETPLACE_DIR, data_card, load_marketplace, load_set, validate_record
from moderation.schema import DEFAULT_POLICY_IDS


@pytest.fixture(scope="module")
def marketplace():
    return load_marketplace()


def test_every_record_validates_and_ids_are_unique(marketplace):
    assert len({li.item.id for li in marketplace}) == len(marketplace) >= 600


def test_coverage_meets_the_issue(marketplace):
    positives = Counter(p for li in marketplace for p in li.gold_violations)
    assert all(positives[p] >= 30 for p in DEFAULT_POLICY_IDS), positives
    tags = Counter(t for li in marketplace for t in li.tags)
    assert sum(not li.gold_violations for li in marketplace) >= 150
    assert tags["hard_negative"] >= 100
    assert sum(any(t.startswith("adversarial") for t in li.tags) for li in marketplace) >= 60
    assert tags["adversarial:injection"] >= 20 and tags["multi"] >= 30
    assert {li.item.kind for li in marketplace} == {"listing", "merchant", "creator_video", "live_chat"}
    languages = Counter(li.item.language for li in marketplace)
    assert all(languages[lang] >= 30 for lang in ("zh", "es", "de", "fr", "id", "pt")), languages
    for split in ("train", "dev", "test"):  # every policy is in every split
        in_split = Counter(p for li in marketplace if li.split == split for p in li.gold_violations)
        assert set(in_split) == set(DEFAULT_POLICY_IDS)


def test_data_card_is_current(marketplace):
    assert (MARKETPLACE_DIR / "CARD.md").read_text() == data_card(marketplace) + "\n"


def test_validation_catches_bad_records():
    good = json.loads((MARKETPLACE_DIR / "part-1.jsonl").read_text().splitlines()[0])
    assert validate_record(good, "x") == []
    bad = {**good, "gold": {**good["gold"], "violations": ["made_up"]}}
    assert validate_record(bad, "x")
    inconsistent = {**good, "gold": {"violations": [], "decision": "remove", "rationale": "because"}}
    assert any("does not match" in p for p in validate_record(inconsistent, "x"))
    no_text = {k: good[k] for k in ("id", "split", "region", "language", "gold", "tags")} | {"kind": "listing", "price": 3}
    assert any("no text" in p for p in validate_record(no_text, "x"))


def test_load_set_by_name_and_split(marketplace):
    test = load_set("marketplace", split="test")
    assert test and all(li.split == "test" for li in test)
    assert len(test) == sum(li.split == "test" for li in marketplace)
    with pytest.raises(ConfigError, match="unknown set"):
        load_set("nope")
    with pytest.raises(ConfigError, match="unknown split"):
        load_set("marketplace", split="validation")


# --- the marketplace training corpus ---------------------------------------------------------

from moderation.dedup import MinHashIndex  # noqa: E402
from moderation.evalsets import CORPUS_CARD_HEADER, CORPUS_DIR, CORPUS_SCHEMA, load_corpus  # noqa: E402

CORPUS_LANGUAGES = {"en", "es", "fr", "de", "pt", "id", "zh", "ja", "ko", "vi", "th", "ar"}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_corpus_covers_every_policy_kind_and_language(corpus):
    assert len({li.item.id for li in corpus}) == len(corpus) >= 3000
    assert all(li.split == "train" for li in corpus)
    languages = Counter(li.item.language for li in corpus)
    assert set(languages) == CORPUS_LANGUAGES and min(languages.values()) >= 200, languages
    assert {li.item.kind for li in corpus} == {"listing", "merchant", "creator_video", "live_chat"}
    positives = Counter(p for li in corpus for p in li.gold_violations)
    assert all(positives[p] >= 100 for p in DEFAULT_POLICY_IDS), positives
    clean = [li for li in corpus if not li.gold_violations]
    assert len(clean) >= 0.4 * len(corpus)
    assert sum("hard_negative" in li.tags for li in clean) >= 0.6 * len(clean)  # most clean items are hard negatives
    tags = Counter(t for li in corpus for t in li.tags)
    assert min(tags[t] for t in ("adversarial:injection", "adversarial:obfuscation", "adversarial:code_words")) >= 100, tags
    assert tags["multi"] >= 200
    for lang in CORPUS_LANGUAGES:  # every language carries every policy
        in_lang = {p for li in corpus if li.item.language == lang for p in li.gold_violations}
        assert in_lang == set(DEFAULT_POLICY_IDS), lang


def test_corpus_evidence_is_verbatim_and_one_per_violation(corpus):
    for li in corpus:
        assert len(li.evidence) == len(li.gold_violations)
        assert {p for p, _ in li.evidence} == set(li.gold_violations)
        assert all(quote in li.item.text() for _, quote in li.evidence)


def test_corpus_is_disjoint_from_the_evaluation_splits(corpus, marketplace):
    held = [li for li in marketplace if li.split in ("dev", "test")]
    index = MinHashIndex(threshold=0.8)
    for li in held:
        index.add(li.item.id, li.item.text())
    assert not {li.item.id for li in corpus} & {li.item.id for li in marketplace}
    leaks = [li.item.id for li in corpus if index.exact(li.item.text()) or index.near(li.item.text())]
    assert leaks == []


def test_corpus_card_is_current(corpus):
    assert (CORPUS_DIR / "CARD.md").read_text() == data_card(corpus, CORPUS_CARD_HEADER) + "\n"


def test_corpus_validation_catches_a_quote_not_in_the_text():
    good = json.loads((CORPUS_DIR / "en.jsonl").read_text().splitlines()[0])
    assert validate_record(good, "x", schema=CORPUS_SCHEMA) == []
    if good["gold"]["violations"]:
        policy = good["gold"]["violations"][0]
    else:
        policy = "spam"
        good = {**good, "gold": {**good["gold"], "violations": [policy], "decision": "remove", "evidence": {policy: "x"}}}
    bad = {**good, "gold": {**good["gold"], "evidence": {policy: "words that are nowhere in the item"}}}
    assert any("not in the item's text" in p for p in validate_record(bad, "x", schema=CORPUS_SCHEMA))
    missing = {**good, "gold": {**good["gold"], "evidence": {}}}
    assert any("evidence is given for" in p for p in validate_record(missing, "x", schema=CORPUS_SCHEMA))
