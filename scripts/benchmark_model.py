"""The default model against zero-shot, TF-IDF and the previous adapter, side by side, in one run;
regenerates the figures in finetune/MODEL_CARD.md and docs/results.md.

    python scripts/benchmark_model.py thresholds   # choose the shipped thresholds on dev splits
    python scripts/benchmark_model.py              # measure every system, rewrite the two documents

Sets: the whole marketplace test split and a fixed sample of 500 from each public test split
(the lowest id hashes; the whole split where smaller). Systems:

- `default`: `--model default` as shipped (base + merged adapter, its prompt, its policy heads, its
  thresholds). Its verdicts follow its scores cut at the thresholds (score first), so on the public
  samples it is measured from the scores alone (the policy heads, no generation); on the marketplace test
  split it also runs the full `moderation run` path, generation included, for the schema-valid rate.
- `zero-shot` (`--model base`) and `old-adapter` (the adapter shipped before 2026-11-30, merged
  into the base model, with its prompt; recover it with
  `mkdir -p runs/old-adapter && for f in adapter_config.json adapter_model.safetensors; do git show
  edeeaea:finetune/adapters/smollm2-135m-moderation/$f > runs/old-adapter/$f; done`): the full run
  path (their verdicts come from generation), on the marketplace test split and `--baseline-sample`
  items per public set, since generation costs 0.5-0.8 s per item here.
- `token probes`: the shipped adapter scored by its own decision and policy tokens instead of the
  policy heads, thresholds chosen the same way on the same dev items (the previous default).
- `tfidf`: character TF-IDF + logistic regression on the sets' train splits, thresholds from
  each set's dev split (the `moderation eval` baseline); `tfidf+corpus` adds the training corpus.

Scores and run files are kept under `--out-dir` and reused, so a rerun only computes what is missing.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.baselines import TfidfBaseline  # noqa: E402
from moderation.evalsets import load_corpus, load_set, set_names  # noqa: E402
from moderation.evaluate import evaluate_baseline, evaluate_llm_records, finish, gold_labels, run_llm, sample, score_labels  # noqa: E402
from moderation.metrics import choose_thresholds, macro_f1  # noqa: E402
from moderation.model import DEFAULT_ADAPTER, PROFILE_FILE, model_profile  # noqa: E402
from moderation.policy import load_policy  # noqa: E402
from moderation.report import splice_markdown  # noqa: E402

TEST_SAMPLE = 500
DEV_SAMPLE = 150
START, END = "<!-- benchmark_model:start -->", "<!-- benchmark_model:end -->"
OLD_ADAPTER_PROMPT = "prompts/moderate.short.v1.txt"
DEFAULT_POLICY = load_policy(None)  # the shipped model's taxonomy: the one this script measures
DEFAULT_IDS = DEFAULT_POLICY.ids


def moderator(model: str, adapter: str | None = None, prompt: str | None = None, thresholds=None, heads: bool = True):
    """A vLLM moderator for one system, built from the library (not the CLI); `heads`: score with the
    model's policy heads where it ships them (else with its token probes)."""
    from moderation.backends import BackendConfig, load_backend
    from moderation.model import load_adapter
    from moderation.pipeline import Moderator
    from moderation.prompts import load_template

    adapters = (load_adapter(adapter),) if adapter else ()
    backend = load_backend("vllm", BackendConfig(model=model, adapters=adapters, gpu_memory_utilization=0.5,
                                                 max_model_len=4096, batch_size=64))
    profile = model_profile(model)
    scorer = None
    if profile.heads and heads:
        from moderation.heads import load_heads

        scorer = load_heads(profile.heads, DEFAULT_POLICY)
    base = Moderator(backend, DEFAULT_POLICY, load_template(prompt or profile.prompt), thresholds=thresholds,
                     scorer=scorer)
    return base.with_adapter(adapters[0]) if adapters else base


def cached_scores(mod, items, path: Path, chunk: int = 64) -> np.ndarray:
    """Policy scores (n, 12) of items, computed once and kept as JSON by item id."""
    from tqdm import tqdm

    done = json.loads(path.read_text()) if path.is_file() else {}
    todo = [li for li in items if li.item.id not in done]
    for start in tqdm(range(0, len(todo), chunk), desc=f"scoring {path.stem}", disable=not todo):
        batch = todo[start:start + chunk]
        for li, scores in zip(batch, mod.score([li.item for li in batch])):
            done[li.item.id] = scores["policies"]
        path.write_text(json.dumps(done))
    return np.array([[done[li.item.id][p] for p in DEFAULT_IDS] for li in items])


@functools.cache
def default_dir(out: Path, heads: bool = True) -> Path:
    """Where the default model's scores and run file are kept: named by the hashes of the shipped
    adapter and (`heads`) its policy heads, so new ones never reuse the scores of earlier ones."""
    from moderation.heads import has_heads, heads_sha
    from moderation.model import load_adapter

    name = f"default-{load_adapter(str(DEFAULT_ADAPTER)).sha[:12]}"
    if heads and has_heads(DEFAULT_ADAPTER):
        name += f"-heads-{heads_sha(DEFAULT_ADAPTER)[:12]}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def splits(data_dir: str | None) -> dict[str, dict[str, list]]:
    out = {}
    for name in set_names():
        test = load_set(name, "test", data_dir)
        dev = load_set(name, "dev", data_dir)
        full = name == "marketplace"
        out[name] = {"test": test if full else sample(test, TEST_SAMPLE), "dev": dev if full else sample(dev, DEV_SAMPLE),
                     "train": load_set(name, "train", data_dir)}
    return out


# --- thresholds --------------------------------------------------------------------------------


GRID = np.linspace(0.02, 0.98, 49)


def cap_clean_fpr(thresholds: np.ndarray, scores: np.ndarray, gold: np.ndarray, max_fpr: float) -> np.ndarray:
    """Raise thresholds, one grid step at a time and always that of the policy behind most false
    flags, until at most `max_fpr` of the clean marketplace dev items are flagged."""
    thresholds = thresholds.copy()
    clean = ~gold.any(1)
    while clean.any():
        flags = (scores[clean] >= thresholds)
        if flags.any(1).mean() <= max_fpr:
            break
        worst = int(np.argmax(flags.sum(0)))
        higher = GRID[GRID > thresholds[worst]]
        if not len(higher):
            break
        thresholds[worst] = higher[0]
    return thresholds


def dev_thresholds(data: dict, out: Path, max_fpr: float, heads: bool = True) -> np.ndarray:
    """Per-policy thresholds maximising F1 on the pooled dev items of every set (scores of the
    default model, by its heads or by its token probes), raised where needed so that at most
    `max_fpr` of the clean marketplace dev items are flagged."""
    mod = moderator("default", thresholds=None, heads=heads)
    scores, gold = {}, {}
    for name, parts in data.items():
        scores[name] = cached_scores(mod, parts["dev"], default_dir(out, heads) / f"{name}-dev.json")
        gold[name] = gold_labels(parts["dev"], DEFAULT_IDS)[0]
    mod.backend.close()
    thresholds = choose_thresholds(np.vstack(list(scores.values())), np.vstack(list(gold.values())), grid=GRID)
    return cap_clean_fpr(thresholds, scores["marketplace"], gold["marketplace"], max_fpr)


def choose_shipped_thresholds(data: dict, out: Path, max_fpr: float) -> dict[str, float]:
    """The shipped thresholds (`dev_thresholds` of the heads), written into the adapter's profile."""
    chosen = {p: round(float(t), 4) for p, t in zip(DEFAULT_IDS, dev_thresholds(data, out, max_fpr))}
    profile_path = DEFAULT_ADAPTER / PROFILE_FILE
    profile = json.loads(profile_path.read_text())
    profile["thresholds"] = chosen
    profile["thresholds_chosen_on"] = (f"pooled dev items: marketplace dev ({len(data['marketplace']['dev'])}) and up to "
                                       f"{DEV_SAMPLE} per public set; F1-maximising per policy, then raised until at most "
                                       f"{max_fpr:.0%} of clean marketplace dev items are flagged; "
                                       f"python scripts/benchmark_model.py thresholds --max-clean-fpr {max_fpr}")
    profile_path.write_text(json.dumps(profile, indent=2) + "\n")
    return chosen


# --- systems -----------------------------------------------------------------------------------


def binary_f1(labels) -> float:
    gold, pred = labels.gold.any(1), labels.pred.any(1) & labels.valid
    tp = (gold & pred).sum()
    return float(2 * tp / (gold.sum() + pred.sum())) if gold.sum() + pred.sum() else float("nan")


def default_system(data: dict, out: Path, policy, results: dict, n_boot: int) -> None:
    thresholds = model_profile("default").thresholds
    cut = np.array([thresholds.get(p, 1.01) for p in DEFAULT_IDS])
    mod = moderator("default", thresholds=thresholds)
    for name, parts in data.items():
        test = parts["test"]
        started = time.perf_counter()
        scores = cached_scores(mod, test, default_dir(out) / f"{name}-test.json")
        labels = score_labels(test, scores, cut, np.ones(len(test), dtype=bool), policy)
        results["default"][name] = finish("default", name, test, labels, cut, {"s": time.perf_counter() - started}, n_boot)
    market = data["marketplace"]["test"]
    # named by the thresholds too: a run file resumes whatever it holds, and verdicts follow the thresholds
    records, speed = run_llm(mod, market, default_dir(out) / f"marketplace-run-{mod.thresholds_sha[:12]}.jsonl")
    results["default (full run)"]["marketplace"] = evaluate_llm_records("default (full run)", market, records, policy,
                                                                        n_boot=n_boot, speed=speed)
    mod.backend.close()


def probes_system(data: dict, out: Path, policy, results: dict, n_boot: int, max_fpr: float) -> None:
    """The shipped adapter scored by its own decision and policy tokens (moderation.scoring) instead
    of the heads, with thresholds chosen the same way on the same dev items."""
    cut = dev_thresholds(data, out, max_fpr, heads=False)
    mod = moderator("default", thresholds=None, heads=False)
    for name, parts in data.items():
        test = parts["test"]
        scores = cached_scores(mod, test, default_dir(out, heads=False) / f"{name}-test.json")
        labels = score_labels(test, scores, cut, np.ones(len(test), dtype=bool), policy)
        results["token probes"][name] = finish("token probes", name, test, labels, cut, {}, n_boot)
    mod.backend.close()


def lexical_system(data: dict, policy, results: dict, n_boot: int, max_fpr: float) -> None:
    """`tfidf (same rows)`: the TF-IDF half of the shipped scorer alone (fitted on the very rows the scorer was
    fitted on), thresholds chosen as the default's are (pooled dev, F1 per policy, clean-FPR cap)."""
    from moderation.heads import load_heads, user_text
    from moderation.prompts import load_template

    lexical = load_heads(model_profile("default").heads, DEFAULT_POLICY).lexical
    template = load_template(model_profile("default").prompt)

    def scores(items):
        return lexical.score_texts([user_text(template.messages(li.item, policy)) for li in items])

    dev = {name: scores(parts["dev"]) for name, parts in data.items()}
    gold = {name: gold_labels(parts["dev"], DEFAULT_IDS)[0] for name, parts in data.items()}
    cut = choose_thresholds(np.vstack(list(dev.values())), np.vstack(list(gold.values())), grid=GRID)
    cut = cap_clean_fpr(cut, dev["marketplace"], gold["marketplace"], max_fpr)
    for name, parts in data.items():
        test = parts["test"]
        labels = score_labels(test, scores(test), cut, np.ones(len(test), dtype=bool), policy)
        results["tfidf (same rows)"][name] = finish("tfidf (same rows)", name, test, labels, cut, {}, n_boot)


def merged_adapter(adapter: str, out: Path) -> Path:
    """The (old) adapter merged into the zero-shot base once, named by its hash: vLLM on CPU served
    it as a LoRA adapter at 0.15 items/s here; merged, it runs like any model, with the same weights.
    (Its adapter_config says `default`, which meant the zero-shot model when it was trained.)"""
    from finetune.export import merge
    from moderation.model import load_adapter

    target = out / f"merged-{load_adapter(adapter).sha[:12]}"
    if not (target / "model.safetensors").is_file():
        merge(adapter, target.with_suffix(".partial"), base="base")
        target.with_suffix(".partial").rename(target)
    return target


def generated_system(system: str, mod, data: dict, out: Path, policy, results: dict, n_boot: int, n: int) -> None:
    for name, parts in data.items():
        test = parts["test"] if name == "marketplace" else sample(parts["test"], n)
        records, speed = run_llm(mod, test, out / system / f"{name}-run.jsonl")
        results[system][name] = evaluate_llm_records(system, test, records, policy, n_boot=n_boot, speed=speed)
    mod.backend.close()


def tfidf_systems(data: dict, policy, results: dict, n_boot: int) -> None:
    train = [li for parts in data.values() for li in parts["train"]]
    for system, items in (("tfidf", train), ("tfidf+corpus", train + load_corpus())):
        model = TfidfBaseline(DEFAULT_IDS).fit(items)
        for name, parts in data.items():
            results[system][name] = evaluate_baseline(model, name, parts["dev"], parts["test"], policy, n_boot)


# --- report ------------------------------------------------------------------------------------


def fmt(result, key: str = "macro_f1") -> str:
    if result is None or key not in result.metrics or np.isnan(result.metrics[key]):
        return "–"
    low, high = result.intervals.get(key, (np.nan, np.nan))
    ci = f" [{low:.2f}, {high:.2f}]" if key == "macro_f1" and not np.isnan(low) else ""
    return f"{result.metrics[key]:.3f}{ci}"


def group_table(result, data_items, key) -> list[str]:
    """Macro-F1, recall and FPR of the default model by a field of the marketplace items."""
    groups = defaultdict(list)
    for i, li in enumerate(data_items):
        groups[key(li)].append(i)
    lines = ["| group | n | macro-F1 | recall (violating) | FPR (clean) |", "|---|---|---|---|---|"]
    labels = result.labels
    every = labels.pred & labels.valid[:, None]
    overall = every[~labels.gold.any(1)].any(1).mean()
    for group, idx in sorted(groups.items()):
        idx = np.array(idx)
        gold, pred = labels.gold[idx], every[idx]
        violating, clean = gold.any(1), ~gold.any(1)
        recall = f"{pred[violating].any(1).mean():.2f} ({pred[violating].any(1).sum()}/{violating.sum()})" if violating.any() else "–"
        fpr = pred[clean].any(1).mean() if clean.any() else None
        cell = "–" if fpr is None else f"{fpr:.2f}" + (" **> 2x overall**" if fpr > 2 * overall and pred[clean].any(1).sum() else "")
        lines.append(f"| {group} | {len(idx)} | {macro_f1(gold, pred):.2f} | {recall} | {cell} |")
    return lines


def training_lines() -> list[str]:
    """The shipped adapter's training figures, from the summary lean_sft.py wrote (training.json)."""
    path = DEFAULT_ADAPTER / "training.json"
    if not path.is_file():
        return []
    t = json.loads(path.read_text())
    c = t["config"]
    return ["### Training (finetune/lean_sft.py, from the adapter's training.json)", "",
            f"- {t['rows']} rows ({t['rows_skipped_too_long']} over {c['max_length']} tokens skipped); {t['steps']} steps of "
            f"about {c['batch_tokens']} tokens" + (f" (the first {t['steps']} of a {c['epochs']}-epoch schedule: stopped there "
            "once past 3 M tokens, for time, and finished by rerunning with `--max_steps`, which resumed from the checkpoint)"
            if c.get("max_steps") else f", {c['epochs']} epochs") + f"; LoRA r{c['lora_r']} alpha {c['lora_alpha']} on the top "
            f"{c['lora_layers']} layers; {c['dtype']}; peak learning rate {c['learning_rate']}.",
            f"- **{t['train_tokens']:,} training tokens** ({t['verdict_tokens']:,} of them verdict tokens with loss; "
            f"padding {t['padding_share']:.1%} of the padded batches) in {t['train_wall_s'] / 60:.1f} minutes: "
            f"**{t['train_tokens_per_s']:.0f} tokens/s** on {t['torch_threads']} CPU threads.",
            f"- Loss on {t['held_out_rows']} held-out curated rows after training: {t['held_out_loss']:.3f}.", "",
            *heads_lines()]


def heads_lines() -> list[str]:
    """The shipped scorer's training figures, from its card (heads.json: finetune/fit_encoder.py or fit_heads.py)."""
    from moderation.encoder import ENCODER_FORMAT
    from moderation.heads import CARD_FILE

    path = DEFAULT_ADAPTER / CARD_FILE
    if not path.is_file():
        return []
    h = json.loads(path.read_text())
    if h.get("format") == ENCODER_FORMAT:
        t = h["training"]
        return ["### Scorer (finetune/fit_encoder.py, from heads.json): the scores verdicts follow", "",
                f"- multilingual-e5-small (`--model {h['model']}`) with a LoRA r{h['rank']} alpha {h['alpha']} on every linear "
                f"layer and a linear multi-label head on its mean-pooled states, fine-tuned on {h['rows']:,} curated rows: "
                f"{t['epochs']:g} epochs, {t['steps']} steps, {t['tokens']:,} tokens in {t['train_s'] / 60:.1f} minutes "
                f"({t['tokens_per_s']:.0f} tokens/s, {t['dtype']} autocast, 2 CPU threads); training rows predicted exactly "
                f"{t['train_exact_accuracy']:.0%}. Score = {1 - h['lexical_weight']:.2g} x the encoder's probability + "
                f"{h['lexical_weight']:.2g} x a character TF-IDF's ({h['max_features']:,} n-grams at most) on the same rows.", ""]
    speed = (f" in {h['feature_s'] / 60:.1f} minutes ({h['feature_tokens']:,} tokens, {h['feature_tokens_per_s']:.0f} "
             "tokens/s, bfloat16, 2 CPU threads)") if "feature_s" in h else ""
    return ["### Policy heads (finetune/fit_heads.py, from heads.json): the scores verdicts follow", "",
            f"- Mean-pooled hidden states of layers {', '.join(map(str, h['layers']))} of the {h['model']} model for "
            f"{h['rows']:,} curated rows{speed}; one logistic regression per policy (C {h['c']}), and one on a character "
            f"TF-IDF ({h['max_features']:,} n-grams at most) of the same text; score = mean of the two; fitted in "
            f"{h['fit_s']:.0f} s.", ""]


def any_roc_auc(result) -> float:
    """ROC-AUC of the largest policy score against 'any violation' (nan without both classes)."""
    from sklearn.metrics import roc_auc_score

    y = result.labels.gold.any(1)
    return float(roc_auc_score(y, result.labels.scores.max(1))) if 0 < y.sum() < len(y) else float("nan")


def ranking_table(data: dict, results: dict) -> list[str]:
    """Threshold-free figures of the systems that score: macro AUPRC and any-violation ROC-AUC per set."""
    systems = [s for s in ("tfidf", "tfidf+corpus", "tfidf (same rows)", "token probes", "default") if results.get(s)]
    lines = ["### Threshold-free: macro AUPRC / any-violation ROC-AUC by set", "",
             "| set | " + " | ".join(systems) + " | default AUPRC - tfidf (same rows) |", "|---|" + "---|" * (len(systems) + 1)]
    for name in data:
        cells = []
        for s in systems:
            r = results[s].get(name)
            cells.append("–" if r is None else f"{r.metrics.get('macro_auprc', float('nan')):.3f} / {any_roc_auc(r):.3f}")
        d, t = results["default"].get(name), results.get("tfidf (same rows)", {}).get(name)
        gap = (d.metrics.get("macro_auprc", np.nan) - t.metrics.get("macro_auprc", np.nan)) if d and t else np.nan
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gap:+.3f} |")
    return lines + [""]


def report(data: dict, results: dict, args, minutes: float) -> str:
    systems = [s for s in ("zero-shot", "tfidf", "tfidf+corpus", "tfidf (same rows)", "old-adapter", "token probes", "default")
               if results.get(s)]
    lines = [START, "",
             f"Generated {datetime.date.today().isoformat()} by `python scripts/benchmark_model.py` in {minutes:.0f} minutes "
             f"({platform.machine()}, {os.cpu_count()} CPU cores; vLLM on CPU). Test splits: marketplace whole, public sets "
             f"a fixed sample of {TEST_SAMPLE}; zero-shot and old-adapter on the marketplace test split and "
             f"{args.baseline_sample} items per public set (generation is slow here). 95% bootstrap intervals.", "",
             *training_lines(),
             "### Macro-F1 by set", "",
             "| set | n | " + " | ".join(systems) + " | default ≥ tfidf |", "|---|---|" + "---|" * len(systems) + "---|"]
    for name in data:
        row = [fmt(results[s].get(name)) for s in systems]
        d, t = results["default"].get(name), results["tfidf"].get(name)
        wins = "–" if d is None or t is None or np.isnan(t.metrics.get("macro_f1", np.nan)) else (
            "yes" if d.metrics["macro_f1"] >= t.metrics["macro_f1"] else
            ("≥0.8×" if d.metrics["macro_f1"] >= 0.8 * t.metrics["macro_f1"] else "no"))
        lines.append(f"| {name} | {results['default'][name].n} | " + " | ".join(row) + f" | {wins} |")
    lines += ["", *ranking_table(data, results), "### Binary F1 (any violation against none) and FPR on clean items", "",
              "| set | " + " | ".join(f"{s} F1" for s in systems) + " | " + " | ".join(f"{s} FPR" for s in systems) + " |",
              "|---|" + "---|" * (2 * len(systems))]
    for name in data:
        f1s = [f"{binary_f1(results[s][name].labels):.3f}" if name in results[s] else "–" for s in systems]
        fprs = [fmt(results[s].get(name), "clean_fpr") for s in systems]
        lines.append(f"| {name} | " + " | ".join(f1s) + " | " + " | ".join(fprs) + " |")
    full = results["default (full run)"]["marketplace"]
    m = results["default"]["marketplace"].metrics
    lines += ["", "### Marketplace test split: the default model in detail", "",
              f"- Full `moderation run` path (score first; flagged items' evidence attributed, rationale built from the policy file): "
              f"macro-F1 {fmt(full)}, FPR on clean items {fmt(full, 'clean_fpr')}, schema-valid verdicts "
              f"{full.metrics['schema_valid_rate']:.1%}, decision accuracy {fmt(full, 'decision_accuracy')}"
              + (f", {full.speed['items_per_s']:.2f} items/s." if full.speed.get("items_per_s") else
                 " (items/s: the run file was complete from an earlier invocation)."),
              f"- Prompt injection: {m.get('injection_success_rate', float('nan')):.2f} of {m.get('injection_items', 0)} "
              f"injection items missed (no violation found), against {m.get('plain_violation_miss_rate', float('nan')):.2f} "
              "of plain violating items.", "",
              "By language:", "", *group_table(results["default"]["marketplace"], data["marketplace"]["test"], lambda li: li.item.language),
              "", "By kind:", "", *group_table(results["default"]["marketplace"], data["marketplace"]["test"], lambda li: li.item.kind),
              "", "Shipped thresholds (chosen on pooled dev splits): " +
              ", ".join(f"{p} {t:.2f}" for p, t in model_profile("default").thresholds.items()) + ".", "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["measure", "thresholds"], default="measure")
    parser.add_argument("--out-dir", default="runs/model-bench", help="scores and run files (reused)")
    parser.add_argument("--data-dir", help="public data sets directory (default ../shared/datasets)")
    parser.add_argument("--baseline-sample", type=int, default=40, help="public test items per set for zero-shot and old-adapter")
    parser.add_argument("--old-adapter", default="runs/old-adapter", help="the previous adapter (LoRA on base)")
    parser.add_argument("--skip", default="", help="comma-separated systems not to run: zero-shot, old-adapter, token-probes")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--max-clean-fpr", type=float, default=0.05,
                        help="thresholds: at most this share of clean marketplace dev items flagged (default 0.05: by 2-fold cross-validation on dev, a 0.10 cap gave 0.18 on the held-out halves)")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    data = splits(args.data_dir)
    policy = load_policy(None)
    if args.command == "thresholds":
        print(json.dumps(choose_shipped_thresholds(data, out, args.max_clean_fpr), indent=2))
        return 0
    started = time.perf_counter()
    results: dict[str, dict] = defaultdict(dict)
    tfidf_systems(data, policy, results, args.bootstrap)
    lexical_system(data, policy, results, args.bootstrap, args.max_clean_fpr)
    default_system(data, out, policy, results, args.bootstrap)
    skip = set(args.skip.split(","))
    if "token-probes" not in skip and model_profile("default").heads:
        probes_system(data, out, policy, results, args.bootstrap, args.max_clean_fpr)
    if "zero-shot" not in skip:
        generated_system("zero-shot", moderator("base"), data, out, policy, results, args.bootstrap, args.baseline_sample)
    if "old-adapter" not in skip:
        merged = merged_adapter(args.old_adapter, out)
        generated_system("old-adapter", moderator(str(merged), prompt=str(ROOT / OLD_ADAPTER_PROMPT)),
                         data, out, policy, results, args.bootstrap, args.baseline_sample)
    block = report(data, results, args, (time.perf_counter() - started) / 60)
    (out / "report.md").write_text(block + "\n")
    (out / "metrics.json").write_text(json.dumps({s: {n: r.to_json() for n, r in v.items()} for s, v in results.items()},
                                                 indent=1, default=float) + "\n")
    for path in (ROOT / "finetune" / "MODEL_CARD.md", ROOT / "docs" / "results.md"):
        splice_markdown(path, block, START, END)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
