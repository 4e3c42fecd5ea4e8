"""`moderation review ...`: sample a run into a queue, serve the review app, manage accounts,
export and import case checks. Like moderation/cli.py, the only review module that prints."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from pathlib import Path

from moderation.errors import ConfigError, InputError
from moderation.settings import add_fields, from_args

DEFAULT_DB = os.environ.get("MODERATION_REVIEW_DB", "runs/review.sqlite")
EXPORT_FORMATS = ("jsonl", "hf", "label-studio")


def add_parser(sub) -> None:
    """Add `review` and its subcommands to the `moderation` parser."""
    review = sub.add_parser("review", help="reviewer spot-checks: sample, review app, case-check store")
    rsub = review.add_subparsers(dest="review_command", required=True)
    p = rsub.add_parser("sample", help="sample a run's verdicts into a review queue")
    p.add_argument("run", help="run file (JSONL from `moderation run`)")
    p.add_argument("--input", required=True, help="the dump that run moderated (items are joined by line and id)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("-n", type=int, help="items to sample")
    size.add_argument("--audit-rate", type=float, help="share of the run's verdicts to sample, e.g. 0.02")
    p.add_argument("--strategy", default="random", choices=["random", "stratified", "uncertainty", "disagreement"],
                   help="random (default); stratified by decision and policy; uncertainty near thresholds; "
                        "disagreement with --compare")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same sample")
    p.add_argument("--overlap", type=float, default=0.0, help="share of items reviewed by two reviewers, for agreement")
    p.add_argument("--compare", help="disagreement: the second run file")
    p.add_argument("--thresholds", help="uncertainty: JSON file of {policy: threshold} (default 0.5 each)")
    p.add_argument("--policy", help="the policy file the run was made with (default prompts/policy.yaml): the queue's "
                                    "corrections are made in its taxonomy")
    p.add_argument("--include-errors", action="store_true", help="also sample items the model failed on")
    p.add_argument("--queue", help="queue name (default: run file name, strategy and seed)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"store: path, sqlite:///PATH or postgresql://... (default {DEFAULT_DB})")
    p.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="--input format, when its name does not tell")
    p.add_argument("--kind", default="listing", help="kind of --input rows without a 'kind' column")
    p.add_argument("--columns", help="--input column mapping, as for `moderation run`")
    p.add_argument("-o", "--output", help="also write the queue entries to this JSONL file")
    p = rsub.add_parser("serve", help="run the review web app")
    p.add_argument("--db", default=DEFAULT_DB, help=f"store (default {DEFAULT_DB})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--lease", type=float, default=900, help="seconds a claimed item stays with its reviewer (default 900)")
    _add_web_settings(p)
    p = rsub.add_parser("export", help="export finished case checks (jsonl, hf) or a queue as Label Studio tasks")
    p.add_argument("db", help="store: path, sqlite:///PATH or postgresql://...")
    p.add_argument("--format", default="jsonl", choices=EXPORT_FORMATS, help="jsonl (default), hf or label-studio")
    p.add_argument("-o", "--output", required=True, help="output file (hf: a directory)")
    p.add_argument("--queue", help="only this queue")
    p = rsub.add_parser("import", help="import Label Studio annotations (JSON export) as case checks")
    p.add_argument("db", help="store: path, sqlite:///PATH or postgresql://...")
    p.add_argument("file", help="Label Studio JSON export of tasks exported with `review export --format label-studio`")
    user = rsub.add_parser("user", help="manage reviewer accounts (user add NAME --role reviewer|lead)")
    usub = user.add_subparsers(dest="user_command", required=True)
    p = usub.add_parser("add", help="add an account, or reset its role and password")
    p.add_argument("name", help="account name")
    p.add_argument("--role", default="reviewer", choices=["reviewer", "lead"], help="reviewer (default) or lead")
    p.add_argument("--password-env", help="read the password from this environment variable instead of a prompt")
    p.add_argument("--db", default=DEFAULT_DB, help=f"store (default {DEFAULT_DB})")
    p = usub.add_parser("disable", help="disable an account: its sessions end at once and it cannot log in "
                                        "(`user add` enables it again)")
    p.add_argument("name", help="account name")
    p.add_argument("--db", default=DEFAULT_DB, help=f"store (default {DEFAULT_DB})")


WEB_FLAGS = ["secure_cookies", "forwarded_allow_ips"]  # ReviewSettings fields that are `review serve` flags


def _add_web_settings(p) -> None:
    """`review serve`'s cookie and proxy flags, made from ReviewSettings (defaults and help live there)."""
    from moderation.review.app import ReviewSettings

    add_fields(p, ReviewSettings, WEB_FLAGS)


def _open(url, *, create: bool = False):
    """The store at `url`; only the commands that fill a store (`sample`, `user add`) create one."""
    from moderation.review.store import Store

    return Store(url, create=create)


def cmd_review(args) -> int:
    handlers = {"sample": _sample, "serve": _serve, "export": _export, "import": _import, "user": _user}
    return handlers[args.review_command](args)


def _sample(args) -> int:
    from moderation.items import parse_column_map
    from moderation.policy import load_policy
    from moderation.review import sample
    from moderation.review.verdicts import Taxonomy
    from moderation.runfile import load_run
    from moderation.scoring import load_thresholds

    policy = load_policy(args.policy)
    config = sample.SampleConfig(strategy=args.strategy, n=args.n, audit_rate=args.audit_rate, seed=args.seed,
                                 overlap=args.overlap, include_errors=args.include_errors,
                                 thresholds=load_thresholds(args.thresholds, policy) if args.thresholds else {})
    records = sample.check_taxonomy(load_run(args.run), policy, args.run)
    other = sample.check_taxonomy(load_run(args.compare), policy, args.compare) if args.compare else None
    picked = sample.sample_run(records, config, other)
    if not picked:
        raise InputError(f"nothing to sample from {args.run} with strategy {args.strategy}")
    items = sample.join_items([r for r, _ in picked], args.input, fmt=args.format,
                              columns=parse_column_map(args.columns), default_kind=args.kind)
    entries = sample.queue_entries(picked, items, config)
    name = args.queue or re.sub(r"[^A-Za-z0-9._-]+", "_", f"{Path(args.run).stem}-{args.strategy}-s{args.seed}")
    params = {"run": str(args.run), "input": str(args.input), "compare": args.compare, "strategy": args.strategy,
              "n": args.n, "audit_rate": args.audit_rate, "seed": args.seed, "overlap": args.overlap,
              "taxonomy": Taxonomy.of(policy).to_json()}
    store = _open(args.db, create=True)
    store.create_queue(name, entries, params)
    if args.output:
        Path(args.output).write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    twins = sum(1 for e in entries if e["sample"].get("overlap"))
    print(f"queue {name!r} in {args.db}: {len(entries)} case checks ({len(picked)} items, {twins} overlap twins) "
          f"sampled from {len(records)} records by {args.strategy}, seed {args.seed}")
    return 0


def _serve(args) -> int:
    import uvicorn

    from moderation.review.app import ReviewSettings, create_app
    from moderation.review.store import Store, StoreConfig

    store = Store(args.db, StoreConfig(lease_s=args.lease), create=False)
    if not store.db.one("SELECT name FROM users LIMIT 1"):
        print("no accounts yet: add one with `moderation review user add NAME --role lead`", file=sys.stderr)
    settings = from_args(ReviewSettings, args, WEB_FLAGS)
    print(f"review app on http://{args.host}:{args.port}/ (store {args.db})")
    # The app reads the proxy headers itself (from --forwarded-allow-ips), so uvicorn must not.
    uvicorn.run(create_app(store, settings), host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


def _export(args) -> int:
    from moderation.review import interop

    store = _open(args.db)
    if args.format == "label-studio":
        checks = store.checks(args.queue)
        count, config = interop.export_label_studio(checks, args.output, interop.one_taxonomy(store, checks))
        print(f"{count} open case checks as Label Studio tasks in {args.output}; labelling config in {config}")
        return 0
    checks = interop.finished(store, args.queue)
    count = interop.export_jsonl(checks, args.output) if args.format == "jsonl" else interop.export_hf(checks, args.output)
    print(f"{count} finished case checks written to {args.output} ({args.format})")
    return 0


def _import(args) -> int:
    from moderation.review.interop import import_label_studio

    counts = import_label_studio(_open(args.db), args.file)
    print(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


def _user(args) -> int:
    if args.user_command == "disable":
        _open(args.db).disable_user(args.name)
        print(f"account {args.name!r} disabled in {args.db}; its sessions have ended")
        return 0
    from moderation.review.auth import hash_password

    password = _password_from_env(args.password_env) if args.password_env else _password_from_prompt(args.name)
    if len(password) < 8:
        raise InputError("a password needs at least 8 characters")
    _open(args.db, create=True).add_user(args.name, args.role, hash_password(password))
    print(f"account {args.name!r} ({args.role}) saved in {args.db}")
    return 0


def _password_from_env(variable: str) -> str:
    password = os.environ.get(variable)
    if not password:
        raise ConfigError(f"environment variable {variable} is not set or empty")
    return password


def _password_from_prompt(name: str) -> str:
    """Ask twice on the terminal; with no terminal (cron, CI, a pipe) say how to pass one instead."""
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the password on: put it in an environment variable and "
                          "pass --password-env VAR")
    try:
        password = getpass.getpass(f"password for {name}: ")
        again = getpass.getpass("again: ")
    except EOFError:
        raise ConfigError("no password typed (end of input): pass --password-env VAR instead") from None
    if password != again:
        raise InputError("the passwords differ")
    return password
