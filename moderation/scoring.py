"""Per-policy confidence from token log-probabilities, not from a number the model writes.

As Llama Guard does, a score is the model's own probability of its verdict tokens:

- P(violation) = 1 - P("allow") at the decision slot, after `{"decision":"`;
- P(policy p | violating) at the first policy slot, after
  `{"decision":"<d>","violations":[{"policy":"`, where d is the item's own non-allow decision
  (or the likeliest non-allow one when the verdict allows);
- the score of policy p is P(violation) x P(p | violating).

Probabilities are those of constrained decoding: at each slot the next-token distribution is
renormalised over the tokens that continue a valid label. A label of several tokens is scored
as a path; the engine is asked again only where labels share a prefix (a token trie), so for
most tokenizers one engine step per slot suffices. The pure part here takes three functions
from a backend (tokenize text, tokenize a chat prompt, next-token log-probs of chosen ids), so
it is tested without a model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moderation.schema import DECISIONS

if TYPE_CHECKING:
    from moderation.policy import Policy

DECISION_PREFIX = '{"decision":"'
NON_ALLOW = tuple(d for d in DECISIONS if d != "allow")
PROMPT_IDS_KEPT = 4096  # more than one engine call's items


def policy_prefix(decision: str) -> str:
    """The verdict text up to the first policy id, for a non-allow decision."""
    return f'{{"decision":"{decision}","violations":[{{"policy":"'


@dataclass(frozen=True)
class LabelProbe:
    """Which of `labels` comes next after the assistant has written `prefix`?"""

    messages: list[dict[str, str]]
    prefix: str
    labels: tuple[str, ...]
    adapter: str | None = None


# (prompt token ids, candidate next-token ids) -> {token id: log-prob}
NextLogprobs = Callable[[list[tuple[list[int], list[int]]], list[str | None]], list[dict[int, float]]]


@dataclass
class _Node:
    probe: int
    ids: list[int]
    seqs: dict[str, list[int]]
    depth: int
    mass: float


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


class TokenScorer:
    """Label probabilities from any engine that reports log-probs of chosen next tokens.

    Args:
        encode: text -> token ids, no special tokens added.
        chat_ids: chat messages -> token ids of the prompt with the generation prompt.
        next_logprobs: batched [(prompt ids, candidate ids)] and their adapters ->
            [{candidate id: log-prob}].
    """

    def __init__(self, encode: Callable[[str], list[int]], chat_ids: Callable[[list[dict]], list[int]],
                 next_logprobs: NextLogprobs):
        self.encode = encode
        self._chat_ids = chat_ids
        self._prompt_ids: OrderedDict[tuple, list[int]] = OrderedDict()
        self.next_logprobs = next_logprobs
        self._label_tokens: dict[tuple[str, tuple[str, ...]], tuple[list[int], dict[str, list[int]]]] = {}

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a chat prompt, remembered for recent prompts: an item's prompt is
        tokenized once for its length check and both of its probes."""
        key = tuple((m["role"], m["content"]) for m in messages)
        ids = self._prompt_ids.get(key)
        if ids is None:
            ids = self._prompt_ids[key] = self._chat_ids(messages)
            if len(self._prompt_ids) > PROMPT_IDS_KEPT:
                self._prompt_ids.popitem(last=False)
        return ids

    def label_tokens(self, prefix: str, labels: tuple[str, ...]) -> tuple[list[int], dict[str, list[int]]]:
        """(tokens shared by every completion, each label's remaining tokens incl. its closing quote).

        Each completion is tokenized whole, so merges across the prefix boundary are right.
        """
        key = (prefix, labels)
        if key not in self._label_tokens:
            full = {label: self.encode(prefix + label + '"') for label in labels}
            if len({tuple(s) for s in full.values()}) < len(labels):
                raise ValueError(f"two labels of {labels} tokenize the same")
            n = _common_prefix(list(full.values()))
            self._label_tokens[key] = (list(full[labels[0]][:n]), {k: v[n:] for k, v in full.items()})
        return self._label_tokens[key]

    def label_probs(self, probes: list[LabelProbe]) -> list[dict[str, float]]:
        """For each probe, a probability per label (summing to 1)."""
        results: list[dict[str, float]] = [{} for _ in probes]
        frontier = []
        for k, probe in enumerate(probes):
            if len(probe.labels) == 1:
                results[k] = {probe.labels[0]: 1.0}
                continue
            shared, seqs = self.label_tokens(probe.prefix, probe.labels)
            frontier.append(_Node(k, self.chat_ids(probe.messages) + shared, seqs, 0, 1.0))
        while frontier:
            frontier = self._step(frontier, probes, results)
        return results

    def _step(self, frontier: list[_Node], probes: list[LabelProbe], results: list[dict[str, float]]) -> list[_Node]:
        groups = [_group(node) for node in frontier]
        asks = [i for i, g in enumerate(groups) if len(g) > 1]  # one candidate: forced, nothing to ask
        answers = self.next_logprobs([(frontier[i].ids, sorted(groups[i])) for i in asks],
                                     [probes[frontier[i].probe].adapter for i in asks]) if asks else []
        logprobs = dict(zip(asks, answers))
        nxt = []
        for i, (node, group) in enumerate(zip(frontier, groups)):
            probs = _softmax({t: logprobs[i].get(t, -math.inf) for t in group}) if i in logprobs else {t: 1.0 for t in group}
            for token, labels in group.items():
                mass = node.mass * probs[token]
                if len(labels) == 1:
                    results[node.probe][labels[0]] = mass
                else:
                    nxt.append(_Node(node.probe, node.ids + [token], {la: node.seqs[la] for la in labels},
                                     node.depth + 1, mass))
        return nxt


def _group(node: _Node) -> dict[int, list[str]]:
    group: dict[int, list[str]] = {}
    for label, seq in node.seqs.items():
        group.setdefault(seq[node.depth], []).append(label)
    return group


def _softmax(logprobs: dict[int, float]) -> dict[int, float]:
    top = max(logprobs.values())
    if top == -math.inf:  # the engine reported none of them: no information, so uniform
        return {t: 1 / len(logprobs) for t in logprobs}
    weights = {t: math.exp(lp - top) for t, lp in logprobs.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def decision_probes(messages: list[list[dict]], adapter: str | None = None) -> list[LabelProbe]:
    return [LabelProbe(m, DECISION_PREFIX, DECISIONS, adapter) for m in messages]


def policy_probes(messages: list[list[dict]], decisions: list[dict[str, float]], verdicts: list[dict | None],
                  policy_ids: Sequence[str], adapter: str | None = None) -> list[LabelProbe]:
    """The first-policy probe per item over the taxonomy's ids, conditioned on the item's own (or likeliest)
    non-allow decision."""
    probes = []
    for m, probs, verdict in zip(messages, decisions, verdicts):
        decision = verdict["decision"] if verdict and verdict["decision"] != "allow" else max(NON_ALLOW, key=lambda d: probs.get(d, 0.0))
        probes.append(LabelProbe(m, policy_prefix(decision), tuple(policy_ids), adapter))
    return probes


def check_thresholds(thresholds: Any, where: str, policy: Policy) -> dict[str, float]:
    """{policy id: number in [0, 1]}, as floats, for the policies of `policy`'s taxonomy.

    Raises:
        ConfigError: not a mapping, a value out of range, or ids that `policy` does not define (a file
            made for another taxonomy: the message names both); named with `where`.
    """
    from moderation.errors import ConfigError

    if not isinstance(thresholds, dict):
        raise ConfigError(f"{where}: expected {{policy id: number in [0, 1]}}, got {type(thresholds).__name__}")
    foreign = sorted(k for k in thresholds if k not in policy.ids)
    if foreign:
        raise ConfigError(f"{where} was made for another taxonomy: it sets thresholds for {sorted(thresholds)}, "
                          f"and {foreign} are not policies of {policy.describe()}; choose thresholds for this "
                          "policy file (`moderation eval --llm-dev ... --write-thresholds`) or run without them")
    bad = {k: v for k, v in thresholds.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1}
    if bad:
        raise ConfigError(f"{where}: expected {{policy id: number in [0, 1]}}, bad entries {bad}")
    return {k: float(v) for k, v in thresholds.items()}


def load_thresholds(path: str | Path, policy: Policy, flag: str = "--thresholds") -> dict[str, float]:
    """A thresholds file ({policy id: number in [0, 1]}, as `moderation eval --llm-dev` writes), checked against
    the taxonomy of `policy`; the one reader of thresholds files for run, serve, eval, review and merchants.

    Raises:
        ConfigError: unreadable, not JSON, not {policy id: number in [0, 1]}, or for another taxonomy
            (named with `flag`).
    """
    import json

    from moderation.errors import ConfigError

    try:
        thresholds = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{flag} {path}: {exc}") from None
    return check_thresholds(thresholds, f"{flag} {path}", policy)


def combine(decision: dict[str, float], policy: dict[str, float], policy_ids: Sequence[str]) -> dict[str, Any]:
    """The `scores` field of an output record: one score per policy of the taxonomy."""
    violation = 1.0 - decision.get("allow", 0.0)
    return {
        "violation": round(violation, 5),
        "decisions": {d: round(p, 5) for d, p in decision.items()},
        "policies": {p: round(violation * policy.get(p, 0.0), 5) for p in policy_ids},
    }
