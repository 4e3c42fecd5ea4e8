"""The reward model in use: score a run file's verdicts and route the low-reward ones to review.

    python finetune/score_verdicts.py runs/eval-ft/runs/marketplace.jsonl --reward-model runs/reward-smollm2 \
        --set marketplace --route-share 0.2 -o runs/eval-ft/marketplace.scored.jsonl

Each verdict is scored as the reward model saw its training pairs: the prompt's messages (the
same template the verdict was made with) plus the verdict as compact JSON. The lowest-reward
share (`--route-share`), or every verdict under `--cut`, is marked `route_to_review`. With a
labelled set (`--set`), the summary says whether routing pays: exact-match accuracy and
flag precision of the routed verdicts against the kept ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import resolve  # noqa: E402
from moderation.settings import POLICY_HELP  # noqa: E402


def load_reward_model(path: str | Path):
    """(model, tokenizer) from a RewardTrainer output: a LoRA adapter with its score head, or a full model."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    config_file = path / "adapter_config.json"
    base = resolve(json.loads(config_file.read_text())["base_model_name_or_path"]) if config_file.is_file() else str(path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    if config_file.is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path))
    return model.eval(), tokenizer


def rewards(model, tokenizer, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
    """The reward of each full conversation (prompt messages + the assistant verdict)."""
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    tokenizer.padding_side = "right"  # the score is read at the last non-pad token
    scores = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True)
            scores += model(**batch).logits[:, 0].float().tolist()
    return scores


def route(scores: list[float], share: float | None, cut: float | None) -> tuple[list[bool], float]:
    """Which verdicts go to review, and the reward cut used: a fixed cut, or the `share` quantile."""
    import numpy as np

    if cut is None:
        cut = float(np.quantile(scores, share)) if scores else 0.0
    return [s <= cut for s in scores], cut


def uncertainty(records: list[dict], thresholds: dict[str, float]) -> list[float]:
    """The classifier's own confidence in each verdict: how far its policy score nearest a threshold
    lies from it (small: unsure). Routing the smallest is the alternative to routing by reward."""
    return [min(abs((r.get("scores") or {}).get("policies", {}).get(p, 0.0) - t) for p, t in thresholds.items())
            for r in records]


def effect(records: list[dict], gold: dict[str, frozenset], routed: list[bool]) -> dict:
    """Exact-match accuracy and flag precision of routed vs kept verdicts on labelled items, and the
    share of all wrong verdicts that the routing sends to review."""
    groups = {"routed": [], "kept": []}
    for record, is_routed in zip(records, routed):
        predicted = frozenset(v["policy"] for v in record["verdict"]["violations"])
        groups["routed" if is_routed else "kept"].append((predicted, gold[record["id"]]))
    summary = {}
    for name, pairs in groups.items():
        flagged = [(p, g) for p, g in pairs if p]
        summary[name] = {
            "n": len(pairs),
            "exact_match_accuracy": round(sum(p == g for p, g in pairs) / len(pairs), 4) if pairs else None,
            "flagged": len(flagged),
            "flag_precision": round(sum(bool(p & g) for p, g in flagged) / len(flagged), 4) if flagged else None,
        }
    wrong = {name: sum(p != g for p, g in pairs) for name, pairs in groups.items()}
    total = wrong["routed"] + wrong["kept"]
    summary["wrong_caught"] = round(wrong["routed"] / total, 4) if total else None
    return summary


def _items(args, policy) -> tuple[dict, dict]:
    """Items by id (from a labelled set or a dump) and gold violations by id (labelled sets only)."""
    if args.set:
        from moderation.evalsets import load_set

        labelled = load_set(args.set, args.split, args.data_dir, policy)
        return {li.item.id: li.item for li in labelled}, {li.item.id: li.gold_violations for li in labelled}
    from moderation.items import Item, read_items

    return {it.id: it for _, it in read_items(Path(args.items)) if isinstance(it, Item)}, {}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from moderation.curate import verdict_json
    from moderation.policy import load_policy
    from moderation.prompts import load_template
    from moderation.runfile import read_output

    policy, template = load_policy(args.policy), load_template(args.prompt)
    items, gold = _items(args, policy)
    records = [r for r in read_output(Path(args.run)) if r.get("verdict") and r.get("id") in items]
    model, tokenizer = load_reward_model(args.reward_model)
    conversations = [[*template.messages(items[r["id"]], policy), {"role": "assistant", "content": verdict_json(r["verdict"])}]
                     for r in records]
    scores = rewards(model, tokenizer, conversations)
    routed, cut = route(scores, args.route_share, args.cut)
    with open(args.output, "w") as fh:
        for record, score, is_routed in zip(records, scores, routed):
            fh.write(json.dumps({**record, "reward": round(score, 4), "route_to_review": is_routed}, ensure_ascii=False) + "\n")
    summary = {"run": args.run, "reward_model": args.reward_model, "verdicts": len(records), "cut": round(cut, 4),
               "routed_share": round(sum(routed) / len(routed), 4) if routed else 0.0}
    if gold:
        summary["effect"] = effect(records, gold, routed)
        thresholds = _thresholds(args.thresholds, policy)
        if thresholds and all(r.get("scores") for r in records):  # the same share, routed by the classifier's doubt
            by_doubt, _ = route(uncertainty(records, thresholds), sum(routed) / len(routed), None)
            summary["effect_routing_by_uncertainty"] = effect(records, gold, by_doubt)
    Path(str(args.output) + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _thresholds(spec: str, policy) -> dict[str, float] | None:
    if spec == "none":
        return None
    from moderation.scoring import check_thresholds, load_thresholds

    if spec == "default":
        from moderation.model import model_profile

        return check_thresholds(model_profile("default").thresholds, "the default model's thresholds", policy)
    return load_thresholds(spec, policy)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run file (JSONL from `moderation run` or `moderation eval`)")
    p.add_argument("--reward-model", required=True, help="a finetune/reward.py output directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--set", help="the labelled set the run covered (items and gold labels)")
    source.add_argument("--items", help="the dump the run moderated (items only, no effect figures)")
    p.add_argument("--split", default="test", help="the labelled set's split (default test)")
    p.add_argument("--data-dir", help="public data sets directory")
    p.add_argument("--prompt", default="prompts/moderate.short.v1.txt", help="the template the verdicts were made with")
    p.add_argument("--policy", help=POLICY_HELP)
    p.add_argument("--route-share", type=float, default=0.2, help="route this lowest-reward share to review (default 0.2)")
    p.add_argument("--cut", type=float, help="route every verdict with reward <= CUT instead of a share")
    p.add_argument("--thresholds", default="default",
                   help="the classifier's thresholds, to compare routing by its uncertainty at the same share: a JSON "
                        "file, 'default' (the shipped model's, the default) or 'none'")
    p.add_argument("-o", "--output", required=True, help="scored run file (records + reward + route_to_review)")
    return p


if __name__ == "__main__":
    sys.exit(main())
