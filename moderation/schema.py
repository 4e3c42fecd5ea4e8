"""The verdict JSON Schema, its validation, and the checks a schema cannot express.

The schema belongs to a taxonomy: its policy enum is the policy file's ids (`verdict_schema(ids)`,
with an `$id` naming them). `verdict.schema.json` is the shipped file's, the default taxonomy's;
decisions, severities and the shape of a verdict are the same for every taxonomy.

Every backend's output goes through `parse_verdict`, whether or not the engine decoded under
the schema: the schema is the contract, constrained decoding only makes it cheaper to keep.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from moderation.errors import VerdictError

SCHEMA_VERSION = "1"


@cache
def _shipped_schema() -> dict[str, Any]:
    """The verdict schema as shipped in the package: the default taxonomy's (prompts/policy.yaml)."""
    text = resources.files("moderation").joinpath("verdict.schema.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return schema


def _enum(*path: str) -> tuple[str, ...]:
    node = _shipped_schema()
    for key in path:
        node = node[key]
    return tuple(node["enum"])


DEFAULT_POLICY_IDS = _enum("$defs", "violation", "properties", "policy")  # the shipped policy file's ids
DECISIONS = _enum("$defs", "decision")
SEVERITIES = _enum("$defs", "violation", "properties", "severity")
RATIONALE_MAX_CHARS = _shipped_schema()["$defs"]["rationale"]["maxLength"]
EVIDENCE_MAX_CHARS = _shipped_schema()["$defs"]["violation"]["properties"]["evidence"]["maxLength"]
POLICY_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")  # a policy id: it is written into JSON keys, HTML forms and flags


def taxonomy_sha(policy_ids: tuple[str, ...]) -> str:
    """A short hash of a taxonomy's ids, in order (score vectors, heads and screens follow that order)."""
    return hashlib.sha256(json.dumps(list(policy_ids)).encode()).hexdigest()[:12]


def schema_id(policy_ids: tuple[str, ...]) -> str:
    """The `$id` of a taxonomy's verdict schema: the shipped one for the default taxonomy, else one
    that names the taxonomy's hash, so that two taxonomies never share a schema id."""
    shipped = _shipped_schema()["$id"]
    if tuple(policy_ids) == DEFAULT_POLICY_IDS:
        return shipped
    return shipped.removesuffix(".json") + f"-{taxonomy_sha(tuple(policy_ids))}.json"


@cache
def verdict_schema(policy_ids: tuple[str, ...]) -> dict[str, Any]:
    """The verdict schema (draft 2020-12) of a taxonomy: the shipped schema with its policy enum set to
    these ids and its `$id` naming them. Cached and shared: copy it before changing it.

    Raises:
        ValueError: no ids, an id twice, or an id that is not lower-case letters, digits and '_'.
    """
    policy_ids = tuple(policy_ids)
    bad = [p for p in policy_ids if not isinstance(p, str) or not POLICY_ID.fullmatch(p)]
    if not policy_ids or bad or len(set(policy_ids)) != len(policy_ids):
        raise ValueError(f"a taxonomy needs distinct policy ids of lower-case letters, digits and '_', got {list(policy_ids)}")
    schema = copy.deepcopy(_shipped_schema())
    schema["$id"] = schema_id(policy_ids)
    schema["$defs"]["violation"]["properties"]["policy"]["enum"] = list(policy_ids)
    return schema


@cache
def _validator(policy_ids: tuple[str, ...]) -> Draft202012Validator:
    return Draft202012Validator(verdict_schema(policy_ids))


def schema_error(verdict: Any, policy_ids: tuple[str, ...]) -> str | None:
    """Where and how a verdict breaks its taxonomy's schema ("schema violation at PATH: ..."), or None."""
    error = best_match(_validator(tuple(policy_ids)).iter_errors(verdict))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"schema violation at {where}: {error.message[:200]}"


def extract_json(text: str) -> Any:
    """Parse the first JSON object in a model's output (models without constrained decoding
    may wrap it in prose or code fences)."""
    start = text.find("{")
    if start < 0:
        raise VerdictError("output holds no JSON object", raw=text)
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise VerdictError(f"output is not valid JSON: {exc.msg} at char {exc.pos}", raw=text) from None
    return value


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def parse_verdict(text: str, item_text: str, policy_ids: tuple[str, ...]) -> dict[str, Any]:
    """Validate a model output as a verdict for an item, under the schema of a taxonomy (its policy ids).

    Beyond the schema: every evidence quote must occur in the item text (ignoring case and
    runs of whitespace); `allow` goes with no violations and any other decision with at least
    one (the schema says so too); a policy named twice keeps its first entry.

    Raises:
        VerdictError: with the raw output attached.
    """
    verdict = extract_json(text)
    error = schema_error(verdict, policy_ids)
    if error is not None:
        raise VerdictError(error, raw=text)
    haystack = _normalise(item_text)
    seen, violations = set(), []
    for violation in verdict["violations"]:
        if _normalise(violation["evidence"]) not in haystack:
            raise VerdictError(f"evidence {violation['evidence']!r:.80} does not occur in the item", raw=text)
        if violation["policy"] not in seen:
            seen.add(violation["policy"])
            violations.append(violation)
    verdict["violations"] = violations
    return verdict


# Clause breaks and word characters, with the full-width (CJK) and Arabic punctuation marks, so that
# text in languages written without spaces still splits into quotable clauses.
_PUNCT = ".!?;:,|()\\[\\]{}\"，。！？、；：「」『』【】《》（）…،؛؟"
CLAUSE_BREAKS = f"[\\n{_PUNCT}]+"
WORD = f"[^\\s{_PUNCT}]{{4,40}}"


def evidence_candidates(item_text: str, limit: int = 160) -> list[str]:
    """Quotable pieces of an item: its clauses and its longer words, in order of appearance.

    Each candidate is a substring of the item text no longer than the schema's evidence limit
    (a longer clause is cut at its last word boundary within the limit), so a verdict whose
    evidence is chosen from them always passes the evidence check.
    """
    pieces: list[str] = []
    for clause in re.split(CLAUSE_BREAKS, item_text):
        clause = clause.strip()
        if len(clause) >= 3:
            pieces.append(quotable(clause))
    pieces.extend(w for w in re.findall(WORD, item_text))
    unique = list(dict.fromkeys(pieces))
    return unique[:limit]


def quotable(text: str, limit: int = EVIDENCE_MAX_CHARS) -> str:
    """`text` cut to at most `limit` characters at a word boundary (a hard cut where the first
    `limit` characters hold no space, as in Chinese or Japanese): a prefix, so still a quote."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit + 1]
    space = head.rfind(" ")
    return (text[:space] if space > 0 else text[:limit]).rstrip()


def grounded_schema(item_text: str, policy_ids: tuple[str, ...]) -> dict[str, Any]:
    """A taxonomy's verdict schema with `evidence` narrowed to quotes taken from this item.

    Used for constrained decoding, so that a small model cannot invent a quote.
    """
    schema = copy.deepcopy(verdict_schema(policy_ids))
    candidates = evidence_candidates(item_text)
    if not candidates:  # nothing to quote: only the allow branch remains
        schema["anyOf"] = schema["anyOf"][:1]
        return schema
    violation = schema["$defs"]["violation"]["properties"]
    violation["evidence"] = {"description": violation["evidence"]["description"], "enum": candidates}
    return schema


def rationale_budget(schema: dict[str, Any], chars: int) -> dict[str, Any]:
    """A copy of a verdict schema whose rationale is at most `chars` characters: a tighter budget
    for constrained decoding (the verdict still validates against the shipped schema)."""
    schema = copy.deepcopy(schema)
    schema["$defs"]["rationale"]["maxLength"] = min(chars, RATIONALE_MAX_CHARS)
    return schema


def decided_schema(item_text: str, decision: str, policies: list[str], policy_ids: tuple[str, ...]) -> dict[str, Any] | None:
    """The grounded schema narrowed to an outcome already decided from scores: this non-allow
    decision and only these policies, so the engine writes just the evidence and the rationale.
    None when the item has nothing to quote."""
    schema = grounded_schema(item_text, policy_ids)
    if len(schema["anyOf"]) < 2:
        return None
    branch = copy.deepcopy(schema["anyOf"][1])
    violation = copy.deepcopy(schema["$defs"]["violation"])
    violation["properties"]["policy"] = {"enum": list(policies)}
    branch["properties"]["decision"] = {"const": decision}
    branch["properties"]["violations"] = {"type": "array", "minItems": 1, "maxItems": len(policies), "items": violation}
    schema["anyOf"] = [branch]
    return schema
