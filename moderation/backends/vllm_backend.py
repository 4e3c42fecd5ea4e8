"""vLLM's offline engine with structured outputs: the default, fast path.

The pure part (`sampling_kwargs`) is apart from the one method that calls the engine, so it
is tested without vLLM. vLLM starts worker processes: scripts that build this backend must
do so under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from moderation.backends.base import BackendConfig, Generation, GenerationRequest, check_adapter
from moderation.errors import BackendError
from moderation.machine import resolve_dtype
from moderation.model import model_profile, model_sha, resolve_model
from moderation.scoring import LabelProbe, TokenScorer

logger = logging.getLogger(__name__)
# Measured on 2 CPU cores by scripts/benchmark_throughput.py --sweep (docs/throughput.md): a 2 GiB KV cache is as
# fast as half the RAM with 40% of the memory and 60% of the start-up; 32-token blocks reuse more of the shared
# prompt prefix than the default 128 and were the fastest setting.
CPU_KV_CACHE_GIB = 2
CPU_BLOCK_SIZE = 32
MIN_OUTPUT_TOKENS = 64  # room for the smallest verdict (decision, no violations, short rationale)
STOP_TIMEOUT_S = 5.0  # how long the engine's processes get to end after SIGTERM before they are killed


def sampling_kwargs(request: GenerationRequest, config: BackendConfig) -> dict[str, Any]:
    """Keyword arguments for `SamplingParams`, minus the structured-output object."""
    kwargs: dict[str, Any] = {"temperature": request.temperature, "max_tokens": config.max_tokens}
    if request.temperature > 0:
        kwargs["seed"] = request.seed if request.seed is not None else config.seed
    return kwargs


def engine_kwargs(config: BackendConfig, model_path: str, on_cpu: bool) -> dict[str, Any]:
    """Engine settings. On CPU, compilation costs minutes of start-up for little gain at this
    model size, so eager mode is the default there; so are a 2 GiB KV cache and 32-token blocks,
    chosen by `scripts/benchmark_throughput.py --sweep` (docs/throughput.md), and weights in the
    CPU's format (moderation.machine: bfloat16 only where it is native) unless --dtype says otherwise."""
    eager = on_cpu if config.enforce_eager is None else config.enforce_eager
    kv_gib = (CPU_KV_CACHE_GIB if on_cpu else 0) if config.kv_cache_gib is None else config.kv_cache_gib
    block = config.block_size or (CPU_BLOCK_SIZE if on_cpu else None)
    lora = {}
    if config.adapters:  # one base model, any number of LoRA adapters picked per request
        lora = {"enable_lora": True, "max_loras": len(config.adapters),
                "max_lora_rank": _lora_rank(max(a.rank for a in config.adapters))}
    return {
        "model": model_path,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": eager,
        "enable_prefix_caching": True,
        # Compact JSON: no whitespace between tokens of the verdict. vLLM only honours this
        # with a named grammar backend, so name xgrammar rather than "auto".
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        "max_model_len": config.max_model_len,
        "dtype": resolve_dtype(config.dtype) if on_cpu else config.dtype,  # on a GPU vLLM's auto picks what it supports
        "seed": config.seed,
        **{key: value for key, value in (("block_size", block), ("max_num_seqs", config.max_num_seqs),
                                         ("max_num_batched_tokens", config.max_num_batched_tokens),
                                         ("enable_chunked_prefill", config.chunked_prefill)) if value is not None},
        **({"kv_cache_memory_bytes": int(kv_gib * 2**30)} if kv_gib else {}),
        **lora,
    }


def _lora_rank(rank: int) -> int:
    """vLLM accepts only some max_lora_rank values: the smallest allowed one that fits."""
    for allowed in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    raise BackendError(f"LoRA rank {rank} is above what vLLM serves (512)")


class VLLMBackend:
    name = "vllm"

    def __init__(self, config: BackendConfig):
        from vllm import LLM
        from vllm.platforms import current_platform

        self.config = config
        path = resolve_model(config.model)
        self.model_id = model_profile(config.model).label
        self.model_sha = model_sha(path)
        before = _children()
        try:
            self.llm = LLM(**engine_kwargs(config, str(path), on_cpu=current_platform.is_cpu()))
        except BaseException as exc:  # vLLM raises many types at start-up; a signal may stop it there too
            _stop(_children() - before)
            if isinstance(exc, Exception):
                raise BackendError(f"vLLM could not start on {path}: {exc}") from exc
            raise
        self._engine_processes = _children() - before  # stopped by close() if the engine leaves them behind
        self.loras = _lora_requests(config)
        tokenizer = self.llm.get_tokenizer()
        self.scorer = TokenScorer(
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
            chat_ids=self._chat_ids,
            next_logprobs=self._next_logprobs,
        )

    def _chat_ids(self, messages: list[dict]) -> list[int]:
        tokenizer = self.llm.get_tokenizer()
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)

    def _lora(self, name: str | None):
        check_adapter(self.config, name)
        return None if name is None else self.loras[name]

    def _params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=request.schema)
        return SamplingParams(structured_outputs=structured, **sampling_kwargs(request, self.config))

    def _too_long(self, request: GenerationRequest) -> Generation | None:
        """A Generation with an error when the prompt leaves no room for a verdict, else None.

        vLLM rejects a whole batch for one over-long prompt, so it is caught here, per item.
        """
        n = len(self.scorer.chat_ids(request.messages))  # remembered for the item's score probes
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
        loras = [self._lora(requests[i].adapter) for i in todo]
        try:
            outputs = self.llm.chat([requests[i].messages for i in todo], params, use_tqdm=False,
                                    lora_request=loras if self.loras else None)
        except Exception as exc:
            raise BackendError(f"vLLM generation failed: {exc}") from exc
        for i, out in zip(todo, outputs):
            results[i] = Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids or ()),
                completion_tokens=len(out.outputs[0].token_ids),
                cached_tokens=out.num_cached_tokens or 0,
            )
        return results

    def label_probs(self, probes: list[LabelProbe]) -> list[dict[str, float]]:
        """Label probabilities from next-token log-probs (see moderation.scoring)."""
        return self.scorer.label_probs(probes)

    def _next_logprobs(self, asks: list[tuple[list[int], list[int]]], adapters: list[str | None]) -> list[dict[int, float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # One engine step per probe; its prompt shares the item's prefix, already in the cache.
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in asks]
        params = [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=cands) for _, cands in asks]
        loras = [self._lora(a) for a in adapters] if self.loras else None
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=loras)
        except Exception as exc:
            raise BackendError(f"vLLM scoring failed: {exc}") from exc
        return [{t: lp.logprob for t, lp in out.outputs[0].logprobs[0].items()} for out in outputs]

    def close(self) -> None:
        """Shut the engine down, and make sure its processes (EngineCore, workers) are gone within
        STOP_TIMEOUT_S, so that a stopped command leaves nothing holding memory and cores."""
        self.scorer = None  # it holds bound methods of this backend
        engine = getattr(self, "llm", None)
        if engine is not None:
            core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            try:
                if core is not None:
                    core.shutdown()
            except Exception as exc:  # best effort: the processes are stopped below either way
                logger.warning("vLLM engine shutdown failed: %s", exc)
            del self.llm
        _stop(getattr(self, "_engine_processes", set()))


def _children() -> set:
    """This process's descendants now (psutil comes with vLLM)."""
    import psutil

    return set(psutil.Process().children(recursive=True))


def _stop(processes: set, timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate the processes still alive, and kill those that outlive `timeout` seconds."""
    import psutil

    alive = [p for p in processes if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(alive, timeout=timeout)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if left:
        logger.warning("killed %d vLLM engine processes that outlived SIGTERM by %.0fs", len(left), timeout)


def _lora_requests(config: BackendConfig) -> dict:
    if not config.adapters:
        return {}
    from vllm.lora.request import LoRARequest

    return {a.name: LoRARequest(a.name, n, str(a.path)) for n, a in enumerate(config.adapters, start=1)}
