"""Measure the example taxonomy end to end and regenerate the tables of docs/local-services.md.

    python scripts/taxonomy_example.py            # about 10 minutes on 2 CPU cores

In one invocation, on eval_sets/local_services/labels.jsonl under prompts/examples/local-services.yaml:
1. `moderation eval --labels` with the rules and TF-IDF baselines and the zero-shot base model on vLLM;
2. the same file through `--backend openai` against vLLM's OpenAI-compatible server holding that model;
3. policy heads for the example taxonomy: `moderation curate --labels` on the file's train rows,
   `finetune/fit_heads.py`, then `moderation eval --heads` (thresholds from the file's dev rows);
4. `moderation run --model default` with the example policy, which must be refused (the fine-tuned
   default knows only the 12 default policies).
Figures come from each eval's metrics.json; the tables are spliced between markers in the doc.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.report import splice_markdown  # noqa: E402

POLICY = "prompts/examples/local-services.yaml"
LABELS = "eval_sets/local_services/labels.jsonl"
START, END = "<!-- taxonomy-example:start -->", "<!-- taxonomy-example:end -->"
SERVED = "smollm2-base"


def moderation(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A `moderation` command, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "moderation.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"moderation {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def evaluate(out: Path, *backend: str, systems: str = "rules,tfidf,llm") -> tuple[dict, float]:
    started = time.perf_counter()
    moderation("eval", "--labels", LABELS, "--policy", POLICY, "--systems", systems, "--out-dir", str(out),
               "--no-progress", *backend)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - started


@contextmanager
def served_model(log: Path):
    """vLLM's OpenAI-compatible server with the zero-shot base model on a free loopback port (the command
    README.md documents); yields its base URL."""
    from moderation.model import prepare_base_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(prepare_base_model()),
           "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096",
           "--gpu-memory-utilization", "0.5", "--enable-prefix-caching",
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 900
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"vLLM server did not start; see {log}") from None
                time.sleep(3)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def fitted_heads(out: Path) -> tuple[dict, float]:
    """Policy heads for the example taxonomy (base model hidden states and TF-IDF), fitted on the labelled
    file's train rows, and their eval; the metrics gain `rows`, the rows they were fitted on."""
    started = time.perf_counter()
    moderation("curate", "-o", str(out / "curated"), "--labels", LABELS, "--policy", POLICY, "--sets", "none",
               "--test-sets", "marketplace")
    fit = subprocess.run([sys.executable, "finetune/fit_heads.py", "--dataset", str(out / "curated" / "sft"),
                          "--out", str(out / "heads")],
                         cwd=ROOT, capture_output=True, text=True)
    if fit.returncode != 0:
        raise SystemExit(f"fit_heads.py exited {fit.returncode}:\n{fit.stderr[-3000:]}")
    metrics, _ = evaluate(out / "heads-eval", "--model", "base", "--heads", str(out / "heads"), systems="llm")
    card = json.loads((out / "heads" / "heads.json").read_text())
    return {**metrics, "rows": card["rows"]}, time.perf_counter() - started


def number(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def interval(result: dict, key: str) -> str:
    low, high = result["intervals"].get(key, (None, None))
    return f"{number(result['metrics'].get(key))} [{number(low)}, {number(high)}]"


def systems_table(rows: list[tuple[str, dict]]) -> list[str]:
    lines = ["| system | macro-F1 [95% CI] | micro-F1 | clean FPR | decision accuracy | valid verdicts | items/s |",
             "|---|---|---|---|---|---|---|"]
    for label, r in rows:
        m = r["metrics"]
        lines.append(f"| {label} | {interval(r, 'macro_f1')} | {number(m.get('micro_f1'))} | {number(m.get('clean_fpr'))} | "
                     f"{number(m.get('decision_accuracy'))} | {number(m.get('schema_valid_rate'))} | "
                     f"{number(r['speed'].get('items_per_s'), 2)} |")
    return lines


def policy_table(rows: list[tuple[str, dict]], policies: list[str]) -> list[str]:
    lines = ["| policy | " + " | ".join(f"{label} P / R / F1" for label, _ in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for p in policies:
        cells = [" / ".join(number(r["metrics"].get(f"{p}/{k}"), 2) for k in ("precision", "recall", "f1")) for _, r in rows]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="runs/local-services", help="where the eval outputs go (emptied first)")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "local-services.md"), help="the Markdown file to splice into")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    shutil.rmtree(out, ignore_errors=True)  # measured from scratch: no run file resumed, no heads refit on top
    out.mkdir(parents=True)
    print("1/4 eval: baselines and the zero-shot base model on vLLM ...", file=sys.stderr)
    local, local_s = evaluate(out / "vllm", "--model", "base")
    print("2/4 eval: the same model served by vLLM's OpenAI-compatible server, --backend openai ...", file=sys.stderr)
    with served_model(out / "vllm-server.log") as url:
        served, served_s = evaluate(out / "openai", "--backend", "openai", "--base-url", url, "--model", SERVED,
                                    systems="llm")
    print("3/4 policy heads fitted on the file's train rows: curate --labels, fit_heads, eval --heads ...", file=sys.stderr)
    heads, heads_s = fitted_heads(out)
    print("4/4 run --model default under the example policy (must be refused) ...", file=sys.stderr)
    refused = moderation("run", LABELS, "-o", str(out / "default.jsonl"), "--model", "default", "--policy", POLICY,
                         check=False)
    if refused.returncode != 2:
        raise SystemExit(f"--model default was not refused under {POLICY}: exit {refused.returncode}")
    by_system = {r["system"]: r for r in local["results"]}
    rows = [("rules", by_system["rules"]), ("tfidf", by_system["tfidf"]),
            ("zero-shot base, vLLM", by_system["llm"]),
            *[(f"zero-shot base, {'openai' if r['system'] == 'llm' else 'openai ' + r['system'].split('@')[1]}", r)
              for r in served["results"]],
            *([("zero-shot base, vLLM, dev thresholds", by_system["llm@dev-thresholds"])]
              if "llm@dev-thresholds" in by_system else []),
            *[(f"policy heads ({heads['rows']} train rows), dev thresholds", r) for r in heads["results"]
              if r["system"] == "llm@dev-thresholds"]]
    policies = list(local["results"][0]["thresholds"])
    llm = local["meta"]["llm"]
    block = "\n".join([
        START,
        f"Measured {datetime.date.today().isoformat()} by `python scripts/taxonomy_example.py` "
        f"({(local_s + served_s + heads_s) / 60:.1f} minutes on {platform.machine()}, {os.cpu_count()} CPU cores): "
        f"{local['meta']['test_items']} test items of `{LABELS}`; thresholds from its {local['meta']['thresholds_from']}.",
        f"Model `{llm['model']}`, policy {llm['policy_version']} (schema `{llm['schema_id']}`).",
        "",
        *systems_table(rows),
        "",
        "Per policy (precision / recall / F1 on test):",
        "",
        *policy_table(rows, policies),
        "",
        "`moderation run --model default --policy prompts/examples/local-services.yaml` exits 2:",
        "",
        "```",
        refused.stderr.strip().splitlines()[-1],
        "```",
        END,
    ])
    splice_markdown(Path(args.doc), block, START, END)
    print(block)
    print(f"wrote {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
