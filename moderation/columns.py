"""Which column of a dump fills which item field: mappings per kind, generic text fields, and the
columns whose text no field reads.

A platform's export rarely uses our field names, and a mixed export uses one set of names for
every kind. So every kind also reads the generic text columns `title`, `description`, `text`,
`body` and `content` (GENERIC_TARGETS says into which of its fields), and a column map may be
given per kind (`merchant.name=shop_title`). Text in a column that no field reads is never dropped
silently: the item names it (`Item.ignored_columns`), the run summary counts it, and
`--strict-columns` makes such a row an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError

COMMON_FIELDS = {"region": "text", "language": "text"}
# Field types: "text" (a string), "number" (a finite float), "mapping" (str -> scalar),
# "messages" (chat lines: {"user", "text"}), "list" (a list of strings).
KIND_FIELDS: dict[str, dict[str, str]] = {
    "listing": {
        "title": "text",
        "description": "text",
        "price": "number",
        "currency": "text",
        "category": "text",
        "seller": "text",
        "attributes": "mapping",
    },
    "merchant": {
        "name": "text",
        "about": "text",
        "business_type": "text",
        "licence": "text",
        "contact": "text",
        "website": "text",
        "categories": "list",
    },
    "creator_video": {"creator": "text", "caption": "text", "transcript": "text"},
    "live_chat": {"channel": "text", "messages": "messages"},
}
KINDS = tuple(KIND_FIELDS)
GENERIC_FIELDS = ("title", "description", "text", "body", "content")
# The field of each kind that a generic column fills. Several generic columns that fill one field
# are joined after the field's own column, so none of their text is lost.
GENERIC_TARGETS: dict[str, dict[str, str]] = {
    "listing": {"title": "title", "description": "description", "text": "description", "body": "description",
                "content": "description"},
    "merchant": {"title": "name", "description": "about", "text": "about", "body": "about", "content": "about"},
    "creator_video": {"title": "caption", "description": "caption", "text": "transcript", "body": "transcript",
                      "content": "transcript"},
    "live_chat": {"title": "channel", "description": "messages", "text": "messages", "body": "messages",
                  "content": "messages"},
}
IGNORE = "ignore"  # a column map key: columns read by no field on purpose (not reported, never an error)
ColumnMap = dict[str, Any]  # "field" or "kind.field" -> column; "ignore" or "kind.ignore" -> [column, ...]


def item_field_names(kind: str) -> set[str]:
    """Every field name an item of this kind takes, `id`, `kind` and the generic text fields included."""
    return {"id", "kind", *COMMON_FIELDS, *KIND_FIELDS[kind], *GENERIC_FIELDS}


def parse_column_map(spec: str | None, extra_keys: tuple[str, ...] = ()) -> ColumnMap:
    """Parse `field=column,kind.field=column,...` or a JSON/YAML file.

    A file holds `{field: column}` for every kind and/or one section per kind
    (`merchant: {name: shop_title}`); `ignore` (top level or in a section) lists columns read on
    purpose by no field.

    Args:
        spec: the pairs, or a .json/.yaml/.yml file name.
        extra_keys: names besides item fields that this reader maps to columns, for every kind
            (the gold columns of `eval --labels`).

    Raises:
        ConfigError: a bad pair, a missing or malformed file, an unknown kind or field.
    """
    if not spec:
        return {}
    mapping = _read_map_file(spec) if Path(spec).suffix in {".json", ".yaml", ".yml"} else _read_map_pairs(spec)
    for key, value in mapping.items():
        if key not in extra_keys:
            _check_key(key, extra_keys)
        if key.rpartition(".")[2] == IGNORE:
            if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
                raise ConfigError(f"column map: {key} must list column names, got {value!r:.80}")
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"column map: {key} must name one column, got {value!r:.80}")
    return mapping


def _read_map_pairs(spec: str) -> ColumnMap:
    mapping: ColumnMap = {}
    for pair in spec.split(","):
        name, sep, column = (s.strip() for s in pair.partition("="))
        if not sep or not name or not column:
            raise ConfigError(f"bad column mapping {pair!r}: expected field=column or kind.field=column")
        if name.rpartition(".")[2] == IGNORE:
            mapping.setdefault(name, []).append(column)
        elif name in mapping:
            raise ConfigError(f"column mapping names {name} twice ({mapping[name]!r} and {column!r})")
        else:
            mapping[name] = column
    return mapping


def _read_map_file(spec: str) -> ColumnMap:
    import yaml

    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"column map file not found: {spec}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"column map file {spec} must hold a mapping of field: column (or kind: {{field: column}})")
    mapping: ColumnMap = {}
    for key, value in data.items():
        key = str(key)
        if key in KINDS:
            if not isinstance(value, dict):
                raise ConfigError(f"column map file {spec}: section {key} must be a mapping of field: column")
            mapping.update({f"{key}.{field}": _scalar_or_list(v) for field, v in value.items()})
        else:
            mapping[key] = _scalar_or_list(value)
    return mapping


def _scalar_or_list(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value) if isinstance(value, (str, int)) else value


def _check_key(key: str, extra_keys: tuple[str, ...] = ()) -> None:
    kind, dot, name = key.rpartition(".")
    if dot and kind not in KINDS:
        raise ConfigError(f"column map key {key!r}: unknown kind {kind!r}; expected one of {list(KINDS)}")
    if dot and name == "kind":
        raise ConfigError(f"column map key {key!r}: the kind column cannot depend on the kind; map it as kind=COLUMN")
    known = item_field_names(kind) if dot else {n for k in KINDS for n in item_field_names(k)}
    if name not in known | {IGNORE}:
        where = f"a {kind}" if dot else "any kind"
        also = f", and for every kind {list(extra_keys)}" if extra_keys else ""
        raise ConfigError(f"column map names unknown fields [{key!r}]; fields of {where}: {sorted(known | {IGNORE})}{also}")


def column_for(columns: Mapping[str, Any], kind: str | None, name: str) -> str:
    """The column that holds field `name` for items of `kind`: the kind's mapping, else the
    mapping for every kind, else the field's own name."""
    return (kind and columns.get(f"{kind}.{name}")) or columns.get(name) or name


def ignored_on_purpose(columns: Mapping[str, Any], kind: str) -> set[str]:
    return {*columns.get(IGNORE, ()), *columns.get(f"{kind}.{IGNORE}", ())}


def field_sources(columns: Mapping[str, Any], kind: str) -> dict[str, list[str]]:
    """For each field of `kind` (common fields included): the columns it reads, its own (or
    mapped) column first, then the generic columns that fill it. A column is read by one field only."""
    own = {name: column_for(columns, kind, name) for name in {**KIND_FIELDS[kind], **COMMON_FIELDS}}
    taken = {*own.values(), column_for(columns, kind, "id"), column_for(columns, None, "kind"),
             *ignored_on_purpose(columns, kind)}
    sources = {name: [column] for name, column in own.items()}
    for generic, target in GENERIC_TARGETS[kind].items():
        column = column_for(columns, kind, generic)
        if column not in taken:
            sources[target].append(column)
            taken.add(column)
    return sources


def has_text(value: Any) -> bool:
    """A value holds human text: a string with a letter in it, or a list or object holding one.
    (Numbers, dates and codes such as "2024-05-01" or "12.50" do not count.)"""
    if isinstance(value, str):
        return any(ch.isalpha() for ch in value)
    if isinstance(value, Mapping):
        return any(has_text(v) for v in value.values())
    if isinstance(value, list):
        return any(has_text(v) for v in value)
    return False


def unread_text_columns(raw: Mapping[str, Any], columns: Mapping[str, Any], kind: str,
                        sources: Mapping[str, list[str]]) -> tuple[str, ...]:
    """The columns of a row that hold text but that no field of `kind` reads (nor `ignore` lists)."""
    read = {c for cs in sources.values() for c in cs}
    read |= {column_for(columns, kind, "id"), column_for(columns, None, "kind"), *ignored_on_purpose(columns, kind)}
    return tuple(sorted(str(k) for k, v in raw.items() if k not in read and has_text(v)))


def single_columns(columns: Mapping[str, Any]) -> dict[str, str]:
    """{key: column} of the mapping's single columns (the `ignore` lists left out)."""
    return {key: value for key, value in columns.items() if key.rpartition(".")[2] != IGNORE}
