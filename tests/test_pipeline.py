import json

import pytest

from moderation.backends.base import BackendConfig, Generation
from moderation.backends.fake import FakeBackend
from moderation.errors import ConfigError
from moderation.items import Item
from moderation.machine import cpu_capability, resolve_dtype
from moderation.pipeline import Moderator
from moderation.schema import DEFAULT_POLICY_IDS, verdict_schema

GOOD = json.dumps({"decision": "allow", "violations": [], "rationale": "fine"})


def test_first_attempt_is_greedy_and_valid_output_becomes_a_verdict(make_moderator):
    moderator = make_moderator(respond=lambda r: GOOD)
    [outcome] = moderator.moderate([Item("a", "listing", {"title": "Lamp"})])
    assert outcome.verdict["decision"] == "allow" and outcome.attempts == 1 and outcome.error is None
    [[request]] = moderator.backend.calls
    assert request.temperature == 0.0


def test_invalid_output_is_retried_with_sampling_then_accepted(make_moderator):
    replies = iter(["garbage", GOOD])
    moderator = make_moderator(respond=lambda r: next(replies))
    [outcome] = moderator.moderate([Item("a", "listing", {"title": "Lamp"})])
    assert outcome.verdict is not None and outcome.attempts == 2
    assert [c[0].temperature for c in moderator.backend.calls] == [0.0, 0.7]


def test_retries_are_bounded_and_the_raw_output_is_kept(make_moderator):
    moderator = make_moderator(respond=lambda r: '{"decision": "maybe"}', max_attempts=3)
    items = [Item("a", "listing", {"title": "Lamp"}), Item("b", "listing", {"title": "Desk"})]
    outcomes = moderator.moderate(items)
    assert all(o.verdict is None and o.attempts == 3 and o.raw == '{"decision": "maybe"}' for o in outcomes)
    assert len(moderator.backend.calls) == 3
    with pytest.raises(ConfigError):
        make_moderator(max_attempts=0)


def test_only_failed_items_are_retried(make_moderator):
    def respond(request):
        return GOOD if "Lamp" in request.messages[-1]["content"] else "nope"

    moderator = make_moderator(respond=respond)
    moderator.moderate([Item("a", "listing", {"title": "Lamp"}), Item("b", "listing", {"title": "Desk"})])
    assert [len(c) for c in moderator.backend.calls] == [2, 1]


def test_grounded_evidence_switches_the_schema(make_moderator):
    item = Item("a", "listing", {"title": "Replica watch"})
    grounded = make_moderator().request(item, 1).schema
    assert "Replica watch" in grounded["$defs"]["violation"]["properties"]["evidence"]["enum"]
    assert make_moderator(grounded_evidence=False).request(item, 1).schema == verdict_schema(DEFAULT_POLICY_IDS)


def test_provenance_names_model_prompt_and_policy(make_moderator, template, policy):
    p = make_moderator().provenance()
    assert p["backend"] == "fake" and p["prompt_sha"] == template.sha and p["policy_version"] == policy.version
    assert set(p) == {"model", "model_sha", "adapter", "adapter_sha", "backend", "prompt_sha", "policy_version", "policy_sha",
                      "schema_id", "thresholds_sha", "scorer_sha", "decided_by", "rationale_chars", "dtype", "cpu_capability",
                      "rationale"}
    assert p["dtype"] == resolve_dtype() and p["cpu_capability"] == cpu_capability()
    pinned = Moderator(FakeBackend(BackendConfig(dtype="float32")), policy, template)
    assert pinned.provenance()["dtype"] == "float32"  # --dtype wins over the machine's choice
    assert p["policy_sha"] == policy.sha and p["schema_id"] == policy.schema_id == verdict_schema(policy.ids)["$id"]


def test_a_rationale_budget_narrows_the_schema_and_is_bounded_by_the_verdict_schema(make_moderator):
    item = Item("a", "listing", {"title": "Replica watch"})
    assert make_moderator().request(item, 1).schema["$defs"]["rationale"]["maxLength"] == 100
    short = make_moderator(rationale_chars=40)
    assert short.request(item, 1).schema["$defs"]["rationale"]["maxLength"] == 40
    assert short.provenance()["rationale_chars"] == 40 and short.with_adapter(None).rationale_chars == 40
    for bad in (0, 101):
        with pytest.raises(ConfigError, match="rationale_chars"):
            make_moderator(rationale_chars=bad)


def test_a_request_level_error_is_final_and_not_retried(make_moderator):
    def respond(request):
        if "huge" in request.messages[-1]["content"]:
            return Generation("", prompt_tokens=9000, error="prompt is 9000 tokens, over the model context")
        return GOOD

    moderator = make_moderator(respond=respond, max_attempts=3)
    huge, ok = moderator.moderate([Item("a", "listing", {"title": "huge"}), Item("b", "listing", {"title": "Lamp"})])
    assert huge.verdict is None and "over the model context" in huge.error and huge.attempts == 1
    assert ok.verdict is not None and len(moderator.backend.calls) == 1


# --- score first: verdicts follow the thresholds ------------------------------------------------

from moderation.pipeline import ALLOW_RATIONALE, Decided, decide, settle  # noqa: E402
from moderation.schema import decided_schema  # noqa: E402

THRESHOLDS = {p: 0.5 for p in ("counterfeit_ip", "fraud_scam", "spam", "off_platform_transaction")}


def test_score_first_allows_unflagged_items_without_generating(make_moderator):
    moderator = make_moderator(thresholds=THRESHOLDS)
    [clean] = moderator.moderate([Item("a", "listing", {"title": "Oak dining table, seats six"})])
    assert clean.verdict == {"decision": "allow", "violations": [], "rationale": ALLOW_RATIONALE}
    assert clean.scores is not None and moderator.backend.calls == []  # scored, never generated
    assert moderator.provenance()["decided_by"] == "scores" and moderator.provenance()["thresholds_sha"]


def test_score_first_fixes_decision_and_policies_of_flagged_items(make_moderator):
    wrong = json.dumps({"decision": "review", "rationale": "Replica goods.",
                        "violations": [{"policy": "spam", "severity": "low", "evidence": "Rolex"}]})
    moderator = make_moderator(respond=lambda r: wrong, thresholds=THRESHOLDS, rationale="llm")
    item = Item("b", "listing", {"title": "AAA replica Rolex watch", "description": "mirror quality"})
    [outcome] = moderator.moderate([item])
    flagged = [p for p, t in THRESHOLDS.items() if outcome.scores["policies"][p] >= t]
    assert flagged and [v["policy"] for v in outcome.verdict["violations"]] == flagged
    best = max(("review", "restrict", "remove"), key=lambda d: outcome.scores["decisions"][d])
    assert outcome.verdict["decision"] == best
    # the evidence is the scorer's (the fake scores keywords: the title holds them), not the model's "Rolex"
    assert outcome.verdict["violations"][0]["evidence"] == "AAA replica Rolex watch"
    assert outcome.verdict["rationale"] == "Replica goods." and outcome.scores["explanation"]["rationale"] == "generated"
    [[request]] = moderator.backend.calls
    assert request.schema["anyOf"][0]["properties"]["decision"] == {"const": best}


def test_decide_orders_by_score_and_keeps_three():
    scores = {"decisions": {"allow": 0.1, "review": 0.2, "restrict": 0.1, "remove": 0.6},
              "policies": {"spam": 0.7, "fraud_scam": 0.9, "counterfeit_ip": 0.6, "self_harm": 0.55, "hate_harassment": 0.1}}
    decided = decide(scores, {p: 0.5 for p in scores["policies"]})
    assert decided == Decided("remove", ("fraud_scam", "spam", "counterfeit_ip"))
    assert decide(scores, {"hate_harassment": 0.5}) == Decided("allow", ())


def test_decide_scores_a_policy_missing_from_the_scores_zero(policy):
    scores = {"policies": {"spam": 0.7}}  # no fraud_scam score: it scores 0.0, for the threshold and the order
    assert decide(scores, {"spam": 0.5, "fraud_scam": 0.0}, policy).policies == ("spam", "fraud_scam")
    assert decide(scores, {"fraud_scam": 0.0}, policy).policies == ("fraud_scam",)
    assert decide(scores, {"spam": 0.8, "fraud_scam": 0.1}, policy) == Decided("allow", ())


def test_decide_without_decision_scores_takes_the_strongest_default_action(policy):
    scores = {"policies": {"spam": 0.7, "fraud_scam": 0.9}}
    actions = {policy.entry(p).default_action for p in ("spam", "fraud_scam")}
    decided = decide(scores, {"spam": 0.5, "fraud_scam": 0.5}, policy)
    assert decided.policies == ("fraud_scam", "spam")
    assert decided.decision == max(actions, key=("allow", "review", "restrict", "remove").index)


def test_settle_and_decided_schema(policy):
    text = "Cheap Rolex, WhatsApp me"
    verdict = settle({"decision": "allow", "violations": [], "rationale": "fine"},
                     Decided("remove", ("counterfeit_ip",)), policy, text)
    assert verdict["decision"] == "remove" and verdict["violations"][0]["evidence"] in text
    assert verdict["violations"][0]["severity"] == policy.entry("counterfeit_ip").severity
    schema = decided_schema(text, "remove", ["counterfeit_ip", "spam"], DEFAULT_POLICY_IDS)
    [branch] = schema["anyOf"]
    assert branch["properties"]["violations"]["items"]["properties"]["policy"] == {"enum": ["counterfeit_ip", "spam"]}
    assert decided_schema("", "remove", ["spam"], DEFAULT_POLICY_IDS) is None
