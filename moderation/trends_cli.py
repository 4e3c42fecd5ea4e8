"""`moderation trends`: rates, drift, alerts and emerging clusters over a series of run files (the
CLI side: it prints, and writes the JSON, Markdown, HTML and PNG files)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError
from moderation.settings import POLICY_HELP, add_fields, from_args
from moderation.trends import TrendSettings

FLAGS = [f.name for f in dataclasses.fields(TrendSettings)]
DEFAULT_OUT = "runs/trends/trends"


def add_trends_parser(sub) -> None:
    p = sub.add_parser("trends", help="flagged rates, score drift, alerts and emerging scam clusters over run files "
                                      "(one per period)")
    p.add_argument("runs", nargs="+", help="run files of `moderation run`, one per period (a day, a week)")
    p.add_argument("--input", action="append", default=[],
                   help="the dump the matching run moderated (repeatable, in the order of the runs; or none): adds "
                        "region and language, and the text emerging clusters need")
    p.add_argument("--date", action="append", default=[],
                   help="ISO date of the matching run (repeatable; one per run, or none: runs are ordered by name)")
    p.add_argument("--thresholds", help="JSON {policy: threshold} for the near-threshold band and records without a "
                                        "flagged list (default: the default model's shipped thresholds when the runs "
                                        "are its own, else --default-threshold)")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--kind", default="listing", help="kind of --input rows without a 'kind' column")
    p.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="--input format, when its name does not tell")
    p.add_argument("--columns", help="--input column mapping, as for `moderation run`")
    p.add_argument("-o", "--output", default=DEFAULT_OUT,
                   help=f"output stem: STEM.json (the review app's trends page reads it), STEM.md, STEM.html and "
                        f"STEM-*.png (default {DEFAULT_OUT})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_fields(p, TrendSettings, FLAGS)


def _thresholds(args, policy, periods) -> tuple[dict[str, float], str]:
    from moderation.runfile import read_records
    from moderation.scoring import check_thresholds, load_thresholds

    if args.thresholds:
        return load_thresholds(args.thresholds, policy), f"thresholds from {args.thresholds}"
    first = next(iter(read_records(periods[0].run)), None)
    model = str(((first.provenance or {}) if first else {}).get("model") or "")
    if model.startswith("default:"):
        from moderation.model import model_profile

        shipped = model_profile("default").thresholds or {}
        return check_thresholds(shipped, "the default model's shipped thresholds", policy), \
            "the default model's shipped thresholds"
    return {}, f"no thresholds given: {args.default_threshold} for every policy (--thresholds FILE to set them)"


def cmd_trends(args) -> int:
    from moderation.items import parse_column_map
    from moderation.policy import load_policy
    from moderation.trends import check_files, order_periods, trends, write_json
    from moderation.trends_report import write_html, write_markdown, write_plots

    _check_stem(args.output)
    policy, settings = load_policy(args.policy), from_args(TrendSettings, args, FLAGS)
    check_files(args.runs, args.input)
    periods = order_periods(args.runs, args.input, args.date)
    thresholds, source = _thresholds(args, policy, periods)
    print(f"{len(periods)} periods ({', '.join(p.name for p in periods)}); {source}", file=sys.stderr)
    result = trends(periods, policy, thresholds, settings, progress=not args.no_progress,
                    fmt=args.format, columns=parse_column_map(args.columns), default_kind=args.kind)
    result["thresholds_source"] = source
    stem = Path(args.output)
    paths = [write_json(result, stem.parent / f"{stem.name}.json")]
    pngs = write_plots(result, stem)
    paths += [write_markdown(result, stem.parent / f"{stem.name}.md", [p.name for p in pngs]),
              write_html(result, stem.parent / f"{stem.name}.html")]
    _print_summary(result)
    print("written: " + ", ".join(str(p) for p in [*paths, *pngs]))
    return 0


def _print_summary(result: dict[str, Any]) -> None:
    for a in result["alerts"]:
        print(f"ALERT {a['period']} {a['type']} {a['dimension']}={a['value']} {a['policy']}: {a['detail']}")
    for e in result["emerging"]:
        print(f"EMERGING {e['period']} {e['cluster']} ({e['status']}): {e['count']} items vs {e['baseline']} before; "
              f"terms {', '.join(e['terms'])}; e.g. {e['examples'][0]['text'][:100]!r}")
    last = [r for r in result["rates"] if r["dimension"] == "all" and r["policy"] == "any"]
    print("flagged (any policy): " + ", ".join(f"{r['period']} {r['rate']:.1%}" for r in last if r["rate"] is not None))
    print(f"{len(result['alerts'])} alerts, {len(result['emerging'])} emerging clusters")


def _check_stem(stem: str) -> None:
    if stem.endswith((".json", ".md", ".html")):
        raise ConfigError(f"-o is a stem (STEM.json, STEM.md, STEM.html are written), not a file name: {stem!r}")
