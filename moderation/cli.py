"""The `moderation` command (its eval part is in eval_cli.py). Only the CLI modules print or set up logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from moderation import __version__
from moderation.curate_cli import add_curate_parser, cmd_curate
from moderation.errors import BackendError, ConfigError, InputError, ModerationError
from moderation.merchants import cli as merchants_cli
from moderation.review import cli as review_cli
from moderation.screen_cli import add_screen_parser, cmd_screen

logger = logging.getLogger("moderation")

EXIT_OK = 0
EXIT_USAGE = 2  # bad options, config or input file: nothing was moderated
EXIT_BUDGET = 3  # stopped: too many rows became error records
EXIT_BACKEND = 4  # the model backend failed as a whole
EXIT_INTERRUPTED = 130


def _add_backend_args(p) -> None:
    p.add_argument("--backend", default="vllm", help="vllm (default), transformers, openai or fake")
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2-135M-Instruct with the shipped moderation adapter merged, its prompt and "
                        "thresholds), 'base' (the zero-shot SmolLM2-135M-Instruct), or a Hugging Face model directory")
    p.add_argument("--policy", help="policy file (default prompts/policy.yaml)")
    p.add_argument("--prompt", help="prompt template (default: the model's own, else prompts/moderate.v1.txt)")
    p.add_argument("--thresholds", help="JSON file of {policy: threshold}: verdicts follow the scores cut at them (score "
                                        "first) and records list the policies that reach them as `flagged`; default: "
                                        "the model's shipped thresholds ('default' has them); 'none' for none")
    p.add_argument("--chunk-size", type=int, default=64, help="items per model call and per checkpoint (default 64)")
    p.add_argument("--max-tokens", type=int, default=256, help="generated tokens per verdict, at most (default 256)")
    p.add_argument("--max-attempts", type=int, default=2, help="tries per item before an error record (default 2)")
    p.add_argument("--dtype", default="auto", help="weights dtype: auto, float32, bfloat16, float16")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM: share of GPU memory (of RAM on CPU)")
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                   help="vLLM: skip compilation and graph capture (default: on for CPU, off for GPU)")
    p.add_argument("--max-model-len", type=int, default=8192, help="vLLM: prompt plus output tokens, at most (default 8192)")
    p.add_argument("--block-size", type=int, help="vLLM: KV-cache block size in tokens (default: the engine's, 128 on CPU)")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai: server URL")
    p.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    p.add_argument("--free-evidence", action="store_true", help="do not constrain evidence to quotes from the item")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                   help="a LoRA adapter directory (PEFT) to apply; vLLM serves it with enable_lora")
    p.add_argument("--scores", action=argparse.BooleanOptionalAction, default=True,
                   help="per-policy confidence scores from token log-probabilities (vllm, transformers, fake; default on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="moderate a dump (JSONL, CSV or Parquet) into a JSONL file of verdicts")
    p.add_argument("input", help="the dump: .jsonl, .csv or .parquet (optionally .gz for text formats)")
    p.add_argument("-o", "--output", required=True, help="output JSONL; an existing file is resumed")
    p.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="input format, when the file name does not tell")
    p.add_argument("--kind", default="listing", help="kind of rows without a 'kind' column (listing, merchant, creator_video, live_chat)")
    p.add_argument("--columns", help="column mapping: 'field=column,...' or a .json/.yaml file of {field: column}")
    p.add_argument("--error-budget", type=float, default=0.5, help="stop when more than this share of rows are errors (default 0.5)")
    p.add_argument("--max-text-chars", type=int, default=20_000, help="longest item text; longer rows become errors")
    p.add_argument("--max-row-bytes", type=int, default=1_000_000, help="largest raw row; larger rows become errors")
    p.add_argument("--screen", metavar="DIR",
                   help="a cheap first stage (from `moderation screen fit`): items it is confident are clean get an "
                        "allow verdict without the LLM")
    p.add_argument("--verdict-cache", metavar="PATH",
                   help="persistent SQLite verdict cache shared across runs, keyed by content, model, adapter, prompt "
                        "and policy: repeated items skip the LLM")
    g = p.add_argument_group("distributed (Ray Data)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: a Ray cluster, with OUTPUT a directory of shards")
    g.add_argument("--address", help="ray: cluster address (default: $RAY_ADDRESS, else a local cluster)")
    g.add_argument("--actors", type=int, default=1, help="ray: actors, each holding one backend (default 1)")
    g.add_argument("--actor-cpus", type=float, default=1, help="ray: CPUs per actor (default 1)")
    g.add_argument("--actor-gpus", type=float, default=0, help="ray: GPUs per actor (default 0)")
    g.add_argument("--output-format", choices=["parquet", "jsonl"], default="parquet",
                   help="ray: format of the output shards (default parquet)")
    _add_backend_args(p)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="score the LLM and the baselines on labelled sets (or: eval compare A B)")
    p.add_argument("--sets", help="comma-separated set names (default: marketplace and every public set)")
    p.add_argument("--systems", default="rules,tfidf,llm", help="comma-separated: rules, tfidf, llm (default all three)")
    p.add_argument("--sample", type=int, help="score at most N test items per set (a fixed sample), for quick runs")
    p.add_argument("--out-dir", default="runs/eval", help="where metrics.json, report.md, report.html, plots and LLM run files go")
    p.add_argument("--data-dir", help="public data sets directory (default ../shared/datasets, or $MODERATION_DATA_DIR)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (default 1000)")
    p.add_argument("--llm-dev", type=int, default=0,
                   help="also run the LLM on N dev items per set, choose per-policy thresholds on its scores, report "
                        "'llm@dev-thresholds' and write them to OUT_DIR/thresholds/SET.json (for `run --thresholds`)")
    _add_backend_args(p)
    compare_sub = p.add_subparsers(dest="eval_command")
    c = compare_sub.add_parser("compare", help="paired comparison of two run files on the same labelled items")
    c.add_argument("run_a", help="run file A (JSONL from `moderation run` or `moderation eval`)")
    c.add_argument("run_b", help="run file B")
    c.add_argument("--set", required=True, help="the labelled set the runs covered")
    c.add_argument("--split", default="test", help="its split (default test)")
    c.add_argument("--data-dir", help="public data sets directory")
    c.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    c.add_argument("--json", help="also write the comparison, with the flipped items, to this JSON file")


def _add_serve(sub) -> None:
    from moderation.serve import ServeOptions

    d = ServeOptions()
    p = sub.add_parser("serve", help="serve verdicts over HTTP: POST /v1/moderate, GET /healthz, GET /metrics")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"items per engine call (default {d.max_batch})")
    p.add_argument("--max-wait-ms", type=int, default=d.max_wait_ms, help=f"wait for a batch to fill (default {d.max_wait_ms})")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help=f"items waiting before 429 (default {d.max_queue})")
    p.add_argument("--max-items", type=int, default=d.max_items, help=f"items per request (default {d.max_items})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help=f"largest body (default {d.max_body_bytes})")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, help=f"seconds a request waits before 504 (default {d.timeout_s:g})")
    p.add_argument("--journal", help="append every record to this run file (reloaded on start, for idempotent retries)")
    _add_backend_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moderation", description="LLM moderation of marketplace items.")
    parser.add_argument("--version", action="version", version=f"moderation {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details (and vLLM's own logs)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_eval(sub)
    _add_serve(sub)
    p = sub.add_parser("summary", help="print the summary of an output file")
    p.add_argument("output", help="a JSONL file written by `moderation run`, or its shard directory with --engine ray")
    add_curate_parser(sub)
    add_screen_parser(sub)
    model = sub.add_parser("model", help="manage the embedded default model")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    p = model_sub.add_parser("prepare", help="convert the embedded GGUF into a safetensors directory and merge the "
                                             "shipped adapter into a copy of it (once each)")
    p.add_argument("--force", action="store_true", help="convert again even if prepared")
    review_cli.add_parser(sub)
    merchants_cli.add_parser(sub)
    return parser


def _count_rows(path: Path, fmt: str) -> int | None:
    """Rows in the input, for the progress bar's total (a newline count for text files)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if path.suffix == ".gz":
            return None
        count = 0
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                count += block.count(b"\n")
        return count - (fmt == "csv")
    except Exception:  # the reader will report the real problem
        return None


def cmd_run(args) -> int:
    if args.engine == "ray":
        from moderation.distributed import run_ray

        return run_ray(args)
    from tqdm import tqdm

    from moderation.batch import BatchRunner, ErrorBudgetExceeded, summarize
    from moderation.items import ReadLimits, detect_format, parse_column_map, read_items

    path = Path(args.input)
    fmt = args.format or detect_format(path)
    limits = ReadLimits(max_row_bytes=args.max_row_bytes, max_text_chars=args.max_text_chars)
    rows = read_items(path, fmt=fmt, columns=parse_column_map(args.columns), default_kind=args.kind, limits=limits)
    rows = _peek(rows)  # surface InputError (missing, empty, binary file) before loading a model
    options = run_options(args)
    screen, store = run_screen(args), run_store(args)
    moderator = run_moderator(args)
    runner = BatchRunner(moderator, options, screen=screen, store=store)
    code = EXIT_OK
    bar = tqdm(total=_count_rows(path, fmt), unit="item", disable=args.no_progress, desc="moderating", file=sys.stderr)
    try:
        runner.run(rows, args.output, progress=bar)
    except ErrorBudgetExceeded as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        code = EXIT_BUDGET
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        bar.close()
        moderator.backend.close()
        if store is not None:
            store.close()
    summary = {**summarize(args.output), "this_run": run_figures(runner.stats)}
    summary_path = Path(str(args.output) + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, args.output, summary_path)
    return code


def run_options(args):
    from moderation.batch import RunOptions

    return RunOptions(chunk_size=args.chunk_size, error_budget=args.error_budget, thresholds=run_thresholds(args))


def run_screen(args):
    """The --screen first stage, or None."""
    if not args.screen:
        return None
    from moderation.screen import load_screen

    return load_screen(args.screen)


def run_store(args):
    """The --verdict-cache store, or None."""
    if not args.verdict_cache:
        return None
    from moderation.verdict_store import VerdictStore

    return VerdictStore(args.verdict_cache)


WEIGHT_BACKENDS = ("vllm", "transformers")  # backends that run the named model's own weights


def _profile(args):
    """The model's shipped prompt and thresholds; they belong to its weights, so only backends that
    load them (not fake, not a remote server) take them."""
    from moderation.model import ModelProfile, model_profile

    return model_profile(args.model) if args.backend in WEIGHT_BACKENDS else ModelProfile(args.model)


def run_thresholds(args) -> dict[str, float] | None:
    """--thresholds FILE, 'none', or (unset) the model's shipped thresholds, if any; scores off: none."""
    from moderation.scoring import check_thresholds

    path = getattr(args, "thresholds", None)
    if path == "none" or not getattr(args, "scores", True):
        return None
    if path is None:
        shipped = _profile(args).thresholds
        return check_thresholds(shipped, f"the thresholds shipped with --model {args.model}") if shipped else None
    try:
        thresholds = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--thresholds {path}: {exc}") from None
    return check_thresholds(thresholds, f"--thresholds {path}")


def _adapters(specs: list[str]):
    from moderation.model import load_adapter

    return tuple(load_adapter(spec) for spec in specs)


def _build_moderator(args):
    """The backend named on the command line (with every --adapter loaded), wrapped in a
    Moderator with policy and prompt that asks for the base model."""
    from moderation.backends import BackendConfig, load_backend
    from moderation.pipeline import Moderator
    from moderation.policy import load_policy
    from moderation.prompts import load_template

    policy, template = load_policy(args.policy), load_template(args.prompt or _profile(args).prompt)
    adapters = _adapters(args.adapter)
    config = BackendConfig(
        model=args.model,
        max_tokens=args.max_tokens,
        batch_size=args.chunk_size,
        dtype=args.dtype,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager,
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        base_url=args.base_url,
        concurrency=args.concurrency,
        adapters=adapters,
    )
    print(f"loading backend {args.backend} with model {args.model} ...", file=sys.stderr)
    backend = load_backend(args.backend, config)
    return Moderator(backend, policy, template, max_attempts=args.max_attempts, grounded_evidence=not args.free_evidence,
                     scores=args.scores, thresholds=run_thresholds(args))


def run_moderator(args):
    """For run and eval: the moderator asking for the one --adapter given, if any."""
    if len(args.adapter) > 1:
        raise ConfigError(f"`moderation {args.command}` applies one --adapter, got {len(args.adapter)}")
    moderator = _build_moderator(args)
    adapters = moderator.backend.config.adapters
    return moderator.with_adapter(adapters[0]) if adapters else moderator


def _peek(rows):
    """Read the first row now (so file-level errors raise here), then yield all rows."""
    import itertools

    first = next(rows, None)
    return rows if first is None else itertools.chain([first], rows)


def run_figures(stats) -> dict:
    return {
        "processed": stats.processed,
        "skipped_already_done": stats.skipped,
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
    }


def _print_summary(summary: dict, output, summary_path: Path | None = None) -> None:
    print(f"\n{output}: {summary['rows']} rows, {summary['verdicts']} verdicts, {summary['errors']} errors "
          f"({summary['verdict_share']:.1%} verdicts)")
    run = summary.get("this_run")
    if run:
        print(f"this run: {run['processed']} rows in {run['elapsed_s']:.1f}s ({run['items_per_s']:.2f} items/s), "
              f"{run['skipped_already_done']} already done, {run['cache_hits']} from the content cache "
              f"({run['verdict_cache_hits']} from the persistent verdict cache, {run['verdict_cache_hit_rate']:.0%}), "
              f"{run['screened']} cleared by the screen, "
              f"{run['prefix_cache_hit_rate']:.0%} of prompt tokens from the prefix cache")
    for title, key in (("decisions", "decisions"), ("policies flagged", "policies"), ("kinds", "kinds"),
                       ("errors by stage", "errors_by_stage"), ("top error reasons", "top_error_reasons")):
        if summary[key]:
            print(f"{title}:")
            for name, count in summary[key].items():
                print(f"  {count:>7}  {name}")
    if summary_path:
        print(f"summary written to {summary_path}")


def cmd_summary(args) -> int:
    from moderation.batch import summarize, summarize_records

    if Path(args.output).is_dir() or "://" in args.output:  # shards of `run --engine ray`
        from moderation.distributed import read_ray_output

        _print_summary(summarize_records(read_ray_output(args.output)), args.output)
        return EXIT_OK
    if not Path(args.output).is_file():
        raise InputError(f"output file not found: {args.output}")
    _print_summary(summarize(args.output), args.output)
    return EXIT_OK


def cmd_model(args) -> int:
    from moderation.model import model_sha, prepare_base_model, prepare_default_model

    base = prepare_base_model(force=args.force)
    print(f"base model (zero-shot, --model base) ready at {base}")
    merged = prepare_default_model(force=args.force)
    print(f"default model (base + shipped adapter, --model default) ready at {merged} (weights sha256 {model_sha(merged)[:12]})")
    return EXIT_OK


def cmd_eval(args) -> int:
    from moderation.eval_cli import compare_runs, evaluate_sets

    if args.eval_command == "compare":
        return compare_runs(args)
    return evaluate_sets(args, run_moderator)


def cmd_serve(args) -> int:
    import signal

    import uvicorn

    from moderation.serve import Metrics, ModerationService, ServeOptions, create_app

    options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                           max_items=args.max_items, max_body_bytes=args.max_body_bytes, timeout_s=args.timeout_s,
                           journal=Path(args.journal) if args.journal else None)
    base = _build_moderator(args)
    adapters = base.backend.config.adapters
    moderators = {None: base, **{a.name: base.with_adapter(a) for a in adapters}}
    metrics = Metrics()
    app = create_app(ModerationService(moderators, options, metrics), metrics)
    print(f"serving on http://{args.host}:{args.port}/v1/moderate (adapters: {[a.name for a in adapters] or 'none'})",
          file=sys.stderr)
    # On SIGTERM/SIGINT uvicorn stops accepting, waits for requests in flight, then the app drains its
    # queue; it then re-raises the signal into the handler it found. For SIGTERM that handler does
    # nothing, so the engine below is closed and the exit code is 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                    timeout_graceful_shutdown=int(options.timeout_s) + 5)
    finally:
        base.backend.close()
    return EXIT_OK


COMMANDS = {"serve": cmd_serve, "run": cmd_run, "eval": cmd_eval, "summary": cmd_summary, "model": cmd_model, "curate": cmd_curate}
COMMANDS["review"] = review_cli.cmd_review
COMMANDS["merchants"] = merchants_cli.cmd_merchants
COMMANDS["screen"] = cmd_screen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if args.verbose else "ERROR")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as exc:
        print(f"backend error: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    except ModerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
