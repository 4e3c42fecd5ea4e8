"""LoRA SFT on CPU that uses the machine: the recipe of the shipped default adapter.

    python finetune/lean_sft.py --config finetune/configs/lean_sft_smollm2_cpu.yaml
    nohup python finetune/lean_sft.py --config finetune/configs/lean_sft_smollm2_cpu.yaml > runs/lean-sft.log 2>&1 &
    # interrupted? the same command resumes from the last checkpoint

Why not `finetune/sft.py` (TRL's SFTTrainer)? On 2 CPU cores it trains at 176 tokens/s on this
data, where this loop reaches about 5x that (`scripts/benchmark_training.py` measures both side by
side). What makes the difference:

- on a CPU with native bfloat16 (avx512_bf16 or amx_bf16), frozen base weights in bfloat16, LoRA
  weights in float32, matmuls under bfloat16 autocast; elsewhere everything in float32, since
  emulated bfloat16 is about 85x slower (`dtype: auto` chooses, moderation.machine);
- logits only where the loss is: the 49k-word LM head runs on the verdict tokens, not the prompt;
- LoRA on the top `lora_layers` layers only, so the backward pass stops there;
- length-grouped batches of about `batch_tokens` tokens: almost no padding.

The loss covers the assistant verdict only. A checkpoint (LoRA weights, optimizer, step) is
written every `save_steps` steps to `output_dir/checkpoint/` (atomically), so an interruption
loses at most that many steps; the final adapter (PEFT format) goes to `output_dir/adapter/`,
with `train_log.jsonl` (loss, learning rate, tokens/s per logged step) and `train_summary.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import load_curated, record_taxonomy, resolve  # noqa: E402

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LeanSFTConfig:
    """Settings of one training run (a YAML file with these keys, flags override it)."""

    model: str = field(default="default", metadata={"help": "Base model: 'default' or a Hugging Face model directory."})
    dataset: str = field(default="data/curated/sft", metadata={"help": "`moderation curate` sft/ folder (messages rows)."})
    output_dir: str = field(default="runs/lean-sft", metadata={"help": "Checkpoint, adapter, logs."})
    max_length: int = field(default=640, metadata={"help": "Rows longer than this many tokens are skipped (counted)."})
    batch_tokens: int = field(default=4096, metadata={"help": "Padded tokens per optimizer step (length-grouped batches)."})
    epochs: float = field(default=1.5, metadata={"help": "Passes over the data (a fraction takes the first batches of the last pass)."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (AdamW)."})
    warmup_steps: int = field(default=30, metadata={"help": "Linear warm-up steps; then cosine decay to 10% of the peak."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_layers: int = field(default=20, metadata={"help": "LoRA on the top N decoder layers (all: the model's layer count)."})
    dtype: str = field(default="auto", metadata={"help": (
        "bfloat16 (frozen weights bf16, LoRA fp32, bf16 autocast), float32, or auto: bfloat16 where the CPU has it "
        "natively, else float32 (`moderation doctor`).")})
    held_out: int = field(default=256, metadata={"help": "Rows kept out of training for the final held-out loss."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    log_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    max_steps: int = field(default=0, metadata={"help": "Stop after N steps (0: the whole schedule); for smoke tests."})
    decision_weight: float = field(default=1.0, metadata={"help": "Loss weight of the decision-value tokens (1: every verdict token alike)."})
    policy_weight: float = field(default=1.0, metadata={"help": "Loss weight of the policy-id tokens."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: leave torch's default)."})
    seed: int = field(default=0, metadata={"help": "Shuffling seed."})

    def __post_init__(self):
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16 or float32, got {self.dtype!r}")
        if self.dtype == "auto":  # resolved once, so the summary and checkpoints name the format used
            from moderation.machine import machine_dtype

            self.dtype = "bfloat16" if machine_dtype() == "bfloat16" else "float32"
        if self.decision_weight <= 0 or self.policy_weight <= 0:
            raise ValueError(f"loss weights must be > 0, got {self.decision_weight}, {self.policy_weight}")
        for name in ("max_length", "batch_tokens", "lora_r", "lora_layers", "save_steps", "log_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")


# --- data ------------------------------------------------------------------------------------


DECISION, POLICY, OTHER = 2, 1, 0  # what a verdict token is, for its loss weight
LABEL_VALUE = re.compile(r'"(decision|policy)":\s*"([^"]*)"')


def token_roles(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """Per token of a verdict: DECISION inside the decision's value, POLICY inside a policy id,
    else OTHER. These few tokens carry the whole verdict; the evidence and rationale are long."""
    spans = [(m.start(2), m.end(2), DECISION if m.group(1) == "decision" else POLICY) for m in LABEL_VALUE.finditer(text)]
    roles = []
    for start, end in offsets:
        roles.append(next((role for a, b, role in spans if start < b and end > a), OTHER))
    return roles


def encode_rows(rows, tokenizer, max_length: int) -> tuple[list[tuple[list[int], int, list[int]]], int]:
    """Rows -> (token ids, prompt length, verdict token roles): the chat prompt with its generation
    prompt, then the verdict and the end-of-turn token, exactly what the served model sees and writes."""
    encoded, skipped = [], 0
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    end = tokenizer.eos_token_id if end is None or end == tokenizer.unk_token_id else end
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True)
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        text = row["messages"][-1]["content"]
        verdict = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        completion = verdict["input_ids"] + [end]
        if len(prompt) + len(completion) > max_length:
            skipped += 1
            continue
        encoded.append((prompt + completion, len(prompt), token_roles(text, verdict["offset_mapping"]) + [OTHER]))
    return encoded, skipped


def length_batches(lengths: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by length into batches of at most `batch_tokens` padded tokens, in random order.

    Rows are shuffled, then sorted by length within windows of 50 batches' worth, so that each
    batch pads little and the order of batches still varies between epochs.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = max(1, 50 * batch_tokens // max(1, int(sum(lengths) / max(1, len(lengths)))))
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batch: list[int] = []
        for i in chunk:
            if batch and (len(batch) + 1) * max(lengths[j] for j in [*batch, i]) > batch_tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def schedule(n_rows_lengths: list[int], config: LeanSFTConfig) -> list[list[int]]:
    """Every step's batch for the whole run: whole epochs, then the first part of the last."""
    steps: list[list[int]] = []
    for epoch in range(math.ceil(config.epochs)):
        batches = length_batches(n_rows_lengths, config.batch_tokens, random.Random(config.seed + epoch))
        share = min(1.0, config.epochs - epoch)
        steps += batches[:max(1, round(share * len(batches)))]
    return steps[:config.max_steps] if config.max_steps else steps


def collate(encoded, batch: list[int], pad_id: int):
    """A right-padded batch: input ids, attention mask, shifted labels (-100 off the verdict), and
    each label's role (DECISION, POLICY, OTHER; -1 off the verdict)."""
    import torch

    width = max(len(encoded[i][0]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    roles = torch.full((len(batch), width), -1, dtype=torch.long)
    for row, i in enumerate(batch):
        tokens, prompt_len, token_role = encoded[i]
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        labels[row, prompt_len - 1:len(tokens) - 1] = torch.tensor(tokens[prompt_len:])  # position t predicts t+1
        roles[row, prompt_len - 1:len(tokens) - 1] = torch.tensor(token_role)
    return ids, mask, labels, roles


# --- model -----------------------------------------------------------------------------------


def build_model(config: LeanSFTConfig):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    n_layers = model.config.num_hidden_layers
    top = min(config.lora_layers, n_layers)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=TARGET_MODULES,
                      layers_to_transform=list(range(n_layers - top, n_layers)), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # float32 master weights for the few trainable ones
    return model, tokenizer, path


def role_weights(config: LeanSFTConfig) -> tuple[float, float, float]:
    """Loss weight by token role, indexed by OTHER, POLICY, DECISION."""
    return 1.0, config.policy_weight, config.decision_weight


def completion_loss(model, ids, labels, roles, weights: tuple[float, float, float], dtype: str):
    """(weighted mean cross-entropy over verdict tokens, number of verdict tokens, mean
    cross-entropy of the decision tokens), with the LM head applied only at verdict positions.

    No attention mask is passed: batches are right-padded, so under the causal mask no real token
    ever sees a pad, and pad positions carry no loss. This keeps attention on the fast causal path.
    """
    import torch

    inner = model.get_base_model()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        hidden = inner.model(input_ids=ids).last_hidden_state
        keep = labels != -100
        logits = inner.lm_head(hidden[keep]).float()
    losses = torch.nn.functional.cross_entropy(logits, labels[keep], reduction="none")
    role = roles[keep]
    weight = torch.tensor(weights, dtype=losses.dtype)[role]
    decision = losses[role == DECISION]
    return (losses * weight).sum() / weight.sum(), int(keep.sum()), decision.mean().item() if len(decision) else math.nan


def learning_rate(step: int, total: int, config: LeanSFTConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# --- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(out: Path, model, optimizer, step: int, stats: dict) -> None:
    """Trainable weights, optimizer state and progress, written to a temporary folder and renamed."""
    import torch

    tmp, final = out / "checkpoint.partial", out / "checkpoint"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.save({"weights": trainable, "optimizer": optimizer.state_dict(), "step": step, "stats": stats}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def load_checkpoint(out: Path, model, optimizer) -> tuple[int, dict]:
    """(next step, stats) from `out/checkpoint`, or (0, {}) when there is none."""
    import torch

    path = out / "checkpoint" / "state.pt"
    if not path.is_file():
        return 0, {}
    state = torch.load(path, weights_only=False)
    params = dict(model.named_parameters())
    for name, value in state["weights"].items():
        params[name].data.copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["stats"]


# --- the loop --------------------------------------------------------------------------------


def held_out_loss(model, encoded, config: LeanSFTConfig, pad_id: int) -> tuple[float, float]:
    """(mean cross-entropy over all verdict tokens, mean over the decision tokens) on held-out rows."""
    import torch

    model.eval()
    total, count, decision_total, decisions = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for batch in length_batches([len(t) for t, *_ in encoded], config.batch_tokens, random.Random(0)):
            ids, _, labels, roles = collate(encoded, batch, pad_id)
            loss, n, decision = completion_loss(model, ids, labels, roles, (1.0, 1.0, 1.0), config.dtype)
            n_decision = int((roles == DECISION).sum())
            total, count = total + loss.item() * n, count + n
            decision_total, decisions = decision_total + decision * n_decision, decisions + n_decision
    model.train()
    return total / max(1, count), decision_total / max(1, decisions)


def train(config: LeanSFTConfig) -> dict:
    import torch
    from tqdm import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, model_path = build_model(config)
    rows = list(load_curated(config.dataset, "train"))
    random.Random(config.seed).shuffle(rows)
    held, rows = rows[:config.held_out], rows[config.held_out:]
    encoded, skipped = encode_rows(rows, tokenizer, config.max_length)
    held_encoded, _ = encode_rows(held, tokenizer, config.max_length)
    steps = schedule([len(t) for t, *_ in encoded], config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    start, stats = load_checkpoint(out, model, optimizer)
    stats = stats or {"tokens": 0, "padded_tokens": 0, "verdict_tokens": 0, "wall_s": 0.0}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    log = open(out / "train_log.jsonl", "a")
    model.train()
    bar = tqdm(total=len(steps), initial=start, desc="lean sft", unit="step")
    window_started, window_tokens = time.perf_counter(), 0
    for step in range(start, len(steps)):
        started = time.perf_counter()
        ids, mask, labels, roles = collate(encoded, steps[step], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, len(steps), config)
        loss, n_verdict, decision_loss = completion_loss(model, ids, labels, roles, role_weights(config), config.dtype)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(mask.sum())
        stats["tokens"] += tokens
        stats["padded_tokens"] += ids.numel()
        stats["verdict_tokens"] += n_verdict
        stats["wall_s"] += time.perf_counter() - started
        window_tokens += tokens
        bar.update(1)
        if (step + 1) % config.log_steps == 0:
            rate = window_tokens / (time.perf_counter() - window_started)
            entry = {"step": step + 1, "loss": round(loss.item(), 4), "decision_loss": round(decision_loss, 4),
                     "lr": group["lr"], "tokens": stats["tokens"], "tokens_per_s": round(rate, 1)}
            log.write(json.dumps(entry) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{loss.item():.3f}", decision=f"{decision_loss:.3f}", tok_s=f"{rate:.0f}")
            window_started, window_tokens = time.perf_counter(), 0
        if (step + 1) % config.save_steps == 0:
            save_checkpoint(out, model, optimizer, step + 1, stats)
    bar.close()
    save_checkpoint(out, model, optimizer, len(steps), stats)
    adapter_dir = out / "adapter"
    model.save_pretrained(adapter_dir)
    record_taxonomy(config.dataset, adapter_dir)
    held_loss, held_decision = held_out_loss(model, held_encoded, config, pad_id)
    summary = {
        "base_model": str(model_path), "rows": len(encoded), "rows_skipped_too_long": skipped, "steps": len(steps),
        "train_tokens": stats["tokens"], "padded_tokens": stats["padded_tokens"], "verdict_tokens": stats["verdict_tokens"],
        "padding_share": round(1 - stats["tokens"] / max(1, stats["padded_tokens"]), 4),
        "train_wall_s": round(stats["wall_s"], 1), "train_tokens_per_s": round(stats["tokens"] / max(1e-9, stats["wall_s"]), 1),
        "held_out_rows": len(held_encoded), "held_out_loss": round(held_loss, 4), "held_out_decision_loss": round(held_decision, 4),
        "torch_threads": torch.get_num_threads(), "config": dataclasses.asdict(config),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_config(argv: list[str] | None = None) -> LeanSFTConfig:
    """`--config FILE.yaml` plus `--field value` flags that override it."""
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file of LeanSFTConfig fields")
    for f in dataclasses.fields(LeanSFTConfig):
        parser.add_argument("--" + f.name, type=type(f.default), help=f.metadata["help"])
    args = parser.parse_args(argv)
    values = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(LeanSFTConfig)})
    if unknown:
        parser.error(f"unknown keys in {args.config}: {unknown}")
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return LeanSFTConfig(**values)


if __name__ == "__main__":
    print(json.dumps(train(parse_config()), indent=2))
