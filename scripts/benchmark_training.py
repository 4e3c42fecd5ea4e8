"""Training recipes side by side, in one run: tokens/s and loss on the same batches.

    python scripts/benchmark_training.py                 # about 15 minutes on 2 CPU cores
    python scripts/benchmark_training.py --steps 6 --recipes lean-bf16,lean-fp32

Each recipe trains `--steps` optimizer steps of about 4,096 tokens on the curated SFT data
(`moderation curate` output) in its own process, so none inherits another's warm caches:

- `lean-bf16`: finetune/lean_sft.py as shipped (LoRA r16 on the top 20 layers, frozen weights in
  bfloat16, LoRA in float32 under bf16 autocast, LM head on verdict tokens only);
- `lean-bf16-all-layers`: the same with LoRA on all 30 layers;
- `lean-fp32`: the shipped recipe in float32, on the same batches: its loss is the reference the
  bf16 loss must track;
- `trl-bf16`: finetune/sft.py (TRL's SFTTrainer, its config: LoRA r16 on all 30 layers) with bf16
  weights and autocast, batches of 16 rows: compare it with `lean-bf16-all-layers`.

It prints one table (tokens/s, loss per logged step), writes the figures to `--out` as JSON and
the table into `--card` (finetune/MODEL_CARD.md) between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moderation.machine import describe, native_bf16  # noqa: E402
from moderation.report import splice_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- benchmark_training:start -->", "<!-- benchmark_training:end -->"

LEAN = {  # each names its format: the shipped config's `dtype: auto` would differ from one machine to the next
    "lean-bf16": ["--dtype", "bfloat16"],
    "lean-bf16-all-layers": ["--dtype", "bfloat16", "--lora_layers", "30"],
    "lean-fp32": ["--dtype", "float32"],
}
# bfloat16 recipes only where bfloat16 is native: emulated, a step takes minutes (moderation.machine)
NATIVE_RECIPES, FLOAT32_RECIPES = "lean-bf16,lean-bf16-all-layers,lean-fp32,trl-bf16", "lean-fp32"


def run_lean(name: str, extra: list[str], args, work: Path) -> dict:
    out = work / name
    cmd = [sys.executable, str(ROOT / "finetune" / "lean_sft.py"), "--config", str(ROOT / "finetune/configs/lean_sft_smollm2_cpu.yaml"),
           "--dataset", args.dataset, "--output_dir", str(out), "--max_steps", str(args.steps), "--log_steps", "2",
           "--save_steps", "1000", "--held_out", "16", *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads((out / "train_summary.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"tokens_per_s": summary["train_tokens_per_s"], "tokens": summary["train_tokens"],
            "loss": {e["step"]: e["loss"] for e in log}}


def run_trl(args, work: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "finetune" / "sft.py"), "--config", str(ROOT / "finetune/configs/sft_smollm2_cpu.yaml"),
           "--dataset_name", args.dataset, "--output_dir", str(work / "trl"), "--max_steps", str(args.steps),
           "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1", "--bf16", "true",
           "--dtype", "bfloat16", "--logging_steps", "2", "--save_strategy", "no"]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rate = re.findall(r"'train_tokens_per_s': '?([\d.]+)", proc.stdout + proc.stderr)
    tokens = re.findall(r"'train_tokens': '?(\d+)", proc.stdout + proc.stderr)
    losses = re.findall(r"'loss': '?([\d.]+)", proc.stdout + proc.stderr)
    return {"tokens_per_s": float(rate[-1]) if rate else None, "tokens": int(tokens[-1]) if tokens else None,
            "loss": {2 * (i + 1): float(x) for i, x in enumerate(losses)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/curated/sft", help="`moderation curate` sft/ folder")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per recipe")
    parser.add_argument("--recipes", default=NATIVE_RECIPES if native_bf16() else FLOAT32_RECIPES,
                        help=f"comma-separated recipes (default: {NATIVE_RECIPES} with native bfloat16, else {FLOAT32_RECIPES})")
    parser.add_argument("--work", default="runs/benchmark-training", help="scratch folder")
    parser.add_argument("--out", default="runs/benchmark-training/results.json")
    parser.add_argument("--card", default=str(ROOT / "finetune" / "MODEL_CARD.md"), help="Markdown file to splice the table into")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.recipes.split(","):
        print(f"training {name} for {args.steps} steps ...", file=sys.stderr)
        results[name] = run_trl(args, work) if name == "trl-bf16" else run_lean(name, LEAN[name], args, work)
    steps = sorted({s for r in results.values() for s in r["loss"]})
    table = ["| recipe | tokens/s | tokens | " + " | ".join(f"loss @{s}" for s in steps) + " |",
             "|---|---|---|" + "---|" * len(steps)]
    for name, r in results.items():
        losses = " | ".join(f"{r['loss'][s]:.3f}" if s in r["loss"] else "–" for s in steps)
        table.append(f"| {name} | {r['tokens_per_s']} | {r['tokens']} | {losses} |")
    print("\n".join(table))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    machine = describe()
    block = [START, "", f"`python scripts/benchmark_training.py --steps {args.steps}` (one process per recipe, the same "
             f"batches of about 4,096 tokens from `{args.dataset}`, {os.cpu_count()} CPU cores, {machine['cpu']}, "
             f"CPU capability {machine['cpu_capability']}, native bfloat16: {'yes' if machine['native_bf16'] else 'no'}):",
             "", *table, "", END]
    splice_markdown(Path(args.card), "\n".join(block), START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
