"""Load a policy file, which defines the taxonomy, and render it as prompt text.

The policy file is the taxonomy: its policy ids, in order, are the verdict schema's policy enum
(`Policy.schema`), the order of every score vector, and what thresholds files, screens, heads,
review queues and curated data are checked against. The shipped prompts/policy.yaml, with its 12
ids, is the default; `prompts/examples/local-services.yaml` is another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from moderation.errors import ConfigError
from moderation.resources import SOURCE_ROOT, find_file, shipped
from moderation.schema import DECISIONS, POLICY_ID, SEVERITIES, schema_id, verdict_schema

PROJECT_ROOT = SOURCE_ROOT  # the repository root of a source checkout
DEFAULT_POLICY = shipped("prompts/policy.yaml")
REQUIRED_REGIONS = ("EU", "UK", "US", "SG")  # the overlays the shipped policy and kyc.yaml keep (tested); others need none
REGION_LISTS = ("", "restricted", "required_info")  # what a policy's `region_rules` may name (Region's lists)
OPTIONAL_ENTRY_FIELDS = ("summary", "translations", "region_rules")


@dataclass(frozen=True)
class PolicyEntry:
    id: str
    title: str
    definition: str
    severity: str
    default_action: str
    violating: tuple[str, ...]
    allowed: tuple[str, ...]
    # Optional, for explanations (moderation.rationale); left empty they change no hash.
    summary: str = ""  # one line: what the policy covers, as a built rationale says it
    translations: tuple[tuple[str, str, str], ...] = ()  # (language, title, summary)
    region_rules: str = ""  # which region overlay list applies to it: "restricted", "required_info" or ""

    def titles(self) -> dict[str, str]:
        """The title by language: English (the `title`) and each translation."""
        return {"en": self.title, **{lang: title for lang, title, _ in self.translations}}

    def summaries(self) -> dict[str, str]:
        """The one-line summary by language, where the file gives one."""
        return {"en": self.summary, **{lang: line for lang, _, line in self.translations}} if self.summary else {}


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
    label_map: dict[str, str | None] = field(default_factory=dict)  # labelled data's label -> an id here, or None: clean

    def entry(self, policy_id: str) -> PolicyEntry:
        return next(p for p in self.policies if p.id == policy_id)

    @cached_property
    def ids(self) -> tuple[str, ...]:
        """The taxonomy: the policy ids, in the file's order (read per item on the hot path: made once)."""
        return tuple(p.id for p in self.policies)

    @property
    def schema(self) -> dict[str, Any]:
        """The verdict schema of this taxonomy (shared: copy it before changing it)."""
        return verdict_schema(self.ids)

    @cached_property
    def schema_id(self) -> str:
        return schema_id(self.ids)

    @cached_property
    def sha(self) -> str:
        """A hash of everything in the file that reaches a prompt or a verdict (ids, wording, severities,
        actions, overlays, label map): a cached verdict made under another version never matches."""
        data = asdict(self)
        for entry in data["policies"]:  # optional fields left empty: the hash of a file without them is unchanged
            for key in OPTIONAL_ENTRY_FIELDS:
                if not entry[key]:
                    del entry[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """The taxonomy in one line, for errors that compare two of them."""
        return f"{self.name or 'policy'} {self.version} ({len(self.ids)} policies: {', '.join(self.ids)})"

    def map_labels(self, labels: Iterable[str]) -> frozenset[str] | None:
        """Labelled data's labels as this taxonomy's ids: an id of its own stays, a label in the label map
        becomes its id (or nothing, where the map says null); None when a label has no place here, so
        that the row is left out rather than counted clean."""
        mapped = set()
        for label in labels:
            if label in self.label_map:
                mapped.update([self.label_map[label]] if self.label_map[label] else [])
            elif label in self.ids:
                mapped.add(label)
            else:
                return None
        return frozenset(mapped)

    def maps_any(self, labels: Iterable[str]) -> bool:
        """Whether any of these labels becomes one of this taxonomy's ids (a set whose labels all fall
        outside it has no positives to evaluate)."""
        return any(bool(self.map_labels([label])) for label in labels)


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and check a policy file.

    Raises:
        ConfigError: the file is missing or not YAML; an id is malformed or repeated; its decisions
            or severities differ from the verdict schema's; the label map names an id it lacks.
    """
    path = find_file(path or DEFAULT_POLICY)
    if not path.is_file():
        raise ConfigError(f"policy file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("policies"), list):
        raise ConfigError(f"policy file {path} must be a mapping with version, decisions, severities and a list of "
                          "policies (see prompts/policy.yaml)")
    try:
        return _build(data)
    except KeyError as exc:
        raise ConfigError(f"policy file {path} lacks the key {exc!s} (see prompts/policy.yaml)") from None
    except (TypeError, AttributeError) as exc:
        raise ConfigError(f"policy file {path} is malformed near {exc!s}") from None


def _build(data: dict[str, Any]) -> Policy:
    policies = tuple(_entry(p) for p in data["policies"])
    ids = tuple(p.id for p in policies)
    bad = [i for i in ids if not isinstance(i, str) or not POLICY_ID.fullmatch(i)]
    if not ids or bad or len(set(ids)) != len(ids):
        raise ConfigError(f"policy ids must be distinct lower-case names (letters, digits, '_'), got {list(ids)}")
    if set(data["decisions"]) != set(DECISIONS):
        raise ConfigError(f"decisions {tuple(data['decisions'])} differ from the schema's {DECISIONS}")
    if set(data["severities"]) != set(SEVERITIES):
        raise ConfigError(f"severities {tuple(data['severities'])} differ from the schema's {SEVERITIES}")
    regions = {
        code: Region(code, r["name"], tuple(r.get("restricted", ())), tuple(r.get("required_info", ())))
        for code, r in (data.get("regions") or {}).items()
    }
    label_map = {str(k): (None if v is None else str(v)) for k, v in (data.get("label_map") or {}).items()}
    stray = sorted({v for v in label_map.values() if v is not None} - set(ids))
    if stray:
        raise ConfigError(f"label_map maps onto {stray}, which are not policy ids of this file ({list(ids)})")
    return Policy(
        version=str(data["version"]),
        name=str(data.get("name", "")),
        decisions={d: str(data["decisions"][d]) for d in DECISIONS},  # in the schema's order, whatever the file's
        severities={s: str(data["severities"][s]) for s in SEVERITIES},
        policies=policies,
        regions=regions,
        label_map=label_map,
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
        summary=" ".join(str(p.get("summary", "")).split()),
        translations=_translations(p),
        region_rules=str(p.get("region_rules") or ""),
    )
    if entry.region_rules not in REGION_LISTS:
        raise ConfigError(f"policy {entry.id}: region_rules {entry.region_rules!r} must be one of {list(REGION_LISTS)}")
    if entry.severity not in SEVERITIES:
        raise ConfigError(f"policy {entry.id}: severity {entry.severity!r} not in {SEVERITIES}")
    if entry.default_action not in DECISIONS or entry.default_action == "allow":
        raise ConfigError(f"policy {entry.id}: default_action {entry.default_action!r} must be review, restrict or remove")
    return entry


def _translations(p: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """(language, title, summary) per entry of a policy's `translations` ({lang: {title, summary}}), by language."""
    out = []
    for lang, text in sorted((p.get("translations") or {}).items()):
        if not isinstance(text, dict) or not text.get("title"):
            raise ConfigError(f"policy {p['id']}: translation {lang!r} needs a title (and a summary, if the policy has one)")
        if p.get("summary") and not text.get("summary"):
            raise ConfigError(f"policy {p['id']}: translation {lang!r} has no summary, and the policy has one")
        out.append((str(lang), " ".join(str(text["title"]).split()), " ".join(str(text.get("summary", "")).split())))
    return tuple(out)


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


ENTRY_FIELDS = ("title", "definition", "severity", "default_action", "violating", "allowed", *OPTIONAL_ENTRY_FIELDS)


def diff_policies(old: Policy, new: Policy) -> dict[str, Any]:
    """What changed from one policy file to another: policies added, removed and changed (which fields),
    the taxonomy (ids in order, hence the verdict schema), the version, overlays and label map.

    `same_taxonomy` False means that thresholds files, screens, heads and adapters made for `old` are
    refused under `new`; any change at all (`policy_sha`) means cached verdicts are not reused.
    """
    before, after = {p.id: p for p in old.policies}, {p.id: p for p in new.policies}
    changed = {pid: [f for f in ENTRY_FIELDS if getattr(before[pid], f) != getattr(after[pid], f)]
               for pid in before.keys() & after.keys()}
    return {
        "old": {"file_version": old.version, "name": old.name, "schema_id": old.schema_id, "policy_sha": old.sha},
        "new": {"file_version": new.version, "name": new.name, "schema_id": new.schema_id, "policy_sha": new.sha},
        "added": [p for p in new.ids if p not in before],
        "removed": [p for p in old.ids if p not in after],
        "changed": {pid: fields for pid, fields in sorted(changed.items()) if fields},
        "reordered": old.ids != new.ids and set(old.ids) == set(new.ids),
        "same_taxonomy": old.ids == new.ids,
        "regions": sorted(code for code in old.regions.keys() | new.regions.keys()
                          if old.regions.get(code) != new.regions.get(code)),
        "label_map": sorted(k for k in old.label_map.keys() | new.label_map.keys()
                            if old.label_map.get(k, "-") != new.label_map.get(k, "-")),
        "decisions_or_severities_reworded": old.decisions != new.decisions or old.severities != new.severities,
        "identical": old.sha == new.sha,
    }


def render_diff(diff: dict[str, Any]) -> str:
    """A policy diff as text for a person: one line per added, removed or changed policy, then what it means."""
    old, new = diff["old"], diff["new"]
    lines = [f"--- {old['name']} {old['file_version']} ({old['schema_id']})",
             f"+++ {new['name']} {new['file_version']} ({new['schema_id']})"]
    lines += [f"+ {p}" for p in diff["added"]]
    lines += [f"- {p}" for p in diff["removed"]]
    lines += [f"~ {p}: {', '.join(fields)}" for p, fields in diff["changed"].items()]
    if diff["reordered"]:
        lines.append("~ policy order (score vectors follow it)")
    lines += [f"~ region overlay {code}" for code in diff["regions"]]
    lines += [f"~ label_map entry {label}" for label in diff["label_map"]]
    if diff["decisions_or_severities_reworded"]:
        lines.append("~ wording of the decisions or severities")
    if diff["identical"]:
        lines.append("no change: verdicts, caches and fitted files carry over")
    elif diff["same_taxonomy"]:
        lines.append("same taxonomy: thresholds, screens, heads and adapters still apply; cached verdicts are not reused")
    else:
        lines.append("new taxonomy: thresholds files, screens, heads and adapters made for the old one are refused; "
                     "refit them (README, 'Your own taxonomy'), and cached verdicts are not reused")
    return "\n".join(lines)
