"""Do the shipped policy heads decide alike in bfloat16 and float32? Measured side by side on the demo dump.

    python scripts/format_agreement.py                 # both formats where affordable, else float32 vs the reference
    python scripts/format_agreement.py --write         # (native bfloat16 only) also rewrite the reference file

The heads were fitted on features computed in bfloat16; a machine without native bfloat16 computes them
in float32 (moderation.machine). For each format this script scores the 240 demo items with the default
model's heads (moderation.heads, no generation) and prints: items/s, and against bfloat16 the Pearson
correlation of the scores, the share of items whose decision (allow or the decided action) and set of
flagged policies agree at the shipped thresholds.

bfloat16 is computed here only where it is native (emulated it is about 85x slower); elsewhere the
bfloat16 side is the reference file `tests/data/demo_scores.bfloat16.npz`, written by `--write` on a native
machine and keyed by the heads' hash, which tests/test_machine.py checks float32 against.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "moderation" / "data" / "demo_dump.jsonl"
REFERENCE = ROOT / "tests" / "data" / "demo_scores.bfloat16.npz"


def demo_texts(policy) -> list[str]:
    from moderation.heads import user_text
    from moderation.items import read_items
    from moderation.model import model_profile
    from moderation.prompts import load_template

    template = load_template(model_profile("default").prompt)
    return [user_text(template.messages(item, policy)) for _, item in read_items(DEMO)]


def score(dtype: str, texts: list[str], policy) -> tuple[np.ndarray, float, str]:
    """(items x policies) scores of the default heads in `dtype`, items/s, the heads' hash."""
    from moderation.heads import load_heads
    from moderation.model import model_profile

    scorer = load_heads(model_profile("default").heads, policy, dtype=dtype)
    started = time.perf_counter()
    scores = scorer.policy_scores(texts)
    return scores, len(texts) / (time.perf_counter() - started), scorer.sha


def agreement(a: np.ndarray, b: np.ndarray, policy) -> dict[str, float]:
    """How alike two score matrices decide at the shipped thresholds."""
    from moderation.model import model_profile
    from moderation.pipeline import decide

    thresholds = model_profile("default").thresholds

    def decided(scores):
        return [decide({"policies": dict(zip(policy.ids, row))}, thresholds, policy) for row in scores]

    da, db = decided(a), decided(b)
    return {"correlation": float(np.corrcoef(a.ravel(), b.ravel())[0, 1]),
            "max_abs_diff": float(np.abs(a - b).max()),
            "decision_agreement": float(np.mean([x.decision == y.decision for x, y in zip(da, db)])),
            "policies_agreement": float(np.mean([set(x.policies) == set(y.policies) for x, y in zip(da, db)])),
            "flagged": [sum(bool(x.policies) for x in da), sum(bool(y.policies) for y in db)]}


def read_reference(sha: str) -> np.ndarray:
    with np.load(REFERENCE, allow_pickle=False) as npz:
        if str(npz["heads_sha"]) != sha:
            raise SystemExit(f"{REFERENCE} was made with other heads ({str(npz['heads_sha'])[:12]}, these are {sha[:12]}): "
                             "rerun this script with --write on a machine with native bfloat16")
        return npz["scores"]


def main(argv: list[str] | None = None) -> int:
    import torch

    from moderation.machine import describe, native_bf16
    from moderation.policy import load_policy

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the bfloat16 reference (native bfloat16 only)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = load_policy()
    texts = demo_texts(policy)
    fp32, fp32_rate, sha = score("float32", texts, policy)
    figures = {"machine": describe(), "items": len(texts), "float32_items_per_s": round(fp32_rate, 2)}
    if native_bf16():
        bf16, bf16_rate, _ = score("bfloat16", texts, policy)
        figures["bfloat16_items_per_s"] = round(bf16_rate, 2)
        if REFERENCE.is_file() and not args.write:
            figures["bfloat16_vs_reference"] = agreement(bf16, read_reference(sha), policy)
        if args.write:
            REFERENCE.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(REFERENCE, scores=bf16.astype(np.float32), heads_sha=np.array(sha))
    elif args.write:
        raise SystemExit("--write needs a CPU with native bfloat16 (see `moderation doctor`)")
    else:
        bf16 = read_reference(sha)
    figures["float32_vs_bfloat16"] = agreement(fp32, bf16, policy)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
