"""A team's own labelled dump, for `moderation eval --labels`: items read exactly as `run` reads
them (generic fields, column maps per kind), with gold labels beside them.

Gold is a `violations` column (a list of the policy file's ids, or of labels its `label_map` maps onto
them: a JSON list, or labels separated by commas, semicolons or bars; empty means clean) and optionally a `decision` column. A file with one
binary `label` column stands for one policy (`--label-policy`). The project's own record format
(a `gold` object holding `violations` and `decision`, as in eval_sets/) is read too. Every gold
column name can be mapped like a field: `--columns violations=policies,decision=action`.
A `split` column, where there is one, puts rows in train, dev or test.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.columns import IGNORE, ColumnMap, column_for, parse_column_map
from moderation.datasets import SPLITS, LabelledItem
from moderation.errors import ConfigError
from moderation.items import Item, ReadLimits, RowError, parse_json, read_records, read_row
from moderation.policy import Policy
from moderation.schema import DECISIONS

GOLD_KEYS = ("violations", "decision", "label", "split")
RECORD_GOLD = "gold"  # the project's own format: {"gold": {"violations": [...], "decision": ...}}
RECORD_EXTRAS = ("gold", "tags", "rationale")  # label columns of that format, never item text
LICENCE = "the team's own labels"
TRUE_WORDS = {"1", "true", "yes", "y", "t", "violating", "violation", "positive", "bad"}
FALSE_WORDS = {"0", "false", "no", "n", "f", "clean", "negative", "ok", "good", "allow", "none"}


@dataclass(frozen=True)
class LabelOptions:
    """How to read a labelled file."""

    columns: str | None = field(default=None, metadata={
        "help": "column map of the labelled files, as for `run --columns` ('field=column,kind.field=column,...' or a "
                ".yaml file), plus the gold columns: violations=, decision=, label=, split="})
    kind: str = field(default="listing", metadata={"help": "kind of labelled rows without a kind column"})
    label_policy: str | None = field(default=None, metadata={"help": "the policy a yes/no `label` column stands for"})
    format: str | None = field(default=None, metadata={"help": "format of the labelled files, when their names do not tell",
                                                       "choices": ["jsonl", "csv", "parquet"]})


@dataclass
class LabelledFile:
    """A labelled file's items by split, and the rows that did not become labelled items."""

    name: str
    splits: dict[str, list[LabelledItem]]
    skipped: Counter = field(default_factory=Counter)  # reason -> rows

    def split(self, name: str) -> list[LabelledItem]:
        return self.splits.get(name, [])


def read_labelled(path: str | Path, options: LabelOptions, policy: Policy, default_split: str = "test") -> LabelledFile:
    """Every labelled row of a file, as LabelledItems grouped by split.

    Args:
        path: a JSONL, CSV or Parquet file (as `run` reads).
        options: column map, default kind, label policy, format.
        policy: the policy file whose ids (and label map) the gold labels are read as.
        default_split: the split of rows when the file has no split column.

    Raises:
        ConfigError: a bad column map, a label policy that is not one of `policy`'s ids, or no row has gold labels.
        InputError: the file cannot be read, or the map names a column it does not have.
    """
    if options.label_policy is not None and options.label_policy not in policy.ids:
        raise ConfigError(f"--label-policy {options.label_policy!r} is not a policy of {policy.describe()}")
    columns = parse_column_map(options.columns, extra_keys=GOLD_KEYS)
    item_columns = _item_columns(columns)
    splits: dict[str, list[LabelledItem]] = {}
    skipped: Counter = Counter()
    for line, raw in read_records(path, fmt=options.format, columns=columns, default_kind=options.kind, limits=ReadLimits()):
        labelled = _labelled_row(raw, line, item_columns, columns, options, policy, default_split)
        if isinstance(labelled, str):
            skipped[labelled] += 1
        else:
            splits.setdefault(labelled.split, []).append(labelled)
    if not splits:
        raise ConfigError(f"no row of {path} has gold labels; {_first_reasons(skipped)}")
    return LabelledFile(Path(path).name.split(".")[0], splits, skipped)


def _item_columns(columns: ColumnMap) -> ColumnMap:
    """The map that reads a row's item: gold columns left out and listed as read on purpose."""
    gold = [column_for(columns, None, key) for key in GOLD_KEYS]
    mapping = {k: v for k, v in columns.items() if k not in GOLD_KEYS}
    mapping[IGNORE] = [*columns.get(IGNORE, ()), *gold, *RECORD_EXTRAS]
    return mapping


def _labelled_row(raw: Any, line: int, item_columns: ColumnMap, columns: ColumnMap, options: LabelOptions,
                  policy: Policy, default_split: str) -> LabelledItem | str:
    """The row as a LabelledItem, or the reason it is not one."""
    if isinstance(raw, RowError):
        return raw.reason.split(":")[0]
    item = read_row(raw, line, columns=item_columns, default_kind=options.kind, limits=ReadLimits())
    if not isinstance(item, Item):
        return item.reason.split(":")[0]
    try:
        violations, decision = gold_of(raw, columns, options.label_policy, policy)
        split = _split_of(raw, columns, default_split)
    except ValueError as exc:
        return str(exc)
    return LabelledItem(item, violations, split, "labels", LICENCE, decision, evidence=_evidence_of(raw, violations))


def _evidence_of(raw: dict, violations: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Gold evidence spans of a record in the project's own format ({"gold": {"evidence": {policy: quote}}})."""
    record = raw.get(RECORD_GOLD) if isinstance(raw.get(RECORD_GOLD), dict) else {}
    spans = record.get("evidence") if isinstance(record.get("evidence"), dict) else {}
    return tuple((p, q) for p, q in spans.items() if p in violations and isinstance(q, str) and q)


def gold_of(raw: dict, columns: ColumnMap, label_policy: str | None, policy: Policy) -> tuple[frozenset[str], str | None]:
    """(violations, decision) of one row, the violations as `policy`'s ids.

    Raises:
        ValueError: no gold in the row, or gold that is not a policy id (or mapped label), a decision or a yes/no.
    """
    record = raw.get(RECORD_GOLD) if isinstance(raw.get(RECORD_GOLD), dict) else {}
    violations = _cell(raw, column_for(columns, None, "violations"), record.get("violations"))
    label = _cell(raw, column_for(columns, None, "label"))
    if violations is None and label is None:
        raise ValueError(f"no gold: no {column_for(columns, None, 'violations')!r} or {column_for(columns, None, 'label')!r} column value")
    gold = set(parse_violations(violations, policy)) if violations is not None else set()
    if label is not None:
        if label_policy is None:
            raise ValueError("a label column needs --label-policy (the policy it stands for)")
        gold |= {label_policy} if parse_flag(label, policy.ids) else set()
    decision = _cell(raw, column_for(columns, None, "decision"), record.get("decision")) or None  # "": not labelled
    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"decision {str(decision)[:30]!r} is not one of {list(DECISIONS)}")
    return frozenset(gold), decision


def _cell(raw: dict, column: str, fallback: Any = None) -> Any:
    value = raw.get(column)
    return fallback if value is None else value


def parse_violations(value: Any, policy: Policy) -> list[str]:
    """`policy`'s ids from a list, a JSON list in text, or text with labels separated by , ; | or spaces; a label
    in the policy file's `label_map` becomes the id it maps to (or nothing, where it maps to null).

    Raises:
        ValueError: a label that is neither one of the policy's ids nor in its label map.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = parse_json(value, ReadLimits())  # the row reader's depth limit, not a RecursionError
        except ValueError:
            raise ValueError("violations hold text that looks like a JSON list but does not parse") from None
    ids = [str(v).strip() for v in value] if isinstance(value, list) else re.split(r"[,;|\s]+", str(value).strip())
    ids = [i for i in ids if i and i.lower() not in {"none", "clean", "[]"}]
    mapped = policy.map_labels(ids)
    if mapped is None:
        unknown = sorted(i for i in ids if policy.map_labels([i]) is None)
        raise ValueError(f"unknown policy id {unknown[0]!r:.40} in violations (not an id or label_map entry of the policy file)")
    return sorted(mapped, key=policy.ids.index)


def parse_flag(value: Any, policy_ids: tuple[str, ...] = ()) -> bool:
    """A binary label: true/false, 1/0, yes/no (and a few synonyms), or one of `policy_ids` for true.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    word = str(value).strip().lower()
    if word in TRUE_WORDS or word in policy_ids:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"label {str(value)[:30]!r} is not a yes/no value")


def _split_of(raw: dict, columns: ColumnMap, default: str) -> str:
    split = raw.get(column_for(columns, None, "split"))
    if split in (None, ""):
        return default
    if split not in SPLITS:
        raise ValueError(f"split {str(split)[:20]!r} is not one of {list(SPLITS)}")
    return split


def _first_reasons(skipped: Counter) -> str:
    if not skipped:
        return "the file has no rows"
    return "rows skipped: " + "; ".join(f"{n} x {reason}" for reason, n in skipped.most_common(3))


def skipped_note(labelled: LabelledFile) -> str | None:
    """One line on the rows that were left out, or None when every row was read."""
    total = sum(labelled.skipped.values())
    return f"{labelled.name}: {total} rows without usable gold or item left out ({_first_reasons(labelled.skipped)})" if total else None
