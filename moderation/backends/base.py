"""What every backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from moderation.errors import ConfigError
from moderation.machine import DTYPES, check_dtype
from moderation.model import Adapter


@dataclass(frozen=True)
class BackendConfig:
    """Settings shared by the backends; each reads the ones it needs."""

    model: str = field(default="default", metadata={"help": "Model directory, or 'default' for the embedded SmolLM2-135M-Instruct."})
    max_tokens: int = field(default=256, metadata={"help": "Upper bound on generated tokens per verdict."})
    batch_size: int = field(default=64, metadata={"help": "Items per generate call (transformers) or request window (openai)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (retries sample; first attempts are greedy)."})
    gpu_memory_utilization: float = field(default=0.5, metadata={"help": "vLLM: share of GPU memory, or of RAM on CPU."})
    enforce_eager: bool | None = field(default=None, metadata={"type": bool, "help": "vLLM: skip compilation and graph capture; unset: yes on CPU, no on GPU."})
    max_model_len: int = field(default=8192, metadata={"help": "vLLM: longest prompt plus output, in tokens."})
    block_size: int | None = field(default=None, metadata={"type": int, "help": "vLLM: KV-cache block size in tokens; default: 32 on CPU (docs/throughput.md), the engine's on GPU."})
    dtype: str = field(default="auto", metadata={"choices": DTYPES, "help": (
        "Weights and scorer format; auto: the machine's (bfloat16 on a CPU with native bfloat16 or a GPU that has it, "
        "float32 on other CPUs, float16 on other GPUs; `moderation doctor` says which).")})
    max_num_seqs: int | None = field(default=None, metadata={"type": int, "help": "vLLM: sequences per engine step, at most; unset: the engine's default."})
    max_num_batched_tokens: int | None = field(default=None, metadata={"type": int, "help": "vLLM: tokens per engine step, at most; unset: the engine's default."})
    kv_cache_gib: float | None = field(default=None, metadata={"type": float, "help": (
        "vLLM: KV-cache space in GiB; default: 2 on CPU (docs/throughput.md), the engine's own on GPU; "
        "0: the engine's own (--gpu-memory-utilization of the GPU, or of RAM on CPU).")})
    chunked_prefill: bool | None = field(default=None, metadata={"type": bool, "help": "vLLM: split long prompts across engine steps; unset: the engine's default."})
    base_url: str = field(default="http://127.0.0.1:8000/v1", metadata={"help": "openai: server URL."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "openai: environment variable holding the key."})
    timeout_s: float = field(default=120.0, metadata={"help": "openai: per-request timeout in seconds."})
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight at once."})
    adapters: tuple[Adapter, ...] = field(default=(), metadata={"help": "LoRA adapters to serve beside the base model; requests pick one by name."})

    def __post_init__(self):
        for name in ("max_tokens", "batch_size", "max_model_len", "concurrency", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"BackendConfig.{name} must be at least 1, got {getattr(self, name)!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"BackendConfig.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        if self.kv_cache_gib is not None and self.kv_cache_gib < 0:
            raise ConfigError(f"BackendConfig.kv_cache_gib must be 0 (the engine's default) or more, got {self.kv_cache_gib!r}")
        check_dtype(self.dtype, "BackendConfig.dtype")
        names = [a.name for a in self.adapters]
        if len(set(names)) < len(names):
            raise ConfigError(f"BackendConfig.adapters: two adapters share a name in {names}")
        if self.timeout_s <= 0:
            raise ConfigError(f"BackendConfig.timeout_s must be positive, got {self.timeout_s!r}")


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: chat messages plus the JSON Schema its output must follow."""

    messages: list[dict[str, str]]
    schema: dict[str, Any]
    temperature: float = 0.0
    seed: int | None = None
    adapter: str | None = None  # name of a LoRA adapter in BackendConfig.adapters; None: the base model


@dataclass(frozen=True)
class Generation:
    """One output. `error` is set when this request alone could not run (a prompt longer than
    the model's context, a request the server rejected): the item gets an error record and
    the rest of the batch goes on."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached_tokens: int = 0  # prompt tokens served from the engine's prefix cache


class Backend(Protocol):
    """A model that turns requests into raw text outputs, one per request, in order."""

    name: str
    config: BackendConfig
    model_id: str  # what the user asked for: a path or a served model name
    model_sha: str | None  # content hash of the weights, when known

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    def close(self) -> None: ...


def check_adapter(config: BackendConfig, name: str | None) -> None:
    """Raise ConfigError for a request naming an adapter the backend was not started with."""
    if name is not None and name not in {a.name for a in config.adapters}:
        raise ConfigError(f"unknown adapter {name!r}; this backend serves {[a.name for a in config.adapters] or 'none'}")
