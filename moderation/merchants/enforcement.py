"""The enforcement config (prompts/enforcement.yaml) and its arithmetic: points, decay, tiers, escalations.

Everything here is pure: a strike is a dated (policy, severity) pair, and a merchant's health is
a function of its strikes and the time `now`. Which verdicts become strikes is ledger.py's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from moderation.errors import ConfigError
from moderation.policy import Policy
from moderation.resources import find_file, shipped
from moderation.schema import DECISIONS, SEVERITIES

DEFAULT_ENFORCEMENT = shipped("prompts/enforcement.yaml")
DAY_S = 86400.0


@dataclass(frozen=True)
class Tier:
    """A health tier and the decayed points at which it starts."""

    name: str = field(metadata={"help": "Tier name, e.g. good, at_risk, restricted, suspended."})
    min_points: float = field(metadata={"help": "Decayed points from which a merchant is in this tier."})

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"Tier.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.min_points, (int, float)) or self.min_points < 0:
            raise ConfigError(f"Tier.min_points of {self.name!r} must be a number >= 0, got {self.min_points!r}")


@dataclass(frozen=True)
class Escalation:
    """`count` strikes of `policy` within `within_days` raise a merchant to `tier` at least."""

    name: str = field(metadata={"help": "Rule name, shown in explanations."})
    policy: str = field(metadata={"help": "Policy id whose strikes are counted."})
    count: int = field(metadata={"help": "Strikes needed (at least 1)."})
    tier: str = field(metadata={"help": "Tier the merchant is raised to at least."})
    within_days: float | None = field(default=None, metadata={"help": "Only strikes this recent count; None: any age."})
    min_severity: str | None = field(default=None, metadata={"help": "Only strikes this severe or worse count."})
    pending_review: bool = field(default=False, metadata={"help": "The result needs a person before it takes effect."})

    def __post_init__(self):
        if not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"Escalation {self.name!r}: count must be an integer >= 1, got {self.count!r}")
        if self.within_days is not None and not (isinstance(self.within_days, (int, float)) and self.within_days > 0):
            raise ConfigError(f"Escalation {self.name!r}: within_days must be a positive number, got {self.within_days!r}")
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ConfigError(f"Escalation {self.name!r}: min_severity {self.min_severity!r} is not one of {list(SEVERITIES)}")


@dataclass(frozen=True)
class Enforcement:
    """Points, decay, thresholds, tiers and escalation rules for merchant health."""

    version: str = field(metadata={"help": "Config version, recorded with every health snapshot."})
    half_life_days: float = field(metadata={"help": "Days after which a strike's points halve."})
    severity_points: dict[str, float] = field(metadata={"help": "Base points per severity (all four severities)."})
    tiers: tuple[Tier, ...] = field(metadata={"help": "Tiers from best to worst; the first starts at 0 points."})
    policy_weights: dict[str, float] = field(default_factory=dict, metadata={"help": "Points multiplier per policy (default 1)."})
    escalations: tuple[Escalation, ...] = field(default=(), metadata={"help": "Rules that raise the tier on strike counts."})
    model_decisions: tuple[str, ...] = field(default=("restrict", "remove"), metadata={"help": "Model decisions that can count."})
    default_threshold: float = field(default=0.5, metadata={"help": "Score threshold for policies without their own."})

    def __post_init__(self):
        if not (isinstance(self.half_life_days, (int, float)) and self.half_life_days > 0):
            raise ConfigError(f"Enforcement.half_life_days must be a positive number, got {self.half_life_days!r}")
        if sorted(self.severity_points) != sorted(SEVERITIES) or any(
                not isinstance(v, (int, float)) or v < 0 for v in self.severity_points.values()):
            raise ConfigError(f"Enforcement.severity_points must give a number >= 0 for each of {list(SEVERITIES)}, "
                              f"got {self.severity_points!r}")
        if any(not isinstance(v, (int, float)) or v < 0 for v in self.policy_weights.values()):
            raise ConfigError(f"Enforcement.policy_weights must map policy ids to numbers >= 0, got {self.policy_weights!r}")
        self._check_tiers()
        bad = [d for d in self.model_decisions if d not in DECISIONS or d == "allow"]
        if bad:
            raise ConfigError(f"Enforcement.model_decisions {bad} must be among review, restrict, remove")
        if not 0 <= self.default_threshold <= 1:
            raise ConfigError(f"Enforcement.default_threshold must be in [0, 1], got {self.default_threshold!r}")

    def _check_tiers(self) -> None:
        if len(self.tiers) < 2 or self.tiers[0].min_points != 0:
            raise ConfigError("Enforcement.tiers needs at least two tiers, the first with min_points 0")
        bounds = [t.min_points for t in self.tiers]
        if bounds != sorted(set(bounds)):
            raise ConfigError(f"Enforcement.tiers min_points must rise strictly from best to worst, got {bounds}")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ConfigError(f"Enforcement.tiers names repeat: {names}")
        for rule in self.escalations:
            if rule.tier not in names:
                raise ConfigError(f"Escalation {rule.name!r}: tier {rule.tier!r} is not one of {names}")

    def check_taxonomy(self, policy: Policy) -> Enforcement:
        """This config, checked to weigh and escalate only policies of `policy`'s taxonomy.

        Raises:
            ConfigError: policy weights or escalation rules name policies the policy file lacks (both named).
        """
        named = set(self.policy_weights) | {rule.policy for rule in self.escalations}
        unknown = sorted(named - set(policy.ids))
        if unknown:
            raise ConfigError(f"enforcement {self.version}: policy weights and escalations name {unknown}, which are not "
                              f"policies of {policy.describe()}; write the enforcement file for this policy file")
        return self

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def points(self, policy: str, severity: str) -> float:
        """Undecayed points of one strike."""
        return float(self.severity_points[severity]) * float(self.policy_weights.get(policy, 1.0))

    def decay(self, age_days: float) -> float:
        """The share of a strike's points left after `age_days`: 0.5 ** (age / half-life)."""
        return math.pow(0.5, max(age_days, 0.0) / self.half_life_days)

    def tier_for(self, points: float) -> str:
        """The worst tier whose lower bound the points reach."""
        return [t.name for t in self.tiers if points >= t.min_points][-1]

    def worse(self, a: str, b: str) -> str:
        order = self.tier_names
        return a if order.index(a) >= order.index(b) else b


@dataclass(frozen=True)
class Strike:
    """One counted violation: a policy and severity at a time, on one of a merchant's items."""

    item_id: str
    policy: str
    severity: str
    at: datetime
    source: str = "model"  # model | reviewer | appeal


@dataclass(frozen=True)
class Health:
    """A merchant's health at `now`: decayed points, tier, and the escalations that fired."""

    points: float
    points_tier: str
    tier: str
    escalations: tuple[dict[str, Any], ...]
    pending_review: bool


def age_days(at: datetime, now: datetime) -> float:
    return (now - at).total_seconds() / DAY_S


def fired_escalations(config: Enforcement, strikes: list[Strike], now: datetime) -> list[dict[str, Any]]:
    """The escalation rules whose strike counts are met at `now`, with the strikes that met them."""
    fired = []
    for rule in config.escalations:
        floor = SEVERITIES.index(rule.min_severity) if rule.min_severity else 0
        hits = [s for s in strikes if s.policy == rule.policy and SEVERITIES.index(s.severity) >= floor
                and (rule.within_days is None or age_days(s.at, now) <= rule.within_days)]
        if len(hits) >= rule.count:
            fired.append({"rule": rule.name, "tier": rule.tier, "strikes": len(hits),
                          "items": sorted({s.item_id for s in hits}), "pending_review": rule.pending_review})
    return fired


def health(config: Enforcement, strikes: list[Strike], now: datetime) -> Health:
    """Decayed points, the tier they give, and the tier after escalations.

    Strikes dated after `now` are not counted (they have not happened yet at that time).
    """
    past = [s for s in strikes if s.at <= now]
    points = sum(config.points(s.policy, s.severity) * config.decay(age_days(s.at, now)) for s in past)
    points_tier = config.tier_for(points)
    fired = fired_escalations(config, past, now)
    tier = points_tier
    for rule in fired:
        tier = config.worse(tier, rule["tier"])
    pending = any(r["pending_review"] and r["tier"] == tier for r in fired)
    return Health(round(points, 4), points_tier, tier, tuple(fired), pending)


def load_enforcement(policy: Policy, path: str | Path | None = None) -> Enforcement:
    """Read an enforcement file and check it against the policy file's taxonomy.

    Raises:
        ConfigError: the file is missing, not YAML, a value is out of range, or it names policies
            `policy` lacks.
    """
    path = find_file(path or DEFAULT_ENFORCEMENT)
    if not path.is_file():
        raise ConfigError(f"enforcement file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"enforcement file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"enforcement file {path} must hold a mapping")
    try:
        config = Enforcement(
            version=str(data["version"]), half_life_days=data["half_life_days"],
            severity_points=dict(data["severity_points"]), policy_weights=dict(data.get("policy_weights") or {}),
            tiers=tuple(Tier(t["name"], t["min_points"]) for t in data["tiers"]),
            escalations=tuple(Escalation(**e) for e in data.get("escalations") or ()),
            model_decisions=tuple(data.get("model_decisions", ("restrict", "remove"))),
            default_threshold=float(data.get("default_threshold", 0.5)),
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"enforcement file {path} is malformed near {exc!s}") from None
    return config.check_taxonomy(policy)
