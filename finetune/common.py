"""Shared pieces of the training scripts: model path resolution and data loading."""

from __future__ import annotations

from pathlib import Path


def resolve(model_name_or_path: str) -> str:
    """'base' (zero-shot SmolLM2) or 'default' (SmolLM2 with the shipped adapter merged) -> the
    prepared safetensors directory; else unchanged."""
    if model_name_or_path in ("base", "default"):
        from moderation.model import resolve_model

        return str(resolve_model(model_name_or_path))
    return str(Path(model_name_or_path).expanduser()) if model_name_or_path.startswith("~") else model_name_or_path


def load_curated(path: str, split: str | None = None):
    """A `moderation curate` output folder (sft/, preference/ or kto/) as a DatasetDict or one split."""
    from datasets import load_dataset

    folder = Path(path)
    files = {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}
    if not files:
        raise FileNotFoundError(f"no JSONL splits in {folder}; run `moderation curate` first")
    data = load_dataset("json", data_files=files)
    return data[split] if split else data


def to_prompt_completion(example: dict) -> dict:
    """`messages` -> conversational `prompt` / `completion`, so SFTTrainer's loss covers the
    verdict only (completion_only_loss); SmolLM2's chat template has no generation markers."""
    return {"prompt": example["messages"][:-1], "completion": example["messages"][-1:]}
