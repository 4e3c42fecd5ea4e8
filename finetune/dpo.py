"""Direct preference optimisation on preference pairs (`moderation curate` -> preference/).

Shaped like trl's `trl/scripts/dpo.py`:

    python finetune/dpo.py --config finetune/configs/dpo_smollm2_cpu.yaml

With LoRA (`use_peft`), the frozen base model is the reference, so no second copy is loaded.
Start from the SFT model (`model_name_or_path` = a merged SFT directory, see export.py): DPO
refines a model that already answers in the verdict format.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import load_curated, record_taxonomy, resolve  # noqa: E402


def main(script_args, training_args, model_args):
    from trl import DPOTrainer, get_peft_config

    data = load_curated(script_args.dataset_name)
    train = data[script_args.dataset_train_split].remove_columns(["source"])
    held_out = None
    if training_args.eval_strategy != "no" and script_args.dataset_test_split in data:
        held_out = data[script_args.dataset_test_split].remove_columns(["source"])
    training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype or "float32"}
    trainer = DPOTrainer(model=resolve(model_args.model_name_or_path), args=training_args, train_dataset=train,
                         eval_dataset=held_out, peft_config=get_peft_config(model_args))
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    record_taxonomy(script_args.dataset_name, training_args.output_dir)
    trainer.log({"train_wall_s": round(time.perf_counter() - started, 1)})
    return trainer


def make_parser():
    from trl import DPOConfig, ModelConfig, ScriptArguments, TrlParser

    return TrlParser((ScriptArguments, DPOConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
