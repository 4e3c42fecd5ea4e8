"""The project's own labelled marketplace set, and one entry point for every labelled set.

`eval_sets/marketplace/*.jsonl` holds items written for this project, each with gold
violations, a gold decision, a rationale, tags and a fixed split. Records are validated
against `eval_sets/marketplace.schema.json` and built with the same reader as any dump.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

from moderation.datasets import PUBLIC_SETS, SPLITS, LabelledItem, load_public
from moderation.errors import ConfigError
from moderation.items import Item, ReadLimits, RowError, build_item
from moderation.policy import PROJECT_ROOT

MARKETPLACE = "marketplace"
MARKETPLACE_DIR = PROJECT_ROOT / "eval_sets" / "marketplace"
MARKETPLACE_SCHEMA = PROJECT_ROOT / "eval_sets" / "marketplace.schema.json"
MARKETPLACE_LICENCE = "Apache-2.0 (written for this project)"
LABEL_KEYS = ("split", "gold", "tags")


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(MARKETPLACE_SCHEMA.read_text()))


def _item_of(record: dict, line: int = 0) -> Item | RowError:
    """The record's item fields, read exactly as a dump row would be."""
    fields = {k: v for k, v in record.items() if k not in LABEL_KEYS}
    return build_item(fields, line, columns={}, default_kind="listing", limits=ReadLimits())


def validate_record(record: dict, where: str, item: Item | RowError | None = None) -> list[str]:
    """Problems with one labelled record: schema errors, item errors, gold inconsistencies."""
    problems = [f"{where}: {e.message[:160]}" for e in _validator().iter_errors(record)]
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
    return problems


def load_marketplace(split: str | None = None, directory: Path = MARKETPLACE_DIR) -> list[LabelledItem]:
    """Every record of the marketplace set (or one split), validated.

    Raises:
        ConfigError: a record is invalid, or ids repeat.
    """
    items, seen, problems = [], set(), []
    for path in sorted(directory.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            record = json.loads(line)
            where = f"{path.name}:{n}"
            item = _item_of(record, n)
            problems += validate_record(record, where, item)
            if record.get("id") in seen:
                problems.append(f"{where}: id {record['id']} repeats")
            seen.add(record.get("id"))
            if problems or (split and record["split"] != split):
                continue
            gold = record["gold"]
            items.append(LabelledItem(item, frozenset(gold["violations"]), record["split"], MARKETPLACE, MARKETPLACE_LICENCE,
                                      gold["decision"], tuple(record["tags"]), gold["rationale"]))
    if problems:
        raise ConfigError(f"{len(problems)} invalid marketplace records, first: " + "; ".join(problems[:5]))
    return items


def set_names() -> list[str]:
    return [MARKETPLACE, *PUBLIC_SETS]


def load_set(name: str, split: str | None = None, data_dir: str | os.PathLike | None = None) -> list[LabelledItem]:
    """Any labelled set by name: 'marketplace' or a public set (read from the data directory)."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    if name == MARKETPLACE:
        return load_marketplace(split)
    if name not in PUBLIC_SETS:
        raise ConfigError(f"unknown set {name!r}; known sets: {set_names()}")
    return load_public(name, data_dir, split=split)


def data_card(items: list[LabelledItem]) -> str:
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
        "# Data card: marketplace evaluation set", "",
        "Items written for this project: listings, merchant profiles, creator videos and live-chat windows,",
        "in English and six other languages, each with gold violations (policy ids of `prompts/policy.yaml`),",
        "a gold decision and a one-line rationale (in English or in the item's language). The split is fixed",
        "in the data (`split` field). Licence: " + MARKETPLACE_LICENCE + ".", "",
        f"Items: {len(items)} (train {splits['train']}, dev {splits['dev']}, test {splits['test']}).", "",
        "Tags: `hard_negative` = legitimate items that look risky; `adversarial:*` = violating items that",
        "obfuscate, use code words or inject instructions aimed at the moderator; `multi` = two or more violations.", "",
        "Regenerate with `python scripts/data_card.py`; `tests/test_evalsets.py` checks that it is current.", "",
    ]
    for title, key in (("Positives per policy", "policy"), ("Gold decisions", "decision"), ("Kinds", "kind"),
                       ("Languages", "language"), ("Tags", "tag")):
        lines += table(title, by[key])
    return "\n".join(lines)
