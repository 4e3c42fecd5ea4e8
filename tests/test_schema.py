import json

import pytest
from jsonschema import Draft202012Validator

from moderation.errors import VerdictError
from moderation.schema import (
    DECISIONS,
    DEFAULT_POLICY_IDS,
    EVIDENCE_MAX_CHARS,
    evidence_candidates,
    grounded_schema,
    parse_verdict,
    verdict_schema,
)

ITEM = "Rolex Submariner AAA replica.\nPay on WhatsApp +65 8000 0000, fast shipping!"


def verdict(decision="remove", violations=None, rationale="r"):
    if violations is None:
        violations = [{"policy": "counterfeit_ip", "severity": "high", "evidence": "AAA replica"}]
    return json.dumps({"decision": decision, "violations": violations, "rationale": rationale})


def test_schema_is_valid_draft_2020_12_with_the_taxonomy():
    Draft202012Validator.check_schema(verdict_schema(DEFAULT_POLICY_IDS))
    assert len(DEFAULT_POLICY_IDS) == 12 and "off_platform_transaction" in DEFAULT_POLICY_IDS
    assert DECISIONS == ("allow", "review", "restrict", "remove")
    # No number anywhere: a small model cannot run away with digits.
    assert '"number"' not in json.dumps(verdict_schema(DEFAULT_POLICY_IDS)) and '"integer"' not in json.dumps(verdict_schema(DEFAULT_POLICY_IDS))


def test_valid_verdict_parses_and_evidence_matching_ignores_case_and_spacing():
    v = parse_verdict(verdict(violations=[{"policy": "counterfeit_ip", "severity": "high", "evidence": "aaa  REPLICA"}]), ITEM, DEFAULT_POLICY_IDS)
    assert v["decision"] == "remove"


def test_verdict_in_prose_or_code_fence_is_extracted():
    assert parse_verdict("Sure! ```json\n" + verdict() + "\n```", ITEM, DEFAULT_POLICY_IDS)["decision"] == "remove"


@pytest.mark.parametrize(
    "text, match",
    [
        ("no json here", "no JSON"),
        ('{"decision": "remove", "violations": [', "not valid JSON"),
        (verdict(decision="ban"), "schema"),
        (verdict(decision="allow"), "schema"),  # allow with a violation
        (verdict(violations=[]), "schema"),  # remove with none
        (verdict(rationale="x" * 500), "schema"),
        (verdict(violations=[{"policy": "made_up", "severity": "high", "evidence": "Rolex"}]), "schema"),
        (verdict(violations=[{"policy": "spam", "severity": "low", "evidence": "not in the item"}]), "does not occur"),
    ],
)
def test_invalid_outputs_raise_with_raw_kept(text, match):
    with pytest.raises(VerdictError, match=match) as info:
        parse_verdict(text, ITEM, DEFAULT_POLICY_IDS)
    assert info.value.raw == text


def test_repeated_policy_keeps_first_entry():
    twice = [
        {"policy": "counterfeit_ip", "severity": "high", "evidence": "replica"},
        {"policy": "counterfeit_ip", "severity": "low", "evidence": "Rolex"},
    ]
    assert parse_verdict(verdict(violations=twice), ITEM, DEFAULT_POLICY_IDS)["violations"] == twice[:1]


def test_grounded_schema_only_admits_quotes_from_the_item():
    schema = grounded_schema(ITEM, DEFAULT_POLICY_IDS)
    Draft202012Validator.check_schema(schema)
    quotes = schema["$defs"]["violation"]["properties"]["evidence"]["enum"]
    assert quotes == evidence_candidates(ITEM)
    assert "WhatsApp" in quotes and "Rolex Submariner AAA replica" in quotes
    for quote in quotes:  # any verdict the engine can produce passes the evidence check
        parse_verdict(verdict(violations=[{"policy": "spam", "severity": "low", "evidence": quote}]), ITEM, DEFAULT_POLICY_IDS)
    assert verdict_schema(DEFAULT_POLICY_IDS)["$defs"]["violation"]["properties"]["evidence"]["type"] == "string"  # not mutated


def test_grounded_schema_without_quotable_text_allows_only_allow():
    schema = grounded_schema("ok", DEFAULT_POLICY_IDS)
    assert len(schema["anyOf"]) == 1 and schema["anyOf"][0]["properties"]["decision"]["const"] == "allow"


def test_evidence_candidates_fit_the_schema_even_for_a_long_keyword_title():
    # A listing title that is one long keyword run (issue 26): its only clause is over the limit.
    title = ("iphone 15 pro max 256gb unlocked original apple new sealed box warranty free shipping cheap best price "
             "deal sale genuine authentic fast delivery")
    text = f"Title: {title}\nDescription: 日本語のテキスト" + "長" * 150
    candidates = evidence_candidates(text)
    assert candidates and all(1 <= len(c) <= EVIDENCE_MAX_CHARS for c in candidates)
    assert all(c in text for c in candidates)
    cut = next(c for c in candidates if c.startswith("iphone 15") and len(c) > 40)
    assert text[text.index(cut) + len(cut)] == " "  # cut at a word boundary, never mid-word
    assert next(c for c in candidates if c.startswith("日本語")) == ("日本語のテキスト" + "長" * 150)[:EVIDENCE_MAX_CHARS]
    for quote in candidates:  # each one, chosen by the model, gives a verdict the shipped schema accepts
        parse_verdict(verdict(violations=[{"policy": "spam", "severity": "low", "evidence": quote}]), text, DEFAULT_POLICY_IDS)
