"""The reviewer's verdict for a case check: the model's verdict when accepted, a new
schema-valid verdict when corrected, none when skipped or escalated."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from moderation.errors import InputError
from moderation.items import Item
from moderation.schema import DECISIONS, POLICY_IDS, evidence_candidates, verdict_schema

REVIEW_DECISIONS = ("accept", "correct", "skip", "escalate")
MAX_VIOLATIONS = 3
MAX_TEXT = 100  # the schema's bound on evidence and rationale
REVIEWER_RATIONALE = "Corrected by a reviewer."  # a correction's rationale when the reviewer gives none


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(verdict_schema())


@cache
def _default_severity() -> dict[str, str]:
    from moderation.policy import load_policy

    return {p.id: p.severity for p in load_policy().policies}


def corrected_verdict(
    item: Item,
    model_verdict: dict[str, Any] | None,
    decision: str,
    policies: list[str],
    evidence: dict[str, str] | None = None,
    rationale: str = "",
) -> dict[str, Any]:
    """A verdict built from a reviewer's correction.

    Severity and evidence come from the model's violation for the same policy where there is
    one; otherwise severity is the policy's usual one and evidence the first quotable clause of
    the item (the reviewer may give their own quote, which must occur in the item).

    Raises:
        InputError: the decision and policies do not make a valid verdict.
    """
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {list(DECISIONS)}, got {decision!r}")
    policies = list(dict.fromkeys(policies))
    unknown = [p for p in policies if p not in POLICY_IDS]
    if unknown:
        raise InputError(f"unknown policies {unknown}")
    if decision == "allow" and policies:
        raise InputError("an 'allow' decision takes no policies")
    if decision != "allow" and not 1 <= len(policies) <= MAX_VIOLATIONS:
        raise InputError(f"a {decision!r} decision needs 1 to {MAX_VIOLATIONS} policies, got {len(policies)}")
    by_policy = {v["policy"]: v for v in (model_verdict or {}).get("violations", [])}
    violations = [_violation(item, p, by_policy.get(p), (evidence or {}).get(p)) for p in policies]
    verdict = {"decision": decision, "violations": violations,
               "rationale": (rationale.strip() or REVIEWER_RATIONALE)[:MAX_TEXT]}
    errors = sorted(_validator().iter_errors(verdict), key=str)
    if errors:
        raise InputError(f"the corrected verdict is not valid: {errors[0].message[:200]}")
    return verdict


def _violation(item: Item, policy: str, model: dict | None, quote: str | None) -> dict[str, str]:
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
    severity = model["severity"] if model else _default_severity().get(policy, "medium")
    return {"policy": policy, "severity": severity, "evidence": quote}


def reviewer_verdict(review_decision: str, item: Item, model_verdict: dict | None, **correction) -> dict | None:
    """The verdict a review decision stands for (None for skip and escalate)."""
    if review_decision not in REVIEW_DECISIONS:
        raise InputError(f"review decision must be one of {list(REVIEW_DECISIONS)}, got {review_decision!r}")
    if review_decision == "accept":
        if model_verdict is None:
            raise InputError("there is no model verdict to accept (the model failed on this item): correct it instead")
        return model_verdict
    if review_decision == "correct":
        return corrected_verdict(item, model_verdict, **correction)
    return None
