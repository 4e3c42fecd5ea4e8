"""The resumable batch runner: a stream of rows in, one output line per row out.

The run file itself (its reader, its crash-safe writer, the manifest that refuses a resume from
another input or with other settings) is moderation.runfile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.errors import BackendError, ConfigError, ModerationError
from moderation.items import Item, Row, RowError
from moderation.pipeline import Moderator, Outcome
from moderation.runfile import (
    SOURCE_KEYS,
    OutputFile,
    RunRecord,
    read_records,
)
from moderation.schema import RATIONALE_MAX_CHARS

logger = logging.getLogger(__name__)


class ErrorBudgetExceeded(ModerationError):
    """Too large a share of rows became error records; the run stopped."""


@dataclass(frozen=True)
class RunOptions:
    """Settings of one batch run."""

    chunk_size: int = field(default=64, metadata={"help": "Items per model call and per checkpoint."})
    error_budget: float = field(default=0.5, metadata={"help": "Stop when more than this share of processed rows are errors."})
    budget_min_rows: int = field(default=100, metadata={"help": "Rows processed before the error budget is checked."})
    cache_size: int = field(default=100_000, metadata={"help": "Verdicts kept in memory by content hash."})
    thresholds: dict[str, float] | None = field(default=None, metadata={"help": "Per-policy score thresholds; records list the policies at or above them as `flagged`."})

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ConfigError(f"RunOptions.chunk_size must be at least 1, got {self.chunk_size}")
        if not 0 <= self.error_budget <= 1:
            raise ConfigError(f"RunOptions.error_budget must be in [0, 1], got {self.error_budget}")


@dataclass
class RunStats:
    processed: int = 0
    verdicts: int = 0
    errors: int = 0
    skipped: int = 0
    replaced: int = 0
    cache_hits: int = 0
    screened: int = 0
    store_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    elapsed_s: float = 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Share of prompt tokens the engine served from its prefix cache."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def items_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s else 0.0


class VerdictCache:
    """Verdicts (with their scores) by item content hash, least recently used first out."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[str, dict] = OrderedDict()

    def get(self, sha: str) -> dict | None:
        if sha in self.entries:
            self.entries.move_to_end(sha)
            return self.entries[sha]
        return None

    def put(self, sha: str, verdict: dict) -> None:
        self.entries[sha] = verdict
        self.entries.move_to_end(sha)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


def output_record(line: int | None, row: Item | RowError, provenance: dict, outcome: Outcome | None, cached: bool,
                  thresholds: dict[str, float] | None = None, screen: dict | None = None) -> RunRecord:
    """A row's record, the one place records are made (a local run, the Ray actors and serve all
    come here through ChunkModerator). `screen`: the first stage's {name, score, threshold} when it
    cleared the item."""
    latency = outcome.latency_ms if outcome and not cached else 0
    provenance = {**provenance, "latency_ms": latency, "cached": cached}
    if isinstance(row, RowError):
        return RunRecord(id=row.id, line=line, error={"stage": "input", "reason": row.reason}, screen=screen,
                         provenance=provenance)
    verdict, scores, flagged, error = outcome.verdict, outcome.scores, None, None
    if verdict is None:
        scores, error = None, {"stage": "model", "reason": outcome.error, "raw": outcome.raw, "attempts": outcome.attempts}
    elif scores is not None and thresholds:
        flagged = [p for p, t in thresholds.items() if scores["policies"].get(p, 0.0) >= t]
    return RunRecord(id=row.id, line=line, kind=row.kind, content_sha=row.content_sha,
                     ignored_columns=list(row.ignored_columns) or None, verdict=verdict, scores=scores, flagged=flagged,
                     error=error, screen=screen, provenance=provenance)


def screen_verdict(screen: dict) -> dict:
    """The allow verdict of an item the first stage cleared."""
    rationale = f"Cleared by the {screen['name']} screen (score {screen['score']:.4f} < {screen['threshold']:.4f}); no LLM call."
    return {"decision": "allow", "violations": [], "rationale": rationale[:RATIONALE_MAX_CHARS]}


class ChunkModerator:
    """A chunk of rows to output records: the screen, then the verdict caches, then the model.

    The one place records are made, shared by BatchRunner (one process) and the Ray actors
    (moderation.distributed), so both write the same records for the same rows.

    Args:
        moderator: the LLM stage.
        options: run settings (cache size, thresholds; unset thresholds are the moderator's).
        screen: optional cheap first stage (moderation.screen.Screen); items it clears get an
            allow verdict without the LLM.
        store: optional persistent verdict cache (moderation.verdict_store.VerdictStore), shared
            across runs, keyed by content and the moderator's model, adapter, prompt and policy.
    """

    def __init__(self, moderator: Moderator, options: RunOptions | None = None, *, screen=None, store=None):
        self.moderator = moderator
        self.options = options or RunOptions()
        if self.options.thresholds is None and moderator.thresholds:  # score first flags what it decided on
            self.options = dataclasses.replace(self.options, thresholds=moderator.thresholds)
        self.screen = screen
        self.store = store
        self.cache = VerdictCache(self.options.cache_size)
        self.stats = RunStats()
        self.score_progress = None  # a tqdm-style bar the model's scoring advances (BatchRunner.run sets it)
        self.provenance = moderator.provenance()
        self.source = source_key(self.provenance)
        self.made_by = records_made_by(moderator, self.options, screen)

    def records(self, rows: list[tuple[int | None, Item | RowError]]) -> list[RunRecord]:
        """One output record per row, in order."""
        items = [row for _, row in rows if isinstance(row, Item)]
        cleared = self._screen(items)
        outcomes = iter(self._moderate_unique([item for item in items if item.content_sha not in cleared]))
        records = []
        for line, row in rows:
            screen = cleared.get(row.content_sha) if isinstance(row, Item) else None
            if screen is not None:
                outcome, cached = Outcome(verdict=screen_verdict(screen)), False
            elif isinstance(row, Item):
                outcome, cached = next(outcomes)
            else:
                outcome, cached = None, False
            records.append(output_record(line, row, self.provenance, outcome, cached, self.options.thresholds, screen))
        self._count(records)
        return records

    def _screen(self, items: list[Item]) -> dict[str, dict]:
        """{content_sha: screen info} of the items the first stage clears."""
        if self.screen is None or not items:
            return {}
        return {item.content_sha: info for item, info in zip(items, self.screen.clear(items)) if info is not None}

    def _usable(self, entry: dict | None) -> bool:
        return entry is not None and (entry.get("scores") is not None or not self.moderator.scores)

    def _moderate_unique(self, items: list[Item]) -> list[tuple[Outcome, bool]]:
        """(outcome, cached) per item, in order; each distinct content goes to the model once,
        and not at all when this run or the persistent store already has its verdict."""
        known: dict[str, Outcome] = {}
        fresh: dict[str, Item] = {}
        for item in items:
            entry = self.cache.get(item.content_sha)
            if self._usable(entry):
                known[item.content_sha] = Outcome(verdict=entry["verdict"], scores=entry["scores"])
            else:
                fresh.setdefault(item.content_sha, item)
        if self.store is not None and fresh:
            for sha, entry in self.store.get_many(self.source, list(fresh)).items():
                if self._usable(entry):
                    known[sha] = Outcome(verdict=entry["verdict"], scores=entry["scores"])
                    self.cache.put(sha, entry)
                    self.stats.store_hits += 1
                    del fresh[sha]
        new_entries = {}
        for sha, outcome in zip(fresh, self._model_outcomes(list(fresh.values()))):
            known[sha] = outcome
            self.stats.prompt_tokens += outcome.prompt_tokens
            self.stats.completion_tokens += outcome.completion_tokens
            self.stats.cached_tokens += outcome.cached_tokens
            if outcome.verdict is not None:
                new_entries[sha] = {"verdict": outcome.verdict, "scores": outcome.scores}
                self.cache.put(sha, new_entries[sha])
        if self.store is not None and new_entries:
            self.store.put_many(self.source, self.provenance, new_entries)
        # Only the item that went to the model is uncached; its twins reuse the outcome.
        return [(known[item.content_sha], fresh.get(item.content_sha) is not item) for item in items]

    def _model_outcomes(self, items: list[Item]) -> list[Outcome]:
        """The moderator's outcomes; if the chunk raises (anything but a BackendError, which means
        the engine failed as a whole), each item again on its own, so that the one item that breaks
        (a prompt that cannot render, a tokenizer that chokes) gets an error record and the rest go on."""
        if not items:
            return []
        try:
            return self.moderator.moderate(items, self.score_progress)
        except BackendError:
            raise
        except Exception as exc:
            if len(items) == 1:
                return [_failed_alone(items[0], exc)]
            logger.warning("a chunk of %d items failed (%s); moderating them one by one", len(items), exc)
        return [self._moderate_alone(item) for item in items]

    def _moderate_alone(self, item: Item) -> Outcome:
        try:
            return self.moderator.moderate([item])[0]
        except BackendError:
            raise
        except Exception as exc:
            return _failed_alone(item, exc)

    def _count(self, records: list[RunRecord]) -> None:
        count_records(self.stats, records)


def count_records(stats: RunStats, records: Iterable[RunRecord]) -> RunStats:
    """Add records to the row counts of `stats` (processed, verdicts, errors, cache hits, screened)."""
    for record in records:
        stats.processed += 1
        if record.verdict is not None:
            stats.verdicts += 1
            stats.cache_hits += bool(record.provenance.get("cached"))
            stats.screened += record.screen is not None
        else:
            stats.errors += 1
    return stats


def _failed_alone(item: Item, exc: Exception) -> Outcome:
    logger.warning("item %s failed on its own: %s: %s", item.id, type(exc).__name__, exc)
    return Outcome(error=f"this item failed on its own: {type(exc).__name__}: {str(exc)[:300]}")


def check_budget(stats: RunStats, options: RunOptions, who: str = "") -> None:
    """Raise ErrorBudgetExceeded once too large a share of the processed rows are errors."""
    if stats.processed >= options.budget_min_rows and stats.errors > options.error_budget * stats.processed:
        raise ErrorBudgetExceeded(f"{who}{stats.errors} of {stats.processed} rows were errors, over the error "
                                  f"budget of {options.error_budget:.0%}")


def records_made_by(moderator: Moderator, options: RunOptions | None = None, screen=None) -> dict[str, Any]:
    """What a run file's records depend on besides the rows, for its manifest: the moderator's
    provenance, whole (model, adapter, backend, prompt, policy, thresholds and scorer hashes, how
    verdicts are decided, and whatever else it records) and the settings that change records
    (scores on or off, grounded evidence, attempts, output tokens, the thresholds that set
    `flagged`, the screen)."""
    flag_thresholds = (options or RunOptions()).thresholds
    return {
        "model": dict(moderator.provenance()),
        "records": {
            "scores": moderator.scores,
            "grounded_evidence": moderator.grounded_evidence,
            "max_attempts": moderator.max_attempts,
            "max_tokens": getattr(getattr(moderator.backend, "config", None), "max_tokens", None),
            "flag_thresholds_sha": _sha(flag_thresholds) if flag_thresholds else None,
            "screen": _screen_identity(screen),
        },
    }


def _screen_identity(screen) -> dict[str, Any] | None:
    """A screen's name, files hash and threshold (moderation.screen.Screen has them; a stand-in
    needs only `clear`, and is then known by its type)."""
    if screen is None:
        return None
    return {"name": getattr(screen, "name", type(screen).__name__), "sha": getattr(screen, "sha", None),
            "threshold": getattr(screen, "threshold", None)}


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def source_key(provenance: dict[str, Any]) -> str:
    """What a stored verdict depends on besides the content: model, adapter, backend, prompt and
    policy (the provenance's SOURCE_KEYS). An entry without scores does not serve a run that
    wants them (ChunkModerator._usable)."""
    blob = json.dumps({k: provenance.get(k) for k in SOURCE_KEYS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class BatchRunner:
    """Moderates a stream of rows into an output file, resumably."""

    def __init__(self, moderator: Moderator, options: RunOptions | None = None, *, screen=None, store=None):
        self.chunks = ChunkModerator(moderator, options, screen=screen, store=store)
        self.moderator = moderator
        self.options = self.chunks.options
        self.stats = self.chunks.stats

    def run(self, rows: Iterable[Row], output: str | Path, progress=None, *, made_from: dict[str, Any] | None = None,
            restart: bool = False, score_progress=None) -> RunStats:
        """Moderate every row whose record is not already in `output`.

        Args:
            rows: (line, Item | RowError) pairs, as from `read_items`.
            output: the JSONL output path; created, or resumed if it exists.
            progress: optional object with `update(n)` (a tqdm bar), advanced as records are written.
            score_progress: another, advanced as the model scores items (within a chunk).
            made_from: the input's part of the run's manifest (moderation.items.describe_input):
                resuming from another input, or read another way, is refused. None: rows are
                only checked one by one against their records (as `eval` does).
            restart: start `output` over instead of resuming it.

        Raises:
            ConfigError: `output` was made from another input or with other settings.
            ErrorBudgetExceeded: after writing the chunk that went over the budget.
        """
        out = OutputFile(Path(output), self.chunks.cache, {**(made_from or {}), **self.chunks.made_by}, restart=restart)
        self.chunks.score_progress = score_progress
        started = time.perf_counter()
        try:
            pending: list[tuple[int, Item | RowError]] = []
            pending_items = 0
            for line, row in rows:
                key, first = out.keys.assign(row.id, line)
                if first is not None and isinstance(row, Item):
                    row = RowError(line, row.id, f"duplicate id: first seen at line {first}")
                if out.holds(key, row):
                    self.stats.skipped += 1
                    if progress is not None:
                        progress.update(1)
                    continue
                pending.append((line, row))
                pending_items += isinstance(row, Item)
                # Error rows count too, so a file of garbage still checkpoints and meets the budget.
                if pending_items >= self.options.chunk_size or len(pending) >= 4 * self.options.chunk_size:
                    self._flush(pending, out, progress, started)
                    pending, pending_items = [], 0
            self._flush(pending, out, progress, started)
        finally:
            self.stats.elapsed_s = time.perf_counter() - started
            self.stats.replaced = out.replaced
            out.close()
        return self.stats

    def _flush(self, pending: list[tuple[int, Item | RowError]], out: OutputFile, progress, started: float) -> None:
        if not pending:
            return
        records = self.chunks.records(pending)
        out.append(records)
        if progress is not None:
            progress.update(len(records))
        self.stats.elapsed_s = time.perf_counter() - started
        check_budget(self.stats, self.options)



def summarize(path: str | Path) -> dict[str, Any]:
    """Counts over a whole output file (this run and any earlier ones it resumed)."""
    return summarize_records(read_records(Path(path)))


def summarize_records(records: Iterable[RunRecord]) -> dict[str, Any]:
    """Counts over output records (of a file, or of the Ray engine's shards)."""
    decisions, policies, kinds, error_stages, reasons, ignored = (Counter() for _ in range(6))
    rows = 0
    for record in records:
        rows += 1
        kinds[record.kind or "unknown"] += 1
        ignored.update(record.ignored_columns or ())
        if record.verdict is not None:
            decisions[record.verdict["decision"]] += 1
            policies.update(v["policy"] for v in record.verdict["violations"])
        else:
            error_stages[record.error["stage"]] += 1
            reasons[record.error["reason"].split(":")[0][:60]] += 1
    verdicts = sum(decisions.values())
    return {
        "rows": rows,
        "verdicts": verdicts,
        "errors": rows - verdicts,
        "verdict_share": verdicts / rows if rows else 0.0,
        "decisions": dict(decisions.most_common()),
        "policies": dict(policies.most_common()),
        "kinds": dict(kinds.most_common()),
        "errors_by_stage": dict(error_stages),
        "top_error_reasons": dict(reasons.most_common(8)),
        "ignored_columns": dict(ignored.most_common()),
    }


def run_figures(stats: RunStats, **extra) -> dict:
    """The `this_run` part of a run's summary, local or Ray (`extra`: the engine's own figures)."""
    return {
        "processed": stats.processed,
        "skipped_already_done": stats.skipped,
        "moderated_again_changed": stats.replaced,
        "verdicts": stats.verdicts,
        "errors": stats.errors,
        "cache_hits": stats.cache_hits,
        "verdict_cache_hits": stats.store_hits,
        "verdict_cache_hit_rate": round(stats.store_hits / stats.processed, 4) if stats.processed else 0.0,
        "screened": stats.screened,
        "screened_share": round(stats.screened / stats.processed, 4) if stats.processed else 0.0,
        "elapsed_s": round(stats.elapsed_s, 2),
        "items_per_s": round(stats.items_per_s, 3),
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cached_prompt_tokens": stats.cached_tokens,
        "prefix_cache_hit_rate": round(stats.prefix_cache_hit_rate, 4),
        **extra,
    }


def print_summary(summary: dict, output, summary_path: Path | None = None) -> None:
    """The human-readable summary of a run file (and of this run, where the summary has it)."""
    print(f"\n{output}: {summary['rows']} rows, {summary['verdicts']} verdicts, {summary['errors']} errors "
          f"({summary['verdict_share']:.1%} verdicts)")
    run = summary.get("this_run")
    if run:
        print(f"this run: {run['processed']} rows in {run['elapsed_s']:.1f}s ({run['items_per_s']:.2f} items/s), "
              f"{run['skipped_already_done']} already done, "
              f"{run.get('moderated_again_changed', 0)} moderated again (changed since their record), "
              f"{run['cache_hits']} from the content cache "
              f"({run['verdict_cache_hits']} from the persistent verdict cache, {run['verdict_cache_hit_rate']:.0%}), "
              f"{run['screened']} cleared by the screen, "
              f"{run['prefix_cache_hit_rate']:.0%} of prompt tokens from the prefix cache")
        if run.get("dtype"):
            print(f"number format: {run['dtype']} (CPU capability {run['cpu_capability']}; `moderation doctor` explains)")
    for title, key in (("decisions", "decisions"), ("policies flagged", "policies"), ("kinds", "kinds"),
                       ("errors by stage", "errors_by_stage"), ("top error reasons", "top_error_reasons")):
        if summary[key]:
            print(f"{title}:")
            for name, count in summary[key].items():
                print(f"  {count:>7}  {name}")
    if summary.get("ignored_columns"):
        print("columns with text that no field reads (not moderated; map them with --columns KIND.FIELD=COLUMN, "
              "mark them --columns ignore=COLUMN, or refuse such rows with --strict-columns):")
        for name, count in summary["ignored_columns"].items():
            print(f"  {count:>7}  rows: {name}")
    if summary_path:
        print(f"summary written to {summary_path}")
