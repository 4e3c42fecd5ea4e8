"""Supervised fine-tuning with LoRA on curated verdicts (`moderation curate` -> sft/).

Shaped like trl's `trl/scripts/sft.py`:

    python finetune/sft.py --config finetune/configs/sft_smollm2_cpu.yaml
    python finetune/sft.py --config finetune/configs/sft_smollm2_cpu.yaml --max_steps 20

The loss covers the assistant verdict only: rows are turned into TRL's conversational
prompt-completion format and SFTTrainer's `completion_only_loss` (on by default for that format)
masks the prompt. The adapter is saved to `output_dir`; `finetune/export.py` merges it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import load_curated, record_taxonomy, resolve, to_prompt_completion  # noqa: E402


def main(script_args, training_args, model_args):
    from trl import SFTTrainer, get_peft_config

    model_path = resolve(model_args.model_name_or_path)
    data = load_curated(script_args.dataset_name)
    data = data.map(to_prompt_completion, remove_columns=["messages"])
    train = data[script_args.dataset_train_split]
    evaluate = data.get(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype or "float32"}
    trainer = SFTTrainer(model=model_path, args=training_args, train_dataset=train, eval_dataset=evaluate,
                         peft_config=get_peft_config(model_args))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    elapsed = time.perf_counter() - started
    trainer.save_model(training_args.output_dir)
    record_taxonomy(script_args.dataset_name, training_args.output_dir)
    tokens = trainer.state.num_input_tokens_seen or 0
    trainer.log({"train_wall_s": round(elapsed, 1), "train_tokens": tokens,
                 "train_tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0})
    return trainer, result


def make_parser():
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    return TrlParser((ScriptArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
