"""Hit rate of the persistent verdict cache on repeated dumps, measured on one loaded model.

Day 1 moderates a dump into an empty cache. Day 2 is the same dump again (a plain repeat), and
day 3 is a "nightly" variant: the same listings under new ids, with a share of them edited and a
share of brand-new items, as a marketplace's nightly export looks. Each day gets its own output
file; the cache file is shared. Prints hit rate, items/s and LLM items per day, and writes JSON.

    python scripts/benchmark_verdict_cache.py                     # demo dump, default model, vLLM
    python scripts/benchmark_verdict_cache.py --backend fake --items 40
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.batch import BatchRunner, RunOptions  # noqa: E402
from moderation.factory import RunSettings, add_backend_args, run_moderator  # noqa: E402
from moderation.items import read_items  # noqa: E402
from moderation.verdict_store import VerdictStore  # noqa: E402

DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"
TEXT_FIELDS = ("description", "about", "caption", "title", "name")


def nightly_variant(rows: list[dict], edited: float, new: float, seed: int) -> list[dict]:
    """The same rows under new ids, `edited` of them with changed text, plus `new` fresh ones."""
    rng = random.Random(seed)
    out = []
    for n, row in enumerate(rows):
        row = {**row, "id": f"night-{row['id']}"}
        if rng.random() < edited:
            field = next((f for f in TEXT_FIELDS if isinstance(row.get(f), str)), None)
            if field:
                row[field] = row[field] + " (updated listing)"
        out.append(row)
    for n in range(int(len(rows) * new)):
        source = rows[rng.randrange(len(rows))]
        field = next((f for f in TEXT_FIELDS if isinstance(source.get(f), str)), None)
        extra = {field: f"{source[field]} - new item {n}"} if field else {}
        out.append({**source, **extra, "id": f"new-{n}"})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def one_day(moderator, store, src: Path, out: Path, chunk: int) -> dict:
    stats = BatchRunner(moderator, RunOptions(chunk_size=chunk), store=store).run(read_items(src), out)
    return {
        "rows": stats.processed,
        "verdict_cache_hits": stats.store_hits,
        "hit_rate": round(stats.store_hits / stats.processed, 4) if stats.processed else 0.0,
        "llm_items": stats.processed - stats.cache_hits,
        "elapsed_s": round(stats.elapsed_s, 2),
        "items_per_s": round(stats.items_per_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(DEMO), help="the day-1 dump (JSONL; default the demo dump)")
    parser.add_argument("--items", type=int, help="use only the first N rows")
    parser.add_argument("--edited", type=float, default=0.10, help="day 3: share of rows with edited text (0.10)")
    parser.add_argument("--new", type=float, default=0.05, help="day 3: new rows, as a share of the dump (0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/verdict-cache", help="folder for the outputs and results.json")
    add_backend_args(parser)
    args = parser.parse_args(argv)

    rows = [json.loads(line) for line in Path(args.input).read_text().splitlines() if line.strip()][: args.items]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    day1 = write_jsonl(out / "day1.jsonl", rows)
    day3 = write_jsonl(out / "day3.jsonl", nightly_variant(rows, args.edited, args.new, args.seed))
    moderator = run_moderator(RunSettings.from_args(args))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = VerdictStore(Path(tmp) / "verdicts.sqlite")
        for name, src in (("day1 (empty cache)", day1), ("day2 (same dump)", day1), ("day3 (nightly variant)", day3)):
            target = out / f"{name.split()[0]}.verdicts.jsonl"
            target.unlink(missing_ok=True)
            results[name] = one_day(moderator, store, src, target, args.chunk_size)
            print(name, results[name], file=sys.stderr)
        store.close()
    moderator.backend.close()
    results["settings"] = {"input": args.input, "rows": len(rows), "backend": args.backend, "model": args.model,
                           "edited": args.edited, "new": args.new, "seed": args.seed}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| day | rows | LLM items | verdict-cache hits | hit rate | items/s |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        if name != "settings":
            print(f"| {name} | {r['rows']} | {r['llm_items']} | {r['verdict_cache_hits']} | {r['hit_rate']:.1%} "
                  f"| {r['items_per_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
