"""The run file (the output JSONL of `moderation run`, the journal of `moderation serve`): its
reader, its resumable writer, and the manifest beside it that says what made it.

Crash safety: each chunk's lines are written in one append, flushed and fsynced. A `kill -9`
can at worst leave a torn last line, which the next run cuts off before resuming; rows whose
lines are complete are skipped, so nothing is lost and nothing is written twice.

No stale verdicts: `OUT.manifest.json` records what made the file (the input's size and
SHA-256, the reading options, the model, adapter, prompt, policy, thresholds and scorer, and
the settings that change records). A resume whose made-by differs is refused with the
differences. On resume each row is also checked against its record: a row whose content changed
(or whose record another model made, in a file from before manifests) is moderated again, and
its new record takes the stale one's place when the file is closed.

The record itself is `RunRecord`: made by the batch runner (moderation.batch.output_record) for
`run`, its Ray actors and `serve`, written with `to_json`, read back with `from_json`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation import __version__
from moderation.errors import ConfigError, InputError
from moderation.items import Item, ReadLimits, RowError
from moderation.schema import SCHEMA_VERSION

logger = logging.getLogger(__name__)

# What a stored verdict depends on besides the content (the provenance's keys).
SOURCE_KEYS = ("model", "model_sha", "adapter", "adapter_sha", "backend", "prompt_sha", "policy_version", "policy_sha",
               "schema_id", "thresholds_sha", "scorer_sha", "rationale_chars", "rationale")
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1
RUN_ADVICE = "rerun with --restart to start it over (its records are deleted), or write to a new -o file"
STALE = "stale"  # the fingerprint of a record another model made: it never matches a row


class RowKeys:
    """The resume key of each row: its id, or `id@line` for a repeated id, `@line` for none.

    Input rows and output lines go through the same rules, so a rerun finds the same keys.
    """

    def __init__(self):
        self.first_line: dict[str, int] = {}

    def assign(self, item_id: str | None, line: int) -> tuple[str, int | None]:
        """Return (key, line of the first occurrence if this id is a repeat)."""
        if item_id is None:
            return f"@{line}", None
        first = self.first_line.setdefault(item_id, line)
        return (item_id, None) if first == line else (f"{item_id}@{line}", first)


def repair_tail(path: Path) -> int:
    """Cut a torn last line (from a crash mid-write). Returns the bytes removed."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = pos - step + newline + 1
                break
            pos -= step
        else:
            end = 0
        if end < size:
            fh.truncate(end)
        return size - end


@dataclass(frozen=True)
class RunRecord:
    """One line of a run file: an input row's verdict, or why it has none, and what made it.

    The fields are the line's keys, in the order they are written. A field left None is a key the
    line does not have, except `id` and `line`, which every line has (the id of a row without one is
    null): so `to_json` gives the line as it is written, and `from_json(to_json(r)) == r`.
    """

    schema_version: str | None = SCHEMA_VERSION
    id: str | None = None
    line: int | None = None  # the row's line (its row number in CSV and Parquet; serve counts requests' items)
    kind: str | None = None  # an item's kind; absent for a row that could not be read as an item
    content_sha: str | None = None  # the item's content hash, what the verdict caches and resume key on
    ignored_columns: list[str] | None = None  # columns with text that no field reads; absent when there are none
    verdict: dict[str, Any] | None = None  # the schema-valid verdict; absent on an error record
    scores: dict[str, Any] | None = None  # {violation, decisions, policies, ...} when the run scores
    flagged: list[str] | None = None  # policies at or above their thresholds, when scores meet thresholds
    error: dict[str, Any] | None = None  # {stage: input | model, reason, ...} instead of a verdict
    screen: dict[str, Any] | None = None  # {name, score, threshold} of the first stage, when it cleared the item
    provenance: dict[str, Any] | None = None  # model, adapter, prompt, policy..., latency_ms, cached

    def to_json(self) -> dict[str, Any]:
        """The line's JSON object: the keys it has, in the written order."""
        return {key: value for key in RECORD_KEYS if (value := getattr(self, key)) is not None or key in ALWAYS_WRITTEN}

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """A record from a run file's JSON object; unknown keys are left out.

        Raises:
            InputError: `data` is not a record: it must be an object with a `line` and a verdict
                or an error. The message says which is missing.
        """
        if not isinstance(data, dict):
            raise InputError(f"a record is a JSON object, not {_json_type(data)}")
        if "line" not in data:
            raise InputError("a record has a 'line', and this has none")
        if data.get("verdict") is None and data.get("error") is None:
            raise InputError("a record has a 'verdict' or an 'error', and this has neither")
        return cls(**{key: data.get(key) for key in RECORD_KEYS})


RECORD_KEYS = tuple(f.name for f in dataclasses.fields(RunRecord))
ALWAYS_WRITTEN = ("id", "line")  # written even when null


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_records(path: str | Path) -> Iterator[RunRecord]:
    """The records of a run file, in file order (blank lines skipped): the one reader, with the one
    validity rule (RunRecord.from_json), for resume, serve's journal, summaries, eval, review and
    merchants.

    Raises:
        InputError: a line that is not a `moderation run` record (is this the right file?).
    """
    for _, record in _parsed(path):
        yield record


def read_output(path: str | Path) -> Iterator[dict[str, Any]]:
    """The same records as the JSON objects on disk, each checked by RunRecord.from_json, for code
    that wants the JSON itself (the training data scripts, tests).

    Raises:
        InputError: as read_records.
    """
    for data, _ in _parsed(path):
        yield data


def _parsed(path: str | Path) -> Iterator[tuple[dict[str, Any], RunRecord]]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if raw.strip():
                yield _parse(raw, path, n)


def load_run(path: str | Path) -> list[RunRecord]:
    """All the records of a run file someone names (`review sample --run`, `merchants`), sorted by
    (id, line).

    Raises:
        InputError: the file is missing, empty, or holds a line that is not a record.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"run file not found: {path}")
    records = sorted(read_records(path), key=lambda r: (str(r.id), r.line))
    if not records:
        raise InputError(f"run file is empty: {path}")
    return records


def _parse(raw: bytes, path: str | Path, n: int) -> tuple[dict[str, Any], RunRecord]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} line {n} is not a moderation output record (not JSON): is this the right file?") from None
    try:
        return data, RunRecord.from_json(data)
    except InputError as exc:
        raise InputError(f"{path} line {n} is not a moderation output record ({exc}): is this the right file?") from None


def same_source(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in SOURCE_KEYS)


def row_fingerprint(row: Item | RowError) -> str | None:
    """What a row's record must match to be reused on resume: its content hash (None for a row
    that is an input error)."""
    return row.content_sha[:16] if isinstance(row, Item) else None


# -- the manifest ----------------------------------------------------------------------------
def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + MANIFEST_SUFFIX)


def read_manifest(output: Path) -> dict[str, Any] | None:
    path = manifest_path(output)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; delete it (and {output}) or rerun with --restart") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("made_by"), dict):
        raise ConfigError(f"{path} is not a run manifest")
    return manifest


def write_manifest(output: Path, made_by: dict[str, Any]) -> None:
    """Atomically (a temp file, then a rename)."""
    path = manifest_path(output)
    manifest = {"manifest_version": MANIFEST_VERSION, "moderation_version": __version__,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "made_by": made_by}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def manifest_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two made-by dicts, one line each ('model.adapter: None then, 'eu' now');
    the input file's name alone does not count (the same bytes under another name are the same input)."""
    a, b = _flat(then), _flat(now)
    lines = []
    if any(a.get(k) != b.get(k) for k in set(a) | set(b) if k.startswith("input.") and k != "input.name"):
        lines.append(f"input: {_input_label(then)} then, {_input_label(now)} now")
    for key in sorted(set(a) | set(b)):
        if not key.startswith("input") and a.get(key) != b.get(key):
            lines.append(f"{key}: {_short(a.get(key))} then, {_short(b.get(key))} now")
    return lines


def _flat(made_by: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for section, value in made_by.items():
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[section] = value
    return flat


def _input_label(made_by: dict[str, Any]) -> str:
    source = made_by.get("input")
    if not source:
        return "no input file"
    return f"{source['name']} ({source['bytes']} bytes, sha256 {source['sha256'][:12]})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def describe_input(path: str | Path, *, fmt: str, columns: Mapping[str, Any] | None, default_kind: str,
                   limits: ReadLimits, strict_columns: bool = False) -> dict[str, Any]:
    """The input's part of a run file's manifest: the file's identity (name, size and the SHA-256
    of its bytes: one read of the whole file) and how it is read (format, column map, kind, limits,
    and --strict-columns where it is on: a manifest from before that option still matches without it)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return {"input": {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()},
            "read": {"format": fmt, "columns": dict(columns or {}), "kind": default_kind, **dataclasses.asdict(limits),
                     **({"strict_columns": True} if strict_columns else {})}}


def check_resume(output: Path, made_by: dict[str, Any], advice: str = RUN_ADVICE) -> bool:
    """Whether `output` has records and a manifest that agrees with `made_by` on every section
    `made_by` has (so the CLI can check the input before it loads a model).

    Raises:
        ConfigError: the manifest differs; the message lists each difference and `advice`.
    """
    if not output.is_file() or output.stat().st_size == 0:
        return False
    manifest = read_manifest(output)
    if manifest is None:
        return False
    differences = manifest_differences({k: manifest["made_by"].get(k) for k in made_by}, made_by)
    if differences:
        raise ConfigError(f"{output} was made from another input or with other settings, so it is not resumed: "
                          f"{'; '.join(differences)}. To moderate this input: {advice}")
    return True


# -- the writer ------------------------------------------------------------------------------
class OutputFile:
    """The output JSONL: resumed if it exists (and was made the same way), locked against a
    second writer.

    Args:
        path: the run file.
        cache: a VerdictCache, seeded with the verdicts in the file that this model made.
        made_by: what makes this run's records (see the module docstring); compared with the
            manifest of an existing file, and written as the manifest of a new one.
        restart: empty the file (and its manifest) first instead of resuming it.
        advice: how to get out of a refused resume, for the error message.
        on_record: called with each RunRecord already in the file, as it is read (serve's journal
            reloads its idempotency store so, in the same pass).

    Raises:
        ConfigError: another process writes the file, or it was made from another input or
            with other settings.
    """

    def __init__(self, path: Path, cache, made_by: dict[str, Any], *, restart: bool = False, advice: str = RUN_ADVICE,
                 on_record: Callable[[RunRecord], None] | None = None):
        self.path = path
        self.keys = RowKeys()
        self.done: dict[str, str | None] = {}  # resume key -> fingerprint of its record
        self.replaced = 0  # rows moderated again this run because their record was stale
        self.rewrite = False  # some row has two records: keep the newest on close
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "ab")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise ConfigError(f"another run is writing {path}") from None
        try:
            self._open(made_by, restart, advice)
            self._load(cache, made_by.get("model") or {}, on_record)
        except BaseException:
            self.fh.close()
            raise

    def _open(self, made_by: dict[str, Any], restart: bool, advice: str) -> None:
        """Empty the file for a restart, cut a torn tail, and check or write the manifest."""
        if restart:
            self.fh.truncate(0)
        torn = repair_tail(self.path)
        if torn:
            logger.warning("cut a torn last line (%d bytes) from %s", torn, self.path)
        if check_resume(self.path, made_by, advice):
            return
        if self.path.stat().st_size:
            logger.warning("%s has no manifest (written by an older version): each row is checked against its "
                           "record, and rows whose content or model changed are moderated again", self.path)
        write_manifest(self.path, made_by)

    def _load(self, cache, model: dict[str, Any], on_record=None) -> None:
        """Index the records already written; seed the cache with those this model made."""
        for record in read_records(self.path):
            if on_record is not None:
                on_record(record)
            key, _ = self.keys.assign(record.id, record.line)
            self.rewrite |= key in self.done  # a crash after a row was moderated again
            ours = same_source(record.provenance or {}, model)
            sha = record.content_sha
            self.done[key] = (sha[:16] if sha else None) if ours else STALE
            if ours and record.verdict is not None and sha and record.screen is None:
                cache.put(sha, {"verdict": record.verdict, "scores": record.scores})

    def holds(self, key: str, row: Item | RowError) -> bool:
        """Whether the file already holds this row's record, still valid: the row's content is the
        same and this model made it. A stale record is counted in `replaced`; the row's new record
        takes its place on close."""
        if key not in self.done:
            return False
        if self.done[key] == row_fingerprint(row):
            return True
        self.replaced += 1
        self.rewrite = True
        return False

    def append(self, records: list[RunRecord]) -> None:
        if not records:
            return
        self.fh.write("".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records).encode())
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        try:
            if self.rewrite:
                dropped = compact_output(self.path)
                logger.info("%s: %d stale records replaced by their rows' new ones", self.path, dropped)
        finally:
            self.fh.close()


def compact_output(path: Path) -> int:
    """Rewrite a run file with one record per row: the row's newest record, in the place of its
    first (input order). Atomic: a temp file, fsync, rename. Returns the records dropped."""
    newest, keys, offset, lines = {}, RowKeys(), 0, 0
    with open(path, "rb") as fh:
        for lines, raw in enumerate(fh, start=1):
            _, record = _parse(raw, path, lines)
            newest[keys.assign(record.id, record.line)[0]] = offset
            offset += len(raw)
    # a dict keeps a key where it was first inserted: `newest` is in first-occurrence order already
    tmp = path.with_name(path.name + ".compacting")
    with open(path, "rb") as lookup, open(tmp, "wb") as out:
        for at in newest.values():
            lookup.seek(at)
            out.write(lookup.readline())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return lines - len(newest)
