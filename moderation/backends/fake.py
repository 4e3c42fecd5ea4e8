"""A scripted backend for tests and dry runs: no model, deterministic verdicts.

By default it answers with the keyword rules of `moderation.rules`, quoting the matched text
as evidence, so its verdicts are schema-valid and grounded. The rules are written for the default
taxonomy's ids; under another taxonomy only the rules of the ids the request's schema allows fire. Tests pass `respond` to script any output, valid or not.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable

from moderation.backends.base import BackendConfig, Generation, GenerationRequest, check_adapter
from moderation.rules import RULES, rule_matches
from moderation.scoring import LabelProbe

_ITEM = re.compile(r"<item>\n(.*)\n</item>", re.S)


def keyword_verdict(item_text: str, allowed: list[str] | None = None) -> dict:
    """A grounded verdict from the rule baseline: each firing policy (of `allowed`, if given), quoting its match."""
    order = ["allow", "review", "restrict", "remove"]
    violations, decision = [], "allow"
    fired = [(p, e) for p, e in rule_matches(item_text).items() if allowed is None or p in allowed]
    for policy, evidence in fired[:3]:
        severity, action, _ = RULES[policy]
        violations.append({"policy": policy, "severity": severity, "evidence": evidence})
        decision = max(decision, action, key=order.index)
    rationale = "No policy rule fired." if not violations else f"{len(violations)} policy rule(s) fired."
    return {"decision": decision, "violations": violations, "rationale": rationale}


def item_text_of(request: GenerationRequest | LabelProbe) -> str:
    """The item JSON that the prompt template put between <item> tags, as plain text."""
    match = _ITEM.search(request.messages[-1]["content"])
    if not match:
        return ""
    content = json.loads(match.group(1))
    return json.dumps(content, ensure_ascii=False)


def schema_policies(request: GenerationRequest) -> list[str] | None:
    """The policy ids a request's schema allows (None: no schema, no limit)."""
    if not request.schema:
        return None
    return request.schema["$defs"]["violation"]["properties"]["policy"].get("enum")


class FakeBackend:
    """Deterministic stand-in for a model."""

    name = "fake"

    def __init__(self, config: BackendConfig, respond: Callable[[GenerationRequest], str | Generation] | None = None):
        self.config = config
        self.model_id = "fake-keywords" if respond is None else "fake-scripted"
        self.model_sha = None
        self.respond = respond or (lambda request: json.dumps(keyword_verdict(item_text_of(request), schema_policies(request))))
        self.calls: list[list[GenerationRequest]] = []
        # Seconds per request, to stand in for a slow model in process-level tests (a killed Ray
        # actor, an interrupted run) where no `respond` can be passed in.
        self.delay_s = float(os.environ.get("MODERATION_FAKE_DELAY_S", "0"))

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        if self.delay_s:
            time.sleep(self.delay_s * len(requests))
        for r in requests:
            check_adapter(self.config, r.adapter)
        self.calls.append(list(requests))
        replies = [self.respond(r) for r in requests]
        return [reply if isinstance(reply, Generation) else Generation(text=reply) for reply in replies]

    def label_probs(self, probes: list[LabelProbe]) -> list[dict[str, float]]:
        """Scripted confidences: 0.9 shared by the labels the keyword verdict picks, 0.1 by the rest."""
        out = []
        for probe in probes:
            verdict = keyword_verdict(item_text_of(probe))
            picked = {verdict["decision"]} | {v["policy"] for v in verdict["violations"]}
            hits = [la for la in probe.labels if la in picked]
            if not hits:  # an allow verdict asked for its policy: nothing stands out
                out.append({la: 1 / len(probe.labels) for la in probe.labels})
                continue
            misses = len(probe.labels) - len(hits)
            out.append({la: 0.9 / len(hits) if la in hits else 0.1 / misses for la in probe.labels})
        return out

    def close(self) -> None:
        pass
