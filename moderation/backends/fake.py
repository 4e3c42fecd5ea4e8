"""A scripted backend for tests and dry runs: no model, deterministic verdicts.

By default it answers with the keyword rules of `moderation.rules`, quoting the matched text
as evidence, so its verdicts are schema-valid and grounded. Tests pass `respond` to script any output, valid or not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from moderation.backends.base import BackendConfig, Generation, GenerationRequest
from moderation.rules import RULES, rule_matches

_ITEM = re.compile(r"<item>\n(.*)\n</item>", re.S)


def keyword_verdict(item_text: str) -> dict:
    """A grounded verdict from the rule baseline: each firing policy, quoting its match."""
    order = ["allow", "review", "restrict", "remove"]
    violations, decision = [], "allow"
    for policy, evidence in list(rule_matches(item_text).items())[:3]:
        severity, action, _ = RULES[policy]
        violations.append({"policy": policy, "severity": severity, "evidence": evidence})
        decision = max(decision, action, key=order.index)
    rationale = "No policy rule fired." if not violations else f"{len(violations)} policy rule(s) fired."
    return {"decision": decision, "violations": violations, "rationale": rationale}


def item_text_of(request: GenerationRequest) -> str:
    """The item JSON that the prompt template put between <item> tags, as plain text."""
    match = _ITEM.search(request.messages[-1]["content"])
    if not match:
        return ""
    content = json.loads(match.group(1))
    return json.dumps(content, ensure_ascii=False)


class FakeBackend:
    """Deterministic stand-in for a model."""

    name = "fake"

    def __init__(self, config: BackendConfig, respond: Callable[[GenerationRequest], str | Generation] | None = None):
        self.config = config
        self.model_id = "fake-keywords" if respond is None else "fake-scripted"
        self.model_sha = None
        self.respond = respond or (lambda request: json.dumps(keyword_verdict(item_text_of(request))))
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.calls.append(list(requests))
        replies = [self.respond(r) for r in requests]
        return [reply if isinstance(reply, Generation) else Generation(text=reply) for reply in replies]

    def close(self) -> None:
        pass
