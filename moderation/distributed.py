"""`moderation run --engine ray`: moderate a dump on a Ray cluster with Ray Data.

Stages (all plain Ray Data): `read_binary_files` reads each input file whole; a task parses it
with the local reader (`items.read_stream`), so rows, line numbers and row errors are the local
run's; an actor pool (`map_batches` with `ModerateBatch`, one backend per actor) turns batches
of rows into records with `batch.ChunkModerator`, the code the local runner uses; the records
are written as Parquet or JSONL shards into the output directory.

Each output row has a `key`: the item id, `id@line` for a repeated id, `@line` for a row without
one (with the file, `@file:line`, when the input is a directory of files). Keys are unique, so a
rerun skips the keys already in the shards and the output holds each key exactly once.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import math
import os
import posixpath
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from moderation.batch import ErrorBudgetExceeded, check_budget, summarize_records
from moderation.errors import BackendError, ConfigError, InputError, ModerationError
from moderation.factory import RunSettings, run_moderator, run_options, run_screen, run_store
from moderation.items import KINDS, Item, ReadLimits, RowError, detect_format, parse_column_map, read_stream, refuse_binary
from moderation.runfile import RowKeys, RunRecord

try:
    import ray
    from ray.data.datasource import BlockBasedFileDatasink, FilenameProvider
except ImportError as exc:  # the `ray` extra
    raise ConfigError(f"--engine ray needs Ray Data: pip install 'moderation[ray]' ({exc})") from None

logger = logging.getLogger(__name__)

COLUMNS = ("key", "id", "file", "line", "record")
SHARD_FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}
SUMMARY = "_summary.json"


def filesystem(uri: str):
    """(pyarrow filesystem, path) for a local path or an object-store URL (s3://, gs://, ...)."""
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def input_files(uri: str) -> tuple[object, str, list[str]]:
    """(filesystem, root, sorted file paths) of a dump: one file, or every file under a directory."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return fs, posixpath.dirname(root), [root]
    if info.type != pafs.FileType.Directory:
        raise InputError(f"input not found: {uri}")
    files = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                   if f.type == pafs.FileType.File and not posixpath.basename(f.path).startswith((".", "_")))
    if not files:
        raise InputError(f"no input files under {uri}")
    return fs, root, files


class FileRows:
    """One input file's bytes to keyed rows, as the local reader and RowKeys see them.

    Args:
        fmt: jsonl, csv or parquet.
        opts: columns, default_kind and limits for `items.read_stream`.
        names: file path -> (index, name shown in keys and messages; "" for a single file).
        firsts: for inputs of several files, id -> (file index, line) of its first occurrence,
            for the ids that occur more than once.
    """

    def __init__(self, fmt: str, opts: dict, names: dict[str, tuple[int, str]], firsts: dict | None = None):
        self.fmt, self.opts, self.names, self.firsts = fmt, opts, names, firsts or {}
        self.name_of = {index: name for index, name in names.values()}

    def rows(self, path: str, data: bytes) -> Iterator[tuple[int, Item | RowError]]:
        if data[:2] == b"\x1f\x8b":  # Ray decompresses .gz by name; a gzip under another name is not
            import gzip

            data = gzip.decompress(data)
        if not data.strip():
            raise InputError(f"input file is empty: {path}")
        if self.fmt != "parquet":
            refuse_binary(data, path)
        return read_stream(io.BytesIO(data), self.fmt, name=path, **self.opts)

    def keyed(self, path: str, data: bytes) -> Iterator[dict]:
        """Output rows {key, id, file, line, row}; `row` is the Item or RowError as JSON."""
        index, name = self.names[path]
        keys = RowKeys()
        for line, row in self.rows(path, data):
            _, first = keys.assign(row.id, line)
            first_index, first_line = self.firsts.get(row.id, (index, first or line))
            where = f"{name}:{line}" if name else str(line)
            if row.id is None:
                key = f"@{where}"
            elif (first_index, first_line) == (index, line):
                key = row.id
            else:
                key = f"{row.id}@{where}"
                if isinstance(row, Item):
                    seen = f"{self.name_of[first_index]} line {first_line}" if name else f"line {first_line}"
                    row = RowError(line, row.id, f"duplicate id: first seen at {seen}")
            yield {"key": key, "id": row.id, "file": name, "line": line, "row": encode_row(row)}


def encode_row(row: Item | RowError) -> str:
    if isinstance(row, Item):
        return json.dumps({"item": row.record(), "ignored_columns": list(row.ignored_columns)}, ensure_ascii=False)
    return json.dumps({"error": {"line": row.line, "id": row.id, "reason": row.reason}}, ensure_ascii=False)


def decode_row(text: str) -> Item | RowError:
    data = json.loads(text)
    if "item" not in data:
        return RowError(**data["error"])
    return Item.from_record(data["item"], tuple(data["ignored_columns"]))


def expand_files(batch: dict, reader: FileRows, done_ref=None) -> Iterator[dict]:
    """map_batches fn: files in, keyed rows out (those not already done), in batches of 4096."""
    done = ray.get(done_ref) if done_ref is not None else set()
    out: list[dict] = []
    for path, data in zip(batch["path"], batch["bytes"]):
        for row in reader.keyed(path, data):
            if row["key"] not in done:
                out.append(row)
            if len(out) >= 4096:
                yield _columns(out, ("key", "id", "file", "line", "row"))
                out = []
    if out:
        yield _columns(out, ("key", "id", "file", "line", "row"))


def _columns(rows: list[dict], names: tuple[str, ...]) -> dict[str, list]:
    return {name: [r[name] for r in rows] for name in names}


def first_occurrences(raw, reader: FileRows) -> dict[str, tuple[int, int]]:
    """Ids found more than once across input files -> (file index, line) of the first.

    A group-by over the id column only (Ray Data's own shuffle); rows are parsed twice.
    """
    from ray.data.aggregate import Count, Min

    def ids(batch: dict) -> dict:
        rows = [(reader.names[p][0] << 32 | line, r.id) for p, d in zip(batch["path"], batch["bytes"])
                for line, r in reader.rows(p, d) if r.id is not None]
        return {"id": [i for _, i in rows], "order": [o for o, _ in rows]}

    grouped = raw.map_batches(ids, batch_size=1).groupby("id").aggregate(Count(), Min("order"))
    repeated = grouped.filter(lambda r: r["count()"] > 1).take_all()
    return {r["id"]: (r["min(order)"] >> 32, r["min(order)"] & 0xFFFFFFFF) for r in repeated}


class ModerateBatch:
    """The actor: one backend, one ChunkModerator; a batch of keyed rows in, records out.

    Args:
        settings: the run's model side (moderation.factory.RunSettings), made once by the driver.
        actor_gpus: GPUs per actor (--actor-gpus); 0: the engine runs on the actor's CPUs.
    """

    def __init__(self, settings: RunSettings, actor_gpus: float = 0):
        from moderation.batch import ChunkModerator

        if not actor_gpus:
            # vLLM's default binds every CPU engine's threads to the same cores; unbound, each actor's
            # engine runs OMP_NUM_THREADS (Ray sets it to the actor's CPUs) threads wherever the OS puts them.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        self.options = run_options(settings)
        self.chunks = ChunkModerator(run_moderator(settings), self.options,
                                     screen=run_screen(settings), store=run_store(settings))
        pid_dir = os.environ.get("MODERATION_RAY_PID_DIR")  # tests find and kill actors by it
        if pid_dir:
            Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))

    def __call__(self, batch):
        rows = batch.to_pylist()
        records = self.chunks.records([(r["line"], decode_row(r["row"])) for r in rows])
        check_budget(self.chunks.stats, self.options, who="an actor: ")
        out = {name: [r[name] for r in rows] for name in ("key", "id", "file", "line")}
        out["record"] = [json.dumps(r.to_json(), ensure_ascii=False) for r in records]
        return _table(out)


def _table(columns: dict):
    import pyarrow as pa

    schema = pa.schema([("key", pa.string()), ("id", pa.string()), ("file", pa.string()),
                        ("line", pa.int64()), ("record", pa.string())])
    return pa.table(columns, schema=schema)


class ShardNames(FilenameProvider):
    """`<run id>_<write uuid>_<write task>.<ext>`: a run's shards are found by its id."""

    def __init__(self, run_id: str, ext: str):
        super().__init__(file_format=ext.lstrip("."))
        self.run_id, self.ext = run_id, ext

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"{self.run_id}_{write_uuid}_{task_index:06d}{self.ext}"

    def get_filename_for_block(self, block, write_uuid: str, task_index: int, block_index: int) -> str:
        return f"{self.run_id}_{write_uuid}_{task_index:06d}_{block_index:06d}{self.ext}"


class RecordLines(BlockBasedFileDatasink):
    """JSONL shards: each line a run record (as a local run writes it) plus its `key` and `file`."""

    def write_block_to_file(self, block, file) -> None:
        table = block.to_arrow()
        lines = [json.dumps({"key": k, "file": f}, ensure_ascii=False)[:-1] + ", " + r[1:] + "\n"
                 for k, f, r in zip(*(table.column(c).to_pylist() for c in ("key", "file", "record")))]
        file.write("".join(lines).encode())


class ShardDir:
    """The output directory of a Ray run: record shards (any mix of .parquet and .jsonl) and `_summary.json`."""

    def __init__(self, uri: str, fmt: str = "parquet"):
        self.uri, self.fmt = uri, fmt
        self.fs, self.path = filesystem(uri)
        self._lock = None

    def lock(self) -> None:
        """On a local disk, refuse a second driver writing the same directory."""
        import pyarrow.fs as pafs

        if isinstance(self.fs, pafs.LocalFileSystem):
            os.makedirs(self.path, exist_ok=True)
            self._lock = open(os.path.join(self.path, ".lock"), "w")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"another run is writing {self.uri}") from None

    def shards(self) -> list[str]:
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(tuple(SHARD_FORMATS.values())))

    def rows(self, shard: str) -> list[dict]:
        """{key, id, file, line, record} of one shard. Raises ValueError for a torn or unreadable one."""
        if shard.endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                return pq.read_table(shard, filesystem=self.fs, columns=list(COLUMNS)).to_pylist()
            except Exception as exc:  # pyarrow raises several types for a truncated file
                raise ValueError(str(exc)) from None
        with self.fs.open_input_stream(shard) as fh:
            data = fh.read()
        if data and not data.endswith(b"\n"):
            raise ValueError("torn last line")
        rows = []
        for raw in data.splitlines():
            record = json.loads(raw)
            rows.append({"key": record.pop("key"), "id": record.get("id"), "file": record.pop("file"),
                         "line": record.get("line"), "record": json.dumps(record, ensure_ascii=False)})
        return rows

    def done_keys(self) -> set[str]:
        """Keys already written; a torn shard (from a killed run) is deleted, its rows redone."""
        done: set[str] = set()
        for shard in self.shards():
            try:
                done.update(r["key"] for r in self.rows(shard))
            except ValueError as exc:
                logger.warning("deleting %s, torn by an interrupted run (%s); its rows are moderated again", shard, exc)
                self.fs.delete_file(shard)
        return done

    def records(self) -> Iterator[RunRecord]:
        for shard in self.shards():
            for row in self.rows(shard):
                yield RunRecord.from_json(json.loads(row["record"]))

    def write(self, records, run_id: str, shard_rows: int) -> None:
        names = ShardNames(run_id, SHARD_FORMATS[self.fmt])
        if self.fmt == "parquet":
            records.write_parquet(self.path, filesystem=self.fs, filename_provider=names, min_rows_per_file=shard_rows)
        else:
            records.write_datasink(RecordLines(self.path, filesystem=self.fs, filename_provider=names,
                                               min_rows_per_file=shard_rows))

    def write_summary(self, summary: dict) -> str:
        path = posixpath.join(self.path, SUMMARY)
        with self.fs.open_output_stream(path) as fh:
            fh.write((json.dumps(summary, indent=2) + "\n").encode())
        return path


def read_ray_output(uri: str) -> Iterator[RunRecord]:
    """Every record in a Ray run's output directory (local path or object-store URL)."""
    return ShardDir(uri).records()


def connect(args) -> None:
    """Join the cluster at --address or $RAY_ADDRESS, else start a local one; quiet unless -v."""
    if ray.is_initialized():
        return
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    level = logging.INFO if args.verbose else logging.WARNING
    # A local cluster gets one logical CPU beside the actors' for reading, parsing and writing:
    # were the actors to hold every CPU, Ray Data could not schedule those tasks and would wait forever.
    need = math.ceil(args.actors * args.actor_cpus) + 1
    extra = {} if address else {"include_dashboard": False, "num_cpus": max(os.cpu_count() or 1, need)}
    # Actors see the driver's settings for our code, vLLM and Hugging Face (offline mode, KV cache size).
    env = {k: v for k, v in os.environ.items() if k.startswith(("MODERATION_", "VLLM_", "HF_"))}
    ray.init(address=address, log_to_driver=args.verbose, logging_level=level, runtime_env={"env_vars": env}, **extra)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not args.no_progress
    logging.getLogger("ray.data").setLevel(level)
    if ray.cluster_resources().get("CPU", 0) < need:
        logger.warning("the cluster has %s CPUs; %d actors x %s CPUs leave none for reading and writing, so the "
                       "job may wait for an autoscaler to add a node", ray.cluster_resources().get("CPU", 0),
                       args.actors, args.actor_cpus)


def _read(args):
    """(reader, Ray dataset of whole files) for the dump at args.input."""
    if args.kind not in KINDS:
        raise ConfigError(f"unknown kind {args.kind!r}; expected one of {list(KINDS)}")
    fs, root, files = input_files(args.input)
    fmt = args.format or detect_format(Path(files[0]))
    limits = ReadLimits(max_row_bytes=args.max_row_bytes, max_text_chars=args.max_text_chars)
    opts = {"columns": parse_column_map(args.columns), "default_kind": args.kind, "limits": limits,
            "strict_columns": args.strict_columns}
    names = {f: (i, posixpath.relpath(f, root) if len(files) > 1 else "") for i, f in enumerate(files)}
    return FileRows(fmt, opts, names), ray.data.read_binary_files(files, include_paths=True, filesystem=fs)


def moderated(args, settings: RunSettings, done: set[str]):
    """The lazy Ray dataset of output rows: files -> keyed rows not yet done -> actor pool -> records.
    The actors get `settings` (moderation.factory.RunSettings), not the command line's Namespace."""
    reader, raw = _read(args)
    if len(reader.names) > 1:
        reader.firsts = first_occurrences(raw, reader)
    rows = raw.map_batches(expand_files, batch_size=1, fn_kwargs={"reader": reader, "done_ref": ray.put(done)})
    # One block per chunk, so that every actor gets work (a file is parsed into one block).
    rows = rows.repartition(target_num_rows_per_block=settings.chunk_size)
    # A killed actor is restarted and its batch retried (Ray Data's defaults, set here so they stay so).
    return rows.map_batches(ModerateBatch, fn_constructor_args=(settings, args.actor_gpus), batch_size=settings.chunk_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=args.actors),
                            num_cpus=args.actor_cpus,
                            num_gpus=args.actor_gpus, max_restarts=-1, max_task_retries=-1)


def run_ray(args) -> int:
    """`moderation run --engine ray`: moderate args.input into the shard directory args.output."""
    from moderation.batch import print_summary
    from moderation.errors import EXIT_BACKEND, EXIT_BUDGET, EXIT_OK, EXIT_USAGE

    started = time.perf_counter()
    settings = RunSettings.from_args(args)  # bad settings fail here, before the cluster starts
    out = ShardDir(args.output, args.output_format)
    out.lock()
    done = out.done_keys()
    connect(args)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    code = EXIT_OK
    try:
        out.write(moderated(args, settings, done), run_id, shard_rows=16 * settings.chunk_size)
    except Exception as exc:  # Ray wraps what the actors raised
        cause = _moderation_error(exc)
        if cause is None:
            raise
        print(f"stopped: {cause}", file=sys.stderr)
        code = EXIT_BUDGET if isinstance(cause, ErrorBudgetExceeded) else (
            EXIT_BACKEND if isinstance(cause, BackendError) else EXIT_USAGE)
    mine: list[RunRecord] = []
    summary = summarize_records(_all_records(out, run_id, mine))  # one read of the shards
    run = _figures(mine, run_id, len(done), args, started)
    summary["this_run"] = run
    path = out.write_summary(summary)
    print_summary({k: v for k, v in summary.items() if k != "this_run"}, args.output)
    print(f"this run: {run['processed']} rows in {run['elapsed_s']:.1f}s ({run['items_per_s']:.2f} items/s, "
          f"{run['actors']} actors), {run['skipped_already_done']} already done, {run['cache_hits']} from caches, "
          f"{run['screened']} cleared by the screen\nsummary written to {path}")
    return code


def _moderation_error(exc: BaseException) -> ModerationError | None:
    while exc is not None:
        if isinstance(exc, ModerationError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def _all_records(out: ShardDir, run_id: str, mine: list[RunRecord]) -> Iterator[RunRecord]:
    """Every record in the shards; those of this run's shards are also appended to `mine`."""
    for shard in out.shards():
        own = posixpath.basename(shard).startswith(run_id + "_")
        for row in out.rows(shard):
            record = RunRecord.from_json(json.loads(row["record"]))
            if own:
                mine.append(record)
            yield record


def _figures(records: list[RunRecord], run_id: str, skipped: int, args, started: float) -> dict:
    """This run's summary figures, in the local run's shape, counted from the records of the shards it
    wrote; the time includes cluster and model start. Token counts stay with the actors: None here."""
    from moderation.batch import RunStats, count_records, run_figures

    stats = count_records(RunStats(skipped=skipped, elapsed_s=time.perf_counter() - started), records)
    unknown = dict.fromkeys(("verdict_cache_hits", "verdict_cache_hit_rate", "moderated_again_changed", "prompt_tokens",
                             "completion_tokens", "cached_prompt_tokens", "prefix_cache_hit_rate"))
    return run_figures(stats, **unknown, engine="ray", run_id=run_id, actors=args.actors, actor_cpus=args.actor_cpus,
                       actor_gpus=args.actor_gpus)
