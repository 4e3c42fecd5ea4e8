"""Regenerate docs/results.md: every labelled set, every system, in one `moderation eval` run.

    python scripts/benchmark_accuracy.py --sample 150            # about 30 minutes on 2 CPU cores
    python scripts/benchmark_accuracy.py --sample 150 -- --backend transformers

Arguments after `--` go to `moderation eval` (backend, model, sets...).
"""

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=150, help="test items per set (default 150)")
    parser.add_argument("--out-dir", default="runs/benchmark", help="eval output directory")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="the Markdown file to write")
    parser.add_argument("extra", nargs="*", help="more `moderation eval` arguments, after --")
    args = parser.parse_args(argv)
    eval_args = ["eval", "--sample", str(args.sample), "--out-dir", args.out_dir, *args.extra]
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "moderation.cli", *eval_args], cwd=ROOT).returncode  # the command, as a user runs it
    if code != 0:
        return code
    minutes = (time.perf_counter() - started) / 60
    out = Path(args.out_dir)
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    llm = meta.get("llm") or {}
    header = [
        "# Accuracy results",
        "",
        f"Generated {datetime.date.today().isoformat()} by `python scripts/benchmark_accuracy.py --sample {args.sample}"
        + (" -- " + " ".join(args.extra) if args.extra else "") + "`,",
        f"which ran `moderation {' '.join(eval_args)}` in {minutes:.0f} minutes on {machine()}.",
        "",
        f"LLM: model `{llm.get('model')}` (weights sha256 `{(llm.get('model_sha') or '')[:12]}`), backend `{llm.get('backend')}`, "
        f"adapter `{llm.get('adapter')}`, prompt sha256 `{(llm.get('prompt_sha') or '')[:12]}`, policy {llm.get('policy_version')}.",
        "rules = keyword/regex baseline; tfidf = TF-IDF + logistic regression trained on the train splits.",
        f"Each set is scored on a fixed sample of at most {args.sample} test items (the lowest id hashes).",
        f"LLM run files in `{args.out_dir}/runs/` are resumed, not redone: the minutes above and the LLM's",
        "items/s cover only what this invocation moderated (items/s shows – for a set it found done).",
        "",
    ]
    body = (out / "report.md").read_text()
    Path(args.results).write_text("\n".join(header) + "\n" + body)
    print(f"wrote {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run())
