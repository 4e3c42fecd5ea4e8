"""What a policy change would do before it ships, re-decided from the scores that past runs stored.

A change is new thresholds (a file, or POLICY=VALUE pairs over the runs' own), a policy file (policies
added or removed, default actions or severities changed) or a region overlay. Every item is decided again
by the pipeline's own decision function (`moderation.pipeline.decide`, what score first runs), with no
model: so for a threshold change the new decisions are exactly those a fresh `moderation run` with the
proposed thresholds makes (tests/test_impact.py checks this). What the scores cannot tell is said, never
guessed: a new policy has no scores, and an overlay is part of the prompt its region's items were scored
on, so those items are listed to be scored again.

Case checks in the review store say how good the change is: the checked items it newly flags (precision),
newly clears (violations missed, recall lost) or decides otherwise, each rate with a Wilson interval and the
number of checks it rests on. A part of a change with no check behind it is "unmeasured", never "safe";
for it a sample of the changed items is written as a run file that `moderation review sample` queues.

This module reads the runs, makes the proposal and decides every item again; `assess` (what `moderation
impact` calls) then has moderation.impact_measure count and estimate what moves, and
moderation.impact_report writes the report (JSON, Markdown, HTML with PNG plots) with `write_report`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from moderation.errors import ConfigError, InputError
from moderation.impact_measure import (
    Decision,
    ImpactSettings,
    ItemImpact,
    changed_row,
    estimates,
    merchant_tiers,
    overall_status,
    review_queue,
    review_throughput,
    run_days,
    tallies,
)
from moderation.merchants.ledger import RunInput
from moderation.pipeline import decide, thresholds_sha
from moderation.policy import Policy, Region, diff_policies, load_policy, render_diff
from moderation.review.sample import check_taxonomy, join_items
from moderation.runfile import RunRecord, read_records

logger = logging.getLogger(__name__)

IMPACT_VERSION = "1"
# A check outside the runs lends its scores only when they were made the same way as the runs' (same scorer).
SCORER_KEYS = ("model", "model_sha", "adapter_sha", "scorer_sha", "prompt_sha", "schema_id", "policy_sha", "thresholds_sha")


@dataclass(frozen=True)
class ImpactRequest:
    """What to assess: the runs (with their dumps and dates), the policy file they were made under, the change."""

    run: tuple[str, ...] = field(default=(), metadata={"help": "a run file with scores (repeatable)", "metavar": "RUN"})
    input: tuple[str, ...] = field(default=(), metadata={"metavar": "DUMP", "help": (
        "the dump the matching --run moderated (one per --run, or none): gives each item's region, language and "
        "merchant, and the review sample its items")})
    run_date: tuple[str, ...] = field(default=(), metadata={"metavar": "DATE", "help": (
        "ISO date of the matching --run's verdicts (one per run, or none: the file's modification time)")})
    policy: str | None = field(default=None, metadata={"help": "the policy file the runs were made under "
                                                               "(default prompts/policy.yaml)"})
    current_thresholds: str | None = field(default=None, metadata={"metavar": "FILE", "help": (
        "the thresholds file the runs were made with (checked against their thresholds_sha; default: the default "
        "model's shipped thresholds, when they match)")})
    thresholds: str | None = field(default=None, metadata={"metavar": "FILE", "help": (
        "proposed thresholds: a JSON file {policy: threshold} that replaces the current ones, as `run --thresholds`")})
    threshold: tuple[str, ...] = field(default=(), metadata={"metavar": "POLICY=VALUE", "help": (
        "a proposed threshold for one policy, over the current ones (repeatable)")})
    proposed_policy: str | None = field(default=None, metadata={"metavar": "FILE", "help": (
        "a proposed policy file: policies added or removed, default actions or severities changed, overlays")})
    region_overlay: str | None = field(default=None, metadata={"metavar": "FILE", "help": (
        "a proposed region overlay: YAML {CODE: {name, restricted: [...], required_info: [...]}} (or null to drop "
        "one), over the policy file's regions")})
    db: str | None = field(default=None, metadata={"help": (
        "the review store whose finished case checks measure the change (path, sqlite:///PATH or postgresql://...); "
        "read only")})
    enforcement: str | None = field(default=None, metadata={"help": "enforcement file for merchant tiers "
                                                                    "(default prompts/enforcement.yaml)"})
    strike_thresholds: str | None = field(default=None, metadata={"metavar": "FILE", "help": (
        "JSON {policy: threshold} a strike's score must reach, as `merchants score --thresholds` (default: the "
        "enforcement file's default_threshold)")})
    count_unscored: bool = field(default=False, metadata={"help": "count unscored model verdicts as strikes, as "
                                                                  "`merchants score --count-unscored`"})
    now: str | None = field(default=None, metadata={"help": "merchant health as of this ISO date or time (default: now)"})
    kind: str = field(default="listing", metadata={"help": "kind of --input rows without a 'kind' column"})
    format: str | None = field(default=None, metadata={"choices": ["jsonl", "csv", "parquet"],
                                                       "help": "--input format, when its name does not tell"})
    columns: str | None = field(default=None, metadata={"help": "--input column mapping, as for `moderation run`"})

    def __post_init__(self):
        for name in ("run", "input", "run_date", "threshold"):  # argparse gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.run:
            raise ConfigError("ImpactRequest.run is empty: give at least one run file (--run RUN.jsonl)")
        for name, flag in (("input", "--input"), ("run_date", "--run-date")):
            if getattr(self, name) and len(getattr(self, name)) != len(self.run):
                raise ConfigError(f"give one {flag} per --run, or none: {len(self.run)} runs, "
                                  f"{len(getattr(self, name))} {flag} values ({list(getattr(self, name))})")

    def sources(self) -> list[RunInput]:
        dumps = self.input or (None,) * len(self.run)
        dates = self.run_date or (None,) * len(self.run)
        return [RunInput(Path(r), Path(d) if d else None, t) for r, d, t in zip(self.run, dumps, dates)]


# -- the runs -----------------------------------------------------------------------------------
def read_run(source: RunInput, policy: Policy, progress=None) -> list[RunRecord]:
    """A run file's records, checked to be made under `policy`'s taxonomy and to hold scores (`progress`: a
    tqdm-style bar advanced per record).

    Raises:
        InputError: the file is missing, empty, not a run file, or has no scores (made with --no-scores).
        ConfigError: it was made under another taxonomy than the policy file's.
    """
    path = Path(source.run)
    if not path.is_file():
        raise InputError(f"run file not found: {path}")
    records = []
    for record in read_records(path):
        records.append(record)
        if progress is not None:
            progress.update(1)
    if not records:
        raise InputError(f"run file is empty: {path}")
    check_taxonomy(records, policy, path, advice="Give impact the runs' own policy file with --policy, and the "
                                                 "change as --proposed-policy")
    if not any(_scored(r) for r in records):
        raise InputError(f"{path} has no scores (was it made with --no-scores?): impact decides items again from "
                         "their stored scores, so it needs a run made with scores on (the default)")
    return records


def _scored(record: RunRecord) -> bool:
    return isinstance(record.scores, dict) and isinstance(record.scores.get("policies"), dict)


def current_thresholds(runs: list[tuple[RunInput, list[RunRecord]]], policy: Policy,
                       path: str | None = None) -> tuple[dict[str, float], str]:
    """The thresholds the runs were made with, and where they come from: `path`, or the default model's shipped
    ones, either checked against the runs' thresholds_sha; none for runs decided by generation.

    Raises:
        ConfigError: the runs were made with different thresholds, or with others than these.
    """
    from moderation.model import model_profile
    from moderation.scoring import check_thresholds, load_thresholds

    shas = {(r.provenance or {}).get("thresholds_sha") for _, records in runs for r in records if r.provenance}
    if len(shas) > 1:
        raise ConfigError(f"the runs were made with different thresholds (thresholds_sha {sorted(map(str, shas))}); "
                          "assess them one set of thresholds at a time")
    sha = next(iter(shas), None)
    if path:
        given = load_thresholds(path, policy, "--current-thresholds")
        if thresholds_sha(given) != sha:
            raise ConfigError(f"--current-thresholds {path} are not the thresholds the runs were made with (their "
                              f"thresholds_sha is {str(sha)[:12]}, the file's {thresholds_sha(given)[:12]})")
        return given, f"{path} (the runs' thresholds_sha)"
    if sha is None:
        return {}, "none: the runs were made without thresholds (their verdicts were generated)"
    shipped = model_profile("default").thresholds
    if shipped and set(shipped) <= set(policy.ids) and thresholds_sha(check_thresholds(shipped, "shipped", policy)) == sha:
        return check_thresholds(shipped, "shipped", policy), "the default model's shipped thresholds (the runs' thresholds_sha)"
    raise ConfigError(f"the runs were made with thresholds (sha {sha[:12]}) that are not the default model's shipped "
                      "ones: give the file they were made with as --current-thresholds")


# -- the change ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proposal:
    """The proposed policy and thresholds, beside the current ones, and what the scores cannot tell of them."""

    current_policy: Policy
    policy: Policy
    current: dict[str, float]
    current_source: str
    thresholds: dict[str, float]  # in the order a run with them would hold them (decide breaks ties in it)
    unscored: tuple[str, ...] = ()  # proposed policies the runs hold no scores for (new ones)
    regions: tuple[str, ...] = ()  # region overlays that change: their items' prompts change
    notes: tuple[str, ...] = ()

    @property
    def deciding(self) -> dict[str, float]:
        """The proposed thresholds of the policies the runs have scores for (a new policy's cannot decide)."""
        return {p: t for p, t in self.thresholds.items() if p not in self.unscored}

    def describe(self) -> dict[str, Any]:
        changed = {p: {"from": self.current.get(p), "to": self.thresholds.get(p)}
                   for p in dict.fromkeys([*self.current, *self.thresholds])
                   if self.current.get(p) != self.thresholds.get(p)}
        diff = diff_policies(self.current_policy, self.policy)
        return {"thresholds": changed, "proposed_thresholds": self.thresholds, "current_source": self.current_source,
                "policy": None if diff["identical"] else {**diff, "text": render_diff(diff)},
                "regions": list(self.regions), "unscored_policies": list(self.unscored), "notes": list(self.notes)}


def parse_pairs(pairs: tuple[str, ...] | list[str], policy: Policy) -> dict[str, float]:
    """POLICY=VALUE pairs as {policy: threshold}.

    Raises:
        ConfigError: a pair is malformed, names a policy the policy file lacks, or a value outside [0, 1].
    """
    out = {}
    for pair in pairs:
        name, sep, value = str(pair).partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name:
            raise ConfigError(f"--threshold {pair!r}: expected POLICY=VALUE, e.g. spam=0.6")
        if name not in policy.ids:
            raise ConfigError(f"--threshold {pair!r}: {name!r} is not a policy of {policy.describe()}")
        if not 0 <= number <= 1:
            raise ConfigError(f"--threshold {pair!r}: a threshold is a number in [0, 1], got {value.strip()!r}")
        out[name] = number
    return out


def load_overlay(path: str | Path, policy: Policy) -> Policy:
    """`policy` with the region overlays of a YAML file ({CODE: {name, restricted, required_info}}, or under a
    `regions` key as in a policy file; null drops a region).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping of regions.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--region-overlay {path}: {exc}") from None
    data = data.get("regions", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(v is None or isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"--region-overlay {path}: expected {{CODE: {{name, restricted: [...], required_info: [...]}}}}")
    regions = dict(policy.regions)
    for code, overlay in data.items():
        code = str(code).upper()
        if overlay is None:
            regions.pop(code, None)
        else:
            regions[code] = Region(code, str(overlay.get("name", code)), tuple(overlay.get("restricted") or ()),
                                   tuple(overlay.get("required_info") or ()))
    return dataclasses.replace(policy, regions=regions)


def make_proposal(policy: Policy, current: dict[str, float], current_source: str, request: ImpactRequest) -> Proposal:
    """The change a request proposes, checked.

    Raises:
        ConfigError: no change is given, or thresholds name unknown policies or fall outside [0, 1].
    """
    from moderation.scoring import load_thresholds

    if not (request.thresholds or request.threshold or request.proposed_policy or request.region_overlay):
        raise ConfigError("no change to assess: give --thresholds FILE, --threshold POLICY=VALUE, --proposed-policy "
                          "FILE or --region-overlay FILE")
    proposed = load_policy(request.proposed_policy) if request.proposed_policy else policy
    if request.region_overlay:
        proposed = load_overlay(request.region_overlay, proposed)
    thresholds = {p: t for p, t in current.items() if p in proposed.ids}
    if request.thresholds:
        thresholds = load_thresholds(request.thresholds, proposed)
    thresholds.update(parse_pairs(request.threshold, proposed))
    unscored = tuple(p for p in proposed.ids if p not in policy.ids)
    regions = tuple(sorted(c for c in policy.regions.keys() | proposed.regions.keys()
                           if policy.regions.get(c) != proposed.regions.get(c)))
    return Proposal(policy, proposed, current, current_source, thresholds, unscored, regions,
                    _notes(policy, proposed, current, thresholds, unscored))


def _notes(policy: Policy, proposed: Policy, current: dict, thresholds: dict, unscored: tuple) -> tuple[str, ...]:
    notes = []
    if not current:
        notes.append("The runs' verdicts were generated (no thresholds); the proposal decides by scores (score first).")
    if unscored:
        notes.append(f"New policies {list(unscored)} have no scores in the runs: what they would flag is unmeasured "
                     "until a run under the proposed policy file (with a scorer for it) scores them.")
    diff = diff_policies(policy, proposed)
    if diff["removed"] or diff["added"]:
        notes.append("A new taxonomy needs its own scorer (heads) and thresholds; the remaining policies' scores are "
                     "taken as they are, which a refitted scorer may change.")
    if any(set(f) - {"default_action", "severity"} for f in diff["changed"].values()) or diff["decisions_or_severities_reworded"]:
        notes.append("Policy wording changed: scores from token probes read it (the policy text is in the prompt), "
                     "policy heads do not (they read the item and its region rules).")
    return tuple(notes)


# -- deciding again -----------------------------------------------------------------------------
def decision_of(verdict: dict[str, Any] | None) -> Decision | None:
    if verdict is None:
        return None
    return verdict["decision"], tuple(v["policy"] for v in verdict.get("violations", []))


def redecide(record: RunRecord, proposal: Proposal, region: str | None = None) -> tuple[Decision | None, str]:
    """A record's decision under the proposal, by the pipeline's own `decide`, and how it was reached."""
    before = decision_of(record.verdict)
    if before is None:
        return None, "error"
    if record.screen is not None:  # the first stage clears it before any score, now as then
        return before, "screened"
    if not _scored(record):
        return None, "unscored"
    if (region or "").upper() in proposal.regions:
        return None, "overlay"
    decided = decide(record.scores, proposal.deciding, proposal.policy)
    return (decided.decision, decided.policies), "re-decided"


def join_dumps(runs: list[tuple[RunInput, list[RunRecord]]], request: ImpactRequest) -> dict[tuple[str, int], dict]:
    """{(run, line): the dump's item record}, for the runs given with an --input."""
    from moderation.items import parse_column_map

    found = {}
    for source, records in runs:
        if source.dump is not None:
            items = join_items(records, source.dump, fmt=request.format, columns=parse_column_map(request.columns),
                               default_kind=request.kind)
            found.update({(str(source.run), line): item for line, item in items.items()})
    return found


def assess_items(runs: list[tuple[RunInput, list[RunRecord]]], items: dict[tuple[str, int], dict],
                 proposal: Proposal) -> list[ItemImpact]:
    """Every record of the runs, decided again.

    Raises:
        ConfigError: a region overlay changes and a run has no --input to tell its items' regions.
    """
    if proposal.regions and any(s.dump is None for s, _ in runs):
        raise ConfigError(f"the region overlays of {list(proposal.regions)} change, and the items' regions are in the "
                          "dumps: give one --input per --run")
    out = []
    for source, records in runs:
        for record in records:
            item = items.get((str(source.run), record.line))
            after, why = redecide(record, proposal, (item or {}).get("region"))
            out.append(ItemImpact(str(source.run), record, item, decision_of(record.verdict), after, why))
    return out


# -- case checks, decided again ---------------------------------------------------------------
def reviewed(checks: list) -> dict[str, Any]:
    """Per item id, its latest finished accept or correct case check (merchants' rule), with a reviewer verdict."""
    from moderation.merchants.ledger import latest_checks

    return {item_id: c for item_id, c in latest_checks(checks).items() if c.reviewer_verdict is not None}


def checked(impacts: list[ItemImpact], checks: list, proposal: Proposal) -> list[tuple[Decision, Decision, Decision]]:
    """(before, after, reviewer's) per checked item that can be decided again: an item of the runs, or one a check
    sampled from a run made the same way (same scorer, prompt, policy and thresholds), from the check's scores."""
    runs = {i.record.id: i for i in impacts}
    made = {tuple((i.record.provenance or {}).get(k) for k in SCORER_KEYS) for i in impacts if i.why == "re-decided"}
    out = []
    for item_id, check in reviewed(checks).items():
        truth, mine = decision_of(check.reviewer_verdict), runs.get(item_id)
        if mine is not None:  # the runs' own record says what it was and becomes (or that it cannot be told)
            if mine.before is not None and mine.after is not None:
                out.append((mine.before, mine.after, truth))
            continue
        scores = check.sample.get("scores")
        if (isinstance(scores, dict) and isinstance(scores.get("policies"), dict) and check.model_verdict
                and tuple(check.provenance.get(k) for k in SCORER_KEYS) in made
                and str(check.item.get("region") or "").upper() not in proposal.regions):
            decided = decide(scores, proposal.deciding, proposal.policy)
            out.append((decision_of(check.model_verdict), (decided.decision, decided.policies), truth))
    return out


# -- the whole assessment -----------------------------------------------------------------------
@dataclass
class Assessment:
    """An assessed change: the proposal, every record decided again, and the report's data (`result`, JSON)."""

    request: ImpactRequest
    settings: ImpactSettings
    proposal: Proposal
    impacts: list[ItemImpact]
    result: dict[str, Any]
    checked_ids: frozenset[str] = frozenset()  # items with a finished case check: never proposed again


def assess(request: ImpactRequest, settings: ImpactSettings | None = None, progress=None) -> Assessment:
    """Read the runs (`progress`: a tqdm-style bar advanced per record), decide every item again under the
    proposal, and measure the change against the case checks; nothing is written.

    Raises:
        ConfigError, InputError: bad input, named (see read_run, current_thresholds, make_proposal).
    """
    settings = settings or ImpactSettings()
    policy = load_policy(request.policy)
    sources = request.sources()
    runs = [(s, read_run(s, policy, progress)) for s in sources]
    current, source = current_thresholds(runs, policy, request.current_thresholds)
    proposal = make_proposal(policy, current, source, request)
    impacts = assess_items(runs, join_dumps(runs, request), proposal)
    store = _open_store(request.db)
    checks = store.checks(status="done") if store else []
    finished = reviewed(checks)
    result = {
        "schema_version": IMPACT_VERSION, "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": [{"run": str(s.run), "input": str(s.dump) if s.dump else None, "date": s.when(), "records": len(r)}
                 for s, r in runs],
        "store": request.db, "change": proposal.describe(), "current_reproduced": reproduced(impacts, proposal),
        "tallies": tallies(impacts),
        "review_queue": review_queue(impacts, run_days(sources, settings.days),
                                     review_throughput(store, settings.review_throughput)),
        "merchants": assess_merchants(impacts, proposal, request, checks),
        "estimates": estimates(impacts, checked(impacts, checks, proposal), len(finished), settings),
        "settings": dataclasses.asdict(settings),
        "changed_items": [changed_row(i) for i in impacts if i.changed],
    }
    result["status"] = overall_status(result)
    return Assessment(request, settings, proposal, impacts, result, frozenset(finished))


def assess_merchants(impacts: list[ItemImpact], proposal: Proposal, request: ImpactRequest, checks: list) -> dict[str, Any]:
    """Merchant tiers before and after (moderation.impact_measure.merchant_tiers), with the request's enforcement
    file, strike thresholds and date."""
    from moderation.merchants.enforcement import load_enforcement
    from moderation.merchants.store import as_of
    from moderation.scoring import load_thresholds

    policy = proposal.current_policy
    strikes = load_thresholds(request.strike_thresholds, policy, "--strike-thresholds") if request.strike_thresholds else {}
    return merchant_tiers(impacts, proposal.policy, request.sources(), load_enforcement(policy, request.enforcement),
                          checks, strikes, request.count_unscored, as_of(request.now))


def _open_store(db: str | None):
    if not db:
        return None
    from moderation.review.store import Store

    return Store(db, create=False)


def reproduced(impacts: list[ItemImpact], proposal: Proposal) -> dict[str, int]:
    """How many stored score-first verdicts the current thresholds give again (all, when the current thresholds
    and policy file are the runs' own): a check that the 'before' side is read right."""
    scored = [i for i in impacts if i.why == "re-decided" and (i.record.provenance or {}).get("decided_by") == "scores"]
    same = 0
    for i in scored:
        decided = decide(i.record.scores, proposal.current, proposal.current_policy)
        same += (decided.decision, decided.policies) == i.before
    return {"checked": len(scored), "same": same}


