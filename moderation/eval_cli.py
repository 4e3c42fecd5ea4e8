"""`moderation eval` and `moderation eval compare`: the CLI side of evaluation (it prints)."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import numpy as np

from moderation.baselines import BASELINES
from moderation.errors import ConfigError
from moderation.evalsets import load_set, parse_names, set_names
from moderation.evaluate import (
    evaluate_baseline,
    evaluate_llm_records,
    gold_labels,
    llm_outputs,
    llm_thresholds,
    run_llm,
    sample,
    write_metrics,
)
from moderation.metrics import macro_f1, mcnemar
from moderation.report import html_page, markdown, plot_all
from moderation.schema import POLICY_IDS

SYSTEMS = ("rules", "tfidf", "llm")


def evaluate_sets(args, build_moderator) -> int:
    """Every chosen system on every chosen set's test split; reports into --out-dir."""

    from moderation.policy import load_policy

    sets, systems = parse_names(args.sets, set_names(), "sets"), parse_names(args.systems, SYSTEMS, "systems")
    out_dir = Path(args.out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    policy = load_policy(args.policy)
    splits = {name: {s: load_set(name, s, args.data_dir) for s in ("train", "dev", "test")} for name in sets}
    models = {}
    for name in (s for s in systems if s in BASELINES):
        print(f"training {name} on the train splits of {len(sets)} sets ...", file=sys.stderr)
        models[name] = BASELINES[name]().fit([li for name_ in sets for li in splits[name_]["train"]])
    moderator = build_moderator(args) if "llm" in systems else None
    results = []
    try:
        for name in sets:
            test = sample(splits[name]["test"], args.sample)
            for system in systems:
                if system == "llm":
                    results.extend(_evaluate_llm(moderator, name, splits[name]["dev"], test, policy, out_dir, args))
                else:
                    results.append(evaluate_baseline(models[system], name, splits[name]["dev"], test, policy, args.bootstrap))
    finally:
        if moderator is not None:
            moderator.backend.close()
    _write_reports(results, out_dir, args, moderator)
    return 0


def _evaluate_llm(moderator, name: str, dev: list, test: list, policy, out_dir: Path, args) -> list:
    """The LLM's own verdicts on test; with --llm-dev, also its scores cut at thresholds chosen on dev."""
    from tqdm import tqdm

    def moderate(items, tag):
        with tqdm(total=len(items), desc=f"llm on {name}{tag}", unit="item", disable=args.no_progress, file=sys.stderr) as bar:
            return run_llm(moderator, items, out_dir / "runs" / f"{name}{tag}.jsonl", args.chunk_size, bar)

    records, speed = moderate(test, "")
    results = [evaluate_llm_records(name, test, records, policy, n_boot=args.bootstrap, speed=speed)]
    if args.llm_dev and dev and moderator.scores:
        dev_items = sample(dev, args.llm_dev)
        dev_records, _ = moderate(dev_items, ".dev")
        thresholds = llm_thresholds(dev_items, dev_records)
        path = out_dir / "thresholds" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(dict(zip(POLICY_IDS, map(float, thresholds))), indent=2) + "\n")
        results.append(evaluate_llm_records(name, test, records, policy, system="llm@dev-thresholds",
                                            n_boot=args.bootstrap, speed=speed, thresholds=thresholds))
    return results


def _write_reports(results, out_dir: Path, args, moderator) -> None:
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["moderation", *sys.argv[1:]]) if sys.argv and "moderation" in sys.argv[0] else None,
        "sample": args.sample,
        "llm": moderator.provenance() if moderator is not None else None,
    }
    write_metrics(results, out_dir / "metrics.json", meta)
    text = markdown(results, header=f"## Results ({meta['date']})")
    (out_dir / "report.md").write_text(text + "\n")
    images = plot_all(results, out_dir)
    (out_dir / "report.html").write_text(html_page(text, images))
    print(text)
    print(f"\nwrote {out_dir / 'metrics.json'}, report.md, report.html and {len(images)} plots")


def compare_runs(args) -> int:
    """Paired comparison of two runs on the same labelled items: McNemar and paired bootstrap."""
    items = {li.item.id: li for li in load_set(args.set, args.split, args.data_dir)}
    runs = [_records(path) for path in (args.run_a, args.run_b)]
    common = [i for i in items if i in runs[0] and i in runs[1]]
    if not common:
        raise ConfigError(f"the two runs share no item of {args.set}/{args.split}")
    labelled = [items[i] for i in common]
    gold, _ = gold_labels(labelled)
    preds = []
    for records in runs:
        llm = llm_outputs(labelled, records)
        preds.append(llm.flagged & llm.valid[:, None])
    correct = [(p == gold).all(1) for p in preds]
    test = mcnemar(correct[0], correct[1])
    diff, low, high = _paired_macro_f1(gold, preds[0], preds[1], args.bootstrap)
    flipped = [{"id": i, "gold": sorted(items[i].gold_violations), "a": _flagged(runs[0][i]), "b": _flagged(runs[1][i])}
               for k, i in enumerate(common) if correct[0][k] != correct[1][k]]
    print(f"{len(common)} shared items of {args.set}/{args.split}")
    print(f"exact-match accuracy: A {correct[0].mean():.3f}, B {correct[1].mean():.3f}")
    print(f"macro-F1 difference B - A: {diff:+.3f} (95% paired bootstrap [{low:+.3f}, {high:+.3f}])")
    print(f"McNemar: A alone right {test['a_only_correct']}, B alone right {test['b_only_correct']}, p = {test['p_value']:.4g}")
    print(f"{len(flipped)} items flipped:")
    for f in flipped[:30]:
        print(f"  {f['id']}: gold {f['gold']}  A {f['a']}  B {f['b']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": len(common), "mcnemar": test, "macro_f1_diff": [diff, low, high],
                                               "flipped": flipped}, indent=2) + "\n")
    return 0


def _records(path: str) -> dict[str, dict]:
    from moderation.batch import read_output

    if not Path(path).is_file():
        raise ConfigError(f"run file not found: {path}")
    return {r["id"]: r for r in read_output(Path(path)) if r.get("id")}


def _flagged(record: dict) -> list[str] | str:
    verdict = record.get("verdict")
    return "error" if verdict is None else sorted(v["policy"] for v in verdict["violations"])


def _paired_macro_f1(gold, a, b, n_boot: int, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(gold), len(gold))
        diffs.append(macro_f1(gold[idx], b[idx]) - macro_f1(gold[idx], a[idx]))
    diffs = np.array(diffs)
    diffs = diffs[~np.isnan(diffs)]
    return macro_f1(gold, b) - macro_f1(gold, a), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


__all__ = ["compare_runs", "evaluate_sets"]
