"""Scorers side by side on the dev splits only: which one ships as the default's scorer.

    python scripts/bakeoff.py                                     # the shipped scorer, TF-IDF and the candidates below
    python scripts/bakeoff.py --heads runs/frozen-heads --encoder runs/encoder --write   # and rewrite finetune/MODEL_CARD.md's table

Systems (every one fitted on the same `moderation curate` rows):
- `tfidf`: the character TF-IDF + logistic regression stored beside a scorer (its lexical half);
- `frozen heads`: logistic regressions on the frozen SmolLM2-135M's pooled hidden states
  (finetune/fit_heads.py), alone and averaged with the TF-IDF (`+ tfidf`, the previous default);
- `e5 fine-tuned`: multilingual-e5-small with a LoRA and a multi-label head (finetune/fit_encoder.py),
  alone and averaged with the TF-IDF.

Dev items: the whole marketplace dev split and a fixed sample of 150 per public set (as
scripts/benchmark_model.py). Threshold-free figures: macro AUPRC over the policies with dev
positives, any-violation ROC-AUC and recall of violating items at 10% clean FPR on marketplace
dev. Thresholded figures by 2-fold cross-validation on dev (thresholds chosen on one half of
every dev split, pooled, with the 5% clean-FPR cap on that half's marketplace items, applied to
the other half, both ways): macro-F1 with a 95% bootstrap interval, clean FPR, recall per
language, and the mean macro-F1 over the public sets. Scores are kept under `--out-dir` by scorer hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.evalsets import load_set, set_names  # noqa: E402
from moderation.evaluate import gold_labels, sample  # noqa: E402
from moderation.metrics import choose_thresholds, macro_f1, tpr_at_fpr  # noqa: E402
from moderation.model import DEFAULT_ADAPTER, model_profile  # noqa: E402
from moderation.policy import load_policy  # noqa: E402
from moderation.report import splice_markdown  # noqa: E402
from scripts.benchmark_model import DEV_SAMPLE, GRID, cap_clean_fpr  # noqa: E402

POLICY = load_policy(None)
IDS = POLICY.ids
MAX_CLEAN_FPR = 0.05
START, END = "<!-- bakeoff:start -->", "<!-- bakeoff:end -->"


def dev_items(data_dir: str | None) -> dict[str, list]:
    out = {}
    for name in set_names():
        dev = load_set(name, "dev", data_dir)
        out[name] = dev if name == "marketplace" else sample(dev, DEV_SAMPLE)
    return out


def user_texts(items) -> list[str]:
    from moderation.heads import user_text
    from moderation.prompts import load_template

    template = load_template(model_profile("default").prompt)
    return [user_text(template.messages(li.item, POLICY)) for li in items]


def scorer_systems(directory: Path) -> tuple[str, callable, dict[str, callable]]:
    """(hash, its TF-IDF half, name -> its other half): texts -> (n x policies) scores, for the scorer in `directory`."""
    from moderation.heads import load_heads

    scorer = load_heads(directory, POLICY)
    lexical = scorer.lexical.score_texts
    if hasattr(scorer, "encoder_scores"):
        parts = {"e5 fine-tuned": scorer.encoder_scores}
    else:
        parts = {"frozen heads": lambda texts: scorer.heads.score(scorer.features(texts))}
    return scorer.sha, lexical, parts


def cached(path: Path, fn, texts: list[str]) -> np.ndarray:
    if path.is_file():
        return np.load(path)
    started = time.perf_counter()
    scores = np.asarray(fn(texts), dtype=np.float32)
    print(f"  {path.parent.name}/{path.name}: {len(texts)} items in {time.perf_counter() - started:.1f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, scores)
    return scores


def collect(directories: list[Path], data: dict, out: Path) -> dict[str, dict[str, np.ndarray]]:
    """system -> set -> dev scores."""
    texts = {name: user_texts(items) for name, items in data.items()}
    systems: dict[str, dict[str, np.ndarray]] = {}
    for directory in directories:
        sha, lexical, parts = scorer_systems(directory)
        folder = out / sha[:16]
        if "tfidf" not in systems:
            systems["tfidf"] = {n: cached(folder / f"tfidf-{n}.npy", lexical, t) for n, t in texts.items()}
        for name, fn in parts.items():
            alone = {n: cached(folder / f"{name.split()[0]}-{n}.npy", fn, t) for n, t in texts.items()}
            lex = {n: cached(folder / f"tfidf-{n}.npy", lexical, t) for n, t in texts.items()}
            systems[name] = alone
            systems[f"{name} + tfidf"] = {n: (alone[n] + lex[n]) / 2 for n in texts}
    return systems


def halves(data: dict) -> dict[str, np.ndarray]:
    """A fixed 2-way split of every dev set by item-id hash."""
    return {n: np.array([int(hashlib.sha256(li.item.id.encode()).hexdigest(), 16) % 2 for li in items]) for n, items in data.items()}


def cross_fitted(scores: dict[str, np.ndarray], gold: dict[str, np.ndarray], fold: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Out-of-fold predictions: thresholds chosen on one half (pooled, capped on its marketplace items), applied to the other."""
    pred = {n: np.zeros_like(g) for n, g in gold.items()}
    for half in (0, 1):
        fit = {n: fold[n] == half for n in scores}
        thresholds = choose_thresholds(np.vstack([scores[n][fit[n]] for n in scores]),
                                       np.vstack([gold[n][fit[n]] for n in scores]), grid=GRID)
        m = fit["marketplace"]
        thresholds = cap_clean_fpr(thresholds, scores["marketplace"][m], gold["marketplace"][m], MAX_CLEAN_FPR)
        for n in scores:
            other = fold[n] != half
            pred[n][other] = scores[n][other] >= thresholds
    return pred


def macro_auprc(gold: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    values = [average_precision_score(gold[:, i], scores[:, i]) for i in range(gold.shape[1]) if gold[:, i].any()]
    return float(np.mean(values))


def f1_interval(gold: np.ndarray, pred: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = [macro_f1(gold[idx], pred[idx]) for idx in (rng.integers(0, len(gold), len(gold)) for _ in range(n_boot))]
    values = np.array(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def figures(system: dict[str, np.ndarray], data: dict, gold: dict, fold: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    g, s = gold["marketplace"], system["marketplace"]
    pred = cross_fitted(system, gold, fold)
    p = pred["marketplace"]
    violating, clean = g.any(1), ~g.any(1)
    langs = np.array([li.item.language or "unknown" for li in data["marketplace"]], dtype=object)
    per_language, language_fpr = {}, {}
    for lang in sorted(set(langs)):
        rows = (langs == lang) & violating
        if rows.any():
            per_language[str(lang)] = (int(p[rows].any(1).sum()), int(rows.sum()))
        rows = (langs == lang) & clean
        if rows.any():
            language_fpr[str(lang)] = (int(p[rows].any(1).sum()), int(rows.sum()))
    public = [macro_f1(gold[n], pred[n]) for n in data if n != "marketplace" and gold[n].any()]
    return {"macro_auprc": macro_auprc(g, s), "roc_auc": float(roc_auc_score(violating, s.max(1))),
            "recall_at_10": tpr_at_fpr(violating, s.max(1), 0.10), "macro_f1": macro_f1(g, p), "macro_f1_ci": f1_interval(g, p),
            "clean_fpr": float(p[clean].any(1).mean()), "per_language": per_language, "language_fpr": language_fpr,
            "public_macro_f1": float(np.nanmean(public)), "public_sets": len(public)}


def table(results: dict[str, dict], data: dict) -> str:
    n = len(data["marketplace"])
    langs = sorted({lang for r in results.values() for lang in r["per_language"]},
                   key=lambda lang: -max(r["per_language"].get(lang, (0, 0))[1] for r in results.values()))
    lines = [f"Dev splits only (marketplace dev: {n} items; public sets: {DEV_SAMPLE} per set, "
             f"{next(iter(results.values()))['public_sets']} with positives). Thresholded columns by 2-fold cross-validation "
             f"on dev with the {MAX_CLEAN_FPR:.0%} clean-FPR cap.", "",
             "| system | macro AUPRC | ROC-AUC (any) | recall @10% clean FPR | macro-F1 [95% CI] | clean FPR | public mean macro-F1 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lo, hi = r["macro_f1_ci"]
        lines.append(f"| {name} | {r['macro_auprc']:.3f} | {r['roc_auc']:.3f} | {r['recall_at_10']:.2f} | "
                     f"{r['macro_f1']:.3f} [{lo:.2f}, {hi:.2f}] | {r['clean_fpr']:.2f} | {r['public_macro_f1']:.3f} |")
    lines += ["", "Violating marketplace dev items flagged (out of fold), by language:", "",
              "| system | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for name, r in results.items():
        cells = [("{}/{}".format(*r["per_language"][lang]) if lang in r["per_language"] else "–") for lang in langs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Clean marketplace dev items flagged (out of fold), by language; **bold**: more than twice the system's "
              "overall clean FPR (calibration to check for that language):", "",
              "| system | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for name, r in results.items():
        cells = []
        for lang in langs:
            flagged, n = r["language_fpr"].get(lang, (0, 0))
            cell = f"{flagged}/{n}" if n else "–"
            cells.append(f"**{cell}**" if n and flagged / n > 2 * r["clean_fpr"] and flagged else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", default=str(DEFAULT_ADAPTER),
                        help="another scorer folder, e.g. the frozen heads shipped before the encoder (recover them with "
                             "`git show 94d2653:finetune/adapters/smollm2-135m-moderation/heads.npz` and so on; default: the "
                             "shipped scorer)")
    parser.add_argument("--encoder", action="append", default=[], help="an encoder scorer folder (finetune/fit_encoder.py); repeatable")
    parser.add_argument("--data-dir", help="evaluation sets folder (default: the shared one)")
    parser.add_argument("--out-dir", default="runs/bakeoff", help="score cache")
    parser.add_argument("--write", action="store_true", help="rewrite the table in finetune/MODEL_CARD.md")
    args = parser.parse_args(argv)
    data = dev_items(args.data_dir)
    gold = {n: gold_labels(items, IDS)[0] for n, items in data.items()}
    fold = halves(data)
    folders = [Path(d) for d in [args.heads, *args.encoder] if d]
    systems = collect(folders, data, Path(args.out_dir))
    results = {name: figures(scores, data, gold, fold) for name, scores in systems.items()}
    text = table(results, data)
    print(text)
    print(json.dumps({k: {m: v for m, v in r.items() if m not in ("per_language", "language_fpr")} for k, r in results.items()}, indent=1))
    if args.write:
        card = ROOT / "finetune" / "MODEL_CARD.md"
        command = " ".join(["python scripts/bakeoff.py", *(argv if argv is not None else sys.argv[1:])])
        splice_markdown(card, f"{START}\n\n`{command}`\n\n{text}\n\n{END}", START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
