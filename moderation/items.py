"""Read JSONL, CSV and Parquet dumps as streams of typed items.

A bad row never stops the stream: it becomes a `RowError` with its line number and reason (a
row holding a NUL byte or character too, wherever it is in the file). Only a file that cannot be
read at all (missing, empty, binary, wrong format) raises `InputError`; `binary_reason` says
what makes a JSONL or CSV file binary rather than text with a few bad bytes. A UTF-8 byte-order
mark at the start of a JSONL line is stripped and counted in the log.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from moderation.columns import (
    COMMON_FIELDS,
    KIND_FIELDS,
    KINDS,
    column_for,
    field_sources,
    item_field_names,  # noqa: F401  (callers import it from here)
    parse_column_map,  # noqa: F401  (callers import it from here)
    single_columns,
    unread_text_columns,
)
from moderation.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet")
BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark that Windows tools and some exporters write first
HEAD_BYTES = 65536  # how much of a JSONL or CSV file decides whether it is text


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
    `ignored_columns` names the row's columns that held text no field reads (not moderated).
    """

    id: str
    kind: str
    fields: dict[str, Any]
    ignored_columns: tuple[str, ...] = field(default=(), compare=False)

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

    def record(self) -> dict[str, Any]:
        """The item as one JSON object, {"id", "kind", **fields}: how a case check stores it and how
        Ray ships it. `Item.from_record` reads it back."""
        return {"id": self.id, **self.content()}

    @classmethod
    def from_record(cls, record: dict[str, Any], ignored_columns: tuple[str, ...] = ()) -> Item:
        fields = {k: v for k, v in record.items() if k not in ("id", "kind")}
        return cls(id=record["id"], kind=record["kind"], fields=fields, ignored_columns=tuple(ignored_columns))


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


def build_item(
    raw: Mapping[str, Any], line: int, *, columns: Mapping[str, Any], default_kind: str, limits: ReadLimits,
    strict_columns: bool = False,
) -> Item | RowError:
    """Turn one raw row into an Item, or a RowError saying exactly what is wrong.

    Args:
        raw: the row, column -> value.
        line: its line (or row) number, for error records.
        columns: a column map (moderation.columns.parse_column_map).
        default_kind: the kind of a row without a kind column.
        limits: size limits.
        strict_columns: a row with text in a column no field reads is an error (else the item
            names those columns in `ignored_columns`).
    """
    kind = _value(raw, column_for(columns, None, "kind")) or default_kind
    known_kind = kind if isinstance(kind, str) and kind in KIND_FIELDS else None
    item_id = _row_id(_value(raw, column_for(columns, known_kind, "id")), line, limits)
    if isinstance(item_id, RowError):
        return item_id
    if known_kind is None:
        return RowError(line, item_id, f"unknown kind {kind!r:.40}; expected one of {list(KINDS)}")
    nul = _column_with_nul(raw)
    if nul is not None:
        return RowError(line, item_id, f"column {nul!r:.40} holds a NUL character: not text")
    sources = field_sources(columns, kind)
    fields: dict[str, Any] = {}
    for name, ftype in {**KIND_FIELDS[kind], **COMMON_FIELDS}.items():
        try:
            value = _field_value(raw, name, ftype, sources[name], limits)
        except ValueError as exc:
            return RowError(line, item_id, str(exc))
        if value is not None:
            fields[name] = value
    problem = _content_problem(fields, kind, limits)
    if problem:
        return RowError(line, item_id, problem)
    ignored = unread_text_columns(raw, columns, kind, sources)
    if ignored and strict_columns:
        return RowError(line, item_id, f"text in columns no {kind} field reads: {list(ignored)} (--strict-columns); "
                                       f"map them with --columns {kind}.FIELD=COLUMN or list them with --columns {kind}.ignore=COLUMN")
    return Item(id=item_id, kind=kind, fields=fields, ignored_columns=ignored)


def _column_with_nul(raw: Mapping[str, Any]) -> str | None:
    """The first column whose value (or a name or value inside it) holds a NUL character: such a row
    is an error record, whichever column it is in, read or not."""
    for column, value in raw.items():
        if "\x00" in str(column) or any("\x00" in s for s in _strings(value)) or (
                isinstance(value, Mapping) and any("\x00" in str(k) for k in value)):
            return str(column).replace("\x00", "\\0")
    return None


def _value(raw: Mapping[str, Any], column: str) -> Any:
    value = raw.get(column)
    return None if value == "" else value


def _row_id(item_id: Any, line: int, limits: ReadLimits) -> str | RowError:
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id.strip():
        return RowError(line, None, "row has no id" if item_id is None else f"id must be a string, got {item_id!r:.80}")
    item_id = item_id.strip()
    if "\x00" in item_id:
        return RowError(line, None, "id holds a NUL character: not text")
    if len(item_id) > limits.max_id_chars:
        return RowError(line, None, f"id is {len(item_id)} characters, over the {limits.max_id_chars} limit")
    return item_id


def _field_value(raw: Mapping[str, Any], name: str, ftype: str, sources: list[str], limits: ReadLimits) -> Any:
    """One field's value from its columns: its own column, then the generic columns that fill it
    (joined: text by blank lines, chat lines one after another). None when all are empty.

    Raises:
        ValueError: a value of the wrong type, with the field (and column, if another) named.
    """
    values = []
    for n, column in enumerate(sources):
        value = _value(raw, column)
        if value is None:
            continue
        try:
            values.append(_coerce(value, ftype, limits, generic=n > 0))
        except ValueError as exc:
            where = f"field {name!r}" if column == name else f"field {name!r} (column {column!r})"
            raise ValueError(f"{where}: {exc}") from None
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if ftype == "messages":
        return [message for chat in values for message in chat]
    return "\n\n".join(values)


def _content_problem(fields: Mapping[str, Any], kind: str, limits: ReadLimits) -> str | None:
    if not any(_strings({k: v for k, v in fields.items() if KIND_FIELDS[kind].get(k, "number") != "number"})):
        return f"row has no text in any {kind} field (nor in a generic title, description, text, body or content column)"
    text_chars = _text_size(fields)
    if text_chars > limits.max_text_chars:
        return f"text is {text_chars} characters, over the {limits.max_text_chars} limit"
    if any(_has_surrogates(s) for s in _strings(fields)):  # undecodable bytes in a CSV cell
        return "text is not valid UTF-8"
    return None


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


def _coerce(value: Any, ftype: str, limits: ReadLimits, generic: bool = False) -> Any:
    """A raw value as a field of type `ftype`. `generic`: the value comes from a generic column
    (text, body...), whose text fills a chat as one message per line and is never parsed as JSON."""
    if ftype == "messages" and generic and isinstance(value, str):
        return _chat_lines(value)
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


def _chat_lines(text: str) -> list[dict[str, str]]:
    """Text of several lines as chat messages, one per non-blank line (the speaker, if any, stays in the text)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("expected chat lines, got blank text")
    return [{"user": "", "text": line} for line in lines]


def _coerce_messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str) and value.strip():  # plain text, not JSON: one message per line
        return _chat_lines(value)
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
    columns: Mapping[str, Any] | None = None,
    default_kind: str = "listing",
    limits: ReadLimits | None = None,
    strict_columns: bool = False,
) -> Iterator[Row]:
    """Stream (line, Item | RowError) pairs from a dump, never holding the whole file.

    Args:
        path: a .jsonl, .csv or .parquet file (.jsonl.gz and .csv.gz too).
        fmt: force a format instead of guessing from the file name.
        columns: a column map (moderation.columns.parse_column_map): field or kind.field -> column.
        default_kind: the kind of rows that have no `kind` column.
        limits: size limits; rows over them become RowErrors.
        strict_columns: a row with text in a column no field reads becomes a RowError.

    Raises:
        InputError: the file is missing, empty, binary or not in the format.
    """
    limits = limits or ReadLimits()
    opts = {"columns": columns or {}, "default_kind": default_kind, "limits": limits, "strict_columns": strict_columns}
    for line, record in read_records(path, fmt=fmt, columns=opts["columns"], default_kind=default_kind, limits=limits):
        yield line, record if isinstance(record, RowError) else read_row(record, line, **opts)


def read_records(path: str | Path, *, fmt: str | None = None, columns: Mapping[str, Any] | None = None,
                 default_kind: str = "listing", limits: ReadLimits | None = None) -> Iterator[tuple[int, dict | RowError]]:
    """Stream (line, raw row or RowError) pairs: the rows of `read_items` before they become
    items, for readers that need other columns too (the gold labels of `eval --labels`).

    Raises:
        InputError: the file is missing, empty, binary or not in the format, or a column the
            map names is not in it.
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
        yield from raw_stream(path, fmt, name=str(path), **opts)
        return
    _refuse_binary(path)
    with _open_binary(path) as fh:
        yield from raw_stream(fh, fmt, name=str(path), **opts)


def read_stream(source, fmt: str, *, name: str, **opts) -> Iterator[Row]:
    """Rows from one open, decompressed binary stream: the parser behind `read_items`, and
    behind the Ray engine's readers (moderation.distributed), so both see the same rows.

    Args:
        source: a binary file object (a path too, for Parquet).
        fmt: jsonl, csv or parquet.
        name: the file's name, for error messages.
        **opts: columns, default_kind, limits and strict_columns, as for `read_items`.
    """
    raw_opts = {k: opts[k] for k in ("columns", "default_kind", "limits")}
    for line, record in raw_stream(source, fmt, name=name, **raw_opts):
        yield line, record if isinstance(record, RowError) else read_row(record, line, **opts)


def raw_stream(source, fmt: str, *, name: str, columns: Mapping[str, Any], default_kind: str,
               limits: ReadLimits) -> Iterator[tuple[int, dict | RowError]]:
    """(line, raw row or RowError) from one open stream; a row that cannot be parsed at all is a RowError."""
    if fmt == "parquet":
        return _read_parquet(source, name, columns=columns, limits=limits)
    if fmt == "jsonl":
        return _read_jsonl(source, name, columns=columns, default_kind=default_kind, limits=limits)
    return _read_csv(source, name, columns=columns, limits=limits)


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


# The first bytes of the binary files most often handed over as JSONL or CSV, and what they are.
SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed data: give it a .gz name (d.jsonl.gz, d.csv.gz)"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook?): export it as CSV"),
    (b"PAR1", "a Parquet file: give it a .parquet name or pass --format parquet"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xff\xfe", "UTF-16 text: convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (b"\xfe\xff", "UTF-16 text: convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
)
# Bytes no text has: C0 controls but tab, line feed, vertical tab, form feed, carriage return and escape.
CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def binary_reason(head: bytes) -> str | None:
    """Why a JSONL or CSV file whose first bytes are `head` is binary, or None when it is text.

    It is binary when it holds nothing but NUL bytes (and blanks), when it starts with the signature
    of a known binary format (gzip, ZIP, Parquet, SQLite, UTF-16, PDF, images, xz, zstd), or when
    at least two of the non-blank lines of its
    first 64 KB, and more than half of them, hold a NUL or another control byte that text does not
    have. A text file with a few bad rows (a NUL in one row, a block of zeros a crash left) is
    text: each of those rows becomes an error record. Bytes that are not UTF-8 do not count:
    a Latin-1 file is text whose rows with accents are error records.
    """
    head = head[:HEAD_BYTES]
    if not head.strip(b"\x00 \t\r\n"):
        return "it holds nothing but NUL bytes"
    for signature, what in SIGNATURES:
        if head.startswith(signature):
            return f"it is {what}"
    lines = [line for line in head.split(b"\n") if line.strip()]
    control = sum(1 for line in lines if CONTROL_BYTE.search(line))
    if control >= 2 and 2 * control > len(lines):
        return (f"{control} of the {len(lines)} lines in its first {HEAD_BYTES // 1024} KB hold NUL or other "
                "control bytes that text does not have")
    return None


def refuse_binary(head: bytes, name: str) -> None:
    """Stop at a JSONL or CSV file that is not text (see `binary_reason`).

    Raises:
        InputError: naming the file and why it is taken for binary.
    """
    reason = binary_reason(head)
    if reason:
        raise InputError(f"{name} looks like a binary file, not JSONL or CSV text: {reason}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _refuse_binary(path: Path) -> None:
    with _open_binary(path) as fh:
        try:
            head = fh.read(HEAD_BYTES)
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
    refuse_binary(head, str(path))


def _read_jsonl(fh, name: str, *, columns: Mapping[str, Any], default_kind: str, limits: ReadLimits):
    records = _jsonl_records(fh, limits, name)
    if single_columns(columns):
        records = _check_jsonl_columns(records, columns, name, default_kind)
    return records


def _jsonl_records(fh, limits: ReadLimits, name: str = "input") -> Iterator[tuple[int, dict | RowError]]:
    """(line, parsed object or RowError) per non-blank line; a byte-order mark starting a line is
    stripped (first lines, or each file's first line in files joined with `cat`) and logged."""
    marked = []
    for line_no, raw in enumerate(fh, start=1):
        if len(raw) > limits.max_row_bytes:
            yield line_no, RowError(line_no, None, f"row is {len(raw)} bytes, over the {limits.max_row_bytes}-byte limit")
            continue
        if raw.startswith(BOM):
            raw = raw[len(BOM):]
            marked.append(line_no)
        if not raw.strip():
            continue
        if b"\x00" in raw:
            yield line_no, RowError(line_no, None, f"row holds a NUL byte (byte {raw.index(0) + 1}): not text")
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
    if marked:
        _log_byte_order_marks(name, marked)


def _log_byte_order_marks(name: str, lines: list[int]) -> None:
    """One log line for the marks stripped: INFO for the usual one on line 1, WARNING for marks
    further down (files joined into one, each with its own mark)."""
    level = logging.INFO if lines == [1] else logging.WARNING
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    plural = "" if len(lines) == 1 else "s"
    logger.log(level, "%s: stripped a UTF-8 byte-order mark from %d line%s (line%s %s)", name, len(lines), plural,
               plural, shown)


COLUMN_LOOKAHEAD = 100  # JSONL rows read ahead to check that every --columns column exists


def _check_jsonl_columns(records, columns: Mapping[str, Any], name: str, default_kind: str):
    """The records unchanged, once a mapped column has been seen in one of the first object rows
    (a kind's own mapping: in the first rows of that kind, when there are some).

    JSONL has no header, so a mistyped column (`--columns title=nme`) would otherwise read as an
    absent field on every row.
    """
    ahead, seen, kinds, objects = [], set(), set(), 0
    for line_no, record in records:
        ahead.append((line_no, record))
        if isinstance(record, dict):
            seen.update(record)
            kind = record.get(column_for(columns, None, "kind")) or default_kind
            kinds.add(kind if isinstance(kind, str) else default_kind)
            objects += 1
            if objects >= COLUMN_LOOKAHEAD:
                break
    if objects:
        # A mixed file may hold no merchant in its first rows: a merchant mapping is checked only if one was seen.
        checked = {k: c for k, c in single_columns(columns).items() if k.rpartition(".")[0] in kinds | {""}}
        _refuse_missing_columns(checked, seen, name, f"none of the first {objects} rows has")
    yield from ahead
    yield from records


def _refuse_missing_columns(columns: Mapping[str, Any], present, name: str, where: str) -> None:
    missing = {field: column for field, column in single_columns(columns).items() if column not in present}
    if missing:
        named = ", ".join(f"{field}={column!r}" for field, column in missing.items())
        raise InputError(f"{name}: --columns {named} names a column that {where}; "
                         f"its columns: {sorted(map(str, present))[:40]}")


def _read_csv(raw_fh, name: str, *, columns: Mapping[str, Any], limits: ReadLimits) -> Iterator[tuple[int, dict | RowError]]:
    csv.field_size_limit(limits.max_row_bytes)
    text = io.TextIOWrapper(raw_fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"{name}: cannot read the CSV header: {exc}") from None
    _refuse_missing_columns(columns, set(header), name, "the header does not have")
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
        yield start, dict(zip(header, cells))


def _read_parquet(source, name: str, *, columns: Mapping[str, Any], limits: ReadLimits) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{name} is not a readable Parquet file: {exc}") from None
    _refuse_missing_columns(columns, set(parquet.schema_arrow.names), name, "the schema does not have")
    row_no = 0
    for batch in parquet.iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            row_no += 1
            yield row_no, record
