"""Load the policy taxonomy (prompts/policy.yaml) and render it as prompt text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moderation.errors import ConfigError
from moderation.resources import SOURCE_ROOT, find_file, shipped
from moderation.schema import DECISIONS, POLICY_IDS, SEVERITIES

PROJECT_ROOT = SOURCE_ROOT  # the repository root of a source checkout
DEFAULT_POLICY = shipped("prompts/policy.yaml")
REQUIRED_REGIONS = ("EU", "UK", "US", "SG")


@dataclass(frozen=True)
class PolicyEntry:
    id: str
    title: str
    definition: str
    severity: str
    default_action: str
    violating: tuple[str, ...]
    allowed: tuple[str, ...]


@dataclass(frozen=True)
class Region:
    code: str
    name: str
    restricted: tuple[str, ...]
    required_info: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    version: str
    name: str
    decisions: dict[str, str]
    severities: dict[str, str]
    policies: tuple[PolicyEntry, ...]
    regions: dict[str, Region]

    def entry(self, policy_id: str) -> PolicyEntry:
        return next(p for p in self.policies if p.id == policy_id)


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and check a policy file.

    Raises:
        ConfigError: the file is missing, not YAML, or its ids, decisions or severities
            differ from the verdict schema's.
    """
    path = find_file(path or DEFAULT_POLICY)
    if not path.is_file():
        raise ConfigError(f"policy file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from None
    try:
        return _build(data)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"policy file {path} is malformed near {exc!s}") from None


def _build(data: dict[str, Any]) -> Policy:
    policies = tuple(_entry(p) for p in data["policies"])
    ids = tuple(p.id for p in policies)
    if sorted(ids) != sorted(POLICY_IDS):
        raise ConfigError(f"policy ids {ids} differ from the verdict schema's {POLICY_IDS}")
    if tuple(data["decisions"]) != DECISIONS:
        raise ConfigError(f"decisions {tuple(data['decisions'])} differ from the schema's {DECISIONS}")
    if tuple(data["severities"]) != SEVERITIES:
        raise ConfigError(f"severities {tuple(data['severities'])} differ from the schema's {SEVERITIES}")
    regions = {
        code: Region(code, r["name"], tuple(r.get("restricted", ())), tuple(r.get("required_info", ())))
        for code, r in data["regions"].items()
    }
    missing = [r for r in REQUIRED_REGIONS if r not in regions]
    if missing:
        raise ConfigError(f"policy lacks region overlays {missing}")
    return Policy(
        version=str(data["version"]),
        name=str(data.get("name", "")),
        decisions=dict(data["decisions"]),
        severities=dict(data["severities"]),
        policies=policies,
        regions=regions,
    )


def _entry(p: dict[str, Any]) -> PolicyEntry:
    entry = PolicyEntry(
        id=p["id"],
        title=p["title"],
        definition=" ".join(p["definition"].split()),
        severity=p["severity"],
        default_action=p["default_action"],
        violating=tuple(p["examples"]["violating"]),
        allowed=tuple(p["examples"].get("allowed", ())),
    )
    if entry.severity not in SEVERITIES:
        raise ConfigError(f"policy {entry.id}: severity {entry.severity!r} not in {SEVERITIES}")
    if entry.default_action not in DECISIONS or entry.default_action == "allow":
        raise ConfigError(f"policy {entry.id}: default_action {entry.default_action!r} must be review, restrict or remove")
    return entry


def render_policy(policy: Policy) -> str:
    """The policy as prompt text: shared by every item, so it goes first in the prompt."""
    lines = [f"{policy.name} (version {policy.version})", "", "Decisions:"]
    lines += [f"- {name}: {text}" for name, text in policy.decisions.items()]
    lines += ["", "Severities:"]
    lines += [f"- {name}: {text}" for name, text in policy.severities.items()]
    lines += ["", "Policies:"]
    for p in policy.policies:
        lines.append(f"- {p.id} ({p.title}; usual severity {p.severity}; usual action {p.default_action}): {p.definition}")
        lines += [f'    violates: "{ex}"' for ex in p.violating]
        lines += [f'    allowed: "{ex}"' for ex in p.allowed]
    return "\n".join(lines)


def render_region(policy: Policy, region: str | None) -> str:
    """Region-specific rules for one item; empty when the item's region has no overlay."""
    overlay = policy.regions.get((region or "").upper())
    if overlay is None:
        return ""
    lines = [f"Extra rules for region {overlay.code} ({overlay.name}):"]
    lines += [f"- restricted here: {r}" for r in overlay.restricted]
    lines += [f"- listings here must state: {r}" for r in overlay.required_info]
    return "\n".join(lines)
