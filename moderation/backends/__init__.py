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


LOCAL = ("vllm", "transformers")  # backends that load the weights in this process: they can start late


def backend_class(name: str) -> type:
    """The class of the backend called `name`, imported (its heavy library is imported only when built).

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
    return getattr(module, class_name)


def load_backend(name: str, config: BackendConfig, *, lazy: bool = False) -> Backend:
    """Build the backend called `name`; with `lazy` (local backends only), one that starts its engine on
    its first request, so a run that never generates never pays for an engine (LazyBackend).

    Raises:
        ConfigError: unknown name, or the backend's library is not installed.
    """
    cls = backend_class(name)
    return LazyBackend(name, cls, config) if lazy and name in LOCAL else cls(config)


class LazyBackend:
    """A local backend (vLLM, transformers) started on its first request.

    Score first with built rationales makes whole verdicts from the policy heads' scores, so the
    default `moderation run` may never ask the engine for anything: then no engine starts (no
    start-up time, no engine memory, no engine threads beside the scorer). What a record's
    provenance needs of the backend (name, model label, weights hash) is known without starting it.
    """

    def __init__(self, name: str, cls: type, config: BackendConfig):
        from moderation.model import model_profile, model_sha, resolve_model

        self.name, self.config, self._cls, self._backend = name, config, cls, None
        self.model_id = model_profile(config.model).label
        self.model_sha = model_sha(resolve_model(config.model))
        if hasattr(cls, "label_probs"):  # token probes only where the real backend has them (Moderator checks)
            self.label_probs = lambda probes: self.started().label_probs(probes)

    def started(self) -> Backend:
        """The real backend, started now if it was not yet."""
        if self._backend is None:
            self._backend = self._cls(self.config)
        return self._backend

    @property
    def is_started(self) -> bool:
        return self._backend is not None

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return self.started().generate(requests)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


__all__ = ["BACKENDS", "Backend", "BackendConfig", "Generation", "GenerationRequest", "LazyBackend", "backend_class",
           "load_backend"]
