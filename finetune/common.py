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

    from moderation.curate import require_complete

    folder = Path(path)
    require_complete(folder)  # a folder a killed curate left is refused, not trained on in part
    files = {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}
    if not files:
        raise FileNotFoundError(f"no JSONL splits in {folder}; run `moderation curate` first")
    data = load_dataset("json", data_files=files)
    return data[split] if split else data


def dataset_taxonomy(dataset: str | Path) -> tuple[str, ...] | None:
    """The policy ids a curated data set's verdicts use (the taxonomy.json `moderation curate` writes beside
    sft/ and preference/), or None for a data set from before it did."""
    import json

    from moderation.curate import TAXONOMY_FILE

    source = Path(dataset).parent / TAXONOMY_FILE
    return tuple(json.loads(source.read_text())["policies"]) if source.is_file() else None


def record_taxonomy(dataset: str, adapter_dir: str | Path) -> tuple[str, ...] | None:
    """Write the taxonomy of a curated data set into the adapter's moderation.json as `policies`, so that a
    run under another policy file refuses the adapter. Returns the policy ids (None: the data set does not say)."""
    import json

    from moderation.model import PROFILE_FILE

    policies = dataset_taxonomy(dataset)
    if policies is None:
        return None
    profile = Path(adapter_dir) / PROFILE_FILE
    current = json.loads(profile.read_text()) if profile.is_file() else {}
    profile.write_text(json.dumps({**current, "policies": list(policies)}, indent=2) + "\n")
    return policies


def to_prompt_completion(example: dict) -> dict:
    """`messages` -> conversational `prompt` / `completion`, so SFTTrainer's loss covers the
    verdict only (completion_only_loss); SmolLM2's chat template has no generation markers."""
    return {"prompt": example["messages"][:-1], "completion": example["messages"][-1:]}
