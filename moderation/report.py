"""Evaluation reports in Markdown: per set, the main table, per-policy scores and the breakdown by
language, kind and region. Rates carry their counts (2/15), undefined values read "n/a" (never 0).
The HTML page is moderation.report_html, the plots moderation.report_plots."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from moderation.evaluate import SystemResult
from moderation.report_plots import policies_shown

MAIN_COLUMNS = [
    ("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("decision_accuracy", "decision acc."),
    ("clean_fpr", "FPR on clean"), ("tpr_at_5pct_fpr", "TPR@5%FPR"), ("tpr_at_1pct_fpr", "TPR@1%FPR"),
    ("macro_auprc", "macro AUPRC"), ("macro_roc_auc", "macro ROC-AUC"), ("ece", "ECE"), ("schema_valid_rate", "valid"),
]
BREAKDOWN_COLUMNS = [("macro_f1", "macro-F1"), ("violation_recall", "recall"), ("clean_fpr", "FPR on clean")]
READING = ("Test splits; 95% bootstrap intervals in brackets; thresholds were chosen on the dev split. "
           "Rates show their counts (flagged/clean items). n/a = undefined (for F1: the policy has no gold and no "
           "predicted item; for a rate: no item to take it over), which is not the same as 0.")


def number(value: float | None, digits: int = 3) -> str:
    """A metric as text, or n/a where it is undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def counts(r: SystemResult) -> dict[str, tuple[int, int]]:
    """(numerator, denominator) of the rates in the main table, from the result's labels."""
    labels = r.labels
    clean = ~labels.gold.any(1)
    decided = np.array([d is not None for d in labels.gold_decision], dtype=bool)
    out = {"schema_valid_rate": (int(labels.valid.sum()), len(labels))}
    if clean.any():
        out["clean_fpr"] = (int(labels.pred[clean].any(1).sum()), int(clean.sum()))
    if decided.any():
        right = labels.gold_decision[decided] == labels.pred_decision[decided]
        out["decision_accuracy"] = (int(right.sum()), int(decided.sum()))
    return out


def cell(r: SystemResult, key: str, with_interval: bool = True) -> str:
    text = number(r.metrics.get(key))
    low_high = r.intervals.get(key)
    if with_interval and low_high and text != "n/a":
        text += f" [{low_high[0]:.2f}, {low_high[1]:.2f}]"
    count = counts(r).get(key)
    if count is not None and text != "n/a":
        text += " ({}/{})".format(*count)
    return text


def by_set(results: list[SystemResult]) -> dict[str, list[SystemResult]]:
    groups: dict[str, list[SystemResult]] = defaultdict(list)
    for r in results:
        groups[r.set_name].append(r)
    return groups


def set_line(r: SystemResult) -> str:
    """The set's counts: items, violating, clean, with gold decisions."""
    gold = r.labels.gold.any(1)
    decided = sum(d is not None for d in r.labels.gold_decision)
    return (f"{r.n} test items: {int(gold.sum())} violating, {int((~gold).sum())} clean"
            + (f"; {decided} with a gold decision." if decided else "; no gold decisions."))


def markdown(results: list[SystemResult], header: str = "") -> str:
    lines = [header] if header else []
    lines += [READING, ""]
    for set_name, rs in by_set(results).items():
        lines += [f"### {set_name} (n = {rs[0].n})", "", set_line(rs[0]), "", *main_table(rs), ""]
        lines += injection_lines(rs)
        lines += faithfulness_lines(rs)
        lines += [*per_policy_table(rs), ""]
        for dimension in rs[0].breakdown:
            lines += [f"#### {set_name} by {dimension}", "", *breakdown_table(rs, dimension), ""]
    return "\n".join(lines)


def main_table(rs: list[SystemResult]) -> list[str]:
    lines = ["| system | " + " | ".join(title for _, title in MAIN_COLUMNS) + " | items/s | p50 / p95 ms |",
             "|---" * (len(MAIN_COLUMNS) + 3) + "|"]
    for r in rs:
        lines.append(f"| {r.system} | " + " | ".join(cell(r, k) for k, _ in MAIN_COLUMNS) + f" | {speed_text(r)} | {latency_text(r)} |")
    return lines


def speed_text(r: SystemResult) -> str:
    return f"{r.speed['items_per_s']:.1f}" if "items_per_s" in r.speed else "–"


def latency_text(r: SystemResult) -> str:
    return f"{r.speed['latency_p50_ms']:.0f} / {r.speed['latency_p95_ms']:.0f}" if "latency_p50_ms" in r.speed else "–"


def injection_lines(rs: list[SystemResult]) -> list[str]:
    injection = [r for r in rs if "injection_success_rate" in r.metrics]
    if not injection:
        return []
    lines = ["Prompt injection: share of injection items (all violating) that got no violation, "
             "against the same share on violating items without adversarial tricks:", ""]
    lines += [f"- {r.system}: {r.metrics['injection_success_rate']:.1%} of {r.metrics['injection_items']} "
              f"(plain violations missed: {r.metrics.get('plain_violation_miss_rate', float('nan')):.1%})" for r in injection]
    return [*lines, ""]


FAITHFULNESS = [
    ("evidence_top_clause", "evidence in the clause with the largest attribution (re-attributed through the scorer)"),
    ("rationale_decided_only", "rationale names only decided policies"),
    ("rationale_replaced", "generated rationales replaced by the check (--rationale llm)"),
    ("evidence_gold_overlap", "evidence overlaps the gold span (right (item, policy) pairs)"),
]


def faithfulness_lines(rs: list[SystemResult]) -> list[str]:
    """The explanation checks of the systems that have them (moderation.evaluate.faithfulness), with counts."""
    lines = []
    for r in rs:
        shown = [(key, text) for key, text in FAITHFULNESS if f"faithfulness_{key}" in r.metrics]
        if shown:
            lines += [f"Explanations of {r.system}'s flagged verdicts:", ""]
            for key, text in shown:
                value, n = r.metrics[f"faithfulness_{key}"], int(r.metrics[f"faithfulness_{key}_n"])
                lines.append(f"- {text}: {value:.2f} ({round(value * n)}/{n})")
            lines.append("")
    return lines


def per_policy_table(rs: list[SystemResult]) -> list[str]:
    policies = policies_shown(rs)
    if len(policies) < 2:
        return []
    gold = rs[0].labels.gold.sum(0)
    lines = ["| policy | positives | " + " | ".join(f"{r.system} P / R / F1" for r in rs) + " |", "|---" * (len(rs) + 2) + "|"]
    for p in policies:
        cells = [" / ".join(number(r.metrics.get(f"{p}/{k}", math.nan), 2) for k in ("precision", "recall", "f1"))
                 for r in rs]
        lines.append(f"| {p} | {int(gold[rs[0].labels.policies.index(p)])} | " + " | ".join(cells) + " |")
    return lines


def breakdown_table(rs: list[SystemResult], dimension: str) -> list[str]:
    """One row per group (language, kind or region): its counts, then per system macro-F1, the
    share of violating items flagged, and the share of clean items flagged."""
    groups = rs[0].breakdown[dimension]
    head = "| " + dimension + " | n | violating | " + " | ".join(f"{r.system} {title}" for r in rs for _, title in BREAKDOWN_COLUMNS) + " |"
    lines = [head, "|---" * (3 + len(rs) * len(BREAKDOWN_COLUMNS)) + "|"]
    for group, figures in groups.items():
        cells = [number(r.breakdown[dimension].get(group, {}).get(k)) for r in rs for k, _ in BREAKDOWN_COLUMNS]
        lines.append(f"| {group} | {figures['n']} | {figures['violating']} | " + " | ".join(cells) + " |")
    return lines


def splice_markdown(path: Path, block: str, start: str, end: str) -> None:
    """Put a generated block (which begins with `start` and ends with `end`) into a Markdown file
    in place of the text between those markers, or at its end when they are not there yet."""
    text = path.read_text() if path.is_file() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
