"""Plain batched `generate` with transformers: no constrained decoding.

It is the reference baseline the vLLM path is measured against, and the path for machines
without vLLM. Its outputs are validated like every other backend's.
"""

from __future__ import annotations

import logging

from moderation.backends.base import BackendConfig, Generation, GenerationRequest
from moderation.errors import BackendError
from moderation.model import model_sha, resolve_model

logger = logging.getLogger(__name__)
_DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class TransformersBackend:
    name = "transformers"

    def __init__(self, config: BackendConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.torch = torch
        path = resolve_model(config.model)
        self.model_id = config.model if config.model != "default" else "default:SmolLM2-135M-Instruct"
        self.model_sha = model_sha(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[config.dtype])
        self.model.eval()

    def _prompts(self, requests: list[GenerationRequest]) -> list[str]:
        return [self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        results: list[Generation] = []
        size = self.config.batch_size
        for start in range(0, len(requests), size):
            results.extend(self._generate_batch(requests[start : start + size]))
        return results

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        sample = requests[0].temperature > 0
        inputs = self.tokenizer(self._prompts(requests), return_tensors="pt", padding=True, add_special_tokens=False)
        if sample:
            self.torch.manual_seed(requests[0].seed if requests[0].seed is not None else self.config.seed)
        try:
            with self.torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=self.config.max_tokens,
                    do_sample=sample,
                    temperature=requests[0].temperature if sample else None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
        except Exception as exc:
            raise BackendError(f"transformers generation failed: {exc}") from exc
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        generations = []
        for row, n_prompt in zip(out[:, prompt_len:], prompt_tokens):
            ids = [t for t in row.tolist() if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            generations.append(Generation(text=text, prompt_tokens=int(n_prompt), completion_tokens=len(ids)))
        return generations

    def close(self) -> None:
        self.model = None
