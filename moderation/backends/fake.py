"""A scripted backend for tests and dry runs: no model, deterministic verdicts.

By default it flags items by keyword, quoting the matched word as evidence, so its verdicts
are schema-valid and grounded. Tests pass `respond` to script any output, valid or not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from moderation.backends.base import BackendConfig, Generation, GenerationRequest

# keyword pattern -> (policy, severity, decision)
KEYWORDS: dict[str, tuple[str, str, str]] = {
    r"replica|counterfeit|r3plica|1:1|aaa quality": ("counterfeit_ip", "high", "remove"),
    r"whats\s?app|telegram|wechat|bank transfer": ("off_platform_transaction", "medium", "remove"),
    r"ivory|cocaine|c0caine|pistol|ammunition|fake id": ("prohibited_item", "critical", "remove"),
    r"vape|no prescription|fireworks": ("restricted_item", "medium", "restrict"),
    r"giveaway|you won|deposit first|verify your card": ("fraud_scam", "high", "remove"),
    r"cures?|miracle|lose \d+ ?kg": ("misleading_claim", "medium", "review"),
    r"escort|explicit": ("adult_sexual", "high", "remove"),
    r"\[slur\]": ("hate_harassment", "high", "remove"),
    r"gore|behead": ("violence_graphic", "high", "remove"),
    r"kill myself|self-harm tips": ("self_harm", "critical", "review"),
    r"click here|buy now buy now|free followers": ("spam", "low", "remove"),
}
_ITEM = re.compile(r"<item>\n(.*)\n</item>", re.S)


def keyword_verdict(item_text: str) -> dict:
    violations, decision = [], "allow"
    order = ["allow", "review", "restrict", "remove"]
    for pattern, (policy, severity, action) in KEYWORDS.items():
        match = re.search(pattern, item_text, re.I)
        if match and len(violations) < 3:
            violations.append({"policy": policy, "severity": severity, "evidence": match.group(0)})
            decision = max(decision, action, key=order.index)
    rationale = "No policy keyword found." if not violations else f"Matched {len(violations)} policy keyword(s)."
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

    def __init__(self, config: BackendConfig, respond: Callable[[GenerationRequest], str] | None = None):
        self.config = config
        self.model_id = "fake-keywords" if respond is None else "fake-scripted"
        self.model_sha = None
        self.respond = respond or (lambda request: json.dumps(keyword_verdict(item_text_of(request))))
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.calls.append(list(requests))
        return [Generation(text=self.respond(r)) for r in requests]

    def close(self) -> None:
        pass
