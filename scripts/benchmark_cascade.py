"""The cost cascade against the LLM alone, side by side on the test splits of labelled sets.

One moderator (the same flags as `moderation run`) moderates each set's test items twice, in
one invocation: (b) behind the TF-IDF screen, which clears the items it is confident are clean,
then (a) alone. Both runs go through BatchRunner, so the timings are end to end (the screen's
time is inside the cascade's). Per set and pooled it reports: the share of items reaching the
LLM, items/s of each run, and the binary (any violation vs none) recall and precision and the
macro-F1 over policies of each run, with the change (cascade - LLM alone).

    python scripts/benchmark_cascade.py --backend vllm --sample 500
    python scripts/benchmark_cascade.py --backend fake --sample 10 --sets marketplace --fit-sets marketplace

The screen is fitted on the train splits of --fit-sets (threshold from their dev splits) and
saved to OUT_DIR/screen, or loaded with --screen DIR. Results: OUT_DIR/cascade.json and
OUT_DIR/cascade.md; the run files are in OUT_DIR/runs/.

The cascade runs first. Where the engine keeps a prefix cache (vLLM), it is emptied between the
two runs when the engine allows; otherwise any prefix-cache benefit goes to the LLM-alone run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.batch import BatchRunner, RunOptions  # noqa: E402
from moderation.evalsets import load_set, set_names  # noqa: E402
from moderation.evaluate import gold_labels, llm_outputs, sample  # noqa: E402
from moderation.factory import RunSettings, add_backend_args, run_moderator  # noqa: E402
from moderation.metrics import macro_f1  # noqa: E402
from moderation.policy import load_policy  # noqa: E402
from moderation.runfile import read_records  # noqa: E402
from moderation.screen import CRITERIA, fit_screen, load_screen  # noqa: E402

# Sets on which both the LLM's policies and the TF-IDF screen have something to find.
DEFAULT_POLICY = load_policy(None)  # the benchmark measures the shipped taxonomy (its sets are labelled in it)
DEFAULT_SETS = "marketplace,openai_moderation,toxicchat,sms_smishing,davidson_hate"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated sets whose test splits are moderated (default {DEFAULT_SETS})")
    p.add_argument("--sample", type=int, default=500, help="test items per set, at most (a fixed sample; default 500)")
    p.add_argument("--screen", metavar="DIR", help="a screen from `moderation screen fit` (default: fit one here)")
    p.add_argument("--fit-sets", help="sets whose train/dev splits fit the screen (default: every set, as `screen fit`)")
    p.add_argument("--max-recall-loss", type=float, default=0.01, help="the screen's dev recall-loss bound (default 0.01)")
    p.add_argument("--criterion", choices=CRITERIA, default="every-set", help="how the bound holds over sets (default every-set)")
    p.add_argument("--max-features", type=int, default=200_000, help="TF-IDF vocabulary size, at most (default 200,000)")
    p.add_argument("--warmup", type=int, default=8, help="dev items moderated before any timing (engine warm-up; default 8)")
    p.add_argument("--data-dir", help="public data sets directory (default ../shared/datasets, or $MODERATION_DATA_DIR)")
    p.add_argument("--out-dir", default="runs/cascade", help="where cascade.json, cascade.md, runs/ and screen/ go")
    add_backend_args(p)
    p.set_defaults(command="benchmark_cascade")
    return p.parse_args(argv)


def _names(text: str | None) -> list[str]:
    from moderation.evalsets import parse_names as names

    return names(text, set_names(), "sets")


class TimedScreen:
    """A screen that adds up the seconds spent in `clear`."""

    def __init__(self, screen):
        self.screen, self.seconds = screen, 0.0

    def clear(self, items):
        started = time.perf_counter()
        try:
            return self.screen.clear(items)
        finally:
            self.seconds += time.perf_counter() - started


def get_screen(args):
    if args.screen:
        return load_screen(args.screen, DEFAULT_POLICY)
    sets = _names(args.fit_sets)
    print(f"fitting the screen on the train/dev splits of {len(sets)} sets ...", file=sys.stderr)
    train = [li for name in sets for li in load_set(name, "train", args.data_dir)]
    dev = [li for name in sets for li in load_set(name, "dev", args.data_dir)]
    screen = fit_screen(train, dev, DEFAULT_POLICY.ids, args.max_recall_loss, criterion=args.criterion,
                        max_features=args.max_features)
    screen.save(Path(args.out_dir) / "screen")
    return screen


def reset_prefix_cache(moderator) -> bool:
    """Empty the engine's prefix cache if it has one that can be emptied (vLLM)."""
    reset = getattr(getattr(moderator.backend, "llm", None), "reset_prefix_cache", None)
    return bool(reset()) if callable(reset) else False


def timed_run(moderator, items, path: Path, chunk_size: int, screen=None, progress: bool = False):
    """Moderate items from scratch into `path`: (records by id, run stats, seconds in the screen)."""
    from tqdm import tqdm

    path.unlink(missing_ok=True)
    timed = TimedScreen(screen) if screen is not None else None
    runner = BatchRunner(moderator, RunOptions(chunk_size=chunk_size, error_budget=1.0), screen=timed)
    rows = [(i + 1, li.item) for i, li in enumerate(items)]
    with tqdm(total=len(rows), unit="item", desc=path.stem, disable=not progress, file=sys.stderr) as bar:
        stats = runner.run(rows, path, progress=bar)
    return {r.id: r for r in read_records(path)}, stats, timed.seconds if timed else 0.0


def _rate(a: int, b: int) -> float:
    return a / b if b else math.nan


def quality(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Binary (any violation) recall and precision, and macro-F1 over policies."""
    g, p = gold.any(1), pred.any(1)
    return {"recall": _rate(int((g & p).sum()), int(g.sum())), "precision": _rate(int((g & p).sum()), int(p.sum())),
            "macro_f1": macro_f1(gold, pred)}


def predictions(items, records) -> np.ndarray:
    llm = llm_outputs(items, records, DEFAULT_POLICY.ids)
    return llm.flagged & llm.valid[:, None]


def compare(gold: np.ndarray, alone: np.ndarray, cascade: np.ndarray, cleared: np.ndarray) -> dict:
    """Quality of both runs, their difference, and what the screen's clearing cost."""
    a, c = quality(gold, alone), quality(gold, cascade)
    violating = gold.any(1)
    return {"llm_only": a, "cascade": c, "change": {k: c[k] - a[k] for k in a},
            "screen_cleared_violations": int((cleared & violating).sum()),
            "lost_catches": int((cleared & violating & alone.any(1)).sum())}


def set_result(items, runs: dict) -> dict:
    """Figures of one set, plus the arrays that pooling needs."""
    gold, _ = gold_labels(items, DEFAULT_POLICY.ids)
    (alone_records, alone_stats, _), (cascade_records, cascade_stats, screen_s) = runs["llm_only"], runs["cascade"]
    cleared = np.array([li.item.id in cascade_records and cascade_records[li.item.id].screen is not None for li in items])
    alone, cascade = predictions(items, alone_records), predictions(items, cascade_records)
    figures = {
        "items": len(items), "violating": int(gold.any(1).sum()),
        "reached_llm": int((~cleared).sum()), "llm_share": float((~cleared).mean()) if len(items) else math.nan,
        "llm_only_s": alone_stats.elapsed_s, "cascade_s": cascade_stats.elapsed_s, "screen_s": screen_s,
        "llm_only_items_per_s": alone_stats.items_per_s, "cascade_items_per_s": cascade_stats.items_per_s,
        "errors": {"llm_only": alone_stats.errors, "cascade": cascade_stats.errors},
        **compare(gold, alone, cascade, cleared)}
    figures["speedup"] = _rate(figures["cascade_items_per_s"], figures["llm_only_items_per_s"])
    return {"figures": figures, "arrays": (gold, alone, cascade, cleared)}


def pooled(results: dict[str, dict]) -> dict:
    gold, alone, cascade, cleared = (np.concatenate(parts) for parts in zip(*(r["arrays"] for r in results.values())))
    f = [r["figures"] for r in results.values()]
    llm_s, cascade_s = sum(x["llm_only_s"] for x in f), sum(x["cascade_s"] for x in f)
    out = {"items": len(gold), "violating": int(gold.any(1).sum()), "reached_llm": int((~cleared).sum()),
           "llm_share": float((~cleared).mean()), "llm_only_s": llm_s, "cascade_s": cascade_s,
           "screen_s": sum(x["screen_s"] for x in f),
           "llm_only_items_per_s": _rate(len(gold), llm_s), "cascade_items_per_s": _rate(len(gold), cascade_s),
           "errors": {k: sum(x["errors"][k] for x in f) for k in ("llm_only", "cascade")},
           **compare(gold, alone, cascade, cleared)}
    out["speedup"] = _rate(out["cascade_items_per_s"], out["llm_only_items_per_s"])
    return out


def _f(x: float, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per set and one pooled."""
    lines = ["| set | items | reach the LLM | items/s LLM only | items/s cascade | speed-up | recall LLM only | recall cascade "
             "| Δ recall | precision LLM only | precision cascade | Δ precision | macro-F1 LLM only | macro-F1 cascade "
             "| Δ macro-F1 | violations cleared (caught by LLM) |", "|" + "---|" * 16]
    for name, f in rows.items():
        a, c, d = f["llm_only"], f["cascade"], f["change"]
        lines.append(
            f"| {name} | {f['items']} | {_f(f['llm_share'], '.1%')} | {_f(f['llm_only_items_per_s'], '.2f')} | "
            f"{_f(f['cascade_items_per_s'], '.2f')} | {_f(f['speedup'], '.2f')}x | {_f(a['recall'], '.3f')} | "
            f"{_f(c['recall'], '.3f')} | {_f(d['recall'], '+.3f')} | {_f(a['precision'], '.3f')} | {_f(c['precision'], '.3f')} | "
            f"{_f(d['precision'], '+.3f')} | {_f(a['macro_f1'], '.3f')} | {_f(c['macro_f1'], '.3f')} | {_f(d['macro_f1'], '+.3f')} | "
            f"{f['screen_cleared_violations']} ({f['lost_catches']}) |")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def moderate_sets(args, moderator, screen) -> tuple[dict[str, dict], bool]:
    runs_dir = Path(args.out_dir) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    sets, results, resets = _names(args.sets), {}, []
    warm = sample(load_set(sets[0], "dev", args.data_dir), args.warmup)
    if warm:
        moderator.moderate([li.item for li in warm])  # not timed: engine start-up and first compilations
    for name in sets:
        items = sample(load_set(name, "test", args.data_dir), args.sample)
        runs = {}
        for label, stage in (("cascade", screen), ("llm_only", None)):
            resets.append(reset_prefix_cache(moderator))
            runs[label] = timed_run(moderator, items, runs_dir / f"{name}.{label}.jsonl", args.chunk_size, stage,
                                    not args.no_progress)
        results[name] = set_result(items, runs)
    return results, all(resets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    screen = get_screen(args)
    moderator = run_moderator(RunSettings.from_args(args))
    try:
        results, reset = moderate_sets(args, moderator, screen)
    finally:
        moderator.backend.close()
    rows = {**{name: r["figures"] for name, r in results.items()}, "pooled": pooled(results)}
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "scripts/benchmark_cascade.py", *(argv if argv is not None else sys.argv[1:])]),
            "sample": args.sample, "llm": moderator.provenance(), "chunk_size": args.chunk_size,
            "prefix_cache_reset_between_runs": reset, "machine": platform.platform(),
            "screen": {"sha": screen.sha, "threshold": screen.threshold, "settings": screen.card.get("settings"),
                       "train_sets": screen.card.get("train_sets"), "dev_pooled": screen.card.get("dev", {}).get("pooled")}}
    (out_dir / "cascade.json").write_text(json.dumps(_json_safe({"meta": meta, "results": rows}), indent=2) + "\n")
    text = (f"Screen threshold {screen.threshold:.4f} (sha {screen.sha}), chosen on dev for a recall loss of at most "
            f"{(screen.card.get('settings') or {}).get('max_recall_loss', float('nan')):.2%}; LLM {meta['llm']['model']} "
            f"({meta['llm']['backend']}), {args.sample} test items per set at most.\n\n" + table(rows))
    (out_dir / "cascade.md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out_dir / 'cascade.json'} and {out_dir / 'cascade.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
