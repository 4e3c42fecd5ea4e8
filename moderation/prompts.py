"""Render the versioned prompt templates in prompts/ into chat messages for one item."""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path

from moderation.errors import ConfigError
from moderation.items import Item
from moderation.policy import Policy, render_policy, render_region
from moderation.resources import find_file, shipped

DEFAULT_TEMPLATE = shipped("prompts/moderate.v1.txt")
_SECTIONS = ("=== system ===", "=== user ===")
_ALLOWED_FIELDS = {"system": {"policy"}, "user": {"region_rules", "kind", "item"}}


@dataclass(frozen=True)
class PromptTemplate:
    """A two-message prompt template and the hash that identifies it in provenance."""

    path: Path
    system: string.Template
    user: string.Template
    sha: str

    def messages(self, item: Item, policy: Policy) -> list[dict[str, str]]:
        """The chat messages for one item: the shared policy first, the untrusted item last."""
        system = self.system.substitute(policy=render_policy(policy))
        user = self.user.substitute(
            region_rules=render_region(policy, item.region), kind=item.kind, item=render_item(item)
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user.strip()}]


def user_text(messages: list[dict[str, str]]) -> str:
    """What a scorer reads of a rendered prompt: its last user message (region rules and item)."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def render_item(item: Item) -> str:
    """The item as JSON. `<` is escaped so that item text can never close the <item> block."""
    return json.dumps(item.content(), ensure_ascii=False, indent=None).replace("<", "\\u003c")


def load_template(path: str | Path | None = None) -> PromptTemplate:
    """Read a template file and check its sections and placeholders.

    Raises:
        ConfigError: the file is missing, lacks a section, or uses an unknown placeholder.
    """
    path = find_file(path or DEFAULT_TEMPLATE)
    if not path.is_file():
        raise ConfigError(f"prompt template not found: {path}")
    raw = path.read_text(encoding="utf-8")
    body = "\n".join(line for line in raw.splitlines() if not line.startswith("#:"))
    if any(body.count(marker) != 1 for marker in _SECTIONS):
        raise ConfigError(f"prompt template {path} must hold each of {_SECTIONS} exactly once")
    system, user = body.split(_SECTIONS[0], 1)[1].split(_SECTIONS[1], 1)
    templates = {"system": string.Template(system.strip()), "user": string.Template(user.strip())}
    for name, template in templates.items():
        used = {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)} - {None}
        unknown = used - _ALLOWED_FIELDS[name]
        if unknown:
            raise ConfigError(f"prompt template {path}: unknown placeholders {sorted(unknown)} in the {name} message")
    return PromptTemplate(path, templates["system"], templates["user"], hashlib.sha256(raw.encode()).hexdigest())
