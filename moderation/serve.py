"""`moderation serve`: the engine behind an HTTP API, with the same verdict records as `run`.

Records are made by the batch runner's `ChunkModerator`, as in `run`: the screen, the in-memory
and persistent verdict caches, score first and the `flagged` policies of the thresholds.

Requests put items on one bounded queue; a single worker thread takes up to `max_batch`
items at a time (waiting at most `max_wait_ms` for a batch to fill), so concurrent clients
share large engine batches. The item id is the idempotency key: a retried id with the same
content (and adapter) gets the stored record, or waits on the same in-flight work; nothing is
moderated twice. With `--journal`, every record is appended (fsynced) to a run file, which
is reloaded on start, so retries after a restart are answered from it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from moderation.batch import ChunkModerator, RunOptions, RunStats
from moderation.errors import BackendError, ConfigError, ModerationError
from moderation.items import Item, ReadLimits, RowError, item_field_names, parse_json, read_row
from moderation.pipeline import Moderator
from moderation.runfile import OutputFile, RunRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """Limits and batching of the server."""

    max_batch: int = field(default=64, metadata={"help": "Items per engine call."})
    max_wait_ms: int = field(default=20, metadata={"help": "How long the worker waits for a batch to fill."})
    max_queue: int = field(default=1024, metadata={"help": "Items waiting for the engine; beyond it requests get 429."})
    max_items: int = field(default=256, metadata={"help": "Items per request."})
    max_body_bytes: int = field(default=2_000_000, metadata={"help": "Largest request body."})
    timeout_s: float = field(default=120.0, metadata={"help": "How long a request waits for its verdicts before 504."})
    remember: int = field(default=1_000_000, metadata={"help": "Item ids kept in memory for idempotent retries."})
    journal: Path | None = field(default=None, metadata={"help": "Run file every record is appended to, reloaded on start."})
    limits: ReadLimits = field(default_factory=ReadLimits, metadata={"help": "Per-item size limits, as for `run`."})
    drain_s: float = field(default=5.0, metadata={"help": "On SIGTERM, the longest the server goes on accepting "
                                                          "connections (answering new requests 503) before it stops "
                                                          "listening; it stops sooner once 0.25 s pass without one."})

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "max_items", "max_body_bytes", "remember"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServeOptions.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.drain_s < 0:
            raise ConfigError(f"ServeOptions.drain_s must be >= 0, got {self.drain_s!r}")
        if self.max_wait_ms < 0 or self.timeout_s <= 0:
            raise ConfigError(f"ServeOptions: max_wait_ms must be >= 0 and timeout_s > 0, got {self.max_wait_ms}, {self.timeout_s}")


class RequestError(ModerationError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass
class _Job:
    item: Item
    adapter: str | None
    future: Future


class ModerationService:
    """The queue, the worker thread and the idempotency store behind the HTTP API.

    Args:
        moderators: one Moderator per adapter name (None: the base model), sharing a backend.
        options: limits and batching.
        metrics: a `Metrics` to update, or None.
        run_options, screen, store: as for `run` (moderation.batch.ChunkModerator): thresholds and
            cache size, the first-stage screen, the persistent verdict cache.
    """

    def __init__(self, moderators: dict[str | None, Moderator], options: ServeOptions, metrics: Metrics | None = None, *,
                 run_options: RunOptions | None = None, screen=None, store=None):
        self.moderators, self.options, self.metrics = moderators, options, metrics
        self.chunks = {name: ChunkModerator(m, run_options, screen=screen, store=store) for name, m in moderators.items()}
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.queued = 0
        self.lock = threading.Lock()
        self.known: OrderedDict[str, tuple[tuple, Future]] = OrderedDict()
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._loop, name="moderation-worker", daemon=True)
        self.journal: OutputFile | None = None
        self.line = 0
        if options.journal is not None:
            self._open_journal(Path(options.journal))

    def _open_journal(self, path: Path) -> None:
        base = self.chunks[None]
        self.journal = OutputFile(path, base.cache, base.made_by, advice="start the server with a new --journal file",
                                  on_record=self._reload)
        logger.info("journal %s: %d records reloaded", path, len(self.known))

    def _reload(self, record: RunRecord) -> None:
        """A journal record read on start: its line and, for an item, the answer to a retry of its id."""
        self.line = max(self.line, record.line)
        if record.id and record.content_sha is not None:
            done: Future = Future()
            done.set_result(record)
            self.known[record.id] = ((record.content_sha, record.provenance.get("adapter")), done)

    def start(self) -> None:
        self.worker.start()

    def alive(self) -> bool:
        return self.worker.is_alive() and not self.stopping.is_set()

    def submit(self, items: list[Item], adapter: str | None) -> list[Future]:
        """Futures of the RunRecords for `items`, all queued or none.

        Raises:
            RequestError: 409 for an id seen with other content, 413 for more new items than the
                whole queue holds, 429 when the queue is full, 422 for an unknown adapter, 503
                while shutting down.
        """
        if adapter not in self.moderators:
            raise RequestError(422, f"unknown adapter {adapter!r}; this server has {sorted(a for a in self.moderators if a)}")
        with self.lock:
            if self.stopping.is_set():
                raise RequestError(503, "shutting down", {"Retry-After": "1", "Connection": "close"})
            futures, fresh = self._lookup(items, adapter)
            if len(fresh) > self.options.max_queue:  # could never fit, however long the client waits
                self._forget(fresh)
                raise RequestError(413, f"{len(fresh)} new items in one request, over the queue's limit of "
                                        f"{self.options.max_queue} items (--max-queue): split the request")
            if self.queued + len(fresh) > self.options.max_queue:
                self._forget(fresh)
                raise RequestError(429, f"queue full ({self.queued} items waiting)", {"Retry-After": "1"})
            self.queued += len(fresh)
            for job in fresh:  # under the lock: once stop_accepting() returns, nothing more is queued
                self.jobs.put(job)
        if self.metrics:
            self.metrics.items.labels("replayed").inc(len(items) - len(fresh))
            self.metrics.queue_depth.set(self.queued)
        return futures

    def _lookup(self, items: list[Item], adapter: str | None) -> tuple[list[Future], list[_Job]]:
        futures, fresh = [], []
        seen: dict[str, tuple[tuple, Future]] = {}
        for item in items:
            fingerprint = (item.content_sha, adapter)
            if item.id in seen:  # the same id twice in one request: one verdict, if the content agrees
                if seen[item.id][0] != fingerprint:
                    self._forget(fresh)
                    raise RequestError(422, f"item id {item.id!r} appears twice in the request with different content")
                futures.append(seen[item.id][1])
                continue
            known = self.known.get(item.id)
            if known is not None and known[0] != fingerprint:
                self._forget(fresh)
                raise RequestError(409, f"item id {item.id!r} was already moderated with other content or adapter; "
                                        "ids are idempotency keys: use a new id for new content")
            if known is None:
                job = _Job(item, adapter, Future())
                self.known[item.id] = (fingerprint, job.future)
                fresh.append(job)
                future = job.future
            else:
                self.known.move_to_end(item.id)
                future = known[1]
            seen[item.id] = (fingerprint, future)
            futures.append(future)
        while len(self.known) > self.options.remember:
            self.known.popitem(last=False)
        return futures, fresh

    def _forget(self, jobs: list[_Job]) -> None:
        for job in jobs:
            self.known.pop(job.item.id, None)

    def _take(self) -> list[_Job]:
        """The next batch: blocks for a first job, then waits up to max_wait_ms to fill."""
        while True:
            try:
                first = self.jobs.get(timeout=0.1)
                break
            except queue.Empty:
                if self.stopping.is_set() and self.jobs.empty():
                    return []
        batch, deadline = [first], time.monotonic() + self.options.max_wait_ms / 1000
        while len(batch) < self.options.max_batch:
            try:
                batch.append(self.jobs.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while batch := self._take():
            with self.lock:
                self.queued -= len(batch)
            for adapter in dict.fromkeys(job.adapter for job in batch):
                self._run([job for job in batch if job.adapter == adapter], self.chunks[adapter])
            if self.metrics:
                self.metrics.queue_depth.set(self.queued)

    def _run(self, jobs: list[_Job], chunks: ChunkModerator) -> None:
        started, before = time.perf_counter(), dataclasses.replace(chunks.stats)
        rows = []
        for job in jobs:
            self.line += 1
            rows.append((self.line, job.item))
        try:
            records = chunks.records(rows)
        except Exception as exc:  # the engine failed as a whole: fail these requests, forget the ids
            logger.exception("engine call failed")
            with self.lock:
                self._forget(jobs)
            for job in jobs:
                job.future.set_exception(BackendError(f"engine failed: {exc}"))
            return
        if self.journal is not None:
            self.journal.append(records)  # durable before any client sees a verdict
        for job, record in zip(jobs, records):
            job.future.set_result(record)
        if self.metrics:
            self.metrics.observe_batch(records, before, chunks.stats, time.perf_counter() - started)

    def stop_accepting(self) -> None:
        """Refuse new requests with 503 (and /healthz with 503); the worker finishes what is queued."""
        with self.lock:
            self.stopping.set()

    def close(self) -> None:
        """Finish every queued item, then stop the worker (graceful shutdown)."""
        self.stop_accepting()
        if self.worker.is_alive():
            self.worker.join()
        if self.journal is not None:
            self.journal.close()


class Metrics:
    """Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("moderation_requests", "HTTP requests to /v1/moderate by status", ["status"], registry=r)
        self.items = Counter("moderation_items", "Items answered, by outcome", ["outcome"], registry=r)
        self.latency = Histogram("moderation_request_seconds", "Request latency of /v1/moderate", registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.batch_size = Histogram("moderation_batch_items", "Items per engine call", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_seconds = Histogram("moderation_batch_seconds", "Seconds per engine call", registry=r)
        self.queue_depth = Gauge("moderation_queue_items", "Items waiting for the engine", registry=r)
        self.prompt_tokens = Counter("moderation_prompt_tokens", "Prompt tokens sent to the engine", registry=r)
        self.cached_tokens = Counter("moderation_cached_prompt_tokens", "Prompt tokens served from the prefix cache", registry=r)
        self.completion_tokens = Counter("moderation_completion_tokens", "Tokens generated", registry=r)

    def observe_batch(self, records: list[RunRecord], before: RunStats, after: RunStats, seconds: float) -> None:
        """One engine batch: its records, and the token counts it added to the run's stats."""
        self.batch_size.observe(len(records))
        self.batch_seconds.observe(seconds)
        for record in records:
            self.items.labels("verdict" if record.verdict is not None else "error").inc()
        self.prompt_tokens.inc(after.prompt_tokens - before.prompt_tokens)
        self.cached_tokens.inc(after.cached_tokens - before.cached_tokens)
        self.completion_tokens.inc(after.completion_tokens - before.completion_tokens)


def parse_body(body: bytes, options: ServeOptions) -> tuple[list[Item], str | None, bool]:
    """(items, adapter, whether it was a batch) from a request body.

    Raises:
        RequestError: 400 for malformed JSON, 413 for too many items, 422 for a bad item.
    """
    try:
        payload = parse_json(body, _envelope_limits(options.limits))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not JSON: {exc}") from None
    except ValueError as exc:  # nested too deep, or an integer of too many digits
        raise RequestError(400, f"body cannot be read: {exc}") from None
    if not isinstance(payload, dict) or ("item" in payload) == ("items" in payload):
        raise RequestError(422, 'body must be an object with "item" (one item) or "items" (a list of items)')
    unknown = set(payload) - {"item", "items", "adapter"}
    if unknown:
        raise RequestError(422, f"unknown fields {sorted(unknown)}")
    batch = "items" in payload
    raw = payload["items"] if batch else [payload["item"]]
    if not isinstance(raw, list) or not raw:
        raise RequestError(422, '"items" must be a non-empty list')
    if len(raw) > options.max_items:
        raise RequestError(413, f"{len(raw)} items in one request, over the limit of {options.max_items}")
    adapter = payload.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise RequestError(422, '"adapter" must be a string')
    return [_parse_item(n, entry, options) for n, entry in enumerate(raw)], adapter, batch


def _parse_item(n: int, entry, options: ServeOptions) -> Item:
    """One item of a request; a RequestError (422) naming its index when `run` would make it an
    error record, or when it has a field its kind does not take."""
    if not isinstance(entry, dict):
        raise RequestError(422, f"item {n}: an item must be a JSON object")
    item = read_row(entry, n + 1, columns={}, default_kind="listing", limits=options.limits)
    if isinstance(item, RowError):
        raise RequestError(422, f"item {n}: {item.reason}")
    unknown = sorted(set(entry) - item_field_names(item.kind))
    if unknown:
        raise RequestError(422, f"item {n}: unknown fields {unknown}; a {item.kind} takes "
                                f"{sorted(item_field_names(item.kind))}")
    return item


def _envelope_limits(limits: ReadLimits) -> ReadLimits:
    """An item's depth limit, plus the two levels of {"items": [...]} around it."""
    return dataclasses.replace(limits, max_depth=limits.max_depth + 2)


def create_app(service: ModerationService, metrics: Metrics | None = None):
    """The FastAPI app: POST /v1/moderate, GET /healthz, GET /metrics."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        # uvicorn has stopped accepting and waited for in-flight requests; finish the queue.
        await asyncio.to_thread(service.close)

    app = FastAPI(title="moderation", lifespan=lifespan)

    # Plain Starlette handlers (request in, response out): no dependency injection needed.
    async def moderate(request):
        started, headers = time.perf_counter(), None
        try:
            body = await _read_body(request, service.options.max_body_bytes)
            items, adapter, batch = parse_body(body, service.options)
            futures = service.submit(items, adapter)
            records = await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(asyncio.wrap_future(f)) for f in futures)), service.options.timeout_s)
            answers = [record.to_json() for record in records]  # the run file's lines, as JSON
            status, content = 200, {"results": answers} if batch else answers[0]
        except RequestError as exc:
            status, content, headers = exc.status, {"error": str(exc)}, exc.headers
        except asyncio.TimeoutError:
            status, content = 504, {"error": f"no verdict within {service.options.timeout_s}s; the work goes on: "
                                             "retry with the same ids to get the verdicts"}
        except BackendError as exc:
            status, content = 503, {"error": str(exc)}
        except Exception:  # a bug: log it here, answer without the traceback, count it like any status
            logger.exception("POST /v1/moderate failed")
            status, content = 500, {"error": "internal error; the server log has the details"}
        if metrics:
            metrics.requests.labels(str(status)).inc()
            metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(content, status_code=status, headers=headers)

    async def healthz(request):
        ok = service.alive()
        return JSONResponse({"status": "ok" if ok else "unavailable", "queued_items": service.queued,
                             "model": service.moderators[None].provenance()["model"],
                             "adapters": sorted(a for a in service.moderators if a)}, status_code=200 if ok else 503)

    async def prometheus(request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry) if metrics else b"", media_type=CONTENT_TYPE_LATEST)

    app.add_route("/v1/moderate", moderate, methods=["POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/metrics", prometheus, methods=["GET"])
    return app


QUIET_S = 0.25  # a drain ends once this long passes with no request answered and none arriving


def build_server(service: ModerationService, metrics: Metrics | None, *, host: str, port: int, log_level: str = "warning"):
    """The uvicorn server of `moderation serve` (and of its tests), with the draining shutdown."""
    import uvicorn

    config = uvicorn.Config(create_app(service, metrics), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(service.options.timeout_s) + 5)
    return _draining_server_class()(config, on_drain=service.stop_accepting, drain_s=service.options.drain_s)


def _draining_server_class():
    """uvicorn.Server whose shutdown drains first (a class made on first use: uvicorn is imported lazily).

    uvicorn's own shutdown closes the listening socket at once: connections still in the kernel's
    accept backlog are reset, and ones accepted but not yet read are closed unanswered. This one
    first tells the app to answer new requests 503, then goes on accepting until no request has
    come for QUIET_S (at most `drain_s`), and only then stops listening and finishes the requests
    in flight as uvicorn does.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def __init__(self, config, *, on_drain, drain_s: float):
            super().__init__(config)
            self.on_drain, self.drain_s = on_drain, drain_s

        async def shutdown(self, sockets=None) -> None:
            self.on_drain()
            await self._drain()
            await super().shutdown(sockets=sockets)

        async def _drain(self) -> None:
            deadline, answered = time.monotonic() + self.drain_s, self.server_state.total_requests
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                unread = any(getattr(c, "cycle", None) is None for c in self.server_state.connections)
                if unread or self.server_state.total_requests != answered:
                    answered, quiet_since = self.server_state.total_requests, time.monotonic()
                elif time.monotonic() - quiet_since >= QUIET_S:
                    return
            logger.warning("still draining after %.1fs; closing the listening socket", self.drain_s)

    return DrainingServer


async def _read_body(request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (before it is all read)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
