"""Sample a run's verdicts for reviewer spot-checks: random, stratified, uncertainty, disagreement.

Every strategy draws from a `random.Random(seed)` over records sorted by (id, line), so the
same run file, options and seed give the same queue whatever the order of the file.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError, InputError
from moderation.items import Item, read_items
from moderation.policy import Policy
from moderation.runfile import RunRecord

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "stratified", "uncertainty", "disagreement")
# Without scores, uncertainty falls back to the model's own hedging: `review` is the decision
# it takes when unsure, then `restrict` and low/medium-severity removals, then the rest.
PROXY_TIERS = {"review": 0, "restrict": 1, "remove-soft": 1, "allow": 2, "remove": 3}


@dataclass(frozen=True)
class SampleConfig:
    """What to sample from a run file."""

    strategy: str = field(default="random", metadata={"help": f"One of {STRATEGIES}."})
    n: int | None = field(default=None, metadata={"help": "Items to sample (or give audit_rate)."})
    audit_rate: float | None = field(default=None, metadata={"help": "Share of eligible records to sample, in (0, 1]."})
    seed: int = field(default=0, metadata={"help": "Random seed: same seed, same sample."})
    overlap: float = field(default=0.0, metadata={"help": "Share of sampled items that two reviewers both review."})
    thresholds: dict[str, float] = field(default_factory=dict, metadata={"help": "Per-policy score thresholds (default 0.5)."})
    include_errors: bool = field(default=False, metadata={"help": "Also sample records where the model failed."})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"SampleConfig.strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if (self.n is None) == (self.audit_rate is None):
            raise ConfigError("give exactly one of SampleConfig.n (-n) and SampleConfig.audit_rate (--audit-rate)")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"SampleConfig.n must be at least 1, got {self.n}")
        if self.audit_rate is not None and not 0 < self.audit_rate <= 1:
            raise ConfigError(f"SampleConfig.audit_rate must be in (0, 1], got {self.audit_rate}")
        if not 0 <= self.overlap <= 1:
            raise ConfigError(f"SampleConfig.overlap must be in [0, 1], got {self.overlap}")

    def size(self, eligible: int) -> int:
        return self.n if self.n is not None else math.ceil(self.audit_rate * eligible)


def check_taxonomy(records: list[RunRecord], policy: Policy, where: str | Path,
                   advice: str = "Give `review sample` the run's own policy file with --policy") -> list[RunRecord]:
    """A run's records, checked to be made under `policy`'s taxonomy: the schema id in their provenance, the
    policies their verdicts name and, where they hold scores, the policies scored (runs from before the schema id
    was recorded are told by these two). `advice` ends the error message: what to give instead.

    Raises:
        ConfigError: a record was made under another taxonomy; the message names both.
    """
    ids = set(policy.ids)
    for record in records:
        made_under = (record.provenance or {}).get("schema_id")
        named = {v["policy"] for v in (record.verdict or {}).get("violations", [])}
        scores = record.scores.get("policies") if isinstance(record.scores, dict) else None
        scored = set(scores) if isinstance(scores, dict) else ids
        if (made_under and made_under != policy.schema_id) or not named <= ids or scored != ids:
            raise ConfigError(f"{where} was made under another taxonomy (verdict schema {made_under or 'unrecorded'}, "
                              f"naming {sorted(named - ids) or sorted(named)}"
                              + (f", scores for {sorted(scored)}" if scored != ids else "")
                              + f"); the policy file is {policy.describe()} (schema {policy.schema_id}). {advice}")
    return records


def join_items(records: list[RunRecord], dump: str | Path, **read_options) -> dict[int, dict[str, Any]]:
    """Item records of the moderated dump by line number, for the run records' lines."""
    wanted = {r.line: r.id for r in records}
    found: dict[int, dict[str, Any]] = {}
    for line, row in read_items(dump, **read_options):
        if line in wanted and isinstance(row, Item):
            if wanted[line] is not None and row.id != wanted[line]:
                raise InputError(f"{dump}: line {line} holds item {row.id!r}, the run says {wanted[line]!r}: "
                                 "is --input the dump this run moderated?")
            found[line] = row.record()
    return found


# -- strategies: (records, k, rng, config, other run) -> [(record, why)] ----------------------
def _random(records, k, rng, config, other):
    picked = rng.sample(records, min(k, len(records)))
    # Each pick stands for len(records) / len(picked) run records: the dashboard's weight.
    return [(r, {"weight": round(len(records) / len(picked), 6)}) for r in picked]


def _stratum(record: RunRecord) -> str:
    verdict = record.verdict
    if verdict is None:
        return "error"
    policy = verdict["violations"][0]["policy"] if verdict["violations"] else "none"
    return f"{verdict['decision']}/{policy}"


def _stratified(records, k, rng, config, other):
    """Equal allocation over decision x first-policy cells; small cells give all they have."""
    strata: dict[str, list] = defaultdict(list)
    for record in records:
        strata[_stratum(record)].append(record)
    for members in strata.values():
        rng.shuffle(members)
    order = sorted(strata)
    rng.shuffle(order)
    sizes = {name: len(members) for name, members in strata.items()}
    picked: list = []
    while len(picked) < k and any(strata.values()):
        for name in order:
            if strata[name] and len(picked) < k:
                picked.append((strata[name].pop(), {"stratum": name}))
    # Equal allocation over-draws small cells: each pick stands for (cell size / picks in the cell) records.
    drawn = defaultdict(int)
    for _, why in picked:
        drawn[why["stratum"]] += 1
    return [(record, {**why, "weight": round(sizes[why["stratum"]] / drawn[why["stratum"]], 6)}) for record, why in picked]


def margin(record: RunRecord, thresholds: dict[str, float]) -> float | None:
    """Distance of the record's closest score to its threshold (None without scores). With per-policy
    thresholds only the policy scores count: the overall `violation` score is cut at nothing then (for
    policy heads it is the highest policy score), so its distance to 0.5 would pull in clean items."""
    scores = record.scores
    if not isinstance(scores, dict):
        return None
    distances = [abs(float(s) - thresholds.get(p, 0.5)) for p, s in (scores.get("policies") or {}).items()]
    if isinstance(scores.get("violation"), (int, float)) and not thresholds:
        distances.append(abs(float(scores["violation"]) - thresholds.get("violation", 0.5)))
    return min(distances) if distances else None


def _proxy_tier(record: RunRecord) -> int:
    verdict = record.verdict or {}
    decision = verdict.get("decision", "review")
    if decision == "remove" and all(v["severity"] in ("low", "medium") for v in verdict.get("violations", [])):
        decision = "remove-soft"
    return PROXY_TIERS[decision]


def _uncertainty(records, k, rng, config, other):
    keyed = []
    for record in records:
        m = margin(record, config.thresholds)
        why = {"margin": round(m, 4)} if m is not None else {"proxy_tier": _proxy_tier(record)}
        # Scored records rank by margin; unscored ones after them, by tier; ties at random.
        keyed.append(((0, m) if m is not None else (1, _proxy_tier(record)), rng.random(), record, why))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [(record, why) for _, _, record, why in keyed[:k]]


def _policies(record: RunRecord | None) -> frozenset[str] | None:
    verdict = record.verdict if record is not None else None
    return None if verdict is None else frozenset(v["policy"] for v in verdict["violations"])


def difference(a: RunRecord, b: RunRecord | None) -> str | None:
    """How two runs' records of one item differ: 'decision', 'policies', 'error' or None."""
    va, vb = a.verdict, b.verdict if b is not None else None
    if va is None or vb is None:
        return None if va is None and vb is None else "error"
    if va["decision"] != vb["decision"]:
        return "decision"
    return "policies" if _policies(a) != _policies(b) else None


def _disagreement(records, k, rng, config, other):
    if other is None:
        raise ConfigError("the disagreement strategy needs a second run file (--compare RUN_B.jsonl)")
    rank = {"decision": 0, "policies": 1, "error": 2}
    differing = []
    for record in records:
        twin = other.get((record.id, record.line))
        kind = difference(record, twin) if twin is not None else None
        if kind:
            differing.append((rank[kind], rng.random(), record, {"differs_in": kind, "other_verdict": twin.verdict}))
    differing.sort(key=lambda t: (t[0], t[1]))
    return [(record, why) for _, _, record, why in differing[:k]]


SAMPLERS: dict[str, Callable] = {
    "random": _random, "stratified": _stratified, "uncertainty": _uncertainty, "disagreement": _disagreement,
}


def sample_run(records: list[RunRecord], config: SampleConfig,
               other: list[RunRecord] | None = None) -> list[tuple[RunRecord, dict[str, Any]]]:
    """Pick records to review: [(run record, why it was picked)], in queue order."""
    eligible = [r for r in records if config.include_errors or r.verdict is not None]
    rng = random.Random(config.seed)
    other_by_key = None if other is None else {(r.id, r.line): r for r in other}
    picked = SAMPLERS[config.strategy](eligible, config.size(len(eligible)), rng, config, other_by_key)
    logger.info("sampled %d of %d eligible records (%s)", len(picked), len(eligible), config.strategy)
    return picked


def queue_entries(picked, items: dict[int, dict[str, Any]], config: SampleConfig) -> list[dict[str, Any]]:
    """Store entries for the picked records; an overlap share of them appears twice (two reviewers).

    Raises:
        InputError: a sampled record's line has no item in the dump.
    """
    rng = random.Random(config.seed + 1)
    n_overlap = round(config.overlap * len(picked))
    overlapped = set(rng.sample(range(len(picked)), n_overlap)) if n_overlap else set()
    entries = []
    for index, (record, why) in enumerate(picked):
        item = items.get(record.line)
        if item is None:
            raise InputError(f"run record {record.id!r} (line {record.line}) has no readable item in --input")
        group = f"{record.line}:{item['id']}" if index in overlapped else None
        entry = {"item": item, "model_verdict": record.verdict, "provenance": record.provenance or {},
                 "sample": {"strategy": config.strategy, **why, **({"scores": record.scores} if record.scores is not None else {}),
                            **({"error": record.error} if record.error is not None else {})},
                 "overlap_group": group}
        entries.append(entry)
        if group:
            entries.append({**entry, "sample": {**entry["sample"], "overlap": True}})
    return entries
