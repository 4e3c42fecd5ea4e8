"""Speed and accuracy of the shipped default, side by side, in one run: full generation,
score first, the transformers baseline, and the classification-only ceiling.

    python scripts/benchmark_throughput.py                 # or: scripts/benchmark_throughput
    python scripts/benchmark_throughput.py --sweep         # vLLM's CPU settings, one at a time

Systems (each in a worker process of its own, so start-up, memory and CPU time are its own):
- `full generation`: every item gets a generated verdict (`moderation run --thresholds none --no-scores`);
- `score first`: `moderation run` as shipped: the policy heads score every item; an item at or above a
  threshold gets its evidence attributed through the heads (moderation.explain) and a rationale built from
  facts (moderation.rationale), with no generation and no engine started;
- `llm rationale`: the same with `--rationale llm`: flagged items get a generated rationale (the decision,
  policies and evidence fixed as above), checked and replaced where it invents;
- `transformers`: `llm rationale` with the transformers backend generating (on `--baseline-items` items);
- `ceiling`: the classification-only pass (the policy heads, no generation) over the same items.

Inputs:
- `demo`: the bundled demo dump (rich in violations, no labels);
- `marketplace`: the marketplace test split (labelled);
- `platform`: `--platform-items` items at a platform-like `--violation-rate`, drawn with a fixed seed from
  the test splits: violating items from the marketplace test split, clean items evenly from every
  built-in set's clean test items.

Per system and input: items/s (end to end through the batch runner, excluding engine start-up),
generated share, prompt and generated tokens per item, CPU-seconds per 1,000 items (user+system of the
worker's process tree while it moderates), peak RSS, and macro-F1 and FPR on clean items where the
input is labelled. `--sweep` runs `score first` on one input once per vLLM CPU setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"

# system -> the `moderation run` flags that make it (the ceiling builds no engine)
SYSTEMS = {  # in the order they run
    "score first": ["--backend", "vllm"],
    "llm rationale": ["--backend", "vllm", "--rationale", "llm"],
    "full generation": ["--backend", "vllm", "--thresholds", "none", "--no-scores"],
    "ceiling": ["--backend", "vllm"],
    "transformers": ["--backend", "transformers", "--rationale", "llm"],
}
INPUTS = ("demo", "marketplace", "platform")
# (label, environment, flags): weights dtype and KV-cache space are always explicit (so the rows keep their
# meaning when the shipped defaults change); the rows after the fourth change one setting from the candidate, the
# shipped defaults in bfloat16. On a CPU without native bfloat16 the bfloat16 rows are left out (emulated, they take
# hours) and the candidate is float32 (sweep_settings).
CANDIDATE = ["--dtype", "bfloat16", "--kv-cache-gib", "2"]
SWEEP = [
    ("float32, KV cache 0.5 of RAM", {}, ["--dtype", "float32", "--kv-cache-gib", "0"]),
    ("bfloat16, KV cache 0.5 of RAM", {}, ["--dtype", "bfloat16", "--kv-cache-gib", "0"]),
    ("float32, KV cache 2 GiB", {}, ["--dtype", "float32", "--kv-cache-gib", "2"]),
    ("bfloat16, KV cache 2 GiB", {}, CANDIDATE),
    ("+ threads not bound", {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, CANDIDATE),
    ("+ max_num_seqs 32", {}, CANDIDATE + ["--max-num-seqs", "32"]),
    ("+ max_num_batched_tokens 1024", {}, CANDIDATE + ["--max-num-batched-tokens", "1024"]),
    ("+ max_num_batched_tokens 8192", {}, CANDIDATE + ["--max-num-batched-tokens", "8192"]),
    ("+ no chunked prefill", {}, CANDIDATE + ["--no-chunked-prefill"]),
    ("+ block size 32", {}, CANDIDATE + ["--block-size", "32"]),
    ("+ rationale budget 40 chars", {}, CANDIDATE + ["--rationale-chars", "40"]),
    ("bfloat16, KV cache 2 GiB (again: the noise)", {}, CANDIDATE),
]


class TreeSampler:
    """Peak RSS and CPU seconds of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.root, self.interval, self.peak_rss = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self):
        return [self.root, *self.root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._tree():
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except Exception:  # a process that just exited
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            rss = 0
            for proc in self._tree():
                try:
                    rss += proc.memory_info().rss
                except Exception:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --- inputs ------------------------------------------------------------------------------------


class Unlabelled(NamedTuple):
    """An item of an unlabelled input, shaped like a LabelledItem where this script reads one."""

    item: object
    gold_violations: None = None


def platform_dump(n: int, rate: float, seed: int = 0) -> list:
    """`n` labelled test items, `rate` of them violating: violating ones from the marketplace test
    split (then the other sets'), clean ones evenly from every set's clean test items."""
    from moderation.evalsets import load_set, set_names

    sets = {name: load_set(name, "test") for name in set_names()}
    rng = random.Random(seed)
    bad = round(n * rate)
    violating = [li for li in sets["marketplace"] if li.gold_violations]
    violating = rng.sample(violating, min(bad, len(violating)))
    others = [li for name, items in sets.items() if name != "marketplace" for li in items if li.gold_violations]
    violating += rng.sample(others, bad - len(violating))
    clean = even_sample({name: [li for li in items if not li.gold_violations] for name, items in sets.items()}, n - bad, rng)
    chosen = violating + clean
    rng.shuffle(chosen)
    return chosen


def even_sample(pools: dict[str, list], n: int, rng: random.Random) -> list:
    """`n` items spread as evenly as the pools allow (a small pool gives all it has)."""
    pools = {name: rng.sample(items, len(items)) for name, items in pools.items() if items}
    chosen, left = [], n
    while left and pools:
        share = max(1, left // len(pools))
        for name in sorted(pools, key=lambda k: len(pools[k])):
            take, pools[name] = pools[name][:min(share, left)], pools[name][min(share, left):]
            chosen += take
            left -= len(take)
        pools = {k: v for k, v in pools.items() if v}
    if left:
        raise SystemExit(f"not enough clean test items for the platform dump ({n - left} of {n})")
    return chosen


def load_input(name: str, args) -> list:
    """LabelledItems (Unlabelled ones for the demo dump), at most `--baseline-items` for transformers."""
    from moderation.evalsets import load_set
    from moderation.items import Item, read_items

    if name == "demo":
        items = [Unlabelled(row) for _, row in read_items(DEMO) if isinstance(row, Item)]
    elif name == "marketplace":
        items = load_set("marketplace", "test")
    else:
        items = platform_dump(args.platform_items, args.violation_rate)
    return items[: args.baseline_items] if args.worker == "transformers" else items


# --- one system, in its own process --------------------------------------------------------------


def run_args(flags: list[str]):
    """The settings `moderation run` would make from these flags (backend, model, prompt, thresholds)."""
    from moderation.factory import RunSettings, add_backend_args

    parser = argparse.ArgumentParser()
    add_backend_args(parser)
    return RunSettings.from_args(parser.parse_args(flags))


def accuracy(items: list, records: dict) -> dict:
    from moderation.evaluate import evaluate_llm_records
    from moderation.policy import load_policy

    if items[0].gold_violations is None:
        return {}
    metrics = evaluate_llm_records("bench", items, records, load_policy(None), n_boot=0).metrics
    return {"macro_f1": metrics["macro_f1"], "clean_fpr": metrics.get("clean_fpr")}


def moderate(moderator, items: list, chunk: int) -> tuple[dict, dict]:
    """Run the items through the batch runner, as `moderation run` does; its records and counts."""
    from moderation.batch import BatchRunner, RunOptions
    from moderation.pipeline import ALLOW_RATIONALE
    from moderation.runfile import read_records

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.jsonl"
        rows = [(i + 1, li.item) for i, li in enumerate(items)]
        stats = BatchRunner(moderator, RunOptions(chunk_size=chunk, error_budget=1.0)).run(rows, out)
        records = {r.id: r for r in read_records(out)}
    generated = sum(1 for r in records.values() if (r.verdict or {}).get("rationale") != ALLOW_RATIONALE)
    if moderator.score_first and moderator.rationale == "built":  # whole verdicts from the scores: nothing generated
        generated = 0
    return records, {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                     "generated": generated, "verdicts": stats.verdicts}


def classify_only(settings, items: list) -> tuple[dict, dict]:
    """The ceiling: the policy heads' scores and the decisions they fix, with no engine at all."""
    from moderation.factory import model_profile_for, run_scorer, run_thresholds
    from moderation.pipeline import Moderator, decide
    from moderation.policy import load_policy
    from moderation.prompts import load_template
    from moderation.runfile import RunRecord

    policy = load_policy(settings.policy)  # the moderator score first uses, without an engine (a scorer needs none)
    scorer, thresholds = run_scorer(settings, policy), run_thresholds(settings, policy)
    if scorer is None or not thresholds:
        raise SystemExit(f"--model {settings.model} ships no policy heads and thresholds: no classification-only pass")
    moderator = Moderator(None, policy, load_template(model_profile_for(settings).prompt), thresholds=thresholds, scorer=scorer)
    records = {}
    for start in range(0, len(items), settings.chunk_size):
        batch = items[start:start + settings.chunk_size]
        for li, scores in zip(batch, moderator.score([li.item for li in batch])):
            decided = decide(scores, thresholds, policy)
            violations = [{"policy": p, "severity": "low", "evidence": "-"} for p in decided.policies]
            records[li.item.id] = RunRecord(id=li.item.id, verdict={"decision": decided.decision, "violations": violations},
                                            scores=scores, provenance={"latency_ms": 0})
    return records, {"prompt_tokens": 0, "completion_tokens": 0, "generated": 0, "verdicts": len(records)}


def worker(args) -> dict:
    """Every input through one system; its figures per input (runs in its own process)."""
    from moderation.factory import build_moderator

    flags = SYSTEMS[args.worker] + ["--chunk-size", str(args.chunk)] + json.loads(args.flags)
    settings = run_args(flags)
    inputs = {name: load_input(name, args) for name in args.inputs.split(",")}
    figures = {}
    with TreeSampler() as sampler:
        started = time.perf_counter()
        moderator = None if args.worker == "ceiling" else build_moderator(settings)
        startup_s = time.perf_counter() - started
        for name, items in inputs.items():
            cpu_before, started = sampler.cpu_seconds(), time.perf_counter()
            if moderator is None:
                records, counts = classify_only(settings, items)
            else:
                records, counts = moderate(moderator, items, args.chunk)
            wall, cpu = time.perf_counter() - started, sampler.cpu_seconds() - cpu_before
            figures[name] = {"items": len(items), "wall_s": wall, "items_per_s": len(items) / wall,
                             "cpu_s_per_1000_items": 1000 * cpu / len(items), "startup_s": startup_s,
                             **counts, **accuracy(items, records)}
        if moderator is not None:
            moderator.backend.close()
    for result in figures.values():
        result["peak_rss_gb"] = sampler.peak_rss / 1e9
    return figures


def worker_inputs(args, system: str) -> str:
    """The inputs a system runs on: full generation skips the platform dump unless asked (at about
    2 items/s it would take a quarter of an hour and show only what the marketplace split shows)."""
    names = args.inputs.split(",")
    if system == "full generation" and not args.full_on_platform:
        names = [n for n in names if n != "platform"]
    return ",".join(names)


def run_worker(args, system: str, flags: list[str] | None = None, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--inputs", worker_inputs(args, system), "--chunk", str(args.chunk),
           "--platform-items", str(args.platform_items), "--violation-rate", str(args.violation_rate),
           "--baseline-items", str(args.baseline_items), "--flags", json.dumps(flags or [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR", **(env or {})}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{system} worker failed (exit {proc.returncode}); its log is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the table ---------------------------------------------------------------------------------


ROWS = [
    ("items", "items", "{:,}"), ("items/s", "items_per_s", "{:.2f}"), ("generated verdicts", "generated_share", "{:.0%}"),
    ("prompt tokens per item", "prompt_per_item", "{:.0f}"), ("generated tokens per item", "completion_per_item", "{:.1f}"),
    ("generated tokens per generated verdict", "completion_per_generated", "{:.1f}"),
    ("CPU-seconds / 1,000 items", "cpu_s_per_1000_items", "{:,.0f}"), ("peak RSS (GB)", "peak_rss_gb", "{:.2f}"),
    ("start-up (s)", "startup_s", "{:.0f}"), ("macro-F1", "macro_f1", "{:.3f}"), ("FPR on clean items", "clean_fpr", "{:.3f}"),
]


def derived(result: dict) -> dict:
    n, generated = result["items"], result["generated"]
    return {**result, "generated_share": generated / n, "prompt_per_item": result["prompt_tokens"] / n,
            "completion_per_item": result["completion_tokens"] / n,
            "completion_per_generated": result["completion_tokens"] / generated if generated else None}


def table(results: dict[str, dict]) -> str:
    """One Markdown table: a column per system, a row per figure ('–' where it does not apply)."""
    cells = {label: derived(r) for label, r in results.items()}
    lines = ["| | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for title, key, fmt in ROWS:
        row = [fmt.format(c[key]) if c.get(key) is not None else "–" for c in cells.values()]
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def sweep_settings(native: bool) -> list[tuple[str, dict, list[str]]]:
    """SWEEP on a CPU with native bfloat16; elsewhere its float32 rows, and each one-change row made from a
    float32 candidate instead (emulated bfloat16 would take hours)."""
    if native:
        return SWEEP
    fp32 = ["--dtype", "float32", "--kv-cache-gib", "2"]
    settings: dict[str, tuple[str, dict, list[str]]] = {}
    for label, env, flags in SWEEP:
        if flags[:len(CANDIDATE)] == CANDIDATE:
            label, flags = label.replace("bfloat16", "float32"), fp32 + flags[len(CANDIDATE):]
        elif "bfloat16" in flags:
            continue
        settings.setdefault(label, (label, env, flags))
    return list(settings.values())


def header(args) -> str:
    import torch
    import vllm

    from moderation.machine import describe

    machine = describe()
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({machine['cpu']}, capability {machine['cpu_capability']}, "
            f"native bfloat16: {'yes' if machine['native_bf16'] else 'no'}, format `{machine['dtype']}`), "
            f"Python {platform.python_version()}, vLLM {vllm.__version__}, "
            f"torch {torch.__version__}; model `default`; {args.chunk} items per chunk; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


SWEEP_COLUMNS = [("items/s", "items_per_s", "{:.2f}"), ("CPU-seconds / 1,000 items", "cpu_s_per_1000_items", "{:,.0f}"),
                 ("generated tokens per generated verdict", "completion_per_generated", "{:.1f}"),
                 ("peak RSS (GB)", "peak_rss_gb", "{:.2f}"), ("start-up (s)", "startup_s", "{:.0f}")]


def sweep_table(results: dict[str, dict]) -> str:
    """A row per setting (the sweep has more settings than a page has columns)."""
    lines = ["| setting | " + " | ".join(c[0] for c in SWEEP_COLUMNS) + " |", "|---" * (len(SWEEP_COLUMNS) + 1) + "|"]
    for label, result in results.items():
        cells = derived(result)
        lines.append(f"| {label} | " + " | ".join(fmt.format(cells[key]) for _, key, fmt in SWEEP_COLUMNS) + " |")
    return "\n".join(lines)


def render(saved: dict) -> str:
    """The Markdown of saved figures: per input, a table of systems (or of sweep settings)."""
    by_run, sweep = saved["results"], saved.get("mode") == "sweep"
    parts = [saved["setup"]]
    inputs = dict.fromkeys(name for figures in by_run.values() for name in figures)
    for name in inputs:
        runs = {label: figures[name] for label, figures in by_run.items() if name in figures}
        parts += [f"### {name}", sweep_table(runs) if sweep else table(runs)]
    return "\n\n".join(parts)


def measure(args) -> dict:
    """Run the systems (or the sweep's settings) and keep their figures with how they were made."""
    from moderation.machine import native_bf16

    results = {}
    if args.sweep:
        for label, env, flags in sweep_settings(native_bf16()):
            print(f"sweep: {label} ...", file=sys.stderr, flush=True)
            results[label] = run_worker(args, "score first", flags, env)
            figures = results[label][args.inputs.split(",")[0]]
            print(f"sweep: {label}: {figures['items_per_s']:.2f} items/s, {figures['cpu_s_per_1000_items']:.0f} CPU-s/1,000 items",
                  file=sys.stderr, flush=True)
    else:
        chosen = args.systems.split(",")
        unknown = set(chosen) - set(SYSTEMS)
        if unknown:
            raise SystemExit(f"unknown system(s) {sorted(unknown)}; choose from {list(SYSTEMS)}")
        for system in chosen:
            print(f"running {system} ...", file=sys.stderr, flush=True)
            results[system] = run_worker(args, system)
    setup = header(args) + ("; system `score first`" if args.sweep else "")
    # a capped CPU capability (how an AVX2-only machine is imitated on a newer one) is part of the command
    caps = " ".join(f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ)
    command = f"{caps} python scripts/benchmark_throughput.py ".lstrip() + " ".join(a for a in sys.argv[1:])
    return {"mode": "sweep" if args.sweep else "systems", "command": command.strip(), "setup": setup, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"which of {', '.join(SYSTEMS)} (default all)")
    parser.add_argument("--inputs", default=",".join(INPUTS), help=f"which of {', '.join(INPUTS)} (default all)")
    parser.add_argument("--platform-items", type=int, default=2000, help="items in the platform dump (default 2000)")
    parser.add_argument("--violation-rate", type=float, default=0.05, help="violating share of the platform dump (default 0.05)")
    parser.add_argument("--baseline-items", type=int, default=32, help="items per input for the transformers baseline (default 32)")
    parser.add_argument("--full-on-platform", action="store_true", help="run full generation on the platform dump too")
    parser.add_argument("--chunk", type=int, default=64, help="items per chunk, as `moderation run --chunk-size` (default 64)")
    parser.add_argument("--sweep", action="store_true", help="measure vLLM's CPU settings one at a time instead")
    parser.add_argument("--json", default=str(ROOT / "runs" / "benchmark_throughput.json"), help="figures as JSON")
    parser.add_argument("--markdown", help="also put the tables into this Markdown file, in place of the ones it made before")
    parser.add_argument("--section", help="name of the Markdown section to replace (default: systems, or sweep); e.g. one "
                                          "section per kind of CPU")
    parser.add_argument("--render", metavar="JSON", help="print (and with --markdown splice) the tables of figures saved by an earlier run; measures nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--flags", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.inputs.split(",")) - set(INPUTS)
    if unknown:
        raise SystemExit(f"unknown input(s) {sorted(unknown)}; choose from {list(INPUTS)}")
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.render:
        saved = json.loads(Path(args.render).read_text())
    else:
        saved = measure(args)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(saved, indent=2) + "\n")
    text = render(saved)
    print(text)
    if args.markdown:
        from moderation.report import splice_markdown

        section = args.section or saved["mode"]
        start, end = f"<!-- benchmark_throughput:{section}:start -->", f"<!-- benchmark_throughput:{section}:end -->"
        splice_markdown(Path(args.markdown), f"{start}\n\nMade by `{saved['command']}`: {text}\n\n{end}", start, end)


if __name__ == "__main__":
    main()
