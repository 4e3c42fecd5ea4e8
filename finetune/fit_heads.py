"""Fit the default model's policy heads on `moderation curate` rows and store them beside the adapter.

    python finetune/fit_heads.py                       # data/curated/sft -> finetune/adapters/smollm2-135m-moderation
    python finetune/fit_heads.py --dataset DIR --out DIR --layers 15,20

Reads each row's user message (region rules and item) and its gold policies (the assistant verdict's
violations); computes the base model's mean-pooled hidden states at `--layers` (in the machine's format, `--dtype`;
length-grouped batches), fits one logistic regression per policy on them and one on a character TF-IDF of the same
text, and writes heads.npz, lexical.npz and heads.json (see moderation/heads.py). Features are cached
per text under `--cache`, so a refit with other settings, or on the same rows plus new ones (a review
round's case checks), runs the model only on texts it has not seen.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import dataset_taxonomy  # noqa: E402
from moderation.curate import require_complete  # noqa: E402
from moderation.heads import FEATURES_VERSION, LAYERS, C, HiddenFeatures, PolicyHeads, save_heads, user_text  # noqa: E402
from moderation.machine import DTYPES, resolve_dtype  # noqa: E402
from moderation.metrics import label_matrix  # noqa: E402
from moderation.model import DEFAULT_ADAPTER, resolve_model  # noqa: E402


def read_rows(dataset: Path, policy_ids: tuple[str, ...]) -> tuple[list[str], np.ndarray, str]:
    """(user texts, (rows x policies) gold labels, hash of the file) of a curate sft/train.jsonl."""
    require_complete(dataset)
    path = dataset / "train.jsonl"
    if not path.is_file():
        raise SystemExit(f"no {path}; run `moderation curate` first")
    raw = path.read_bytes()
    texts, labels = [], []
    for line in raw.decode().splitlines():
        row = json.loads(line)
        texts.append(user_text(row["messages"]))
        verdict = json.loads(row["messages"][-1]["content"])
        labels.append({v["policy"] for v in verdict["violations"]})
    return texts, label_matrix(labels, policy_ids), hashlib.sha256(raw).hexdigest()


class FeatureCache:
    """Hidden-state features by text, for one model, layer choice and feature code: each call stores
    the rows it had to compute as a new shard, so a refit on rows seen before (the same curation plus
    a round's case checks) runs the model only on the new texts."""

    def __init__(self, root: Path, model: str, layers: tuple[int, ...], dtype: str):
        key = json.dumps([str(model), list(layers), FEATURES_VERSION, dtype])  # formats give slightly different features
        self.dir = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:16]
        self.model, self.layers, self.dtype = model, layers, dtype

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, dict]:
        """(texts x dim) features, and the speed of the model pass (empty when nothing was new)."""
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        known = self._load(set(keys))
        new = {k: t for k, t in zip(keys, texts) if k not in known}  # one row per distinct new text
        speed = self._compute(list(new.values()), list(new), known) if new else {}
        return np.stack([known[k] for k in keys]), speed

    def _load(self, wanted: set[str]) -> dict[str, np.ndarray]:
        found = {}
        for shard in sorted(self.dir.glob("shard-*.npz")):
            with np.load(shard, allow_pickle=False) as npz:
                for key, row in zip(npz["keys"], npz["x"]):
                    if key in wanted:
                        found[str(key)] = row
        return found

    def _compute(self, texts: list[str], keys: list[str], known: dict[str, np.ndarray]) -> dict:
        from tqdm import tqdm

        extractor = HiddenFeatures(self.model, self.layers, dtype=self.dtype)
        started = time.perf_counter()
        with tqdm(total=len(texts), desc="hidden states", unit="row") as bar:
            x = extractor(texts, bar)
        elapsed = time.perf_counter() - started
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = self.dir / f"shard-{len(list(self.dir.glob('shard-*.npz'))):05d}-{keys[0][:8]}.npz"
        with open(shard.with_suffix(".tmp"), "wb") as fh:  # written whole, then renamed: no torn shard
            np.savez(fh, keys=np.array(keys), x=x)
        shard.with_suffix(".tmp").replace(shard)
        known.update(zip(keys, x))
        tokens = extractor.last_tokens
        return {"feature_rows": len(texts), "feature_tokens": tokens, "feature_s": round(elapsed, 1),
                "feature_tokens_per_s": round(tokens / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from moderation.baselines import TfidfBaseline
    from moderation.screen import TfidfScorer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="data/curated/sft", help="`moderation curate` sft/ folder")
    parser.add_argument("--out", default=str(DEFAULT_ADAPTER), help="folder to write the heads into (made if missing)")
    parser.add_argument("--model", default="base", help="model whose hidden states the heads read (default: base)")
    parser.add_argument("--layers", default=",".join(map(str, LAYERS)), help="comma-separated layers to pool")
    parser.add_argument("--c", type=float, default=C, help=f"inverse L2 strength of the hidden-state heads (default {C})")
    parser.add_argument("--max-features", type=int, default=50_000, help="TF-IDF vocabulary size, at most")
    parser.add_argument("--cache", default="runs/heads-cache", help="feature cache folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="format of the feature model (default auto: the machine's, see `moderation doctor`)")
    parser.add_argument("--policy", help="policy file whose taxonomy the heads score (default: the data set's taxonomy.json, "
                                         "else prompts/policy.yaml)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    layers = tuple(int(x) for x in args.layers.split(","))
    policy_ids = taxonomy(args)
    texts, y, data_sha = read_rows(Path(args.dataset), policy_ids)
    model = resolve_model(args.model)
    dtype = resolve_dtype(args.dtype)
    x, speed = FeatureCache(Path(args.cache), model, layers, dtype)(texts)
    started = time.perf_counter()
    heads = PolicyHeads.fit(x, y, c=args.c)
    lexical = TfidfScorer.from_baseline(TfidfBaseline(policy_ids, max_features=args.max_features).fit_texts(texts, y))
    card = {"format": "moderation-heads/1", "model": args.model, "layers": list(layers), "dtype": dtype, "c": args.c,
            "max_features": args.max_features, "rows": len(texts), "positives": dict(zip(policy_ids, y.sum(0).astype(int).tolist())),
            "dataset_sha256": data_sha, "fit_s": round(time.perf_counter() - started, 1), **speed,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python finetune/fit_heads.py", *(argv if argv is not None else sys.argv[1:])])}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    sha = save_heads(args.out, heads, lexical, card, policy_ids)
    print(json.dumps({**card, "sha256": sha}, indent=2))
    return 0


def taxonomy(args) -> tuple[str, ...]:
    """The policy ids the heads score: --policy's, else the curated data set's, else the shipped policy file's."""
    from moderation.policy import load_policy

    ids = load_policy(args.policy).ids if args.policy else dataset_taxonomy(args.dataset) or load_policy().ids
    curated = dataset_taxonomy(args.dataset)
    if curated is not None and curated != ids:
        raise SystemExit(f"{args.dataset} was curated for policies {list(curated)}, not {list(ids)} (--policy)")
    return ids


if __name__ == "__main__":
    sys.exit(main())
