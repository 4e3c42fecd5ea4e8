"""Item -> prompt -> backend -> validated verdict, with a bounded retry for invalid outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from moderation.backends.base import Backend, GenerationRequest
from moderation.errors import ConfigError, VerdictError
from moderation.items import Item
from moderation.model import Adapter
from moderation.policy import Policy
from moderation.prompts import PromptTemplate
from moderation.schema import grounded_schema, parse_verdict, verdict_schema
from moderation.scoring import combine, decision_probes, policy_probes

RETRY_TEMPERATURE = 0.7


@dataclass
class Outcome:
    """What became of one item: a verdict, or the last error with the raw output kept."""

    verdict: dict[str, Any] | None = None
    error: str | None = None
    raw: str | None = None
    attempts: int = 0
    latency_ms: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    scores: dict[str, Any] | None = None


class Moderator:
    """Turns items into validated verdicts with one backend, policy and prompt template.

    Args:
        backend: any Backend.
        policy: the loaded policy.
        template: the loaded prompt template.
        max_attempts: tries per item; attempts after the first sample at RETRY_TEMPERATURE.
        grounded_evidence: give the engine a per-item schema whose evidence must be a quote
            from the item (only engines with constrained decoding use the schema).
        adapter: a LoRA adapter the backend serves; every request asks for it.
        scores: add per-policy confidence scores from token log-probabilities (backends
            with `label_probs` only; see moderation.scoring).
    """

    def __init__(
        self,
        backend: Backend,
        policy: Policy,
        template: PromptTemplate,
        *,
        max_attempts: int = 2,
        grounded_evidence: bool = True,
        adapter: Adapter | None = None,
        scores: bool = True,
    ):
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        self.backend = backend
        self.policy = policy
        self.template = template
        self.max_attempts = max_attempts
        self.grounded_evidence = grounded_evidence
        self.adapter = adapter
        self.scores = scores and hasattr(backend, "label_probs")

    def with_adapter(self, adapter: Adapter | None) -> Moderator:
        """The same moderator (backend, policy, prompt, settings) asking for another adapter."""
        return Moderator(self.backend, self.policy, self.template, max_attempts=self.max_attempts,
                         grounded_evidence=self.grounded_evidence, adapter=adapter, scores=self.scores)

    @property
    def adapter_name(self) -> str | None:
        return self.adapter.name if self.adapter else None

    def provenance(self) -> dict[str, Any]:
        return {
            "model": self.backend.model_id,
            "model_sha": self.backend.model_sha,
            "adapter": self.adapter_name,
            "adapter_sha": self.adapter.sha if self.adapter else None,
            "backend": self.backend.name,
            "prompt_sha": self.template.sha,
            "policy_version": self.policy.version,
        }

    def request(self, item: Item, attempt: int, messages: list[dict[str, str]] | None = None) -> GenerationRequest:
        """The request for one attempt at an item (`messages`: its rendered prompt, if already made)."""
        schema = grounded_schema(item.text()) if self.grounded_evidence else verdict_schema()
        retry = attempt > 1
        return GenerationRequest(
            messages=messages or self.template.messages(item, self.policy),
            schema=schema,
            temperature=RETRY_TEMPERATURE if retry else 0.0,
            seed=attempt if retry else None,
            adapter=self.adapter_name,
        )

    def moderate(self, items: list[Item]) -> list[Outcome]:
        """Moderate a batch; every item gets an Outcome, in order."""
        outcomes = [Outcome() for _ in items]
        messages = [self.template.messages(item, self.policy) for item in items]  # once per item, not per attempt
        todo = list(range(len(items)))
        for attempt in range(1, self.max_attempts + 1):
            if not todo:
                break
            started = time.perf_counter()
            generations = self.backend.generate([self.request(items[i], attempt, messages[i]) for i in todo])
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            failed = []
            for i, generation in zip(todo, generations):
                outcome = outcomes[i]
                outcome.attempts = attempt
                outcome.latency_ms += elapsed_ms
                outcome.prompt_tokens += generation.prompt_tokens
                outcome.completion_tokens += generation.completion_tokens
                outcome.cached_tokens += generation.cached_tokens
                if generation.error is not None:  # the same request would fail again: no retry
                    outcome.error, outcome.raw = generation.error, None
                    continue
                try:
                    outcome.verdict = parse_verdict(generation.text, items[i].text())
                    outcome.error = outcome.raw = None
                except VerdictError as exc:
                    outcome.error, outcome.raw = str(exc), generation.text
                    failed.append(i)
            todo = failed
        if self.scores:
            self._score(messages, outcomes)
        return outcomes

    def _score(self, all_messages: list[list[dict[str, str]]], outcomes: list[Outcome]) -> None:
        """Attach scores to the items that got a verdict (two engine steps per item, prefix-cached)."""
        done = [i for i, o in enumerate(outcomes) if o.verdict is not None]
        if not done:
            return
        messages = [all_messages[i] for i in done]
        decisions = self.backend.label_probs(decision_probes(messages, self.adapter_name))
        verdicts = [outcomes[i].verdict for i in done]
        policies = self.backend.label_probs(policy_probes(messages, decisions, verdicts, self.adapter_name))
        for i, d, p in zip(done, decisions, policies):
            outcomes[i].scores = combine(d, p)
