"""Before/after macro-F1 table from two `moderation eval` metrics.json files.

    python finetune/compare_results.py runs/benchmark/metrics.json runs/eval-ft/metrics.json [llm@dev-thresholds]

Prints a Markdown table: per set, the zero-shot LLM, the TF-IDF baseline (from the first file)
and the fine-tuned LLM (from the second), each macro-F1 with its 95% bootstrap interval, and
whether the fine-tuned model beats both point estimates.
"""

from __future__ import annotations

import json
import math
import sys


def _by_set(path: str) -> dict[tuple[str, str], dict]:
    results = json.load(open(path))["results"]
    return {(r["set"], r["system"]): r for r in results}


def _cell(result: dict | None, metric: str = "macro_f1") -> tuple[str, float | None]:
    value = None if result is None else result["metrics"].get(metric)
    if value is None or math.isnan(value):  # e.g. xstest: no positives, so no macro-F1
        return "–", None
    value = result["metrics"][metric]
    low, high = result["intervals"].get(metric, (None, None))
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{value:.3f}{interval}", value


def table(before: str, after: str, system: str = "llm") -> str:
    """The Markdown comparison table; `system` picks the fine-tuned row (llm or llm@dev-thresholds)."""
    a, b = _by_set(before), _by_set(after)
    sets = list(dict.fromkeys(s for s, _ in b))
    lines = [f"| set | n | zero-shot LLM | TF-IDF | fine-tuned {system} | beats both |", "|---|---|---|---|---|---|"]
    for name in sets:
        zero, zv = _cell(a.get((name, "llm")))
        tfidf, tv = _cell(a.get((name, "tfidf")))
        tuned, fv = _cell(b.get((name, system)))
        beats = "–" if None in (zv, tv, fv) else ("yes" if fv > max(zv, tv) else "no")
        lines.append(f"| {name} | {b[(name, 'llm')]['n']} | {zero} | {tfidf} | {tuned} | {beats} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1], sys.argv[2], *sys.argv[3:4]))
