"""Read JSONL, CSV and Parquet dumps as streams of typed items.

A bad row never stops the stream: it becomes a `RowError` with its line number and reason.
Only a file that cannot be read at all (missing, empty, binary, wrong format) raises
`InputError`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError, InputError

# Field types: "text" (a string), "number" (a finite float), "mapping" (str -> scalar),
# "messages" (chat lines: {"user", "text"}), "list" (a list of strings).
COMMON_FIELDS = {"region": "text", "language": "text"}
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
FORMATS = ("jsonl", "csv", "parquet")


def item_field_names(kind: str) -> set[str]:
    """Every field an item of this kind takes, `id` and `kind` included."""
    return {"id", "kind", *COMMON_FIELDS, *KIND_FIELDS[kind]}


@dataclass(frozen=True)
class ReadLimits:
    """Size limits that turn oversized rows into error records."""

    max_row_bytes: int = field(default=1_000_000, metadata={"help": "Largest raw row, in bytes."})
    max_text_chars: int = field(
        default=20_000, metadata={"help": "Largest total item text (all text fields), in characters."}
    )
    max_id_chars: int = field(default=256, metadata={"help": "Longest item id."})
    max_depth: int = field(default=32, metadata={"help": "Deepest nesting of a row's JSON values (objects in lists in objects...)."})

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ReadLimits.{f.name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Item:
    """One thing to moderate: a listing, merchant profile, creator video or live-chat window.

    `fields` holds the kind's typed fields (see KIND_FIELDS) that are present, in schema order.
    """

    id: str
    kind: str
    fields: dict[str, Any]

    @property
    def region(self) -> str | None:
        return self.fields.get("region")

    @property
    def language(self) -> str | None:
        return self.fields.get("language")

    def content(self) -> dict[str, Any]:
        """What the model sees: kind and fields, without the id (so equal content, equal prompt)."""
        return {"kind": self.kind, **self.fields}

    @cached_property
    def content_sha(self) -> str:
        blob = json.dumps(self.content(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def text(self) -> str:
        """All human-written text of the item, the haystack that evidence quotes must come from."""
        return "\n".join(_strings(self.fields))


@dataclass(frozen=True)
class RowError:
    """A row that could not become an item."""

    line: int
    id: str | None
    reason: str


Row = tuple[int, "Item | RowError"]


def _text_size(fields: Mapping[str, Any]) -> int:
    """Characters the item puts in a prompt: its text and numbers, and the names of its attributes."""
    keys = sum(len(k) for v in fields.values() if isinstance(v, Mapping) for k in v)
    return keys + sum(len(s) for s in _strings(fields))


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0), counted level by
    level without recursion, and given up past `limit` (limit + 1 is returned then)."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, (Mapping, list))]
        if not containers:
            break
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, Mapping) else c)]
    return depth


def parse_json(text: str | bytes, limits: ReadLimits) -> Any:
    """json.loads with the depth limit: a hostile value (thousands of nested brackets in a few KB)
    is a ValueError with a reason, never a RecursionError.

    Raises:
        ValueError: not JSON (json.JSONDecodeError), an integer of too many digits, or nested
            deeper than `limits.max_depth`.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than the JSON parser goes, over the {limits.max_depth}-level limit") from None
    if nesting_depth(value, limits.max_depth) > limits.max_depth:
        raise ValueError(f"nested more than {limits.max_depth} levels deep, over the {limits.max_depth}-level limit")
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif value is not None:
        yield str(value)


def parse_column_map(spec: str | None) -> dict[str, str]:
    """Parse `field=column,field=column` or a JSON/YAML file of {field: column}."""
    if not spec:
        return {}
    path = Path(spec)
    if path.suffix in {".json", ".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"column map file not found: {spec}")
        import yaml

        mapping = yaml.safe_load(path.read_text())
        if not isinstance(mapping, dict):
            raise ConfigError(f"column map file {spec} must hold a mapping of field: column")
    else:
        mapping = {}
        for pair in spec.split(","):
            name, sep, column = pair.partition("=")
            if not sep or not name.strip() or not column.strip():
                raise ConfigError(f"bad column mapping {pair!r}: expected field=column")
            mapping[name.strip()] = column.strip()
    known = {"id", "kind", *COMMON_FIELDS, *(f for fs in KIND_FIELDS.values() for f in fs)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"column map names unknown fields {unknown}; known fields: {sorted(known)}")
    return {str(k): str(v) for k, v in mapping.items()}


def build_item(
    raw: Mapping[str, Any], line: int, *, columns: Mapping[str, str], default_kind: str, limits: ReadLimits
) -> Item | RowError:
    """Turn one raw row into an Item, or a RowError saying exactly what is wrong."""

    def get(name: str) -> Any:
        value = raw.get(columns.get(name, name))
        return None if value == "" else value

    item_id = get("id")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id.strip():
        return RowError(line, None, "row has no id" if item_id is None else f"id must be a string, got {item_id!r:.80}")
    item_id = item_id.strip()
    if len(item_id) > limits.max_id_chars:
        return RowError(line, None, f"id is {len(item_id)} characters, over the {limits.max_id_chars} limit")
    kind = get("kind") or default_kind
    if kind not in KIND_FIELDS:
        return RowError(line, item_id, f"unknown kind {kind!r:.40}; expected one of {list(KINDS)}")
    fields: dict[str, Any] = {}
    for name, ftype in {**KIND_FIELDS[kind], **COMMON_FIELDS}.items():
        value = get(name)
        if value is None:
            continue
        try:
            fields[name] = _coerce(value, ftype, limits)
        except ValueError as exc:
            return RowError(line, item_id, f"field {name!r}: {exc}")
    text_chars = _text_size(fields)
    if not any(_strings({k: v for k, v in fields.items() if KIND_FIELDS[kind].get(k, "number") != "number"})):
        return RowError(line, item_id, f"row has no text in any {kind} field")
    if text_chars > limits.max_text_chars:
        return RowError(line, item_id, f"text is {text_chars} characters, over the {limits.max_text_chars} limit")
    if any(_has_surrogates(s) for s in _strings(fields)):  # undecodable bytes in a CSV cell
        return RowError(line, item_id, "text is not valid UTF-8")
    return Item(id=item_id, kind=kind, fields=fields)


def read_row(raw: Mapping[str, Any], line: int, **opts) -> Item | RowError:
    """build_item that never raises: whatever goes wrong with one row becomes that row's RowError,
    so a reader never dies on one row (and a rerun never dies on it again)."""
    try:
        return build_item(raw, line, **opts)
    except Exception as exc:  # a row must not stop the stream; its reason says what broke
        return RowError(line, None, f"cannot read the row: {type(exc).__name__}: {str(exc)[:200]}")


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _coerce(value: Any, ftype: str, limits: ReadLimits) -> Any:
    if ftype == "text":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {type(value).__name__}")
        return value
    if ftype == "number":
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"expected a number, got {str(value)[:40]!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r:.40}")
        return number
    value = _maybe_json(value, limits)
    if ftype == "mapping":
        if not isinstance(value, Mapping) or not all(
            isinstance(v, (str, int, float, bool)) or v is None for v in value.values()
        ):
            raise ValueError("expected an object of text or number values")
        return {str(k): v for k, v in value.items() if v is not None}
    if ftype == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of strings")
        return value
    if ftype == "messages":
        return _coerce_messages(value)
    raise AssertionError(f"unknown field type {ftype}")


def _maybe_json(value: Any, limits: ReadLimits) -> Any:
    """CSV cells hold nested fields as JSON text."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return parse_json(value, limits)
        except json.JSONDecodeError:
            raise ValueError("holds text that looks like JSON but does not parse") from None
    return value


def _coerce_messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of chat messages")
    messages = []
    for entry in value:
        if isinstance(entry, str):
            entry = {"user": "", "text": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("text"), str):
            raise ValueError('each chat message must be a string or {"user": ..., "text": ...}')
        messages.append({"user": str(entry.get("user") or ""), "text": entry["text"]})
    return messages


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    by_ext = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    if ext not in by_ext:
        raise InputError(f"cannot tell the format of {path.name}: use a .jsonl, .csv or .parquet name, or --format")
    return by_ext[ext]


def read_items(
    path: str | Path,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    default_kind: str = "listing",
    limits: ReadLimits | None = None,
) -> Iterator[Row]:
    """Stream (line, Item | RowError) pairs from a dump, never holding the whole file.

    Args:
        path: a .jsonl, .csv or .parquet file (.jsonl.gz and .csv.gz too).
        fmt: force a format instead of guessing from the file name.
        columns: canonical field name -> column name in the file.
        default_kind: the kind of rows that have no `kind` column.
        limits: size limits; rows over them become RowErrors.

    Raises:
        InputError: the file is missing, empty, binary or not in the format.
    """
    path = Path(path)
    limits = limits or ReadLimits()
    if default_kind not in KIND_FIELDS:
        raise ConfigError(f"unknown kind {default_kind!r}; expected one of {list(KINDS)}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"input file is empty: {path}")
    opts = {"columns": columns or {}, "default_kind": default_kind, "limits": limits}
    if fmt == "parquet":
        yield from read_stream(path, fmt, name=str(path), **opts)
        return
    _refuse_binary(path)
    with _open_binary(path) as fh:
        yield from read_stream(fh, fmt, name=str(path), **opts)


def read_stream(source, fmt: str, *, name: str, **opts) -> Iterator[Row]:
    """Rows from one open, decompressed binary stream: the parser behind `read_items`, and
    behind the Ray engine's readers (moderation.distributed), so both see the same rows.

    Args:
        source: a binary file object (a path too, for Parquet).
        fmt: jsonl, csv or parquet.
        name: the file's name, for error messages.
        **opts: columns, default_kind and limits, as for `read_items`.
    """
    if fmt == "parquet":
        return _read_parquet(source, name, **opts)
    return (_read_jsonl if fmt == "jsonl" else _read_csv)(source, name, **opts)


def no_items_hint(path: str | Path, fmt: str, reasons: Mapping[str, int]) -> str | None:
    """A likely cause when no row of a file became an item: from its first bytes and the error reasons."""
    path = Path(path)
    if fmt == "jsonl" and path.is_file():
        try:
            with _open_binary(path) as fh:
                head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        except (OSError, EOFError):
            head = b""
        if head.startswith(b"["):
            return (f"{path.name} looks like a JSON array, not JSONL (one object per line): convert it with "
                    f"`jq -c '.[]' {path} > {path.with_suffix('.lines.jsonl')}`")
    if reasons and next(iter(reasons)).startswith("row has no id"):
        return "no row has an id: name the id column with --columns id=COLUMN"
    return None


def looks_binary(head: bytes) -> bool:
    """A NUL byte in the first bytes: not JSONL or CSV text."""
    return b"\x00" in head[:65536]


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _refuse_binary(path: Path) -> None:
    with _open_binary(path) as fh:
        try:
            head = fh.read(65536)
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
    if looks_binary(head):
        raise InputError(f"{path} looks like a binary file, not JSONL or CSV text")


def _read_jsonl(fh, name: str, **opts) -> Iterator[Row]:
    records = _jsonl_records(fh, opts["limits"])
    if opts["columns"]:
        records = _check_jsonl_columns(records, opts["columns"], name)
    for line_no, record in records:
        yield line_no, record if isinstance(record, RowError) else read_row(record, line_no, **opts)


def _jsonl_records(fh, limits: ReadLimits) -> Iterator[tuple[int, dict | RowError]]:
    """(line, parsed object or RowError) per non-blank line."""
    for line_no, raw in enumerate(fh, start=1):
        if len(raw) > limits.max_row_bytes:
            yield line_no, RowError(line_no, None, f"row is {len(raw)} bytes, over the {limits.max_row_bytes}-byte limit")
            continue
        if not raw.strip():
            continue
        try:
            record = parse_json(raw.decode("utf-8"), limits)
        except UnicodeDecodeError:
            yield line_no, RowError(line_no, None, "row is not valid UTF-8")
            continue
        except json.JSONDecodeError as exc:
            yield line_no, RowError(line_no, None, f"row is not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        except ValueError as exc:  # too deep, or an integer of too many digits
            yield line_no, RowError(line_no, None, f"row cannot be read: {exc}")
            continue
        if not isinstance(record, dict):
            yield line_no, RowError(line_no, None, f"row is a JSON {type(record).__name__}, not an object")
            continue
        yield line_no, record


COLUMN_LOOKAHEAD = 100  # JSONL rows read ahead to check that every --columns column exists


def _check_jsonl_columns(records, columns: Mapping[str, str], name: str):
    """The records unchanged, once a mapped column has been seen in one of the first object rows.

    JSONL has no header, so a mistyped column (`--columns title=nme`) would otherwise read as an
    absent field on every row.
    """
    ahead, seen, objects = [], set(), 0
    for line_no, record in records:
        ahead.append((line_no, record))
        if isinstance(record, dict):
            seen.update(record)
            objects += 1
            if objects >= COLUMN_LOOKAHEAD:
                break
    if objects:
        _refuse_missing_columns(columns, seen, name, f"none of the first {objects} rows has")
    yield from ahead
    yield from records


def _refuse_missing_columns(columns: Mapping[str, str], present, name: str, where: str) -> None:
    missing = {field: column for field, column in columns.items() if column not in present}
    if missing:
        named = ", ".join(f"{field}={column!r}" for field, column in missing.items())
        raise InputError(f"{name}: --columns {named} names a column that {where}; "
                         f"its columns: {sorted(map(str, present))[:40]}")


def _read_csv(raw_fh, name: str, **opts) -> Iterator[Row]:
    limits: ReadLimits = opts["limits"]
    csv.field_size_limit(limits.max_row_bytes)
    text = io.TextIOWrapper(raw_fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"{name}: cannot read the CSV header: {exc}") from None
    _refuse_missing_columns(opts["columns"], set(header), name, "the header does not have")
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last_line = reader.line_num
            yield start, RowError(start, None, f"broken CSV row (lines {start}-{last_line}): {exc}")
            continue
        last_line = reader.line_num
        if not cells:
            continue
        if len(cells) != len(header):
            span = f"line {start}" if last_line == start else f"lines {start}-{last_line}"
            yield start, RowError(
                start, None, f"{span}: expected {len(header)} fields, got {len(cells)} (broken quoting?)"
            )
            continue
        yield start, read_row(dict(zip(header, cells)), start, **opts)


def _read_parquet(source, name: str, **opts) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{name} is not a readable Parquet file: {exc}") from None
    _refuse_missing_columns(opts["columns"], set(parquet.schema_arrow.names), name, "the schema does not have")
    row_no = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            row_no += 1
            yield row_no, read_row(record, row_no, **opts)
