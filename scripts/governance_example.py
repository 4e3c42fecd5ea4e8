#!/usr/bin/env python
"""Regenerate the worked examples of docs/investigate.md and docs/trends.md from the synthetic
marketplace (eval_sets/synthetic_marketplace): the tables between their
`<!-- governance_example:NAME -->` markers and the plots in docs/governance/.

    python scripts/governance_example.py                      # `moderation run` with the default model (slow on CPU)
    python scripts/governance_example.py --synthetic-scorer   # the documented synthetic scorer: no model at all

The model path moderates the seven daily dumps with `moderation run` (one subprocess each, resumable:
a rerun reuses finished run files) into runs/governance/model/, then computes the trends and the
investigation from those run files. The synthetic path writes run files of the synthetic scorer
(eval_sets/synthetic_marketplace/generate.py) into runs/governance/synthetic/ instead, and every
table it writes says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "eval_sets" / "synthetic_marketplace"
DOCS = ROOT / "docs"
FIGURES = DOCS / "governance"
DUMPS = [DATA / f"day-{d}.jsonl" for d in range(1, 8)]
SHOWN_ACCOUNT = "merchant:rk_luxe_replicas"


def synthetic_module():
    spec = importlib.util.spec_from_file_location("synthetic_marketplace", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_runs(out: Path, extra: list[str]) -> tuple[list[Path], str]:
    """`moderation run` with the default model on each dump (its shipped thresholds flag the records)."""
    runs = []
    for dump in DUMPS:
        run = out / dump.name
        command = [sys.executable, "-m", "moderation.cli", "run", str(dump), "-o", str(run), "--model", "default", *extra]
        print("$ " + " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
        runs.append(run)
    return runs, "the default model (`moderation run --model default`), its shipped thresholds"


def synthetic_runs(out: Path) -> tuple[list[Path], str]:
    return synthetic_module().synthetic_runs(out), ("the SYNTHETIC SCORER of eval_sets/synthetic_marketplace/generate.py "
                                                    "(scores from the ground truth and a hash, not a model)")


def replace_section(path: Path, name: str, text: str) -> None:
    """Put `text` between the markers of section `name` in a doc."""
    start, end = f"<!-- governance_example:{name} -->", f"<!-- /governance_example:{name} -->"
    doc = path.read_text(encoding="utf-8")
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} ... {end} markers")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{start}\n{text.strip()}\n{end}", doc), encoding="utf-8")


def trends_section(runs: list[Path], source: str, out: Path) -> str:
    from moderation.model import model_profile
    from moderation.trends import order_periods, trends, write_json
    from moderation.trends_report import markdown, write_plots

    result = trends(order_periods(runs, DUMPS), thresholds=model_profile("default").thresholds)
    write_json(result, out / "trends.json")  # the review app's trends page can show it (MODERATION_TRENDS_JSON)
    pngs = write_plots(result, FIGURES / "trends")
    body = markdown(result, [f"governance/{p.name}" for p in pngs]).split("\n", 2)[2]  # without its title
    body = body.replace("\n## ", "\n#### ")
    return f"Scored by {source}; made by `scripts/governance_example.py`.\n\n{body}"


def investigate_section(runs: list[Path], source: str, out: Path) -> str:
    from moderation import investigate as inv

    bans = inv.load_bans(DATA / "bans.csv")
    result = inv.build(inv.collect(DUMPS, runs, bans=bans), bans, inv.load_allow_list(DATA / "allow_list.txt"))
    inv.write_json(result, out / "investigation.json")
    rows = ["| group | risk | members | linked by | why |", "|---|---|---|---|---|"]
    for g in result["groups"][:10]:
        members = ", ".join(g["members"][:5]) + (f" +{len(g['members']) - 5}" if len(g["members"]) > 5 else "")
        linked = ", ".join(i["identifier"] for i in g["identifiers"][:3])
        rows.append(f"| {g['id']} | {g['risk']:g} | {members} | {linked} | {'; '.join(g['reasons'][1:])} |")
    shown = inv.group_text(inv.find_group(result, SHOWN_ACCOUNT))
    return (f"Flags from {source}; made by `scripts/governance_example.py`. {len(result['groups'])} groups; the top ten:\n\n"
            + "\n".join(rows) + f"\n\n`moderation investigate {SHOWN_ACCOUNT} --from {os.path.relpath(out, ROOT)}/investigation.json`:"
            f"\n\n```\n{shown}\n```")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-scorer", action="store_true", help="no model: the synthetic scorer's run files")
    parser.add_argument("--runs", type=Path, help="where run files go (default runs/governance/model or /synthetic)")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="after --: more `moderation run` flags (model path)")
    args = parser.parse_args(argv)
    out = args.runs or ROOT / "runs" / "governance" / ("synthetic" if args.synthetic_scorer else "model")
    out.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.run_args if a != "--"]
    runs, source = synthetic_runs(out) if args.synthetic_scorer else model_runs(out, extra)
    FIGURES.mkdir(parents=True, exist_ok=True)
    replace_section(DOCS / "trends.md", "trends", trends_section(runs, source, out))
    replace_section(DOCS / "investigate.md", "investigate", investigate_section(runs, source, out))
    print(json.dumps({"runs": [str(r) for r in runs], "scored_by": source, "docs": ["docs/trends.md",
                      "docs/investigate.md"], "figures": sorted(p.name for p in FIGURES.iterdir())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
