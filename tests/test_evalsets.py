import json
from collections import Counter

import pytest

from moderation.errors import ConfigError
from moderation.evalsets import MARKETPLACE_DIR, data_card, load_marketplace, load_set, validate_record
from moderation.schema import POLICY_IDS


@pytest.fixture(scope="module")
def marketplace():
    return load_marketplace()


def test_every_record_validates_and_ids_are_unique(marketplace):
    assert len({li.item.id for li in marketplace}) == len(marketplace) >= 600


def test_coverage_meets_the_issue(marketplace):
    positives = Counter(p for li in marketplace for p in li.gold_violations)
    assert all(positives[p] >= 30 for p in POLICY_IDS), positives
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
        assert set(in_split) == set(POLICY_IDS)


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
