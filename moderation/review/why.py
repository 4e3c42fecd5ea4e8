"""Why a case check's item was flagged, as the check page shows it beside the item: for each policy of the
model's verdict, its title and definition (from the queue's taxonomy), its evidence (highlighted in place in the
item by the page), and its score against the threshold it reached (from the record's scores and their
`explanation`, moderation.pipeline), with how the rationale was made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moderation.review.verdicts import Taxonomy

RATIONALE_SOURCES = {"built": "built from the policy file and the evidence", "generated": "written by the model, checked",
                     "replaced": "the model's was replaced by the built one"}


@dataclass(frozen=True)
class Reason:
    """One flagged policy of a verdict, with what supports it."""

    policy: str
    title: str
    definition: str
    severity: str
    evidence: str
    score: float | None  # None: the record has no scores
    threshold: float | None  # None: the record does not say which threshold decided it
    drop: float | None = None  # how much the score falls with the quoted clause cut out (None: not recorded)

    @property
    def reached(self) -> bool | None:
        return None if self.score is None or self.threshold is None else self.score >= self.threshold


def reasons(verdict: dict[str, Any] | None, sample: dict[str, Any], taxonomy: Taxonomy) -> list[Reason]:
    """The reasons for each violation of a model verdict, in its order (none for an allow verdict or no verdict)."""
    scores = sample.get("scores") or {}
    policy_scores = scores.get("policies") or {}
    thresholds = (scores.get("explanation") or {}).get("thresholds") or {}
    drops = (scores.get("explanation") or {}).get("attribution") or {}
    titles = {pid: title for pid, title, _ in taxonomy.policies}
    out = []
    for v in (verdict or {}).get("violations", []):
        pid = v["policy"]
        score, threshold, drop = policy_scores.get(pid), thresholds.get(pid), drops.get(pid)
        out.append(Reason(pid, titles.get(pid, pid), taxonomy.definition(pid), v.get("severity", ""), v.get("evidence", ""),
                          *(None if x is None else float(x) for x in (score, threshold, drop))))
    return out


def rationale_source(sample: dict[str, Any]) -> str | None:
    """How the verdict's rationale was made, in words (None where the record does not say)."""
    explanation = (sample.get("scores") or {}).get("explanation") or {}
    text = RATIONALE_SOURCES.get(explanation.get("rationale"))
    if text and explanation.get("replaced_because"):
        text += f" ({explanation['replaced_because']})"
    return text
