"""Case checks that make the model better, measured: one review round, replayed end to end.

    python scripts/review_loop.py round --strategy uncertainty -n 400       # one round, end to end
    python scripts/review_loop.py curve --budgets 100,200,400,800           # the learning curve
    python scripts/review_loop.py render runs/loop/curve.json --markdown docs/review-loop.md   # tables, plot

A round:
1. **Pool.** Labelled items that are in no test split (`pool.jsonl`, gold in `pool.gold.jsonl`): the
   marketplace set's train and dev splits, a seeded share of the marketplace training corpus, and up
   to `--per-public` items of each public set's train and dev splits.
2. **Run.** `moderation run` with the shipped default on the pool (once; resumed if cut off).
3. **Review.** `moderation review sample` draws `-n` items by `--strategy` into a fresh store;
   `moderation review serve` starts the app; `moderation.review.oracle` logs in and reviews the queue
   over HTTP (claim, accept or correct with CSRF), answering from the gold labels, wrong on `--noise`
   of them; `moderation review export` writes the case checks.
4. **Learn.** `moderation curate` builds the shipped default's training rows plus the round's case
   checks (reviewers' rows win over sampled copies); `finetune/fit_heads.py` refits the policy heads
   on them (hidden states of rows seen before come from the feature cache). With `--reward`, a reward
   model is trained on the round's real chosen/rejected pairs (`finetune/reward.py`) and routing by
   reward is compared with routing by uncertainty; with `--sft-epochs E`, SFT continues from the
   default on the round's rows alone (`finetune/lean_sft.py`), measured with full generation.
5. **Measure.** `moderation eval --systems llm` on the marketplace test split before and after
   (`--heads`), and `moderation eval compare` (paired bootstrap, McNemar).

The score-first default takes its decision and policies from the heads (the adapter only writes the
evidence and rationale of flagged items), so refitting the heads is what changes its accuracy.
`curve` repeats steps 3-4 for each strategy and budget and measures step 5 with the heads alone on
cached hidden states of the test splits, which gives the decisions and policies score first gives
(up to bfloat16 noise in the hidden states: 1 of 198 marketplace items differed in one round).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation.model import DEFAULT_ADAPTER  # noqa: E402

LOOP = ROOT / "runs" / "loop"
# The shipped default's curation (data/curated/README.md); a round adds its case checks to it.
CURATE_FLAGS = ["--per-label", "150", "--allow-per-set", "250", "--marketplace-per-label", "1000", "--augment-share", "0.3"]
STRATEGIES = ("random", "stratified", "uncertainty", "disagreement")


def _hash_order(items, seed: int):
    """A fixed order, the same on every machine (as eval --sample)."""
    return sorted(items, key=lambda li: hashlib.sha256(f"{seed}:{li.item.id}".encode()).hexdigest())


def pool_items(per_public: int, corpus_n: int, seed: int, data_dir: str | None = None):
    """The labelled items of the pool: in no test split, each with an expressible gold verdict."""
    from moderation.evalsets import load_set, set_names

    chosen = []
    for name in set_names():
        items = load_set(name, "train", data_dir) + load_set(name, "dev", data_dir)
        chosen += items if name == "marketplace" else _hash_order(items, seed)[:per_public]
    chosen += _hash_order(load_set("marketplace_corpus", "train", data_dir), seed)[:corpus_n]
    return chosen


def build_pool(out: Path, per_public: int, corpus_n: int, seed: int) -> tuple[Path, Path]:
    """Write pool.jsonl (the dump) and pool.gold.jsonl (id, set, split, decision, policies)."""
    from moderation.curate import gold_verdict
    from moderation.policy import load_policy

    dump, gold = out / "pool.jsonl", out / "pool.gold.jsonl"
    if dump.is_file() and gold.is_file():
        return dump, gold
    policy = load_policy()
    out.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for li in pool_items(per_public, corpus_n, seed):
        verdict = gold_verdict(li, policy)
        if verdict is None:
            continue
        rows.append(json.dumps(li.item.record(), ensure_ascii=False))
        labels.append(json.dumps({"id": li.item.id, "set": li.source, "split": li.split, "decision": verdict["decision"],
                                  "policies": sorted(v["policy"] for v in verdict["violations"])}))
    for path, lines in ((dump, rows), (gold, labels)):
        _write_atomically(path, "\n".join(lines) + "\n")
    print(f"pool: {len(rows)} items -> {dump}", file=sys.stderr)
    return dump, gold


def _call(shown: list[str], cmd: list[str], env: dict | None = None, stdout=None) -> str | None:
    """Run one command as the loop's step (printed as `shown`, with its time); stop the loop if it fails."""
    print("$ " + " ".join(shown), file=sys.stderr)
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=stdout, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`{' '.join(shown[:2])}` failed with exit code {result.returncode}")
    print(f"  ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return result.stdout


def moderation(*args: str, env: dict | None = None, quiet: bool = False) -> None:
    """Run one `moderation` command."""
    _call(["moderation", *args], [sys.executable, "-m", "moderation.cli", *args], env,
          subprocess.DEVNULL if quiet else None)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # whole or not at all: a killed loop leaves no torn file


def run_pool(out: Path, dump: Path) -> Path:
    """The shipped default's run file over the pool (resumed where a previous run stopped)."""
    run_file = out / "pool.verdicts.jsonl"
    moderation("run", str(dump), "-o", str(run_file))
    return run_file


def shipped_thresholds(out: Path) -> Path:
    """The default model's thresholds as a file (`review sample --strategy uncertainty` reads one)."""
    from moderation.model import model_profile

    path = out / "thresholds.json"
    path.write_text(json.dumps(model_profile("default").thresholds, indent=2) + "\n")
    return path


def load_gold(path: Path) -> dict:
    from moderation.review.oracle import Gold

    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["id"]: Gold(r["decision"], frozenset(r["policies"])) for r in rows}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReviewApp:
    """`moderation review serve` on a free local port, for the length of a `with` block."""

    def __init__(self, db: Path):
        self.db, self.port = db, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        import httpx

        cmd = [sys.executable, "-m", "moderation.cli", "review", "serve", "--db", str(self.db), "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/login", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        self.process.kill()
        raise SystemExit("the review app did not start within 60 s")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)


def review_round(round_dir: Path, run_file: Path, dump: Path, gold_file: Path, strategy: str, n: int, seed: int,
                 noise: float, thresholds: Path) -> tuple[Path, dict]:
    """Sample, review through the app with the oracle, export: the round's case-check file and figures."""
    import httpx
    from tqdm import tqdm

    from moderation.review.oracle import OracleReviewer

    db = round_dir / "review.sqlite"
    for stale in round_dir.glob("review.sqlite*"):
        stale.unlink()  # a round starts from an empty store
    moderation("review", "sample", str(run_file), "--input", str(dump), "-n", str(n), "--strategy", strategy,
               "--seed", str(seed), "--thresholds", str(thresholds), "--db", str(db), "--queue", "round")
    password = secrets.token_urlsafe(16)
    moderation("review", "user", "add", "oracle", "--role", "reviewer", "--password-env", "ORACLE_PASSWORD",
               "--db", str(db), env={"ORACLE_PASSWORD": password})
    started = time.perf_counter()
    with ReviewApp(db) as app, httpx.Client(base_url=app.url, timeout=60) as client:
        oracle = OracleReviewer(client, "oracle", password, load_gold(gold_file), noise=noise, seed=seed)
        oracle.login()
        with tqdm(total=n, desc="oracle reviews", unit="check") as bar:
            counts = oracle.review("round", progress=bar)
    review_s = time.perf_counter() - started
    checks = round_dir / "checks.jsonl"
    moderation("review", "export", str(db), "--format", "jsonl", "-o", str(checks), quiet=True)
    figures = {"strategy": strategy, "n": n, "seed": seed, "noise": noise, "actions": dict(counts),
               "review_s": round(review_s, 1), "checks_per_s": round(sum(counts.values()) / review_s, 1)}
    return checks, figures


def shipped_encoder() -> bool:
    """Whether the shipped scorer is a fine-tuned encoder (finetune/fit_encoder.py) rather than frozen heads."""
    from moderation.encoder import ENCODER_FORMAT

    return json.loads((DEFAULT_ADAPTER / "heads.json").read_text()).get("format") == ENCODER_FORMAT


ROUND_TUNING = ["--epochs", "2", "--lr", "2e-4", "--head-lr", "5e-4"]  # gentler than from scratch: a few hundred rows


def learn(round_dir: Path, checks: Path | None) -> tuple[Path, dict]:
    """The round's scorer. A fine-tuned encoder continues from the shipped one on the round's case checks (its
    control is the shipped scorer itself); frozen heads are refitted on curate's rows plus the checks."""
    if shipped_encoder():
        if checks is None:
            return DEFAULT_ADAPTER, {"rows": 0}
        curated, heads = round_dir / "curated-checks", round_dir / "heads"
        started = time.perf_counter()
        moderation("curate", "-o", str(curated), "--case-checks", str(checks), "--sets", "none", quiet=True)
        curate_s = time.perf_counter() - started
        started = time.perf_counter()
        shutil.rmtree(heads, ignore_errors=True)  # a rerun trains afresh from the shipped scorer, not from a stale checkpoint
        script("fit_encoder.py", "--dataset", str(curated / "sft"), "--out", str(heads), "--init", str(DEFAULT_ADAPTER),
               *ROUND_TUNING)
        card = json.loads((heads / "heads.json").read_text())
        return heads, {"curate_s": round(curate_s, 1), "fit_s": round(time.perf_counter() - started, 1), "rows": card["rows"]}
    curated, heads = round_dir / "curated", round_dir / "heads"
    started = time.perf_counter()
    moderation("curate", "-o", str(curated), *CURATE_FLAGS, *(["--case-checks", str(checks)] if checks else []), quiet=True)
    curate_s = time.perf_counter() - started
    started = time.perf_counter()
    card = json.loads(script("fit_heads.py", "--dataset", str(curated / "sft"), "--out", str(heads),
                             "--cache", str(LOOP / "heads-cache")))
    return heads, {"curate_s": round(curate_s, 1), "fit_s": round(time.perf_counter() - started, 1), "rows": card["rows"],
                   "feature_rows": card.get("feature_rows", 0)}


class TestSplits:
    """The items the rounds are measured on: the marketplace test split whole and `per_set` items of
    each public set's test split (eval --sample's fixed sample), with their prompts' hidden states."""

    def __init__(self, per_set: int):
        from moderation.evalsets import load_set, set_names
        from moderation.evaluate import sample
        from moderation.heads import user_text
        from moderation.model import model_profile
        from moderation.policy import load_policy
        from moderation.prompts import load_template

        self.policy = load_policy()
        template = load_template(model_profile("default").prompt)
        self.sets = {name: sample(load_set(name, "test"), None if name == "marketplace" else per_set) for name in set_names()}
        self.texts = {name: [user_text(template.messages(li.item, self.policy)) for li in items]
                      for name, items in self.sets.items()}
        self._x = None

    @property
    def x(self) -> dict[str, np.ndarray]:
        """Hidden states of the test prompts for frozen heads (computed once, from the feature cache)."""
        if self._x is None:
            from finetune.fit_heads import FeatureCache
            from moderation.heads import LAYERS
            from moderation.machine import resolve_dtype
            from moderation.model import resolve_model

            flat = [t for texts in self.texts.values() for t in texts]
            x, _ = FeatureCache(LOOP / "heads-cache", resolve_model("base"), LAYERS, resolve_dtype())(flat)
            bounds = np.cumsum([0] + [len(t) for t in self.texts.values()])
            self._x = {name: x[a:b] for name, a, b in zip(self.texts, bounds[:-1], bounds[1:])}
        return self._x

    def scores(self, scorer, name: str) -> np.ndarray:
        if hasattr(scorer, "encoder_scores"):
            return np.round(scorer.policy_scores(self.texts[name]), 5)
        return np.round((scorer.heads.score(self.x[name]) + scorer.lexical.score_texts(self.texts[name])) / 2, 5)

    def labels(self, heads_dir: Path, thresholds: dict[str, float]) -> dict:
        """Per set, the Labels of score first with this scorer: each item's policies and decision as
        the pipeline decides them from its scores (moderation.pipeline.decide)."""
        from moderation.evaluate import gold_labels
        from moderation.heads import load_heads
        from moderation.metrics import Labels, label_matrix
        from moderation.pipeline import decide

        scorer, ids = load_heads(heads_dir, self.policy), self.policy.ids
        out = {}
        for name, items in self.sets.items():
            scores = self.scores(scorer, name)
            decided = [decide({"policies": dict(zip(ids, row))}, thresholds, self.policy) for row in scores]
            gold, gold_decision = gold_labels(items, ids)
            pred = label_matrix([set(d.policies) for d in decided], ids)
            out[name] = Labels(gold, pred, scores, gold_decision, np.array([d.decision for d in decided], dtype=object),
                               np.ones(len(items), dtype=bool), ids)
        return out


def figures(labels: dict, control: dict | None = None, n_boot: int = 1000) -> dict:
    """macro-F1 and clean FPR per set, the mean over public sets, and against `control` (the same
    curation without case checks): the paired-bootstrap macro-F1 difference and McNemar on marketplace."""
    from moderation.metrics import mcnemar, paired_macro_f1, point_metrics

    per_set = {}
    for name, lab in labels.items():
        point = point_metrics(lab)
        per_set[name] = {"macro_f1": point["macro_f1"], "clean_fpr": point.get("clean_fpr")}
    public = [v["macro_f1"] for k, v in per_set.items() if k != "marketplace" and not np.isnan(v["macro_f1"])]
    out = {"sets": per_set, "marketplace_macro_f1": per_set["marketplace"]["macro_f1"],
           "marketplace_clean_fpr": per_set["marketplace"]["clean_fpr"], "public_macro_f1": float(np.mean(public))}
    if control is not None:
        base, now = control["marketplace"], labels["marketplace"]
        out["marketplace_diff"] = list(paired_macro_f1(base.gold, base.pred, now.pred, n_boot))
        out["marketplace_mcnemar"] = mcnemar((base.pred == base.gold).all(1), (now.pred == now.gold).all(1))
    return out


def evaluate_marketplace(out_dir: Path, heads: Path | None, *flags: str) -> Path:
    """`moderation eval --systems llm` on the marketplace test split (score first, as shipped, with
    `--heads` if given, and any other `flags`): its run file."""
    moderation("eval", "--sets", "marketplace", "--systems", "llm", "--out-dir", str(out_dir),
               *(["--heads", str(heads)] if heads else []), *flags, "--no-progress", quiet=True)
    return out_dir / "runs" / "marketplace.jsonl"


FULL_GENERATION = ("--thresholds", "none", "--no-scores")  # every verdict written by the adapter, no heads


def sft_adapter(round_dir: Path, checks: Path, epochs: float) -> dict:
    """SFT continued from the shipped default on the round's accepted and corrected rows alone (the
    CPU recipe, finetune/lean_sft.py: bfloat16, length-grouped batches, resumable), measured where
    the adapter decides: full generation on the marketplace test split, with and without it."""
    data, out = round_dir / "curated-checks", round_dir / "sft"
    moderation("curate", "-o", str(data), "--case-checks", str(checks), "--sets", "none", quiet=True)
    started = time.perf_counter()
    script("lean_sft.py", "--config", "finetune/configs/lean_sft_smollm2_cpu.yaml", "--model", "default", "--dataset",
           str(data / "sft"), "--output_dir", str(out), "--epochs", str(epochs), "--held_out", "32", "--warmup_steps", "5")
    train_s = time.perf_counter() - started
    before = evaluate_marketplace(LOOP / "eval-full-generation", None, *FULL_GENERATION)
    shutil.rmtree(round_dir / "eval-sft", ignore_errors=True)
    after = evaluate_marketplace(round_dir / "eval-sft", None, *FULL_GENERATION, "--adapter", str(out / "adapter"))
    result = compare(before, after, round_dir / "compare-sft.json")
    return {"train_s": round(train_s, 1), **{k: v for k, v in result.items() if k != "flipped"}}


def compare(before: Path, after: Path, out: Path) -> dict:
    moderation("eval", "compare", str(before), str(after), "--set", "marketplace", "--json", str(out))
    return json.loads(out.read_text())


def prepare(args) -> tuple[Path, Path, Path, Path]:
    """Pool, its run file and the shipped thresholds (each made once)."""
    dump, gold = build_pool(LOOP, args.per_public, args.corpus_items, args.pool_seed)
    return dump, gold, run_pool(LOOP, dump), shipped_thresholds(LOOP)


def control_heads() -> Path:
    """What each round is measured against: the shipped encoder scorer, or heads refitted on the shipped curation
    with no case checks."""
    if shipped_encoder():
        return DEFAULT_ADAPTER
    heads = LOOP / "control" / "heads"
    if not (heads / "heads.json").is_file():
        learn(LOOP / "control", None)
    return heads


def cmd_round(args) -> int:
    """One round, end to end: pool run, review through the app, export, curate, refit, evaluate."""
    from moderation.model import model_profile

    dump, gold, run_file, thresholds = prepare(args)
    round_dir = LOOP / (args.name or f"round-{args.strategy}-n{args.n}-s{args.seed}")
    round_dir.mkdir(parents=True, exist_ok=True)
    checks, review = review_round(round_dir, run_file, dump, gold, args.strategy, args.n, args.seed, args.noise, thresholds)
    heads, learned = learn(round_dir, checks)
    tests = TestSplits(args.test_per_set)
    shipped = model_profile("default").thresholds
    control = tests.labels(control_heads(), shipped)
    result = {"review": review, "learn": learned, "heads": str(heads.relative_to(ROOT)),
              "control": figures(control), "after": figures(tests.labels(heads, shipped), control, args.bootstrap)}
    if args.full_eval:
        before = evaluate_marketplace(LOOP / "eval-control", control_heads())
        shutil.rmtree(round_dir / "eval", ignore_errors=True)  # a rerun's heads are new: its old run file is stale
        after = evaluate_marketplace(round_dir / "eval", heads)
        result["eval_compare"] = {k: v for k, v in compare(before, after, round_dir / "compare.json").items() if k != "flipped"}
    if args.sft_epochs:
        result["sft"] = sft_adapter(round_dir, checks, args.sft_epochs)
    if args.reward:
        result["reward"] = reward_model(round_dir, args.reward_epochs,
                                        round_dir / "eval" / "runs" / "marketplace.jsonl" if args.full_eval else None)
    (round_dir / "round.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("review", "learn")} | {"after": _headline(result["after"])}, indent=2))
    return 0


def script(name: str, *args: str) -> str:
    """Run one finetune/ script; its standard output."""
    return _call(["python", f"finetune/{name}", *args], [sys.executable, str(ROOT / "finetune" / name), *args],
                 stdout=subprocess.PIPE)


def reward_model(round_dir: Path, epochs: float, run_file: Path | None) -> dict:
    """A reward model on the round's real chosen/rejected pairs (held-out pairs: pairwise accuracy),
    then, on the marketplace test run, routing the lowest-reward fifth to review against routing the
    fifth the classifier is least sure of."""
    from moderation.machine import machine_dtype

    out = round_dir / "reward"
    started = time.perf_counter()
    script("reward.py", "--config", "finetune/configs/reward_smollm2_cpu.yaml", "--dataset_name",
           str(round_dir / "curated" / "preference"), "--output_dir", str(out), "--num_train_epochs", str(epochs),
           "--bf16", str(machine_dtype() == "bfloat16").lower(),  # autocast only where bfloat16 is native
           "--max_length", "512")  # 384 dropped a third of the round's pairs
    figures = json.loads((out / "pairwise_accuracy.json").read_text()) | {"wall_s": round(time.perf_counter() - started, 1)}
    if run_file is not None:
        script("score_verdicts.py", str(run_file), "--reward-model", str(out), "--set", "marketplace", "--route-share", "0.2",
               "-o", str(round_dir / "marketplace.scored.jsonl"))
        figures["routing"] = json.loads((round_dir / "marketplace.scored.jsonl.summary.json").read_text())
    return figures


def _headline(fig: dict) -> dict:
    keep = ("marketplace_macro_f1", "marketplace_clean_fpr", "public_macro_f1", "marketplace_diff", "marketplace_mcnemar")
    return {k: fig[k] for k in keep if k in fig}


def cmd_curve(args) -> int:
    """Rounds at each budget for each strategy, measured against the control; resumable (points
    already in --json are kept)."""
    from moderation.model import DEFAULT_ADAPTER, model_profile

    dump, gold, run_file, thresholds = prepare(args)
    path = Path(args.json)
    data = json.loads(path.read_text()) if path.is_file() else {"points": []}
    tests = TestSplits(args.test_per_set)
    shipped = model_profile("default").thresholds
    control = tests.labels(control_heads(), shipped)
    command = "python scripts/review_loop.py " + " ".join(sys.argv[1:])
    commands = data.get("meta", {}).get("commands") or [c for c in [data.get("meta", {}).get("command")] if c]
    data.update(control=figures(control), shipped=figures(tests.labels(DEFAULT_ADAPTER, shipped), control, args.bootstrap),
                meta={"pool": _count_lines(dump), "test_items": {k: len(v) for k, v in tests.sets.items()},
                      "noise": args.noise, "commands": list(dict.fromkeys([*commands, command]))})
    done = {(p["strategy"], p["n"], p["seed"]) for p in data["points"]}
    for strategy in args.strategies.split(","):
        for n in (int(b) for b in args.budgets.split(",")):
            for seed in range(args.seeds):
                if (strategy, n, seed) in done:
                    continue
                round_dir = LOOP / "curve" / (f"{strategy}-n{n}-s{seed}" + (f"-noise{args.noise:g}" if args.noise else ""))
                round_dir.mkdir(parents=True, exist_ok=True)
                checks, review = review_round(round_dir, run_file, dump, gold, strategy, n, seed, args.noise, thresholds)
                heads, learned = learn(round_dir, checks)
                data["points"].append({"strategy": strategy, "n": n, "seed": seed, "review": review, "learn": learned,
                                       "after": figures(tests.labels(heads, shipped), control, args.bootstrap)})
                _save(path, data)
                print(json.dumps({"strategy": strategy, "n": n, "seed": seed} | _headline(data["points"][-1]["after"])))
    _save(path, data)
    if args.markdown:
        render(data, Path(args.markdown))
    return 0


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, json.dumps(data, indent=2) + "\n")


BEGIN, END = "<!-- review-loop:begin -->", "<!-- review-loop:end -->"


def table(data: dict) -> str:
    """The learning curve as a markdown table: mean (min-max over seeds) per strategy and budget."""
    rows = ["| strategy | case checks | corrected | marketplace macro-F1 | Δ vs control [95% CI] | McNemar p | "
            "marketplace clean FPR | public sets' mean macro-F1 |", "|---|---|---|---|---|---|---|---|"]
    c = data["control"]
    rows.append(f"| control (no case checks) | 0 | 0 | {c['marketplace_macro_f1']:.3f} | – | – | {c['marketplace_clean_fpr']:.3f} | "
                f"{c['public_macro_f1']:.3f} |")
    for p in sorted(data["points"], key=lambda p: (p["strategy"], p["n"], p["seed"])):
        a, (d, lo, hi) = p["after"], p["after"]["marketplace_diff"]
        rows.append(f"| {p['strategy']} (seed {p['seed']}) | {p['n']} | {p['review']['actions'].get('correct', 0)} | "
                    f"{a['marketplace_macro_f1']:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                    f"{a['marketplace_mcnemar']['p_value']:.3g} | {a['marketplace_clean_fpr']:.3f} | {a['public_macro_f1']:.3f} |")
    return "\n".join(rows)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "marketplace_macro_f1", "marketplace test macro-F1"),
                           (axes[1], "public_macro_f1", "public test sets, mean macro-F1")):
        ax.axhline(data["control"][key], color="grey", linestyle="--", label="control (no case checks)")
        for strategy in sorted({p["strategy"] for p in data["points"]}):
            by_n: dict[int, list[float]] = {}
            for p in data["points"]:
                if p["strategy"] == strategy:
                    by_n.setdefault(p["n"], []).append(p["after"][key])
            ns = sorted(by_n)
            ax.plot(ns, [np.mean(by_n[n]) for n in ns], marker="o", label=strategy)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("case checks in the round (log scale)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict, markdown: Path) -> None:
    """Write the plot beside `markdown` and splice the table and the command between its markers."""
    image = markdown.with_suffix(".png")
    plot(data, image)
    made = " then ".join(f"`{c}`" for c in data["meta"].get("commands") or [data["meta"]["command"]])
    block = "\n".join([BEGIN, f"Made by {made}, on {time.strftime('%Y-%m-%d', time.gmtime())}.", "",
                       table(data), "", f"![learning curve]({image.name})", END])
    text = markdown.read_text() if markdown.is_file() else f"# Review loop\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        raise SystemExit(f"{markdown} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    markdown.write_text(head + block + rest.split(END, 1)[1])


def cmd_render(args) -> int:
    """Re-make the table and plot from saved curve figures."""
    try:
        data = json.loads(Path(args.json).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"cannot read the curve's figures {args.json}: {exc}") from None
    render(data, Path(args.markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("round", cmd_round), ("curve", cmd_curve)):
        p = sub.add_parser(name, help=fn.__doc__.split("\n")[0])
        p.set_defaults(fn=fn)
        p.add_argument("--per-public", type=int, default=300, help="pool: items per public set's train+dev splits (default 300)")
        p.add_argument("--corpus-items", type=int, default=800, help="pool: items of the training corpus (default 800)")
        p.add_argument("--pool-seed", type=int, default=0, help="pool: seed of its fixed sample (default 0)")
        p.add_argument("--noise", type=float, default=0.0, help="share of items the oracle answers wrongly (default 0)")
        p.add_argument("--test-per-set", type=int, default=200, help="items of each public test split measured (default 200)")
        p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    p = sub.choices["round"]
    p.add_argument("--strategy", choices=STRATEGIES[:3], default="uncertainty", help="sampling strategy (default uncertainty)")
    p.add_argument("-n", type=int, default=400, help="case checks in the round (default 400)")
    p.add_argument("--seed", type=int, default=0, help="sampling and oracle seed (default 0)")
    p.add_argument("--name", help="the round's folder under runs/loop (default round-STRATEGY-nN-sSEED)")
    p.add_argument("--full-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="also run `moderation eval` on the marketplace test split before and after, and compare (default on)")
    p.add_argument("--reward", action="store_true", help="also train a reward model on the round's chosen/rejected pairs "
                                                        "and measure routing by reward against routing by uncertainty")
    p.add_argument("--reward-epochs", type=float, default=1, help="reward model epochs (default 1)")
    p.add_argument("--sft-epochs", type=float, default=0,
                   help="also continue SFT of the default on the round's rows for this many epochs and measure it with "
                        "full generation (default 0: off)")
    p = sub.choices["curve"]
    p.add_argument("--strategies", default="random,uncertainty", help="comma-separated (default random,uncertainty)")
    p.add_argument("--budgets", default="100,200,400,800", help="case checks per round, comma-separated")
    p.add_argument("--seeds", type=int, default=1, help="rounds per strategy and budget, seeds 0.. (default 1)")
    p.add_argument("--json", default=str(LOOP / "curve.json"), help="figures, kept between runs (default runs/loop/curve.json)")
    p.add_argument("--markdown", help="write the table and plot into this markdown file (e.g. docs/review-loop.md)")
    p = sub.add_parser("render", help="write the table and plot of saved curve figures into a markdown file")
    p.set_defaults(fn=cmd_render)
    p.add_argument("json", help="the curve's figures (runs/loop/curve.json)")
    p.add_argument("--markdown", required=True, help="the markdown file with the table's markers (docs/review-loop.md)")
    args = parser.parse_args(argv)
    if not 0 <= getattr(args, "noise", 0) <= 1:
        parser.error(f"--noise must be within [0, 1], got {args.noise}")  # before an hour of pool run, not after
    budgets = str(args.n) if args.command == "round" else getattr(args, "budgets", "1")
    if not all(b.strip().isdigit() and int(b) >= 1 for b in budgets.split(",")):
        parser.error(f"case checks per round must be whole numbers of at least 1, got {budgets!r}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
