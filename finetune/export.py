"""Merge a LoRA adapter into its base model: a plain safetensors directory that vLLM loads.

    python finetune/export.py ADAPTER_DIR OUT_DIR [--base base]
    python finetune/export.py ADAPTER_DIR finetune/adapters/NAME --adapter-only   # float16 copy to commit

The other serving path needs no merge: `moderation run/eval --adapter ADAPTER_DIR` serves the
adapter through vLLM's LoRA support on the unmerged base model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from finetune.common import resolve  # noqa: E402


def base_of(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, from its adapter_config.json."""
    return json.loads(Path(adapter_dir, "adapter_config.json").read_text())["base_model_name_or_path"]


def merge(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None) -> Path:
    """Load base + adapter, fold the LoRA weights in, save model (safetensors) and tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = resolve(base or base_of(adapter_dir))
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(out)
    return out


def copy_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str = "base") -> Path:
    """The adapter alone, weights in float16 (half the size, for committing), its base renamed
    to a portable name (`base` = the embedded zero-shot model; vLLM and PEFT ignore it when loading)."""
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(Path(adapter_dir, "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    weights = load_file(str(Path(adapter_dir, "adapter_model.safetensors")))
    save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", help="a PEFT adapter directory (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("out_dir", help="where the merged model goes (keep it out of git, e.g. ~/.cache/moderation/models/)")
    parser.add_argument("--base", help="base model (default: the adapter's base_model_name_or_path; 'base' and 'default' work)")
    parser.add_argument("--adapter-only", action="store_true", help="no merge: copy the adapter with float16 weights")
    args = parser.parse_args(argv)
    if args.adapter_only:
        print(f"adapter written to {copy_adapter(args.adapter, args.out_dir, args.base or 'base')}")
        return 0
    print(f"merged model written to {merge(args.adapter, args.out_dir, args.base)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
