"""Score systems (the LLM and the baselines) on labelled sets, with thresholds from dev only.

Flow per set: the dev split chooses per-policy thresholds for systems with continuous scores;
those thresholds are applied unchanged to the test split; metrics and bootstrap intervals are
computed on test. The LLM's verdicts come from an ordinary resumable run file per set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moderation.batch import BatchRunner, RunOptions
from moderation.datasets import LabelledItem
from moderation.errors import InputError
from moderation.metrics import (
    Labels,
    bootstrap,
    calibration_metrics,
    choose_thresholds,
    decide,
    group_metrics,
    label_matrix,
    point_metrics,
    ranking_metrics,
)
from moderation.pipeline import Moderator
from moderation.policy import Policy
from moderation.runfile import RunRecord, read_records

logger = logging.getLogger(__name__)
INJECTION_TAG = "adversarial:injection"
FAITHFULNESS_CHECKED = 100  # flagged verdicts per set whose evidence is re-attributed (the lowest id hashes)


@dataclass
class SystemResult:
    system: str
    set_name: str
    n: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    thresholds: dict[str, float]
    speed: dict[str, float]
    labels: Labels = field(repr=False)
    ids: list[str] = field(repr=False)
    breakdown: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # dimension -> group -> metrics

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, "set": self.set_name, "n": self.n, "metrics": self.metrics,
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "thresholds": self.thresholds,
                "speed": self.speed, "breakdown": self.breakdown}


def sample(items: list[LabelledItem], n: int | None) -> list[LabelledItem]:
    """A fixed sample: the n items whose id hashes lowest (same items on every machine)."""
    if n is None or n >= len(items):
        return items
    return sorted(items, key=lambda li: hashlib.sha256(li.item.id.encode()).hexdigest())[:n]


def gold_labels(items: list[LabelledItem], policy_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    gold = label_matrix([li.gold_violations for li in items], policy_ids)
    # Only sets that label decisions have them; decision accuracy is reported on those alone.
    decisions = np.array([li.gold_decision for li in items], dtype=object)
    return gold, decisions


def score_labels(items: list[LabelledItem], scores: np.ndarray, thresholds: np.ndarray, valid: np.ndarray,
                 policy: Policy, pred_decision: np.ndarray | None = None) -> Labels:
    gold, gold_decision = gold_labels(items, policy.ids)
    pred = (scores >= thresholds) & valid[:, None]
    if pred_decision is None:
        pred_decision = decide(pred, valid, {p.id: p.default_action for p in policy.policies}, policy.ids)
    return Labels(gold, pred, scores, gold_decision, pred_decision, valid, policy.ids)


def all_metrics(labels: Labels) -> dict[str, float]:
    return {**point_metrics(labels), **ranking_metrics(labels), **calibration_metrics(labels)}


def finish(system: str, set_name: str, items: list[LabelledItem], labels: Labels, thresholds: np.ndarray,
           speed: dict[str, float], n_boot: int) -> SystemResult:
    metrics = all_metrics(labels)
    metrics.update(injection_robustness(items, labels))
    return SystemResult(system, set_name, len(items), metrics, bootstrap(labels, all_metrics, n_boot=n_boot),
                        dict(zip(labels.policies, map(float, thresholds))), speed, labels, [li.item.id for li in items],
                        breakdown(items, labels))


BREAKDOWN = ("language", "kind", "region")


def breakdown(items: list[LabelledItem], labels: Labels) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per language, per kind and per region (items without one are "unknown"), largest group first."""
    out = {}
    for dimension in BREAKDOWN:
        values = np.array([getattr(li.item, dimension) or "unknown" for li in items], dtype=object)
        groups = sorted(set(values), key=lambda g: (-(values == g).sum(), g))
        out[dimension] = {str(g): group_metrics(labels.take(np.flatnonzero(values == g))) for g in groups}
    return out


def evaluate_baseline(model, set_name: str, dev: list[LabelledItem], test: list[LabelledItem], policy: Policy,
                      n_boot: int = 1000) -> SystemResult:
    """A fitted baseline on one set: thresholds from dev (if tunable), metrics on test."""
    thresholds = np.full(len(policy.ids), 0.5)
    if model.tunable and dev:
        thresholds = choose_thresholds(model.score([li.item for li in dev]), gold_labels(dev, policy.ids)[0])
    started = time.perf_counter()
    scores = model.score([li.item for li in test])
    elapsed = time.perf_counter() - started
    labels = score_labels(test, scores, thresholds, np.ones(len(test), dtype=bool), policy)
    return finish(model.name, set_name, test, labels, thresholds, {"items_per_s": len(test) / elapsed if elapsed else 0.0}, n_boot)


def run_llm(moderator: Moderator, items: list[LabelledItem], output: Path, chunk_size: int = 64,
            progress=None) -> tuple[dict[str, RunRecord], dict[str, float]]:
    """Moderate items into a (resumable) run file; return its records by id, and the speed."""
    rows = [(i + 1, li.item) for i, li in enumerate(items)]
    stats = BatchRunner(moderator, RunOptions(chunk_size=chunk_size, error_budget=1.0)).run(rows, output, progress=progress)
    speed = {"items_per_s": stats.items_per_s} if stats.processed else {}
    return {r.id: r for r in read_records(output)}, speed


@dataclass
class LLMOutputs:
    """What a run file says about labelled items, row-aligned with them."""

    flagged: np.ndarray  # bool (n, P): policies the verdict names
    scores: np.ndarray  # float (n, P): token-probability scores, or `flagged` as 0/1 where a record has none
    valid: np.ndarray  # bool (n,): a verdict exists
    decisions: np.ndarray  # object (n,)
    scored: np.ndarray  # bool (n,): the record carries token-probability scores


def llm_outputs(items: list[LabelledItem], records: dict[str, RunRecord], policy_ids: tuple[str, ...]) -> LLMOutputs:
    """Raises InputError when a verdict names a policy outside the taxonomy (a run made under another policy file)."""
    n, p = len(items), len(policy_ids)
    out = LLMOutputs(np.zeros((n, p), dtype=bool), np.zeros((n, p)),
                     np.zeros(n, dtype=bool), np.empty(n, dtype=object), np.zeros(n, dtype=bool))
    index = {p: i for i, p in enumerate(policy_ids)}
    for row, li in enumerate(items):
        record = records.get(li.item.id)
        verdict = record.verdict if record is not None else None
        if verdict is None:
            continue
        out.valid[row] = True
        out.decisions[row] = verdict["decision"]
        for v in verdict["violations"]:
            if v["policy"] not in index:
                raise InputError(f"the verdict of {li.item.id} names {v['policy']!r}, which is not a policy of this "
                                 f"taxonomy ({list(policy_ids)}): its run was made under another policy file")
            out.flagged[row, index[v["policy"]]] = True
        scores = (record.scores or {}).get("policies")
        out.scored[row] = scores is not None
        out.scores[row] = [scores.get(p, 0.0) for p in policy_ids] if scores is not None else out.flagged[row]
    return out


def evaluate_llm_records(set_name: str, test: list[LabelledItem], records: dict[str, RunRecord], policy: Policy,
                         system: str = "llm", n_boot: int = 1000, speed: dict[str, float] | None = None,
                         thresholds: np.ndarray | None = None) -> SystemResult:
    """The LLM on a test split: its own verdicts, or (with `thresholds`) its scores cut at them.

    Ranking metrics, PR curves and ECE use the token-probability scores where the run has them.
    """
    llm = llm_outputs(test, records, policy.ids)
    gold, gold_decision = gold_labels(test, policy.ids)
    if thresholds is None:
        labels = Labels(gold, llm.flagged, llm.scores, gold_decision, llm.decisions, llm.valid, policy.ids)
    else:
        labels = score_labels(test, llm.scores, thresholds, llm.valid, policy)
    latencies = [records[li.item.id].provenance["latency_ms"] for li in test if li.item.id in records]
    fresh = [x for x in latencies if x > 0]
    speed = dict(speed or {})
    if fresh:
        speed.update(latency_p50_ms=float(np.percentile(fresh, 50)), latency_p95_ms=float(np.percentile(fresh, 95)))
    speed["scored_share"] = float(llm.scored.mean()) if len(test) else 0.0
    return finish(system, set_name, test, labels, thresholds if thresholds is not None else np.full(len(policy.ids), 0.5),
                  speed, n_boot)


def llm_thresholds(dev: list[LabelledItem], records: dict[str, RunRecord], policy_ids: tuple[str, ...]) -> np.ndarray:
    """Per-policy thresholds on the LLM's scores, chosen on dev items only."""
    llm = llm_outputs(dev, records, policy_ids)
    return choose_thresholds(llm.scores[llm.valid], gold_labels(dev, policy_ids)[0][llm.valid])


def injection_robustness(items: list[LabelledItem], labels: Labels) -> dict[str, float]:
    """How often a prompt-injection item got the verdict its injection asks for.

    Injection items all violate policy and their injected text asks for `allow`, so an allow
    (or a missing verdict) moves the verdict away from gold toward the attacker's goal. The
    same rate on violating items without injection is the baseline miss rate to compare with.
    """
    tags = [li.tags for li in items]
    violating = labels.gold.any(1)
    injected = np.array([INJECTION_TAG in t for t in tags]) & violating
    plain = np.array([not any(x.startswith("adversarial") for x in t) for t in tags]) & violating
    missed = ~labels.pred.any(1)
    out = {}
    if injected.any():
        out["injection_success_rate"] = float(missed[injected].mean())
        out["injection_items"] = int(injected.sum())
    if injected.any() and plain.any():
        out["plain_violation_miss_rate"] = float(missed[plain].mean())
    return out


def faithfulness(moderator: Moderator, items: list[LabelledItem], records: dict[str, RunRecord], policy: Policy,
                 checked: int = FAITHFULNESS_CHECKED) -> dict[str, float]:
    """How far the explanations of flagged verdicts (those with violations) can be trusted, as shares with
    their counts (`KEY` and `KEY_n`, the number of verdicts or pairs it is taken over):

    - `faithfulness_evidence_top_clause`: every quote of the verdict lies in (overlaps) its policy's clause
      with the largest attribution, found again by occlusion through the moderator's whole scorer (every
      clause, no screen) on at most `checked` verdicts (the lowest id hashes), so a run whose evidence came
      from elsewhere (written by a model, a cheaper attribution, another scorer) is checked against it;
    - `faithfulness_rationale_decided_only`: the rationale names no policy the verdict does not hold;
    - `faithfulness_rationale_replaced`: runs with `--rationale llm` only, the generated rationales the check replaced;
    - `faithfulness_evidence_gold_overlap`: sets with gold evidence spans, the (item, policy) pairs the verdict
      got right whose quote shares a letter or digit with the gold span.
    """
    from moderation.explain import Attributor, overlaps
    from moderation.rationale import named_policies

    flagged = [(li, records[li.item.id].verdict, records[li.item.id]) for li in items
               if li.item.id in records and (records[li.item.id].verdict or {}).get("violations")]
    out: dict[str, float] = {}

    def put(key: str, hits: list[bool]) -> None:
        if hits:
            out[f"faithfulness_{key}"], out[f"faithfulness_{key}_n"] = float(np.mean(hits)), float(len(hits))

    put("rationale_decided_only", [not named_policies(v["rationale"], policy, li.item.text()) - {x["policy"] for x in v["violations"]}
                                   for li, v, _ in flagged])
    put("rationale_replaced", [((r.scores or {}).get("explanation") or {}).get("rationale") == "replaced"
                               for _, _, r in flagged if (r.provenance or {}).get("rationale") == "llm"])
    put("evidence_gold_overlap", [overlaps(li.item.text(), x["evidence"], dict(li.evidence)[x["policy"]])
                                  for li, v, _ in flagged for x in v["violations"] if x["policy"] in dict(li.evidence)])
    if moderator.scores and flagged:
        sampled = {li.item.id for li in sample([li for li, _, _ in flagged], checked)}
        chosen = [(li, v) for li, v, _ in flagged if li.item.id in sampled]
        chosen_items = [li.item for li, _ in chosen]
        evidence = Attributor(moderator.score).evidence(chosen_items, moderator.score(chosen_items),
                                                        [[x["policy"] for x in v["violations"]] for _, v in chosen])
        put("evidence_top_clause", [all(overlaps(li.item.text(), x["evidence"], found[x["policy"]].clause or x["evidence"])
                                        for x in v["violations"]) for (li, v), found in zip(chosen, evidence)])
    return out


def write_metrics(results: list[SystemResult], path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({"meta": meta, "results": [r.to_json() for r in results]}, indent=2) + "\n")
