"""Items/s of `moderation run --engine ray` with 1 actor against 2 actors, side by side.

Every configuration moderates the same first N demo items with the same model in a fresh
local Ray cluster of its own (one `moderation run --engine ray` process each, one after the
other, so they never share the CPU):

    python scripts/benchmark_ray_scaling.py --items 96

Configurations are ACTORSxCPUS (actors, CPUs per actor): by default 1x1, 2x1 and, as the
reference for "one engine on both cores", 1x2. Each runs twice, on N items and on
--warm-items items; the marginal rate (N - warm) / (t_N - t_warm) leaves out cluster start
and model loading, which the wall rate N / t_N includes. Writes a table to stdout and JSON
to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=96, help="items per measured run (default 96, at most 240)")
    p.add_argument("--warm-items", type=int, default=8, help="items of the start-up run subtracted (default 8)")
    p.add_argument("--configs", default="1x1,2x1,1x2", help="ACTORSxCPUS list (default 1x1,2x1,1x2)")
    p.add_argument("--backend", default="vllm", help="vllm (default) or transformers")
    p.add_argument("--chunk-size", type=int, default=8, help="items per actor batch (default 8)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.2,
                   help="vLLM on CPU: share of RAM for each actor's KV cache (default 0.2)")
    p.add_argument("--out", default="runs/benchmark_ray_scaling.json", help="JSON results")
    return p.parse_args(argv)


def write_items(path: Path, n: int) -> Path:
    lines = DEMO.read_text().splitlines()[:n]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(args, dump: Path, out: Path, actors: int, cpus: float) -> dict:
    """One `moderation run --engine ray` in a fresh local cluster; its `this_run` figures and wall time."""
    cmd = [sys.executable, "-m", "moderation.cli", "run", str(dump), "-o", str(out), "--engine", "ray",
           "--actors", str(actors), "--actor-cpus", str(cpus), "--backend", args.backend,
           "--chunk-size", str(args.chunk_size), "--gpu-memory-utilization", str(args.gpu_memory_utilization),
           "--no-progress"]
    env = {**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    return {**summary["this_run"], "wall_s": round(wall, 2), "decisions": summary["decisions"]}


def measure(args, tmp: Path, actors: int, cpus: float) -> dict:
    name = f"{actors}x{cpus:g}"
    warm = run_once(args, write_items(tmp / "warm.jsonl", args.warm_items), tmp / f"{name}-warm", actors, cpus)
    full = run_once(args, write_items(tmp / "full.jsonl", args.items), tmp / f"{name}-full", actors, cpus)
    extra_items, extra_s = full["processed"] - warm["processed"], full["wall_s"] - warm["wall_s"]
    return {"config": name, "actors": actors, "actor_cpus": cpus, "items": full["processed"],
            "wall_s": full["wall_s"], "wall_items_per_s": round(full["processed"] / full["wall_s"], 3),
            "startup_run_s": warm["wall_s"],
            "marginal_items_per_s": round(extra_items / extra_s, 3) if extra_s > 0 else None,
            "decisions": full["decisions"]}


def print_table(rows: list[dict]) -> None:
    base = rows[0]["marginal_items_per_s"]
    print(f"{'config':>7} {'items':>6} {'wall s':>8} {'wall it/s':>10} {'start-up s':>11} {'marginal it/s':>14} {'vs ' + rows[0]['config']:>8}")
    for r in rows:
        ratio = r["marginal_items_per_s"] / base if base and r["marginal_items_per_s"] else float("nan")
        print(f"{r['config']:>7} {r['items']:>6} {r['wall_s']:>8.1f} {r['wall_items_per_s']:>10.2f} "
              f"{r['startup_run_s']:>11.1f} {r['marginal_items_per_s'] or float('nan'):>14.2f} {ratio:>8.2f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 < args.warm_items < args.items <= 240:
        sys.exit("need 0 < --warm-items < --items <= 240 (the demo dump)")
    configs = [(int(a), float(c)) for a, c in (spec.split("x") for spec in args.configs.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args, Path(tmp), actors, cpus) for actors, cpus in configs]
    print_table(rows)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "backend": args.backend,
              "chunk_size": args.chunk_size, "gpu_memory_utilization": args.gpu_memory_utilization, "runs": rows}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
