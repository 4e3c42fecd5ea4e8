"""`moderation eval` and `moderation eval compare`: the CLI side of evaluation (it prints)."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.baselines import BASELINES
from moderation.datasets import LabelledItem
from moderation.errors import ConfigError
from moderation.evalsets import load_set, load_sets, parse_names, set_names
from moderation.evaluate import (
    evaluate_baseline,
    evaluate_llm_records,
    faithfulness,
    gold_labels,
    llm_outputs,
    llm_thresholds,
    run_llm,
    sample,
    write_metrics,
)
from moderation.metrics import mcnemar, paired_macro_f1
from moderation.report import by_set, markdown
from moderation.report_html import html_page
from moderation.report_plots import plot_set
from moderation.runfile import RunRecord, read_records
from moderation.settings import from_args

SYSTEMS = ("rules", "tfidf", "llm")


@dataclass
class ScoredSet:
    """A set whose test items are scored, with the dev items that choose its thresholds."""

    name: str
    dev: list[LabelledItem]  # chooses the TF-IDF thresholds
    test: list[LabelledItem]
    llm_dev: list[LabelledItem] = field(default_factory=list)  # chooses the LLM's (with --llm-dev, or a team's dev)


@dataclass
class Plan:
    """What `eval` scores and what the TF-IDF baseline learns from, with where each came from."""

    scored: list[ScoredSet]
    train: Callable[[], list[LabelledItem]]  # loaded only if a system needs training
    notes: dict[str, Any] = field(default_factory=dict)


def evaluate_sets(args, build_moderator) -> int:
    """Every chosen system on every chosen set's test split (or on --labels); reports into --out-dir."""
    from tqdm import tqdm

    from moderation.policy import load_policy

    systems = parse_names(args.systems, SYSTEMS, "systems")
    out_dir = Path(args.out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    policy = load_policy(args.policy)
    plan = labels_plan(args, systems, policy) if args.labels else builtin_plan(args, policy)
    models = _fit_baselines(systems, plan, policy)
    moderator = build_moderator(args) if "llm" in systems else None
    results = []
    steps = [(s, system) for s in plan.scored for system in systems]
    try:
        with tqdm(steps, desc="scoring", unit="step", disable=args.no_progress, file=sys.stderr) as bar:
            for scored, system in bar:
                bar.set_postfix_str(f"{system} on {scored.name}")
                test = sample(scored.test, args.sample)
                if system == "llm":
                    results.extend(_evaluate_llm(moderator, scored.name, scored.llm_dev, test, policy, out_dir, args))
                else:
                    results.append(evaluate_baseline(models[system], scored.name, scored.dev, test, policy, args.bootstrap))
    finally:
        if moderator is not None:
            moderator.backend.close()
    _write_reports(results, out_dir, args, moderator, plan.notes)
    return 0


def _by_split(items: list[LabelledItem]) -> dict[str, list[LabelledItem]]:
    out: dict[str, list[LabelledItem]] = {"train": [], "dev": [], "test": []}
    for li in items:
        out.setdefault(li.split, []).append(li)
    return out


def builtin_plan(args, policy) -> Plan:
    """The built-in sets (--sets), their labels mapped onto the policy's taxonomy: each scored on its test
    split, thresholds from its dev split. A set none of whose labels maps onto the taxonomy is skipped, with a note.

    Raises:
        ConfigError: no chosen set has a label in the taxonomy.
    """
    from functools import partial

    from tqdm import tqdm

    progress = partial(tqdm, desc="loading sets", unit="set", disable=args.no_progress, file=sys.stderr)
    loaded, skipped = load_sets(parse_names(args.sets, set_names(), "sets"), None, args.data_dir, policy, progress)
    splits = {name: _by_split(items) for name, items in loaded.items()}  # each set read once, not once per split
    if not splits:
        raise ConfigError(f"no chosen set has labels in {policy.describe()}: map them with `label_map` in the policy "
                          "file, or score your own labelled file with --labels")
    sets = list(splits)
    scored = [ScoredSet(name, splits[name]["dev"], splits[name]["test"], splits[name]["dev"]) for name in sets]
    return Plan(scored, lambda: [li for name in sets for li in splits[name]["train"]],
                {"sets": sets, "tfidf_trained_on": f"train splits of {', '.join(sets)}", "skipped": skipped})


def labels_plan(args, systems: list[str], policy) -> Plan:
    """A team's labelled file (--labels) scored; TF-IDF trained on --train (else the built-in train
    splits of --sets); thresholds chosen on --dev (else the file's dev rows, else the built-in dev splits)."""
    from moderation.labels import LabelOptions, read_labelled, skipped_note

    options = from_args(LabelOptions, args)
    labelled = read_labelled(args.labels, options, policy)
    test = labelled.split("test")
    if not test:
        raise ConfigError(f"{args.labels} has no test rows to score (its split column puts every row in {sorted(labelled.splits)})")
    extra = {role: read_labelled(path, options, policy, default_split=role) for role, path in (("train", args.train), ("dev", args.dev)) if path}
    dev = _all_rows(extra["dev"]) if "dev" in extra else labelled.split("dev")
    train = _all_rows(extra["train"]) if "train" in extra else labelled.split("train")
    notes = {"labels": str(args.labels), "test_items": len(test),
             "skipped": [n for n in map(skipped_note, [labelled, *extra.values()]) if n],
             "thresholds_from": f"{len(dev)} dev items of {args.dev or args.labels}" if dev else
             "no dev data: the LLM's own verdicts"}
    builtin = None
    if "tfidf" in systems and not (train and dev):
        builtin = builtin_plan(args, policy)  # the built-in sets fill in training data (and dev, if the team has none)
        notes["skipped"] += builtin.notes["skipped"]
    tfidf_dev = dev
    if not dev and builtin is not None:
        tfidf_dev = [li for s in builtin.scored for li in s.dev]
        notes["thresholds_from"] = f"TF-IDF: dev splits of {', '.join(builtin.notes['sets'])}; the LLM: its own verdicts"
    notes["tfidf_trained_on"] = f"{len(train)} train items of {args.train or args.labels}" if train else (
        builtin.notes["tfidf_trained_on"] if builtin else None)
    train_items = (lambda: train) if train else (builtin.train if builtin else list)
    return Plan([ScoredSet(labelled.name, tfidf_dev, test, dev)], train_items, notes)


def _all_rows(labelled) -> list[LabelledItem]:
    return [li for items in labelled.splits.values() for li in items]


def _fit_baselines(systems: list[str], plan: Plan, policy) -> dict:
    models = {}
    for name in (s for s in systems if s in BASELINES):
        train = plan.train() if BASELINES[name].trains else []
        if train:
            print(f"training {name} on {plan.notes.get('tfidf_trained_on')} ({len(train)} items) ...", file=sys.stderr)
        models[name] = BASELINES[name](policy.ids).fit(train)
    return models


def _evaluate_llm(moderator, name: str, dev: list, test: list, policy, out_dir: Path, args) -> list:
    """The LLM's own verdicts on test; with --llm-dev, also its scores cut at thresholds chosen on dev."""
    from tqdm import tqdm

    def moderate(items, tag):
        with tqdm(total=len(items), desc=f"llm on {name}{tag}", unit="item", disable=args.no_progress, file=sys.stderr) as bar:
            return run_llm(moderator, items, out_dir / "runs" / f"{name}{tag}.jsonl", args.chunk_size, bar)

    records, speed = moderate(test, "")
    results = [evaluate_llm_records(name, test, records, policy, n_boot=args.bootstrap, speed=speed)]
    results[0].metrics.update(faithfulness(moderator, test, records, policy))
    # A team's --dev (or the dev rows of --labels) always chooses thresholds; a built-in set's dev only with --llm-dev.
    dev_share = args.llm_dev or (None if args.labels else 0)
    if dev_share != 0 and dev and moderator.scores:
        dev_items = sample(dev, dev_share)
        dev_records, _ = moderate(dev_items, ".dev")
        thresholds = llm_thresholds(dev_items, dev_records, policy.ids)
        path = out_dir / "thresholds" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(dict(zip(policy.ids, map(float, thresholds))), indent=2) + "\n")
        results.append(evaluate_llm_records(name, test, records, policy, system="llm@dev-thresholds",
                                            n_boot=args.bootstrap, speed=speed, thresholds=thresholds))
    return results


def _write_reports(results, out_dir: Path, args, moderator, notes: dict) -> None:
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["moderation", *sys.argv[1:]]) if sys.argv and "moderation" in sys.argv[0] else None,
        "sample": args.sample,
        "bootstrap": args.bootstrap,
        "llm": moderator.provenance() if moderator is not None else None,
        **notes,
    }
    for note in notes.get("skipped", ()):
        print(f"note: {note}", file=sys.stderr)
    write_metrics(results, out_dir / "metrics.json", meta)
    text = markdown(results, header=f"## Results ({meta['date']})")
    (out_dir / "report.md").write_text(text + "\n")
    figures = [f for set_name, rs in by_set(results).items() for f in plot_set(set_name, rs, out_dir)]
    (out_dir / "report.html").write_text(html_page(results, figures, meta))
    print(text)
    drawn = sum(f.path is not None for f in figures)
    print(f"\nwrote {out_dir / 'metrics.json'}, report.md, report.html and {drawn} plots "
          f"({len(figures) - drawn} not drawn, the report says why)")


def compare_runs(args) -> int:
    """Paired comparison of two runs on the same labelled items: McNemar and paired bootstrap."""
    from moderation.policy import load_policy

    policy = load_policy(args.policy)
    items = {li.item.id: li for li in load_set(args.set, args.split, args.data_dir, policy)}
    runs = [_records(path) for path in (args.run_a, args.run_b)]
    common = [i for i in items if i in runs[0] and i in runs[1]]
    if not common:
        raise ConfigError(f"the two runs share no item of {args.set}/{args.split}")
    labelled = [items[i] for i in common]
    gold, _ = gold_labels(labelled, policy.ids)
    preds = []
    for records in runs:
        llm = llm_outputs(labelled, records, policy.ids)
        preds.append(llm.flagged & llm.valid[:, None])
    correct = [(p == gold).all(1) for p in preds]
    test = mcnemar(correct[0], correct[1])
    diff, low, high = paired_macro_f1(gold, preds[0], preds[1], args.bootstrap)
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


def _records(path: str) -> dict[str, RunRecord]:
    if not Path(path).is_file():
        raise ConfigError(f"run file not found: {path}")
    return {r.id: r for r in read_records(Path(path)) if r.id}


def _flagged(record: RunRecord) -> list[str] | str:
    verdict = record.verdict
    return "error" if verdict is None else sorted(v["policy"] for v in verdict["violations"])


__all__ = ["compare_runs", "evaluate_sets"]
