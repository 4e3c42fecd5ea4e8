"""Throughput of the vLLM offline engine against the transformers baseline, side by side.

Both engines moderate the same items with the same model, prompt (the full policy text plus
the item) and verdict schema, on the same machine, in one run of this script. Each engine
runs in a worker process of its own, so start-up, memory and CPU time are measured per engine:

    python scripts/benchmark_throughput.py --items 32            # or: scripts/benchmark_throughput

Per engine: items/s, prompt and generated tokens/s, p50/p95 latency (the wall time of the
engine call that carried the item: `--chunk` items per call for both engines), prefix-cache
hit rate, peak RSS of the worker's process tree, and CPU-seconds per 1,000 items (user+system
of the process tree during moderation only). Then the ratio of items/s, vLLM over transformers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"

# (label, backend, scores): the head-to-head pair first, then the cost of calibrated scores.
ENGINES = [("vllm", "vllm", False), ("transformers", "transformers", False), ("vllm+scores", "vllm", True)]


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


def worker(args) -> dict:
    """Moderate the items with one engine; return its figures (runs in its own process)."""
    import numpy as np

    from moderation.backends import BackendConfig, load_backend
    from moderation.items import read_items
    from moderation.pipeline import Moderator
    from moderation.policy import load_policy
    from moderation.prompts import load_template

    items = [row for _, row in itertools.islice(read_items(Path(args.input)), args.items)]
    with TreeSampler() as sampler:
        started = time.perf_counter()
        config = BackendConfig(max_tokens=args.max_tokens, batch_size=args.tf_batch, max_model_len=4096,
                               block_size=args.block_size if args.worker == "vllm" else None)
        backend = load_backend(args.worker, config)
        moderator = Moderator(backend, load_policy(), load_template(), max_attempts=1, scores=args.scores)
        startup_s = time.perf_counter() - started
        cpu_before, started = sampler.cpu_seconds(), time.perf_counter()
        outcomes, latencies = [], []
        for start in range(0, len(items), args.chunk):
            t0 = time.perf_counter()
            chunk = moderator.moderate(items[start : start + args.chunk])
            latencies += [time.perf_counter() - t0] * len(chunk)
            outcomes += chunk
        wall = time.perf_counter() - started
        cpu = sampler.cpu_seconds() - cpu_before
        backend.close()
    prompt = sum(o.prompt_tokens for o in outcomes)
    return {
        "items": len(items), "startup_s": startup_s, "wall_s": wall, "items_per_s": len(items) / wall,
        "prompt_tokens": prompt, "completion_tokens": sum(o.completion_tokens for o in outcomes),
        "prompt_tokens_per_s": prompt / wall, "generated_tokens_per_s": sum(o.completion_tokens for o in outcomes) / wall,
        "latency_p50_s": float(np.percentile(latencies, 50)), "latency_p95_s": float(np.percentile(latencies, 95)),
        "prefix_cache_hit_rate": sum(o.cached_tokens for o in outcomes) / prompt if prompt else 0.0,
        "peak_rss_gb": sampler.peak_rss / 1e9, "cpu_s_per_1000_items": 1000 * cpu / len(items),
        "valid_share": sum(o.verdict is not None for o in outcomes) / len(items),
        "scored": args.scores,
    }


def run_worker(args, backend: str, scores: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, "--items", str(args.items), "--input", args.input,
           "--chunk", str(args.chunk), "--tf-batch", str(args.tf_batch), "--max-tokens", str(args.max_tokens)]
    cmd += ["--block-size", str(args.block_size)] if args.block_size else []
    cmd += ["--scores"] if scores else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict]) -> str:
    rows = [
        ("items/s", "items_per_s", "{:.3f}"), ("prompt tokens/s", "prompt_tokens_per_s", "{:.0f}"),
        ("generated tokens/s", "generated_tokens_per_s", "{:.1f}"), ("latency p50 (s)", "latency_p50_s", "{:.1f}"),
        ("latency p95 (s)", "latency_p95_s", "{:.1f}"), ("prefix-cache hit rate", "prefix_cache_hit_rate", "{:.1%}"),
        ("peak RSS (GB)", "peak_rss_gb", "{:.2f}"), ("CPU-seconds / 1,000 items", "cpu_s_per_1000_items", "{:,.0f}"),
        ("schema-valid verdicts", "valid_share", "{:.0%}"), ("start-up (s)", "startup_s", "{:.0f}"),
        ("prompt tokens per item", None, None), ("generated tokens per item", None, None),
    ]
    lines = ["| | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for title, key, fmt in rows:
        if key is None:
            field = "prompt_tokens" if title.startswith("prompt") else "completion_tokens"
            cells = [f"{r[field] / r['items']:.0f}" for r in results.values()]
        else:
            cells = [fmt.format(r[key]) for r in results.values()]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=32, help="items from the input (default 32)")
    parser.add_argument("--input", default=str(DEMO), help="a dump (default: the bundled demo dump)")
    parser.add_argument("--chunk", type=int, default=32, help="items per engine call, both engines (default 32)")
    parser.add_argument("--tf-batch", type=int, default=8, help="transformers: sequences per generate() batch (default 8)")
    parser.add_argument("--max-tokens", type=int, default=256, help="generated tokens per verdict, at most (default 256)")
    parser.add_argument("--block-size", type=int, help="vLLM: KV-cache block size (default: the engine's, 128 on CPU)")
    parser.add_argument("--engines", default="vllm,transformers,vllm+scores", help="which of " + ", ".join(e[0] for e in ENGINES))
    parser.add_argument("--json", default=str(ROOT / "runs" / "benchmark_throughput.json"), help="figures as JSON")
    parser.add_argument("--markdown", help="also write the table and ratio as Markdown to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scores", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    chosen = args.engines.split(",")
    results = {}
    for label, backend, scores in ENGINES:
        if label in chosen:
            print(f"running {label} on {args.items} items ...", file=sys.stderr, flush=True)
            results[label] = run_worker(args, backend, scores)
    text = table(results)
    if "vllm" in results and "transformers" in results:
        ratio = results["vllm"]["items_per_s"] / results["transformers"]["items_per_s"]
        text += f"\n\n**vLLM / transformers items/s: {ratio:.1f}x** (target: at least 5x)"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    header = (f"{args.items} items of {Path(args.input).name}, the default model, full policy prompt, "
              f"vLLM block size {args.block_size or 'default'}, "
              f"{args.chunk} items per engine call, max {args.max_tokens} tokens, one attempt per item; {machine}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(header + "\n\n" + text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"setup": header, "results": results}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(header + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
