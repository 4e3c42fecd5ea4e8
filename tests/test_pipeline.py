import json

import pytest

from moderation.backends.base import Generation
from moderation.errors import ConfigError
from moderation.items import Item
from moderation.schema import verdict_schema

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
    assert make_moderator(grounded_evidence=False).request(item, 1).schema == verdict_schema()


def test_provenance_names_model_prompt_and_policy(make_moderator, template, policy):
    p = make_moderator().provenance()
    assert p["backend"] == "fake" and p["prompt_sha"] == template.sha and p["policy_version"] == policy.version
    assert set(p) == {"model", "model_sha", "adapter", "adapter_sha", "backend", "prompt_sha", "policy_version"}


def test_a_request_level_error_is_final_and_not_retried(make_moderator):
    def respond(request):
        if "huge" in request.messages[-1]["content"]:
            return Generation("", prompt_tokens=9000, error="prompt is 9000 tokens, over the model context")
        return GOOD

    moderator = make_moderator(respond=respond, max_attempts=3)
    huge, ok = moderator.moderate([Item("a", "listing", {"title": "huge"}), Item("b", "listing", {"title": "Lamp"})])
    assert huge.verdict is None and "over the model context" in huge.error and huge.attempts == 1
    assert ok.verdict is not None and len(moderator.backend.calls) == 1
