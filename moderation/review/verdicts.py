"""The reviewer's verdict for a case check: the model's verdict when accepted, a new
schema-valid verdict when corrected, none when skipped or escalated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moderation.errors import InputError
from moderation.items import Item
from moderation.policy import Policy
from moderation.schema import DECISIONS, evidence_candidates, schema_error, schema_id

REVIEW_DECISIONS = ("accept", "correct", "skip", "escalate")
MAX_VIOLATIONS = 3
MAX_TEXT = 100  # the schema's bound on evidence and rationale
REVIEWER_RATIONALE = "Corrected by a reviewer."  # a correction's rationale when the reviewer gives none


@dataclass(frozen=True)
class Taxonomy:
    """What the review side keeps of a policy file, with each queue: its name and version, and its
    policies in order with their titles and usual severities (and definitions, which the check page shows;
    a queue stored before they were kept has none). Corrections are checked against it."""

    name: str
    version: str
    policies: tuple[tuple[str, str, str], ...]  # (id, title, severity)
    definitions: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # (id, definition): not the taxonomy

    def definition(self, policy_id: str) -> str:
        return dict(self.definitions).get(policy_id, "")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.policies)

    @property
    def schema_id(self) -> str:
        return schema_id(self.ids)

    def severity(self, policy_id: str) -> str:
        return next(p[2] for p in self.policies if p[0] == policy_id)

    @classmethod
    def of(cls, policy: Policy) -> Taxonomy:
        return cls(policy.name, policy.version, tuple((p.id, p.title, p.severity) for p in policy.policies),
                   tuple((p.id, p.definition) for p in policy.policies))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "schema_id": self.schema_id,
                "policies": [{"id": i, "title": t, "severity": s, **({"definition": self.definition(i)} if self.definition(i) else {})}
                             for i, t, s in self.policies]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Taxonomy:
        return cls(data["name"], data["version"], tuple((p["id"], p["title"], p["severity"]) for p in data["policies"]),
                   tuple((p["id"], p["definition"]) for p in data["policies"] if p.get("definition")))


def corrected_verdict(
    item: Item,
    model_verdict: dict[str, Any] | None,
    decision: str,
    policies: list[str],
    taxonomy: Taxonomy,
    evidence: dict[str, str] | None = None,
    rationale: str = "",
) -> dict[str, Any]:
    """A verdict built from a reviewer's correction, valid under the queue's taxonomy.

    Severity and evidence come from the model's violation for the same policy where there is
    one; otherwise severity is the policy's usual one and evidence the first quotable clause of
    the item (the reviewer may give their own quote, which must occur in the item).

    Raises:
        InputError: the decision and policies do not make a valid verdict.
    """
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {list(DECISIONS)}, got {decision!r}")
    policies = list(dict.fromkeys(policies))
    unknown = [p for p in policies if p not in taxonomy.ids]
    if unknown:
        raise InputError(f"unknown policies {unknown}: this queue's taxonomy ({taxonomy.name}) has {list(taxonomy.ids)}")
    if decision == "allow" and policies:
        raise InputError("an 'allow' decision takes no policies")
    if decision != "allow" and not 1 <= len(policies) <= MAX_VIOLATIONS:
        raise InputError(f"a {decision!r} decision needs 1 to {MAX_VIOLATIONS} policies, got {len(policies)}")
    by_policy = {v["policy"]: v for v in (model_verdict or {}).get("violations", [])}
    violations = [_violation(item, p, by_policy.get(p), (evidence or {}).get(p), taxonomy) for p in policies]
    verdict = {"decision": decision, "violations": violations,
               "rationale": (rationale.strip() or REVIEWER_RATIONALE)[:MAX_TEXT]}
    error = schema_error(verdict, taxonomy.ids)
    if error is not None:
        raise InputError(f"the corrected verdict is not valid: {error}")
    return verdict


def _violation(item: Item, policy: str, model: dict | None, quote: str | None, taxonomy: Taxonomy) -> dict[str, str]:
    text = item.text()
    if quote and quote.strip():
        quote = quote.strip()[:MAX_TEXT]
        if quote.casefold() not in text.casefold():
            raise InputError(f"evidence {quote!r:.60} does not occur in the item")
    elif model:
        quote = model["evidence"]
    else:
        candidates = evidence_candidates(text) or [text.strip()]
        quote = candidates[0][:MAX_TEXT].strip()
    severity = model["severity"] if model else taxonomy.severity(policy)
    return {"policy": policy, "severity": severity, "evidence": quote}


def reviewer_verdict(review_decision: str, item: Item, model_verdict: dict | None, taxonomy: Taxonomy,
                     **correction) -> dict | None:
    """The verdict a review decision stands for (None for skip and escalate), under the queue's taxonomy."""
    if review_decision not in REVIEW_DECISIONS:
        raise InputError(f"review decision must be one of {list(REVIEW_DECISIONS)}, got {review_decision!r}")
    if review_decision == "accept":
        if model_verdict is None:
            raise InputError("there is no model verdict to accept (the model failed on this item): correct it instead")
        return model_verdict
    if review_decision == "correct":
        return corrected_verdict(item, model_verdict, taxonomy=taxonomy, **correction)
    return None
