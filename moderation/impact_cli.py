"""`moderation impact`: the CLI side of what-if impact (it prints); the work is moderation.impact (assess),
moderation.impact_measure and moderation.impact_report (write_report)."""

from __future__ import annotations

import sys
from pathlib import Path

from moderation.impact import ImpactRequest
from moderation.impact_measure import DIRECTIONS, ImpactSettings
from moderation.settings import add_fields, from_args


def add_impact_parser(sub) -> None:
    p = sub.add_parser("impact", help="what a policy change would do, decided again from past runs' scores (no model)")
    p.add_argument("-o", "--out-dir", required=True, help="where impact.json, impact.md, impact.html, the plots, "
                                                         "thresholds.json and the proposed review sample go")
    add_fields(p.add_argument_group("runs and change"), ImpactRequest)
    add_fields(p.add_argument_group("measuring"), ImpactSettings)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _lines(paths: list[str]) -> int | None:
    """Lines of the run files (the progress bar's total), or None if one cannot be read (the reader says why)."""
    total = 0
    for path in paths:
        try:
            with open(path, "rb") as fh:
                total += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 22), b""))
        except OSError:
            return None
    return total


def cmd_impact(args) -> int:
    from tqdm import tqdm

    from moderation.impact import assess
    from moderation.impact_report import write_report

    request, settings = from_args(ImpactRequest, args), from_args(ImpactSettings, args)
    with tqdm(total=_lines(request.run), unit="record", desc="reading runs", disable=args.no_progress,
              file=sys.stderr) as bar:
        assessment = assess(request, settings, bar)
    paths = write_report(assessment, args.out_dir)
    result = assessment.result
    t, q, m = result["tallies"], result["review_queue"], result["merchants"]
    print(f"status: {result['status'].upper()}")
    print(f"{t['changed']} of {t['records']} records change: " + ", ".join(f"{n} {d.replace('_', ' ')}"
                                                                      for d, n in t["directions"].items() if n))
    for transition, n in list(t["transitions"].items())[:8]:
        print(f"  {transition}: {n}")
    print(f"review queue: {q['per_day_before']:.1f} -> {q['per_day_after']:.1f} items/day "
          f"({q['load_before']:.2f} -> {q['load_after']:.2f} reviewer-days/day at {q['throughput']:g}/day)")
    if m["available"]:
        print(f"merchants changing tier: {len(m['changes'])} of {m['merchants']}")
    for direction in DIRECTIONS:
        e = result["estimates"][direction]
        if e["items"]:
            rate = "UNMEASURED (0 case checks)" if e["rate"] is None else \
                f"{e['rate']:.2f} [{e['interval'][0]:.2f}, {e['interval'][1]:.2f}] on {e['checks']} checks"
            print(f"{direction.replace('_', ' ')}: {e['items']} items, {rate}")
    for command in result["sample"]["commands"] + result["sample"]["rescore"]["commands"]:
        print(f"next: {command}")
    print(f"written: {', '.join(str(p) for p in paths[:4])} and {len(paths) - 4} more in {Path(args.out_dir)}")
    return 0
