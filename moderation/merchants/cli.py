"""`moderation merchants ...`: score, explain, appeal, report, fairness. The only merchants module that prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

from moderation.errors import ConfigError
from moderation.settings import DATA_DIR_HELP, POLICY_HELP

DEFAULT_DB = os.environ.get("MODERATION_REVIEW_DB", "runs/review.sqlite")


def _common(p, *, enforcement: bool = True) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help=f"store: path, sqlite:///PATH or postgresql://... (default {DEFAULT_DB})")
    if enforcement:
        p.add_argument("--enforcement", help="enforcement file (default prompts/enforcement.yaml)")
        p.add_argument("--policy", help=POLICY_HELP)
        p.add_argument("--now", help="score as of this ISO date or time (default: now); decay is relative to it")


def add_parser(sub) -> None:
    """Add `merchants` and its subcommands to the `moderation` parser."""
    m = sub.add_parser("merchants", help="merchant health: strikes, tiers, appeals, reports, fairness")
    msub = m.add_subparsers(dest="merchants_command", required=True)
    p = msub.add_parser("score", help="compute merchant health from runs (with their dumps) and case checks")
    p.add_argument("--run", action="append", default=[], help="a run file (repeatable; pair each with --input)")
    p.add_argument("--input", action="append", default=[], help="the dump the matching --run moderated")
    p.add_argument("--run-date", action="append", default=[],
                   help="ISO date of the matching --run's verdicts (give one per run, or none: file modification time)")
    p.add_argument("--thresholds", help="JSON {policy: threshold} for scores.policies (default: the enforcement file's)")
    p.add_argument("--count-unscored", action="store_true", help="count model verdicts without scores (default: only "
                                                                     "when a reviewer confirmed them)")
    p.add_argument("--kind", default="listing", help="kind of --input rows without a 'kind' column")
    p.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="--input format, when its name does not tell")
    p.add_argument("-o", "--output", help="also write every merchant's health record to this JSON file")
    _common(p)
    p = msub.add_parser("explain", help="every verdict of one merchant, whether it counts, its points and decay")
    p.add_argument("merchant", help="merchant: listing seller, video creator, chat channel or shop name")
    p.add_argument("--json", action="store_true", help="print the health record as JSON")
    _common(p, enforcement=False)
    p = msub.add_parser("appeal", help="appeal a merchant's strikes: send the items' verdicts back to review")
    p.add_argument("merchant", help="the merchant appealing")
    p.add_argument("--items", required=True, help="comma-separated item ids whose verdicts are appealed")
    p.add_argument("--reason", default="", help="the merchant's reason, shown to the reviewer")
    _common(p)
    p = msub.add_parser("decide", help="decide an appeal without the review app: uphold or overturn, then recompute")
    p.add_argument("appeal_id", help="appeal id (printed by `merchants appeal`)")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--uphold", action="store_true", help="the strike stands (accept the verdict)")
    verdict.add_argument("--overturn", action="store_true", help="the strike goes (correct the verdict to allow)")
    p.add_argument("--reviewer", required=True, help="who decides (recorded in the audit log)")
    p.add_argument("--notes", default="", help="the reviewer's notes")
    _common(p)
    p = msub.add_parser("report", help="riskiest merchants, tier transitions, enforcement volume: JSON, Markdown, chart")
    p.add_argument("-o", "--output", default="runs/merchants/report", help="output stem: STEM.json, STEM.md, STEM.png")
    p.add_argument("--top", type=int, default=10, help="riskiest merchants to list (default 10)")
    _common(p)
    p = msub.add_parser("fairness", help="enforcement and overturn rates by region and language, with tests")
    p.add_argument("--eval-runs", help="labelled-set run files: a folder of SET.jsonl (as `moderation eval` writes "
                                       "under OUT_DIR/runs) or one such file; default: the store's merchants and appeals")
    p.add_argument("--labels", help="with --eval-runs: a labelled JSONL file (marketplace record format, e.g. "
                                    "eval_sets/kyc/shops.jsonl) to join with, instead of the set named after each run file")
    p.add_argument("--data-dir", help=DATA_DIR_HELP + ", for public sets")
    p.add_argument("--thresholds", help="eval runs: JSON {policy: threshold} (default: the enforcement file's)")
    p.add_argument("--count-unscored", action="store_true", help="eval runs: count verdicts without scores")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate per table (default 0.05)")
    p.add_argument("--min-n", type=int, default=5, help="smallest group (and rest) that is tested (default 5)")
    p.add_argument("-o", "--output", default="runs/merchants/fairness", help="output stem: STEM.json, STEM.md, STEM.png")
    _common(p)


def _policy(args):
    from moderation.policy import load_policy

    return load_policy(getattr(args, "policy", None))


def _config(args):
    from moderation.merchants.enforcement import load_enforcement

    return load_enforcement(_policy(args), getattr(args, "enforcement", None))


def _mstore(args):
    from moderation.merchants.store import MerchantStore
    from moderation.review.store import Store

    return MerchantStore(Store(args.db))


def cmd_merchants(args) -> int:
    handlers = {"score": _score, "explain": _explain, "appeal": _appeal, "decide": _decide, "report": _report,
                "fairness": _fairness}
    return handlers[args.merchants_command](args)


def _run_inputs(args):
    from moderation.merchants.ledger import RunInput

    if len(args.run) != len(args.input):
        raise ConfigError(f"give one --input per --run: {len(args.run)} runs, {len(args.input)} inputs")
    if args.run_date and len(args.run_date) != len(args.run):
        raise ConfigError(f"give one --run-date per --run, or none: {len(args.run)} runs, {len(args.run_date)} dates")
    dates = args.run_date or [None] * len(args.run)
    return [RunInput(Path(r), Path(i), d) for r, i, d in zip(args.run, args.input, dates)]


def _score(args) -> int:
    from moderation.merchants.ledger import read_run
    from moderation.merchants.store import as_of
    from moderation.scoring import load_thresholds

    config, mstore, now = _config(args), _mstore(args), as_of(args.now)
    verdicts = []
    for source in _run_inputs(args):
        found, skipped = read_run(source, fmt=args.format, default_kind=args.kind)
        verdicts += found
        print(f"{source.run}: {len(found)} merchant verdicts dated {source.when()[:19]}"
              + (f" (left out: {dict(skipped)})" if skipped else ""))
    if verdicts:
        mstore.save_inputs(verdicts)
    # Each score uses its own flags; they are stored so that appeal and decide recompute the same way.
    params = {"thresholds": load_thresholds(args.thresholds, _policy(args)) if args.thresholds else {},
              "count_unscored": args.count_unscored}
    mstore.save_params(params)
    result = mstore.recompute(config, now, thresholds=params["thresholds"], count_unscored=params["count_unscored"])
    _print_health(result, config)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"health records written to {args.output}")
    return 0


def _print_health(result, config) -> None:
    records = result["health"].values()
    counts = {t: sum(1 for r in records if r["tier"] == t) for t in config.tier_names}
    for appeal in result["appeals_resolved"]:
        print(f"appeal {appeal['appeal_id']} ({appeal['merchant']}, item {appeal['item_id']}): {appeal['status']}")
    for t in result["transitions"]:
        print(f"{t['merchant']}: {t['from_tier'] or '(new)'} -> {t['to_tier']} ({t['reason']})")
    print(f"{len(result['health'])} merchants: " + ", ".join(f"{n} {t}" for t, n in counts.items()))


def _explain(args) -> int:
    from moderation.errors import InputError

    records = _mstore(args).health(args.merchant)
    if not records:
        raise InputError(f"no health record for merchant {args.merchant!r}: run `moderation merchants score` first")
    record = records[0]
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    print(f"{record['merchant']}: {record['tier']} ({record['points']:.2f} decayed points, tier by points "
          f"{record['points_tier']}) as of {record['as_of'][:19]}; {record['items']} items, {record['strikes']} strikes")
    for e in record["escalations"]:
        print(f"  escalation {e['rule']}: {e['strikes']} strikes -> {e['tier']}"
              + (" (pending review)" if e["pending_review"] else ""))
    for v in record["violations"]:
        mark = "counts" if v["counts"] else "ignored"
        appeal = ", under appeal" if v["under_appeal"] else ""
        print(f"  {v['item_id']} {v['policy']}/{v['severity']} [{v['source']}] {mark}: {v['why']}; "
              f"{v['points']:g} pts x decay {v['decay']:.3f} ({v['age_days']:.1f} days) = {v['decayed_points']:.2f}{appeal}")
    return 0


def _appeal(args) -> int:
    from moderation.merchants.store import as_of

    mstore = _mstore(args)
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    filed = mstore.file_appeal(args.merchant, items, args.reason)
    result = mstore.recompute(_config(args), as_of(args.now))
    for a in filed:
        print(f"appeal {a['appeal_id']}: item {a['item_id']} ({', '.join(a['policies'])}) sent to review queue "
              f"'appeals' as case check {a['check_id']}")
    record = result["health"].get(args.merchant)
    if record:
        print(f"{args.merchant}: {record['tier']} ({record['points']:.2f} points); strikes under appeal count until decided")
    return 0


def _decide(args) -> int:
    from moderation.merchants.store import as_of, decide_appeal

    result = decide_appeal(_mstore(args), args.appeal_id, args.reviewer, args.overturn, _config(args), as_of(args.now),
                           args.notes)
    _print_health(result, _config(args))
    return 0


def _report(args) -> int:
    from moderation.merchants import report
    from moderation.merchants.store import as_of

    mstore, config = _mstore(args), _config(args)
    if args.now:
        mstore.recompute(config, as_of(args.now))
    data = report.build_report(config, mstore.health(), mstore.transitions(), mstore.appeals(), args.top)
    stem = Path(args.output)
    paths = report.write_outputs(stem, data, "")
    chart = report.report_chart(data, stem.with_suffix(".png"))
    paths[1].write_text(report.report_markdown(data, chart.name))
    print(f"{data['merchants']} merchants: " + ", ".join(f"{n} {t}" for t, n in data["tiers"].items()))
    print("written: " + ", ".join(str(p) for p in [*paths, chart]))
    return 0


def _fairness(args) -> int:
    from moderation.merchants import fairness, report

    config = fairness.FairnessConfig(alpha=args.alpha, min_n=args.min_n)
    if args.eval_runs:
        enforcement, overturns, source = _eval_rows(args)
    else:
        mstore = _mstore(args)
        enforcement, overturns = fairness.store_rows(mstore.health(), mstore.inputs(), mstore.appeals())
        source = (f"Store {args.db}: enforcement = items with a counted strike, of items moderated; overturn = "
                  "appeals overturned, of appeals decided.")
    result = fairness.fairness(enforcement, overturns, config)
    result["source"] = source
    stem = Path(args.output)
    paths = report.write_outputs(stem, result, "")
    chart = report.fairness_chart(result, stem.with_suffix(".png"))
    paths[1].write_text(report.fairness_markdown(result, chart.name, source))
    for f in result["flagged"]:
        print(f"FLAG {f['table']}: {f['group']} {f['rate']:.1%} vs rest {f['rest_rate']:.1%} (Holm p {f['p_holm']:.3g})")
    print(f"{len(enforcement)} items, {len(overturns)} overturn trials, {len(result['flagged'])} groups flagged; "
          "written: " + ", ".join(str(p) for p in [*paths, chart]))
    return 0


def _eval_rows(args):
    from moderation.merchants import fairness
    from moderation.merchants.ledger import ItemVerdict, model_violations
    from moderation.scoring import load_thresholds

    config, thresholds = _config(args), (load_thresholds(args.thresholds, _policy(args)) if args.thresholds else {})

    def enforces(item, record) -> bool:
        v = ItemVerdict("-", item, record.verdict, record.scores, "", "")
        return any(x.counts for x in model_violations(v, config, thresholds, args.count_unscored))

    enforcement, overturns, names = fairness.eval_rows(args.eval_runs, enforces, args.data_dir, args.labels)
    backends = sorted({_backend(args.eval_runs)} - {None})
    source = (f"Labelled sets {', '.join(names)} from {args.eval_runs} (backend {', '.join(backends) or 'unknown'}): "
              "enforcement = the model's verdict counts as a strike (decision and score rules of the enforcement "
              "file); overturn = an enforcement on an item whose gold labels have no violation (a false positive), "
              "of enforcements.")
    return enforcement, overturns, source


def _backend(runs) -> str | None:
    path = Path(runs)
    first = next(iter(sorted(path.glob("*.jsonl")) if path.is_dir() else [path]), None)
    if first is None:
        return None
    from moderation.runfile import read_records

    for record in read_records(first):
        if record.provenance is not None:
            return f"{record.provenance.get('backend')}:{record.provenance.get('model')}"
    return None
