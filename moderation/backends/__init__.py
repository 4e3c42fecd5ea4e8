"""Model backends, chosen by name. Each module imports its heavy library only when built."""

from __future__ import annotations

import importlib

from moderation.backends.base import Backend, BackendConfig, Generation, GenerationRequest
from moderation.errors import ConfigError

# name -> "module:class"; a plain dict, no plugin machinery.
BACKENDS = {
    "vllm": "moderation.backends.vllm_backend:VLLMBackend",
    "transformers": "moderation.backends.transformers_backend:TransformersBackend",
    "openai": "moderation.backends.openai_backend:OpenAIBackend",
    "fake": "moderation.backends.fake:FakeBackend",
}


def load_backend(name: str, config: BackendConfig) -> Backend:
    """Build the backend called `name`.

    Raises:
        ConfigError: unknown name, or the backend's library is not installed.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r} needs a library that is not installed: {exc}") from None
    return getattr(module, class_name)(config)


__all__ = ["BACKENDS", "Backend", "BackendConfig", "Generation", "GenerationRequest", "load_backend"]
