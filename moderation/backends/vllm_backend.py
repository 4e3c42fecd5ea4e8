"""vLLM's offline engine with structured outputs: the default, fast path.

The pure part (`sampling_kwargs`) is apart from the one method that calls the engine, so it
is tested without vLLM. vLLM starts worker processes: scripts that build this backend must
do so under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import logging
from typing import Any

from moderation.backends.base import BackendConfig, Generation, GenerationRequest
from moderation.errors import BackendError
from moderation.model import model_sha, resolve_model

logger = logging.getLogger(__name__)
MIN_OUTPUT_TOKENS = 64  # room for the smallest verdict (decision, no violations, short rationale)


def sampling_kwargs(request: GenerationRequest, config: BackendConfig) -> dict[str, Any]:
    """Keyword arguments for `SamplingParams`, minus the structured-output object."""
    kwargs: dict[str, Any] = {"temperature": request.temperature, "max_tokens": config.max_tokens}
    if request.temperature > 0:
        kwargs["seed"] = request.seed if request.seed is not None else config.seed
    return kwargs


def engine_kwargs(config: BackendConfig, model_path: str, on_cpu: bool) -> dict[str, Any]:
    """Engine settings. On CPU, compilation costs minutes of start-up for little gain at this
    model size, so eager mode is the default there."""
    eager = on_cpu if config.enforce_eager is None else config.enforce_eager
    return {
        "model": model_path,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": eager,
        "enable_prefix_caching": True,
        # Compact JSON: no whitespace between tokens of the verdict. vLLM only honours this
        # with a named grammar backend, so name xgrammar rather than "auto".
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        "max_model_len": config.max_model_len,
        "dtype": config.dtype,
        "seed": config.seed,
    }


class VLLMBackend:
    name = "vllm"

    def __init__(self, config: BackendConfig):
        from vllm import LLM
        from vllm.platforms import current_platform

        self.config = config
        path = resolve_model(config.model)
        self.model_id = config.model if config.model != "default" else "default:SmolLM2-135M-Instruct"
        self.model_sha = model_sha(path)
        try:
            self.llm = LLM(**engine_kwargs(config, str(path), on_cpu=current_platform.is_cpu()))
        except Exception as exc:  # vLLM raises many types at start-up
            raise BackendError(f"vLLM could not start on {path}: {exc}") from exc

    def _params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=request.schema)
        return SamplingParams(structured_outputs=structured, **sampling_kwargs(request, self.config))

    def _too_long(self, request: GenerationRequest) -> Generation | None:
        """A Generation with an error when the prompt leaves no room for a verdict, else None.

        vLLM rejects a whole batch for one over-long prompt, so it is caught here, per item.
        """
        tokenizer = self.llm.get_tokenizer()
        text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n + MIN_OUTPUT_TOKENS <= self.config.max_model_len:
            return None
        return Generation("", prompt_tokens=n, error=f"prompt is {n} tokens, over the model context of "
                                                      f"{self.config.max_model_len} less {MIN_OUTPUT_TOKENS} for the verdict")

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        results: list[Generation | None] = [self._too_long(r) for r in requests]
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            return results
        params = [self._params(requests[i]) for i in todo]
        try:
            outputs = self.llm.chat([requests[i].messages for i in todo], params, use_tqdm=False)
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        for i, out in zip(todo, outputs):
            results[i] = Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids or ()),
                completion_tokens=len(out.outputs[0].token_ids),
            )
        return results

    def close(self) -> None:
        engine = getattr(self, "llm", None)
        if engine is not None:
            del self.llm
