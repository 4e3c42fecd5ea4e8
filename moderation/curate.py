"""Case checks and labelled train splits -> SFT, preference and KTO data sets in TRL's formats.

Sources:
- the train splits of the labelled sets (the project's marketplace set and the public sets),
  sampled per set and gold label up to a cap, so that a short CPU run covers them all;
- case checks exported by `moderation review export --format jsonl`.

What each case check gives (reviewer decision -> rows):
- accept: an SFT row with the model's verdict, a KTO row labelled True;
- correct: an SFT row with the reviewer's verdict, a preference pair (chosen = the reviewer's
  verdict, rejected = the model's), a KTO row with the model's verdict labelled False;
- skip, escalate: nothing (no verdict was settled); they are counted in the card.

Outputs, in TRL's dataset formats (conversational):
- sft: `messages` (the prompt's system and user messages, then the assistant verdict);
- preference: `prompt` (system, user), `chosen`, `rejected` (one assistant message each);
- kto: `prompt`, `completion`, `label`.
Verdicts are compact JSON (no whitespace, keys in schema order), the form the vLLM backend
decodes. Every verdict passes `parse_verdict` against its item's text. Every row is checked
against every evaluation test split for exact and near-duplicate leakage (dedup.py).
"""

from __future__ import annotations

import json
import logging
import os
import random
import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.augment import augment
from moderation.datasets import LabelledItem
from moderation.dedup import MinHashIndex
from moderation.errors import ConfigError, InputError, VerdictError
from moderation.items import Item, ReadLimits, RowError, build_item
from moderation.policy import Policy
from moderation.prompts import PromptTemplate
from moderation.review.verdicts import REVIEW_DECISIONS, REVIEWER_RATIONALE
from moderation.rules import rule_matches
from moderation.schema import SEVERITIES, evidence_candidates, parse_verdict

logger = logging.getLogger(__name__)

ALLOW_RATIONALE = "No policy is broken."
TAXONOMY_FILE = "taxonomy.json"  # beside sft/, preference/, kto/: the policy ids the rows' verdicts use
INCOMPLETE_FILE = "INCOMPLETE"  # beside them while curate writes the folder; trainers refuse the folder then


@dataclass(frozen=True)
class CurateConfig:
    """How much of each labelled set to take, and how strictly to check for leakage."""

    per_label: int = field(default=16, metadata={"help": "Public sets: train items per set and gold label (a policy or none)."})
    marketplace_per_label: int = field(default=10, metadata={"help": "Marketplace: train items per first gold policy."})
    corpus_per_label: int = field(default=10000, metadata={"help": "Marketplace training corpus: items per first gold policy and clean items (the default takes it whole)."})
    augment_share: float = field(default=0.0, metadata={"help": "Share of the corpus's violating items that also get a prompt-injection copy (phone numbers are also obfuscated in a copy when > 0)."})
    allow_per_set: int = field(default=16, metadata={"help": "Items with no violation (allow) per set."})
    max_item_chars: int = field(default=1200, metadata={"help": "Skip labelled items whose text is longer (short prompts)."})
    synthetic_pairs: int = field(default=0, metadata={"help": "Synthetic preference pairs per set from labelled items."})
    near_dup_threshold: float = field(default=0.8, metadata={"help": "Estimated Jaccard at which texts are near-duplicates."})
    held_out_share: float = field(default=0.1, metadata={"help": "Share of preference pairs held out for the reward model's accuracy."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})

    def __post_init__(self):
        for name in ("per_label", "marketplace_per_label", "corpus_per_label", "allow_per_set", "max_item_chars", "synthetic_pairs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"CurateConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("near_dup_threshold", "held_out_share", "augment_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"CurateConfig.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class ReviewedCase:
    """One finished case check as curate reads it from `moderation review export` (the export contract
    of moderation.review.store.CaseCheck.export_record), with its item parsed: what training data is made of."""

    check_id: str
    item: Item
    model_verdict: dict[str, Any] | None
    decision: str
    reviewer_verdict: dict[str, Any] | None


@dataclass
class Curated:
    """The curated rows, with what was dropped and why."""

    sft: list[dict] = field(default_factory=list)
    preference: list[dict] = field(default_factory=list)
    kto: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)
    leaks: list[dict] = field(default_factory=list)


# --- verdicts ---------------------------------------------------------------------------


def verdict_json(verdict: dict[str, Any]) -> str:
    """Compact JSON with keys in schema order: exactly what the vLLM backend decodes."""
    violations = [{"policy": v["policy"], "severity": v["severity"], "evidence": v["evidence"]}
                  for v in verdict["violations"]]
    ordered = {"decision": verdict["decision"], "violations": violations, "rationale": verdict["rationale"]}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def choose_evidence(text: str, policy_id: str) -> str | None:
    """A short exact quote for a gold label that has no evidence span.

    Heuristic: when the keyword rules fire for this policy, the shortest quotable piece that
    holds the match; otherwise the item's first quotable clause. Quotes come
    from `evidence_candidates`, the same list constrained decoding chooses from.
    """
    candidates = evidence_candidates(text)
    match = rule_matches(text).get(policy_id)
    if match:
        holding = [c for c in candidates if match.casefold() in c.casefold()]
        if holding:
            return min(holding, key=len)
    return candidates[0] if candidates else None


def quoted_evidence(text: str, quote: str) -> str | None:
    """The quotable piece (as constrained decoding may choose it) that best holds a gold quote:
    the shortest candidate containing it, else the longest candidate inside it."""
    candidates = evidence_candidates(text)
    holding = [c for c in candidates if quote in c]
    if holding:
        return min(holding, key=len)
    inside = [c for c in candidates if c in quote and len(c) >= 4]
    return max(inside, key=len) if inside else None


OWN_SETS = ("marketplace", "marketplace_corpus")  # written for this project, with rationales


def _rationale(li: LabelledItem, policy: Policy, violations: list[str]) -> str:
    # Only the project's own set has written rationales; the public sets' are label names.
    if li.source in OWN_SETS and li.rationale:
        return li.rationale if len(li.rationale) <= 100 else textwrap.shorten(li.rationale, 100, placeholder="...")
    return policy_rationale(policy, violations)


def policy_rationale(policy: Policy, violations: list[str]) -> str:
    """The rationale a verdict gets from its policies alone: ALLOW_RATIONALE, or "Breaks <titles>."."""
    if not violations:
        return ALLOW_RATIONALE
    return "Breaks " + ", ".join(policy.entry(p).title.lower() for p in violations)[:90] + "."


def plain(verdict_text: str, policy: Policy) -> str:
    """A verdict (compact JSON) with its rationale made from its policies (policy_rationale)."""
    verdict = json.loads(verdict_text)
    return verdict_json({**verdict, "rationale": policy_rationale(policy, [v["policy"] for v in verdict["violations"]])})


def gold_verdict(li: LabelledItem, policy: Policy) -> dict[str, Any] | None:
    """The gold labels as a verdict, or None when a violation has nothing to quote.

    Severity is each policy's usual severity; a set without decision labels gets the usual
    action of its most severe violation.
    """
    ids = [p.id for p in policy.policies if p.id in li.gold_violations][:3]  # the schema allows 3
    quotes = dict(li.evidence)
    violations = []
    for pid in ids:
        text = li.item.text()
        evidence = (quoted_evidence(text, quotes[pid]) if pid in quotes else None) or choose_evidence(text, pid)
        if evidence is None:
            return None
        violations.append({"policy": pid, "severity": policy.entry(pid).severity, "evidence": evidence})
    decision = li.gold_decision
    if decision is None:
        worst = max(ids, key=lambda p: SEVERITIES.index(policy.entry(p).severity), default=None)
        decision = "allow" if worst is None else policy.entry(worst).default_action
    return {"decision": decision, "violations": violations, "rationale": _rationale(li, policy, ids)}


def wrong_verdict(li: LabelledItem, policy: Policy, rng: random.Random) -> dict[str, Any] | None:
    """A plausible wrong verdict for a synthetic preference pair.

    Violating items: 'allow' (what the zero-shot default model says) or a swapped policy;
    clean items: a false flag with the first quotable clause.
    """
    gold = gold_verdict(li, policy)
    if gold is None:
        return None
    others = [p.id for p in policy.policies if p.id not in li.gold_violations]
    if gold["violations"] and rng.random() < 0.5:
        return {"decision": "allow", "violations": [], "rationale": ALLOW_RATIONALE}
    evidence = gold["violations"][0]["evidence"] if gold["violations"] else choose_evidence(li.item.text(), "")
    if evidence is None:
        return None
    wrong = policy.entry(rng.choice(others))
    return {"decision": wrong.default_action,
            "violations": [{"policy": wrong.id, "severity": wrong.severity, "evidence": evidence}],
            "rationale": f"Breaks {wrong.title.lower()}."}


# --- case checks --------------------------------------------------------------------------


def read_case_checks(path: str | Path) -> Iterator[ReviewedCase | RowError]:
    """The case checks of one export file; a malformed line becomes a RowError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"case-check file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                yield _case_check(line, n)


def _case_check(line: str, n: int) -> ReviewedCase | RowError:
    try:
        row = json.loads(line)
        decision = row["review_decision"]
        if decision not in REVIEW_DECISIONS:
            return RowError(n, row.get("check_id"), f"review_decision {decision!r} is not one of {REVIEW_DECISIONS}")
        item = build_item(row["item"], n, columns={}, default_kind="listing", limits=ReadLimits())
        if isinstance(item, RowError):
            return item
        return ReviewedCase(str(row["check_id"]), item, row.get("model_verdict"), decision, row.get("reviewer_verdict"))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return RowError(n, None, f"not a case check: {type(exc).__name__}: {exc}")


def _valid(verdict: dict | None, item: Item, policy: Policy) -> str | None:
    """The verdict as training JSON if it passes the verdict checks of the policy file's taxonomy, else None."""
    if verdict is None:
        return None
    try:
        return verdict_json(parse_verdict(json.dumps(verdict), item.text(), policy.ids))
    except (VerdictError, KeyError, TypeError):
        return None


def check_rows(check: ReviewedCase, prompt: list[dict], policy: Policy) -> tuple[dict | None, dict | None, dict | None, str | None]:
    """(sft row, preference pair, kto row, reason dropped) for one case check.

    A correction without a rationale of the reviewer's own (the store's REVIEWER_RATIONALE) gets one
    made from its policies. In a preference pair both sides get rationales made from their policies,
    so the pair differs only in what the reviewer changed: a reward model cannot tell the reviewer's
    verdict by its wording (with the placeholder on every chosen side it learned exactly that).
    """
    if check.decision in ("skip", "escalate"):
        return None, None, None, None
    named = {v.get("policy") for verdict in (check.model_verdict, check.reviewer_verdict) if isinstance(verdict, dict)
             for v in verdict.get("violations") or [] if isinstance(v, dict)}
    if not named <= set(policy.ids):
        return None, None, None, "case check of another taxonomy"
    model = _valid(check.model_verdict, check.item, policy)
    if check.decision == "accept":
        if model is None:
            return None, None, None, "accepted verdict invalid"
        return (_sft(prompt, model, "case_check"), None,
                {"prompt": prompt, "completion": _assistant(model), "label": True, "source": "case_check"}, None)
    reviewer = _valid(check.reviewer_verdict, check.item, policy)
    if reviewer is None:
        return None, None, None, "reviewer verdict invalid"
    if json.loads(reviewer)["rationale"] == REVIEWER_RATIONALE:
        reviewer = plain(reviewer, policy)
    pair = kto = None
    chosen, rejected = plain(reviewer, policy), plain(model, policy) if model is not None else None
    if rejected is not None and rejected != chosen:
        pair = {"prompt": prompt, "chosen": _assistant(chosen), "rejected": _assistant(rejected), "source": "case_check"}
        kto = {"prompt": prompt, "completion": _assistant(model), "label": False, "source": "case_check"}
    return _sft(prompt, reviewer, "case_check"), pair, kto, None


def _assistant(content: str) -> list[dict]:
    return [{"role": "assistant", "content": content}]


def _sft(prompt: list[dict], verdict: str, source: str) -> dict:
    return {"messages": [*prompt, *_assistant(verdict)], "source": source}


# --- labelled sets --------------------------------------------------------------------------


def _label(li: LabelledItem, policy: Policy) -> str:
    """The sampling stratum: the first gold policy in policy order, or none."""
    return next((p.id for p in policy.policies if p.id in li.gold_violations), "none")


def _cap(config: CurateConfig, name: str, label: str) -> int:
    """How many train items of one stratum (a first gold policy, or none) a set gives."""
    if name == "marketplace_corpus":
        return config.corpus_per_label
    if label == "none":
        return config.allow_per_set
    return config.marketplace_per_label if name == "marketplace" else config.per_label


def sample_labelled(items: Iterable[LabelledItem], policy: Policy, config: CurateConfig, name: str) -> list[LabelledItem]:
    """A capped, stratified, seeded sample of one set's train items."""
    strata: dict[str, list[LabelledItem]] = defaultdict(list)
    for li in items:
        if len(li.item.text()) <= config.max_item_chars:
            strata[_label(li, policy)].append(li)
    rng = random.Random(config.seed)
    chosen = []
    for label in sorted(strata):
        pool = sorted(strata[label], key=lambda li: li.item.id)
        rng.shuffle(pool)
        chosen += pool[:_cap(config, name, label) * 3]  # spares, for rows lost to dedup and leakage
    return chosen


def build_test_index(test_sets: dict[str, list[LabelledItem]], threshold: float) -> MinHashIndex:
    """Every evaluation test item, indexed for exact and near-duplicate lookups."""
    index = MinHashIndex(threshold=threshold)
    for name, items in test_sets.items():
        for li in items:
            index.add(f"{name}/{li.item.id}", li.item.text())
    return index


class Curator:
    """Collects rows from labelled sets and case checks, dropping duplicates and leaks."""

    def __init__(self, policy: Policy, template: PromptTemplate, test_index: MinHashIndex, config: CurateConfig):
        self.policy, self.template, self.test_index, self.config = policy, template, test_index, config
        self.seen = MinHashIndex(threshold=config.near_dup_threshold)
        self.out = Curated()
        self.rng = random.Random(config.seed)

    def admit(self, item: Item, origin: str) -> bool:
        """Whether an item's text is new and not (nearly) an evaluation test item."""
        text = item.text()
        leak = self.test_index.exact(text)
        kind = "exact"
        if leak is None:
            near = self.test_index.near(text)
            leak, kind = (near[0], f"near ({near[1]:.2f})") if near else (None, "")
        if leak is not None:
            self.out.dropped[f"{kind.split()[0]} leak of a test item"] += 1
            self.out.leaks.append({"item": origin, "test_item": leak, "match": kind})
            return False
        if self.seen.exact(text) is not None or self.seen.near(text) is not None:
            self.out.dropped["duplicate in training data"] += 1
            return False
        self.seen.add(origin, text)
        return True

    def add_labelled(self, name: str, items: list[LabelledItem]) -> None:
        """Sampled train items of one set as SFT rows (and synthetic pairs if configured)."""
        cap_of = lambda label: _cap(self.config, name, label)
        taken, pairs = Counter(), 0
        for li in sample_labelled(items, self.policy, self.config, name):
            label = _label(li, self.policy)
            if taken[label] >= cap_of(label) or not self.admit(li.item, f"{name}/{li.item.id}"):
                continue
            row = self._labelled_row(name, li)
            if row is None:
                continue
            self.out.sft.append(row)
            taken[label] += 1
            if pairs < self.config.synthetic_pairs and self._add_synthetic_pair(name, li, row):
                pairs += 1

    def add_augmented(self, name: str, items: list[LabelledItem]) -> None:
        """Adversarial copies (moderation.augment) of a set's items, as rows of source augment:<attack>."""
        for li in augment(items, self.config.augment_share, self.config.seed):
            attack = "injection" if li.item.id.endswith("~inj") else "obfuscation"
            if len(li.item.text()) > self.config.max_item_chars or not self.admit(li.item, f"{name}/{li.item.id}"):
                continue
            row = self._labelled_row(f"augment:{attack}", li)
            if row is not None:
                self.out.sft.append(row)

    def _labelled_row(self, name: str, li: LabelledItem) -> dict | None:
        verdict = gold_verdict(li, self.policy)
        text = _valid(verdict, li.item, self.policy)
        if text is None:
            self.out.dropped["gold verdict not expressible (nothing to quote)"] += 1
            return None
        return _sft(self.template.messages(li.item, self.policy), text, name)

    def _add_synthetic_pair(self, name: str, li: LabelledItem, row: dict) -> bool:
        wrong = _valid(wrong_verdict(li, self.policy, self.rng), li.item, self.policy)
        if wrong is None:
            return False
        chosen = row["messages"][-1:]
        self.out.preference.append({"prompt": row["messages"][:-1], "chosen": chosen,
                                    "rejected": _assistant(wrong), "source": f"synthetic:{name}"})
        return True

    def add_case_checks(self, checks: Iterable[ReviewedCase | RowError]) -> None:
        """Rows from one export file's case checks."""
        for check in checks:
            if isinstance(check, RowError):
                self.out.dropped[f"case check unreadable: {check.reason[:60]}"] += 1
                continue
            self.out.checks[check.decision] += 1
            if check.decision in ("skip", "escalate") or not self.admit(check.item, f"check/{check.check_id}"):
                continue
            sft, pair, kto, reason = check_rows(check, self.template.messages(check.item, self.policy), self.policy)
            if reason:
                self.out.dropped[reason] += 1
            for rows, row in ((self.out.sft, sft), (self.out.preference, pair), (self.out.kto, kto)):
                if row is not None:
                    rows.append(row)


def split_held_out(rows: list[dict], share: float, seed: int) -> dict[str, list[dict]]:
    """A seeded train/test split; test gets round(share * n) rows, at least one when n >= 2."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_test = min(len(rows) - 1, max(1, round(share * len(rows)))) if len(rows) >= 2 and share > 0 else 0
    return {"train": rows[n_test:], "test": rows[:n_test]}


# --- the whole curation, and its outputs ---------------------------------------------------------


def curate(
    train_sets: dict[str, list[LabelledItem]],
    test_sets: dict[str, list[LabelledItem]],
    case_check_files: Iterable[str | Path],
    policy: Policy,
    template: PromptTemplate,
    config: CurateConfig,
) -> Curated:
    """Case checks first (reviewers' word wins over a sampled copy), then the labelled sets."""
    curator = Curator(policy, template, build_test_index(test_sets, config.near_dup_threshold), config)
    for path in case_check_files:
        curator.add_case_checks(read_case_checks(path))
    for name, items in train_sets.items():
        curator.add_labelled(name, items)
    if config.augment_share > 0:
        for name in ("marketplace_corpus",):
            if name in train_sets:
                curator.add_augmented(name, train_sets[name])
    random.Random(config.seed).shuffle(curator.out.sft)
    return curator.out


def class_balance(rows: list[dict]) -> dict[str, Counter]:
    """Counts of SFT rows by source, decision and flagged policy (none for allow)."""
    balance = {"source": Counter(), "decision": Counter(), "policy": Counter()}
    for row in rows:
        verdict = json.loads(row["messages"][-1]["content"])
        balance["source"][row["source"]] += 1
        balance["decision"][verdict["decision"]] += 1
        for p in [v["policy"] for v in verdict["violations"]] or ["none"]:
            balance["policy"][p] += 1
    return balance


def write_datasets(curated: Curated, out_dir: str | Path, config: CurateConfig, meta: dict) -> dict[str, Path]:
    """sft/, preference/ and kto/ folders of JSONL splits (load with `datasets.load_dataset(folder)`),
    a leakage report, the taxonomy the rows are in (taxonomy.json) and a dataset card (README.md).

    The folder carries an INCOMPLETE file from before its first change until every file is written
    and synced, so a folder left by a killed curate is marked as such (`require_complete`). A mark,
    not a new folder renamed into place: `-o` may name a folder that holds other things, and an
    existing one is rewritten in place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mark = out / INCOMPLETE_FILE
    _write_synced(mark, f"`moderation curate` started writing this folder at {meta.get('date', '?')} and has not "
                        "finished; trainers refuse it while this file is here. Run curate again.\n")
    _sync_folder(out)
    written = _write_files(curated, out, config, meta)
    mark.unlink()
    _sync_folder(out)
    return written


def _write_files(curated: Curated, out: Path, config: CurateConfig, meta: dict) -> dict[str, Path]:
    from datasets import Dataset

    written = {}
    for name, rows in (("sft", curated.sft), ("preference", curated.preference), ("kto", curated.kto)):
        splits = split_held_out(rows, config.held_out_share, config.seed) if name == "preference" else {"train": rows}
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.jsonl"):
            old.unlink()
        for split, split_rows in splits.items():
            if split_rows:
                Dataset.from_list(split_rows).to_json(folder / f"{split}.jsonl", force_ascii=False)
                _sync(folder / f"{split}.jsonl")
        _sync_folder(folder)
        written[name] = folder
    _write_synced(out / "leaks.json", json.dumps(curated.leaks, indent=1) + "\n")
    taxonomy = {k: meta[k] for k in ("policies", "schema_id", "policy_version", "policy_sha") if k in meta}
    _write_synced(out / TAXONOMY_FILE, json.dumps(taxonomy, indent=1) + "\n")  # the trainers copy it to the adapter
    _write_synced(out / "README.md", dataset_card(curated, config, meta) + "\n")
    return written


def _sync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_synced(path: Path, text: str) -> None:
    path.write_text(text)
    _sync(path)


def _sync_folder(folder: Path) -> None:
    """Make the folder's entries (a file made or removed) durable, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse to sync a folder
    finally:
        os.close(fd)


def require_complete(dataset: str | Path) -> None:
    """Refuse a `moderation curate` folder, or its sft/, preference/ or kto/ folder, that curate has not
    finished writing (it was stopped part-way, or is writing it now): training on it would train on
    part of the data. Every trainer calls this before it reads the rows.

    Raises:
        InputError: the folder carries curate's INCOMPLETE mark.
    """
    dataset = Path(dataset)
    for folder in (dataset, dataset.parent):
        if (folder / INCOMPLETE_FILE).is_file():
            raise InputError(f"{folder} is incomplete: `moderation curate` stopped before it finished writing it "
                             f"(or is writing it now), so it may hold part of the data; run `moderation curate` again "
                             f"and train once it has finished ({folder / INCOMPLETE_FILE} marks it)")


def _table(title: str, counts: Counter) -> list[str]:
    return [f"### {title}", "", "| | rows |", "|---|---|", *[f"| {k} | {v} |" for k, v in sorted(counts.items())], ""]


def dataset_card(curated: Curated, config: CurateConfig, meta: dict) -> str:
    """Markdown card: sources, formats, class balance, dropped rows and leakage checks."""
    balance = class_balance(curated.sft)
    pair_sources = Counter(r["source"] for r in curated.preference)
    lines = [
        "# Curated training data", "",
        f"Built by `{meta.get('command') or 'moderation curate'}` on {meta.get('date', '?')}.",
        f"Prompt `{meta.get('prompt')}` (sha256 `{str(meta.get('prompt_sha'))[:12]}`), policy {meta.get('policy_version')}.", "",
        "Formats (TRL, conversational): `sft/` has `messages`; `preference/` has `prompt`, `chosen`,",
        "`rejected`; `kto/` has `prompt`, `completion`, `label`. Every row also has `source`.",
        "Verdicts are compact JSON with keys in schema order and pass `parse_verdict` on their item.", "",
        f"Rows: SFT {len(curated.sft)}, preference pairs {len(curated.preference)}, KTO {len(curated.kto)}.",
        f"Case checks read: {dict(curated.checks) or 'none'} (skip and escalate give no rows).", "",
        "Sampling: train splits only; per public set at most "
        f"{config.per_label} items per gold policy and {config.allow_per_set} clean (allow) items; marketplace "
        f"at most {config.marketplace_per_label} per first gold policy; items over {config.max_item_chars} characters skipped; seed {config.seed}.",
        "Labels without evidence spans: the evidence is the shortest quotable piece holding a keyword-rule",
        "match for that policy, else the item's first clause (`choose_evidence`). Public sets without",
        "decisions get the usual action of the most severe violation; severities are the policy's usual ones.", "",
        "Leakage: every row was checked against every evaluation test split, exactly (normalised text) and",
        f"for near-duplicates (MinHash, 128 permutations, estimated Jaccard >= {config.near_dup_threshold}).",
        f"Dropped leaks: {len(curated.leaks)} (listed in `leaks.json`).", "",
        *_table("Dropped rows", curated.dropped),
        *_table("SFT rows by source", balance["source"]),
        *_table("SFT rows by decision", balance["decision"]),
        *_table("SFT rows by policy", balance["policy"]),
        *_table("Preference pairs by source", pair_sources),
    ]
    if any(s.startswith("synthetic") for s in pair_sources):
        lines += ["Synthetic pairs (source `synthetic:<set>`): chosen = the gold verdict, rejected = `allow` for a",
                  "violating item (what the zero-shot default model answers) or a swapped policy / a false flag.", ""]
    return "\n".join(lines)
