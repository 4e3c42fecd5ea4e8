"""Item -> prompt -> backend -> validated verdict, with a bounded retry for invalid outputs.

With per-policy thresholds (the default model ships them) the verdict follows the calibrated
scores ("score first"): every item is scored first (by the model's policy heads where it ships them,
moderation.heads, else by two one-token probes, moderation.scoring); an item whose policy
scores are all below their thresholds gets an `allow` verdict built from the scores, with no
generation; a flagged item's decision (the likeliest non-allow one) and violations (its flagged
policies, highest score first, at most 3) are fixed, and each decided policy's evidence is the clause
that most raises its score (moderation.explain, occlusion through the same scorer). The rationale is
then built from facts (`rationale="built"`, the default: moderation.rationale), with no generation at
all; or (`rationale="llm"`) the engine writes it under a schema narrowed to that outcome, and a
written rationale that names a policy or fact the verdict and item do not hold is replaced by the
built one. Each flagged record's scores carry an `explanation`: the thresholds its policies reached,
their evidence's attribution, and how its rationale was made (built, generated or replaced).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from moderation.backends.base import Backend, GenerationRequest
from moderation.errors import ConfigError, VerdictError
from moderation.explain import Attributor, Evidence, lexical_screen
from moderation.items import Item
from moderation.machine import cpu_capability, resolve_dtype
from moderation.model import Adapter
from moderation.policy import Policy
from moderation.prompts import PromptTemplate
from moderation.rationale import RATIONALE_MODES, built_rationale, invented
from moderation.schema import (
    DECISIONS,
    RATIONALE_MAX_CHARS,
    decided_schema,
    evidence_candidates,
    grounded_schema,
    parse_verdict,
    quotable,
    rationale_budget,
)
from moderation.scoring import NON_ALLOW, combine, decision_probes, policy_probes

RETRY_TEMPERATURE = 0.7
MAX_VIOLATIONS = 3  # the verdict schema's maxItems
ALLOW_RATIONALE = "No policy score reached its threshold."


def check_taxonomy(policy: Policy, *, adapter: Adapter | None = None, thresholds: dict[str, float] | None = None,
                   scorer=None) -> None:
    """What a moderator is given besides its policy must be made for the policy's taxonomy: an adapter whose
    moderation.json names the taxonomy it was trained for, thresholds, and a scorer's policies.

    Raises:
        ConfigError: one was made for other policies; the message names both.
    """
    if adapter is not None and adapter.policies and adapter.policies != policy.ids:
        raise ConfigError(f"adapter {adapter.name} ({adapter.path}) was trained for another taxonomy, policies "
                          f"{list(adapter.policies)}; the policy file is {policy.describe()}")
    foreign = sorted(set(thresholds or {}) - set(policy.ids))
    if foreign:
        raise ConfigError(f"thresholds for {foreign}, which are not policies of {policy.describe()}")
    if scorer is not None and tuple(getattr(scorer, "policies", policy.ids)) != policy.ids:
        raise ConfigError(f"the scorer scores policies {list(scorer.policies)}, not those of {policy.describe()}")


def thresholds_sha(thresholds: dict[str, float]) -> str:
    """The hash of a set of thresholds that a run's provenance records (`thresholds_sha`)."""
    return hashlib.sha256(json.dumps(thresholds, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Decided:
    """The outcome fixed by an item's scores before any generation."""

    decision: str
    policies: tuple[str, ...]  # empty: allow


def decide(scores: dict[str, Any], thresholds: dict[str, float], policy: Policy | None = None) -> Decided:
    """Flagged policies (score >= threshold), highest first, and the decision: the likeliest
    non-allow one where the scores have decision probabilities (token probes), else the strongest
    default action of the flagged policies (policy heads). A policy the scores lack scores 0.0."""
    score = {p: scores["policies"].get(p, 0.0) for p in thresholds}
    flagged = sorted((p for p, t in thresholds.items() if score[p] >= t), key=lambda p: -score[p])
    if not flagged:
        return Decided("allow", ())
    flagged = flagged[:MAX_VIOLATIONS]
    if scores.get("decisions") or policy is None:
        decision = max(NON_ALLOW, key=lambda d: scores.get("decisions", {}).get(d, 0.0))
    else:
        decision = max((policy.entry(p).default_action for p in flagged), key=DECISIONS.index)
    return Decided(decision, tuple(flagged))


def settle(verdict: dict[str, Any], decided: Decided, policy: Policy, item_text: str,
           attributed: dict[str, str] | None = None) -> dict[str, Any]:
    """The generated verdict made to agree with the decided outcome: its decision, exactly its
    policies (each with the policy's severity), and for each its `attributed` quote where there is
    one, else a quote the model gave (for that policy if it named it, else its first quote, else
    the item's first quotable clause)."""
    quotes = {v["policy"]: v["evidence"] for v in verdict.get("violations", [])}
    quotes.update(attributed or {})
    fallback = next(iter(quotes.values()), None) or next(iter(evidence_candidates(item_text)), quotable(item_text))
    violations = [{"policy": p, "severity": policy.entry(p).severity, "evidence": quotes.get(p, fallback)}
                  for p in decided.policies]
    return {"decision": decided.decision, "violations": violations, "rationale": verdict.get("rationale", "")}


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
        thresholds: per-policy score thresholds; with scores on, verdicts follow them (score first).
        scorer: where scores come from instead of the backend's token probes: an object with
            `score(messages) -> [scores]` and a `sha` (moderation.heads.HeadScorer).
        rationale_chars: the rationale's length budget in characters (the schema allows up to
            RATIONALE_MAX_CHARS); generation stops sooner with a smaller one.
        rationale: "built" (a flagged item's rationale is built from facts, with no generation when
            scores decide) or "llm" (generated, then checked and replaced if it invents).
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
        thresholds: dict[str, float] | None = None,
        scorer=None,
        rationale_chars: int = RATIONALE_MAX_CHARS,
        rationale: str = "built",
    ):
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        check_taxonomy(policy, adapter=adapter, thresholds=thresholds, scorer=scorer)
        self.backend = backend
        self.policy = policy
        self.template = template
        self.max_attempts = max_attempts
        self.grounded_evidence = grounded_evidence
        self.adapter = adapter
        self.scorer = scorer if scores else None
        self.scores = scores and (scorer is not None or hasattr(backend, "label_probs"))
        self.thresholds = dict(thresholds) if thresholds else None
        if not 1 <= rationale_chars <= RATIONALE_MAX_CHARS:
            raise ConfigError(f"rationale_chars must be in 1..{RATIONALE_MAX_CHARS}, got {rationale_chars}")
        self.rationale_chars = rationale_chars
        if rationale not in RATIONALE_MODES:
            raise ConfigError(f"rationale must be one of {', '.join(RATIONALE_MODES)}, got {rationale!r}")
        self.rationale = rationale
        self.attributor = Attributor(self.score, lexical_screen(self.scorer, template, policy))

    @property
    def score_first(self) -> bool:
        """Whether verdicts follow the scores (thresholds given and the backend can score)."""
        return bool(self.thresholds) and self.scores

    def with_adapter(self, adapter: Adapter | None) -> Moderator:
        """The same moderator (backend, policy, prompt, settings) asking for another adapter."""
        return Moderator(self.backend, self.policy, self.template, max_attempts=self.max_attempts,
                         grounded_evidence=self.grounded_evidence, adapter=adapter, scores=self.scores,
                         thresholds=self.thresholds, scorer=self.scorer, rationale_chars=self.rationale_chars,
                         rationale=self.rationale)

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
            "policy_sha": self.policy.sha,
            "schema_id": self.policy.schema_id,
            "thresholds_sha": self.thresholds_sha,
            "scorer_sha": self.scorer.sha if self.scorer is not None else None,
            "decided_by": "scores" if self.score_first else "generation",
            # the number format of local weights (the scorer's and the engine's) and the CPU it was chosen for
            "dtype": resolve_dtype(getattr(getattr(self.backend, "config", None), "dtype", "auto")),
            "cpu_capability": cpu_capability(),
            "rationale_chars": self.rationale_chars,
            "rationale": self.rationale,
        }

    @property
    def thresholds_sha(self) -> str | None:
        return thresholds_sha(self.thresholds) if self.thresholds else None

    def request(self, item: Item, attempt: int, messages: list[dict[str, str]] | None = None,
                decided: Decided | None = None) -> GenerationRequest:
        """The request for one attempt at an item (`messages`: its rendered prompt, if already made;
        `decided`: the outcome its scores fixed, which narrows the schema)."""
        schema = None  # the grounded schema is built once: decided_schema narrows its own copy
        if decided is not None and decided.policies:
            schema = decided_schema(item.text(), decided.decision, list(decided.policies), self.policy.ids)
        if schema is None:
            schema = grounded_schema(item.text(), self.policy.ids) if self.grounded_evidence else self.policy.schema
        if self.rationale_chars < RATIONALE_MAX_CHARS:
            schema = rationale_budget(schema, self.rationale_chars)
        retry = attempt > 1
        return GenerationRequest(
            messages=messages or self.template.messages(item, self.policy),
            schema=schema,
            temperature=RETRY_TEMPERATURE if retry else 0.0,
            seed=attempt if retry else None,
            adapter=self.adapter_name,
        )

    def moderate(self, items: list[Item], progress=None) -> list[Outcome]:
        """Moderate a batch; every item gets an Outcome, in order. `progress`: an object with
        `update(n)` (a tqdm bar), advanced as items are scored, so a long batch shows it is moving."""
        outcomes = [Outcome() for _ in items]
        messages = [self.template.messages(item, self.policy) for item in items]  # once per item, not per attempt
        evidence: list[dict[str, Evidence]] = [{} for _ in items]
        if self.score_first:
            decided = self._score_first(messages, outcomes, progress)
            todo = [i for i, d in enumerate(decided) if d.policies]
            evidence = self._attribute(items, outcomes, decided)
            if self.rationale == "built":  # the verdict is whole without the engine
                for i in todo:
                    outcomes[i].verdict = self._built_verdict(items[i], decided[i], evidence[i])
                todo = []
        else:
            decided, todo = [None] * len(items), list(range(len(items)))
        self._generate(items, messages, outcomes, decided, todo, evidence)
        if self.scores and not self.score_first:
            self._score(messages, outcomes)
        for i in range(len(items)):
            self._explain(items[i], outcomes[i], decided[i], evidence[i], generated=i in todo)
        return outcomes

    def score(self, items: list[Item]) -> list[dict[str, Any]]:
        """Only the scores of a batch (policy heads or two one-token probes per item, no generation): what score
        first decides on, for measuring and choosing thresholds."""
        return self._probe([self.template.messages(item, self.policy) for item in items])

    def _probe(self, messages: list[list[dict[str, str]]], progress=None) -> list[dict[str, Any]]:
        if self.scorer is not None:
            return self.scorer.score(messages, progress)
        decisions = self.backend.label_probs(decision_probes(messages, self.adapter_name))
        policies = self.backend.label_probs(policy_probes(messages, decisions, [None] * len(messages), self.policy.ids,
                                                          self.adapter_name))
        if progress is not None:
            progress.update(len(messages))
        return [combine(d, p, self.policy.ids) for d, p in zip(decisions, policies)]

    def _score_first(self, messages: list[list[dict[str, str]]], outcomes: list[Outcome], progress=None) -> list[Decided]:
        """Score every item, give the unflagged ones their allow verdict, and decide the rest."""
        started = time.perf_counter()
        scores = self._probe(messages, progress)
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        decided = []
        for outcome, item_scores in zip(outcomes, scores):
            outcome.scores = item_scores
            outcome.latency_ms += elapsed_ms
            decided.append(decide(outcome.scores, self.thresholds, self.policy))
            if not decided[-1].policies:
                outcome.verdict = {"decision": "allow", "violations": [], "rationale": ALLOW_RATIONALE}
        return decided

    def _attribute(self, items: list[Item], outcomes: list[Outcome], decided: list[Decided]) -> list[dict[str, Evidence]]:
        """Each flagged item's evidence per decided policy (moderation.explain); its time counts in their latency."""
        started = time.perf_counter()
        evidence = self.attributor.evidence(items, [o.scores for o in outcomes], [d.policies for d in decided])
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        for outcome, found in zip(outcomes, evidence):
            outcome.latency_ms += elapsed_ms if found else 0
        return evidence

    def _built_verdict(self, item: Item, decided: Decided, evidence: dict[str, Evidence]) -> dict[str, Any]:
        """A flagged item's verdict with no generation: decided outcome, attributed evidence, built rationale."""
        quotes = {p: e.quote for p, e in evidence.items()}
        violations = [{"policy": p, "severity": self.policy.entry(p).severity, "evidence": quotes[p]} for p in decided.policies]
        rationale = built_rationale(self.policy, decided.decision, decided.policies, quotes, item, self.rationale_chars)
        verdict = {"decision": decided.decision, "violations": violations, "rationale": rationale}
        return parse_verdict(json.dumps(verdict), item.text(), self.policy.ids)  # the same checks as a generated one

    def _explain(self, item: Item, outcome: Outcome, decided: Decided | None, evidence: dict[str, Evidence],
                 generated: bool) -> None:
        """Settle a flagged verdict's rationale (built, or a generated one checked and maybe replaced) and record
        how, with the thresholds and attributions behind it, as its scores' `explanation`."""
        verdict = outcome.verdict
        if verdict is None or not verdict["violations"]:
            return
        how, why = "built", None
        if generated and self.rationale == "llm":
            why = invented(verdict["rationale"], verdict, self.policy, item)
            how = "replaced" if why else "generated"
        if how != "generated" and generated:
            policies = tuple(v["policy"] for v in verdict["violations"])
            quotes = {v["policy"]: v["evidence"] for v in verdict["violations"]}
            verdict["rationale"] = built_rationale(self.policy, verdict["decision"], policies, quotes, item,
                                                   self.rationale_chars)
        if outcome.scores is None:
            return
        explanation: dict[str, Any] = {"rationale": how}
        if why:
            explanation["replaced_because"] = why
        if decided is not None and self.thresholds:
            explanation["thresholds"] = {p: self.thresholds[p] for p in decided.policies}
        if evidence:
            explanation["attribution"] = {p: round(e.drop, 5) for p, e in evidence.items()}
        outcome.scores["explanation"] = explanation

    def _generate(self, items: list[Item], messages, outcomes: list[Outcome], decided: list, todo: list[int],
                  evidence: list[dict[str, Evidence]]) -> None:
        """Generate verdicts for the items in `todo`, retrying invalid outputs; a decided item's evidence is its
        attributed one."""
        for attempt in range(1, self.max_attempts + 1):
            if not todo:
                break
            started = time.perf_counter()
            generations = self.backend.generate([self.request(items[i], attempt, messages[i], decided[i]) for i in todo])
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
                    verdict = parse_verdict(generation.text, items[i].text(), self.policy.ids)
                    if decided[i] is not None:
                        quotes = {p: e.quote for p, e in evidence[i].items()}
                        verdict = parse_verdict(json.dumps(settle(verdict, decided[i], self.policy, items[i].text(), quotes)),
                                                items[i].text(), self.policy.ids)
                    outcome.verdict = verdict
                    outcome.error = outcome.raw = None
                except VerdictError as exc:
                    outcome.error, outcome.raw = str(exc), generation.text
                    failed.append(i)
            todo = failed

    def _score(self, all_messages: list[list[dict[str, str]]], outcomes: list[Outcome]) -> None:
        """Attach scores to the items that got a verdict (two engine steps per item, prefix-cached)."""
        done = [i for i, o in enumerate(outcomes) if o.verdict is not None]
        if not done:
            return
        messages = [all_messages[i] for i in done]
        if self.scorer is not None:
            for i, scores in zip(done, self.scorer.score(messages)):
                outcomes[i].scores = scores
            return
        decisions = self.backend.label_probs(decision_probes(messages, self.adapter_name))
        verdicts = [outcomes[i].verdict for i in done]
        policies = self.backend.label_probs(policy_probes(messages, decisions, verdicts, self.policy.ids, self.adapter_name))
        for i, d, p in zip(done, decisions, policies):
            outcomes[i].scores = combine(d, p, self.policy.ids)
