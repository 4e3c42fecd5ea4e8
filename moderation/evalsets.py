"""The project's own labelled marketplace set, and one entry point for every labelled set.

`eval_sets/marketplace/*.jsonl` holds items written for this project, each with gold
violations, a gold decision, a rationale, tags and a fixed split. Records are validated
against `eval_sets/marketplace.schema.json` and built with the same reader as any dump.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

from moderation.datasets import PUBLIC_SETS, SPLITS, LabelledItem, load_public
from moderation.errors import ConfigError
from moderation.items import Item, ReadLimits, RowError, build_item
from moderation.policy import Policy
from moderation.resources import shipped

MARKETPLACE = "marketplace"
MARKETPLACE_DIR = shipped("eval_sets/marketplace")
MARKETPLACE_SCHEMA = shipped("eval_sets/marketplace.schema.json")
MARKETPLACE_LICENCE = "Apache-2.0 (written for this project)"
# The training corpus: marketplace items written for training only (split "train"), never evaluated on.
CORPUS = "marketplace_corpus"
CORPUS_DIR = shipped("eval_sets/marketplace_corpus")
CORPUS_SCHEMA = shipped("eval_sets/marketplace_corpus.schema.json")
# The gold-evidence set: violating items written to measure evidence (issue 28), each with a hand-marked span per
# violated policy; test only, in no set `set_names()` lists, so neither `moderation curate` nor training reads it.
EVIDENCE_GOLD = "evidence_gold"
EVIDENCE_GOLD_DIR = shipped("eval_sets/evidence_gold")
EVIDENCE_GOLD_SCHEMA = shipped("eval_sets/evidence_gold.schema.json")
LABEL_KEYS = ("split", "gold", "tags")
logger = logging.getLogger(__name__)


@cache
def _validator(schema: Path = MARKETPLACE_SCHEMA) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema.read_text()))


def _item_of(record: dict, line: int = 0) -> Item | RowError:
    """The record's item fields, read exactly as a dump row would be."""
    fields = {k: v for k, v in record.items() if k not in LABEL_KEYS}
    return build_item(fields, line, columns={}, default_kind="listing", limits=ReadLimits())


def validate_record(record: dict, where: str, item: Item | RowError | None = None,
                    schema: Path = MARKETPLACE_SCHEMA) -> list[str]:
    """Problems with one labelled record: schema errors, item errors, gold inconsistencies."""
    problems = [f"{where}: {e.message[:160]}" for e in _validator(schema).iter_errors(record)]
    if problems:
        return problems
    item = item if item is not None else _item_of(record)
    if not isinstance(item, Item):
        problems.append(f"{where}: {item.reason}")
    gold, tags = record["gold"], set(record["tags"])
    if (gold["decision"] == "allow") != (not gold["violations"]):
        problems.append(f"{where}: decision {gold['decision']} does not match violations {gold['violations']}")
    if "hard_negative" in tags and gold["violations"]:
        problems.append(f"{where}: a hard negative must have no violations")
    if any(t.startswith("adversarial") for t in tags) and not gold["violations"]:
        problems.append(f"{where}: an adversarial item must violate a policy")
    if ("multi" in tags) != (len(gold["violations"]) > 1):
        problems.append(f"{where}: tag 'multi' must go with two or more violations")
    if "evidence" in gold and isinstance(item, Item):
        problems += _evidence_problems(gold, item.text(), where)
    return problems


def _evidence_problems(gold: dict, text: str, where: str) -> list[str]:
    """Evidence quotes: one per violated policy, each verbatim in the item's text."""
    problems = []
    if set(gold["evidence"]) != set(gold["violations"]):
        problems.append(f"{where}: evidence is given for {sorted(gold['evidence'])}, violations are {sorted(gold['violations'])}")
    problems += [f"{where}: evidence for {p} is not in the item's text: {q[:60]!r}"
                 for p, q in gold["evidence"].items() if q not in text]
    return problems


def load_marketplace(split: str | None = None, directory: Path = MARKETPLACE_DIR) -> list[LabelledItem]:
    """Every record of the marketplace set (or one split), validated.

    Raises:
        ConfigError: a record is invalid, or ids repeat.
    """
    return _load_labelled(directory, MARKETPLACE_SCHEMA, MARKETPLACE, split)


def load_corpus(directory: Path = CORPUS_DIR) -> list[LabelledItem]:
    """The marketplace training corpus (every record is split "train"), validated, with evidence.

    Raises:
        ConfigError: a record is invalid, or ids repeat.
    """
    return _load_labelled(directory, CORPUS_SCHEMA, CORPUS, None)


def load_evidence_gold(directory: Path = EVIDENCE_GOLD_DIR) -> list[LabelledItem]:
    """The gold-evidence set (every record is split "test"), validated, with its evidence spans.

    Raises:
        ConfigError: a record is invalid (a span not in the item's text, over 100 characters), or ids repeat.
    """
    return _load_labelled(directory, EVIDENCE_GOLD_SCHEMA, EVIDENCE_GOLD, None)


def _load_labelled(directory: Path, schema: Path, source: str, split: str | None) -> list[LabelledItem]:
    items, seen, problems = [], set(), []
    for path in sorted(directory.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            where = f"{path.name}:{n}"
            item = _item_of(record, n)
            problems += validate_record(record, where, item, schema)
            if record.get("id") in seen:
                problems.append(f"{where}: id {record['id']} repeats")
            seen.add(record.get("id"))
            if problems or (split and record["split"] != split):
                continue
            gold = record["gold"]
            evidence = tuple((p, gold["evidence"][p]) for p in gold["violations"]) if "evidence" in gold else ()
            items.append(LabelledItem(item, frozenset(gold["violations"]), record["split"], source, MARKETPLACE_LICENCE,
                                      gold["decision"], tuple(record["tags"]), gold["rationale"], evidence))
    if problems:
        raise ConfigError(f"{len(problems)} invalid {source} records, first: " + "; ".join(problems[:5]))
    return items


def set_names() -> list[str]:
    """The evaluation sets (the training corpus is not one: it has no dev or test split)."""
    return [MARKETPLACE, *PUBLIC_SETS]


class OutsideTaxonomy(ConfigError):
    """A labelled set none of whose labels maps onto the taxonomy of a policy file: it has nothing to
    measure there, so it is skipped (with this message) rather than scored as all clean."""


def load_set(name: str, split: str | None = None, data_dir: str | os.PathLike | None = None,
             policy: Policy | None = None) -> list[LabelledItem]:
    """Any labelled set by name: 'marketplace' or a public set (read from the data directory).

    The sets are labelled with the default taxonomy's ids; with `policy`, their labels are mapped onto
    its taxonomy (`to_taxonomy`).

    Raises:
        ConfigError: an unknown set or split.
        OutsideTaxonomy: none of the set's labels maps onto `policy`'s ids.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    if name == MARKETPLACE:
        items = load_marketplace(split)
    elif name == CORPUS:
        items = load_corpus() if split in (None, "train") else []
    elif name not in PUBLIC_SETS:
        raise ConfigError(f"unknown set {name!r}; known sets: {set_names()}")
    else:
        items = load_public(name, data_dir, split=split)
    return items if policy is None else to_taxonomy(name, items, policy)


def load_sets(names: list[str], split: str | None, data_dir: str | os.PathLike | None, policy: Policy,
              progress=None) -> tuple[dict[str, list[LabelledItem]], list[str]]:
    """Labelled sets by name, their labels as `policy`'s ids, and a note per set skipped because none of
    its labels maps onto that taxonomy. `progress`: a tqdm-style wrapper over the names."""
    sets, skipped = {}, []
    for name in (progress or iter)(names):
        try:
            sets[name] = load_set(name, split, data_dir, policy)
        except OutsideTaxonomy as exc:
            skipped.append(str(exc))
    return sets, skipped


def to_taxonomy(name: str, items: list[LabelledItem], policy: Policy) -> list[LabelledItem]:
    """A labelled set's items with their gold labels as `policy`'s ids (its `label_map`; an id it shares
    stays). Items with a label that has no place in the taxonomy are left out, and counted in the log.

    Raises:
        OutsideTaxonomy: none of the set's labels maps onto one of `policy`'s ids.
    """
    labels = sorted({p for li in items for p in li.gold_violations})
    if labels and not policy.maps_any(labels):
        raise OutsideTaxonomy(f"set {name!r} skipped: none of its labels ({', '.join(labels)}) maps onto a policy of "
                              f"{policy.describe()}; map them with `label_map` in the policy file")
    out = []
    for li in items:
        mapped = policy.map_labels(li.gold_violations)
        if mapped is not None:
            out.append(li if mapped == li.gold_violations else dataclasses.replace(li, gold_violations=mapped))
    if len(out) < len(items):
        logger.warning("set %s: %d of %d items left out, their labels have no policy in %s", name,
                       len(items) - len(out), len(items), policy.describe())
    return out


MARKETPLACE_CARD_HEADER = [
    "# Data card: marketplace evaluation set", "",
    "Items written for this project: listings, merchant profiles, creator videos and live-chat windows,",
    "in English and six other languages, each with gold violations (policy ids of `prompts/policy.yaml`),",
    "a gold decision and a one-line rationale (in English or in the item's language). The split is fixed",
    "in the data (`split` field). Licence: " + MARKETPLACE_LICENCE + ".", "",
]
CORPUS_CARD_HEADER = [
    "# Data card: marketplace training corpus", "",
    "Items written for this project to train the default model, and never used to evaluate it: listings,",
    "merchant profiles, creator videos and live-chat windows in 12 languages, each with gold violations",
    "(policy ids of `prompts/policy.yaml`), a gold decision, a one-line rationale and, per violated policy,",
    "a verbatim evidence quote. Every record is split `train`; records are validated against",
    "`eval_sets/marketplace_corpus.schema.json` (evidence quotes must occur in the item's text).",
    "Licence: " + MARKETPLACE_LICENCE + ".", "",
    "How it was written: item by item, by language-model writing assistants briefed with the policy",
    "file and the labelling rules (one writer per language or pair of languages), then checked by",
    "schema and script; not from templates. Native speakers have not reviewed it: expect some unnatural",
    "phrasing and some labels a policy team would set differently (notably `restrict` against `remove`",
    "for restricted goods sold without conditions, and country-specific legality). Writers never saw the",
    "dev or test splits of `eval_sets/marketplace`; `moderation curate` also drops any row that is an exact",
    "or near (MinHash) duplicate of an evaluation test item (none of this corpus was).", "",
    "Augmentation is not in these files: `moderation curate --augment-share S` adds, at training time,",
    "prompt-injection copies of a share S of the violating items (a line aimed at the moderator in the",
    "item's language or English) and digit-spaced copies of items with phone numbers (moderation/augment.py);",
    "they are counted as `augment:injection` and `augment:obfuscation` rows in the curated data's card.", "",
]

EVIDENCE_GOLD_CARD_HEADER = [
    "# Data card: gold-evidence set", "",
    "Violating items written to measure evidence (issue 28): listings, merchant profiles, creator videos and",
    "live-chat windows in eight languages, covering all 12 policies of `prompts/policy.yaml`, each with gold",
    "violations, a gold decision, a one-line rationale and, per violated policy, one hand-marked evidence span:",
    "the verbatim words of the item (at most 100 characters, the verdict schema's evidence limit) that show the",
    "violation. Every record is split `test`; records are validated against `eval_sets/evidence_gold.schema.json`",
    "(spans must occur in the item's text). Licence: " + MARKETPLACE_LICENCE + ".", "",
    "How it was written: item by item, for this purpose, by the engineer who built the attribution, before any",
    "attribution or model output on it was seen; the items carry distractors that evidence must not point at",
    "(user handles, field labels, emoji and star ratings, benign clauses) and the span marks the clause that",
    "states the violation, not the product alone (for a restricted good sold without its condition, the missing",
    "condition). One span per policy: where several clauses would do, the one most telling was marked, so a quote",
    "from another valid clause counts as a miss. Native speakers have not reviewed the non-English items.", "",
    "Kept out of training: `set_names()` does not list it, so `moderation curate` (and through it",
    "`finetune/fit_heads.py` and the trainers) never reads it, and no item is an exact or near (MinHash) duplicate",
    "of the training corpus or the marketplace set (checked when it was written). Read it with",
    "`moderation.evalsets.load_evidence_gold`, `moderation eval --labels eval_sets/evidence_gold/items.jsonl`, or",
    "`python scripts/benchmark_evidence.py`.", "",
]


def data_card(items: list[LabelledItem], header: list[str] = MARKETPLACE_CARD_HEADER, regenerate: str = "scripts/data_card.py") -> str:
    """A Markdown data card with the counts that the coverage rules are checked against."""
    def table(title: str, counts: Counter) -> list[str]:
        rows = [f"| {k} | " + " | ".join(str(counts[(k, s)]) for s in SPLITS) + f" | {sum(counts[(k, s)] for s in SPLITS)} |"
                for k in sorted({k for k, _ in counts})]
        return [f"### {title}", "", "| | train | dev | test | all |", "|---|---|---|---|---|", *rows, ""]

    by = {name: Counter() for name in ("policy", "decision", "kind", "language", "tag")}
    for li in items:
        s = li.split
        by["decision"][(li.gold_decision, s)] += 1
        by["kind"][(li.item.kind, s)] += 1
        by["language"][(li.item.language, s)] += 1
        for p in li.gold_violations or ["(none)"]:
            by["policy"][(p, s)] += 1
        for t in li.tags:
            by["tag"][(t, s)] += 1
    splits = Counter(li.split for li in items)
    lines = [
        *header,
        f"Items: {len(items)} (train {splits['train']}, dev {splits['dev']}, test {splits['test']}).", "",
        "Tags: `hard_negative` = legitimate items that look risky; `adversarial:*` = violating items that",
        "obfuscate, use code words or inject instructions aimed at the moderator; `multi` = two or more violations.", "",
        f"Regenerate with `python {regenerate}`; `tests/test_evalsets.py` checks that it is current.", "",
    ]
    for title, key in (("Positives per policy", "policy"), ("Gold decisions", "decision"), ("Kinds", "kind"),
                       ("Languages", "language"), ("Tags", "tag")):
        lines += table(title, by[key])
    return "\n".join(lines)


def parse_names(text: str | None, known: list[str] | tuple[str, ...], what: str) -> list[str]:
    """A comma-separated choice of names (None: all of `known`).

    Raises:
        ConfigError: a name not in `known`.
    """
    names = [n.strip() for n in text.split(",") if n.strip()] if text else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; choose from {list(known)}")
    return names
