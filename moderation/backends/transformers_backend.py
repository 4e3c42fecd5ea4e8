"""Plain batched `generate` with transformers: no constrained decoding.

It is the reference baseline the vLLM path is measured against, and the path for machines
without vLLM. Its outputs are validated like every other backend's.
"""

from __future__ import annotations

import contextlib
import logging

from moderation.backends.base import BackendConfig, Generation, GenerationRequest, check_adapter
from moderation.errors import BackendError
from moderation.machine import torch_dtype
from moderation.model import model_profile, model_sha, resolve_model
from moderation.scoring import LabelProbe, TokenScorer

logger = logging.getLogger(__name__)


class TransformersBackend:
    name = "transformers"

    def __init__(self, config: BackendConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.torch = torch
        path = resolve_model(config.model)
        self.model_id = model_profile(config.model).label
        self.model_sha = model_sha(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(config.dtype))
        if config.adapters:
            from peft import PeftModel

            first, *rest = config.adapters
            self.model = PeftModel.from_pretrained(self.model, str(first.path), adapter_name=first.name)
            for adapter in rest:
                self.model.load_adapter(str(adapter.path), adapter_name=adapter.name)
        self.model.eval()
        self.scorer = TokenScorer(
            encode=lambda text: self.tokenizer.encode(text, add_special_tokens=False),
            chat_ids=lambda messages: self.tokenizer.encode(self._prompts_of([messages])[0], add_special_tokens=False),
            next_logprobs=self._next_logprobs,
        )

    def _using(self, adapter: str | None):
        """A context in which the model runs with `adapter` (None: the base model)."""
        check_adapter(self.config, adapter)
        if not self.config.adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _prompts_of(self, messages: list[list[dict]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]

    def _prompts(self, requests: list[GenerationRequest]) -> list[str]:
        return self._prompts_of([r.messages for r in requests])

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        size = self.config.batch_size
        for adapter in dict.fromkeys(r.adapter for r in requests):  # one adapter per generate call
            idx = [i for i, r in enumerate(requests) if r.adapter == adapter]
            for start in range(0, len(idx), size):
                chunk = idx[start : start + size]
                with self._using(adapter):
                    for i, g in zip(chunk, self._generate_batch([requests[i] for i in chunk])):
                        results[i] = g
        return results

    def label_probs(self, probes: list[LabelProbe]) -> list[dict[str, float]]:
        """Label probabilities from next-token log-probs (see moderation.scoring); one forward pass each."""
        return self.scorer.label_probs(probes)

    def _next_logprobs(self, asks: list[tuple[list[int], list[int]]], adapters: list[str | None]) -> list[dict[int, float]]:
        torch = self.torch
        out: list[dict[int, float]] = []
        # One forward pass per probe: prompts differ in length, and there is no prefix cache to share.
        for (ids, cands), name in zip(asks, adapters):
            with self._using(name), torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            out.append({c: float(logprobs[c]) for c in cands})
        return out

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
        self.scorer = None
        self.model = None
