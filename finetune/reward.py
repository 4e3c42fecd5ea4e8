"""Reward model on preference pairs (`moderation curate` -> preference/), with TRL's RewardTrainer.

Shaped like trl's `trl/scripts/reward.py`:

    python finetune/reward.py --config finetune/configs/reward_smollm2_cpu.yaml

The model is the base causal LM with a one-output score head (LoRA on the attention and the
head trained in full, `modules_to_save: [score]`). Pairwise accuracy (the share of held-out
pairs whose chosen verdict outscores the rejected one) is measured on the `test` split before
and after training and written to `output_dir/pairwise_accuracy.json`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import load_curated, resolve  # noqa: E402


def main(script_args, training_args, model_args):
    from trl import RewardTrainer, get_peft_config

    data = load_curated(script_args.dataset_name)
    train = data[script_args.dataset_train_split].remove_columns(["source"])
    held_out = data[script_args.dataset_test_split].remove_columns(["source"]) if script_args.dataset_test_split in data else None
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype or "float32"}
    trainer = RewardTrainer(model=resolve(model_args.model_name_or_path), args=training_args, train_dataset=train,
                            eval_dataset=held_out, peft_config=get_peft_config(model_args))
    figures = {"pairs_train": len(train), "pairs_held_out": len(held_out) if held_out is not None else 0}
    if held_out is not None:
        figures["accuracy_before"] = pairwise_accuracy(trainer, held_out)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    figures["train_wall_s"] = round(time.perf_counter() - started, 1)
    if held_out is not None:
        figures["accuracy_after"] = pairwise_accuracy(trainer, held_out)
    trainer.save_model(training_args.output_dir)
    Path(training_args.output_dir, "pairwise_accuracy.json").write_text(json.dumps(figures, indent=2) + "\n")
    trainer.log(dict(figures))  # log() adds the epoch to the dict it is given
    return trainer, figures


def pairwise_accuracy(trainer, pairs) -> float:
    """Share of pairs whose chosen verdict gets the higher reward (ties count as wrong), over
    all pairs at once (the trainer's eval metric averages per batch)."""
    from finetune.score_verdicts import rewards

    model, tokenizer = trainer.model.eval(), trainer.processing_class
    chosen = rewards(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs])
    rejected = rewards(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs])
    model.train()
    return round(sum(c > r for c, r in zip(chosen, rejected)) / len(chosen), 4)


def make_parser():
    from trl import ModelConfig, RewardConfig, ScriptArguments, TrlParser

    return TrlParser((ScriptArguments, RewardConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
