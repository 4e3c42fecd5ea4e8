"""Evaluation reports: a Markdown table, PNG plots and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from moderation.evaluate import SystemResult
from moderation.schema import DECISIONS, POLICY_IDS

MAIN_COLUMNS = [
    ("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("decision_accuracy", "decision acc."),
    ("clean_fpr", "FPR on clean"), ("tpr_at_5pct_fpr", "TPR@5%FPR"), ("tpr_at_1pct_fpr", "TPR@1%FPR"),
    ("macro_auprc", "macro AUPRC"), ("macro_roc_auc", "macro ROC-AUC"), ("ece", "ECE"), ("schema_valid_rate", "valid"),
]


def fmt(result: SystemResult, key: str) -> str:
    value = result.metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    low_high = result.intervals.get(key)
    return f"{value:.3f}" + (f" [{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else "")


def by_set(results: list[SystemResult]) -> dict[str, list[SystemResult]]:
    groups: dict[str, list[SystemResult]] = defaultdict(list)
    for r in results:
        groups[r.set_name].append(r)
    return groups


def markdown(results: list[SystemResult], header: str = "") -> str:
    lines = [header] if header else []
    lines += ["Test splits; 95% bootstrap intervals in brackets. Thresholds were chosen on the dev split.", ""]
    for set_name, rs in by_set(results).items():
        lines += [f"### {set_name} (n = {rs[0].n})", "",
                  "| system | " + " | ".join(title for _, title in MAIN_COLUMNS) + " | items/s | p50 / p95 ms |",
                  "|---" * (len(MAIN_COLUMNS) + 3) + "|"]
        for r in rs:
            speed = f"{r.speed['items_per_s']:.1f}" if "items_per_s" in r.speed else "–"
            lat = f"{r.speed['latency_p50_ms']:.0f} / {r.speed['latency_p95_ms']:.0f}" if "latency_p50_ms" in r.speed else "–"
            lines.append(f"| {r.system} | " + " | ".join(fmt(r, k) for k, _ in MAIN_COLUMNS) + f" | {speed} | {lat} |")
        injection = [r for r in rs if "injection_success_rate" in r.metrics]
        if injection:
            lines += ["", "Prompt injection: share of injection items (all violating) that got no violation, "
                      "against the same share on violating items without adversarial tricks:", ""]
            lines += [f"- {r.system}: {r.metrics['injection_success_rate']:.1%} of {r.metrics['injection_items']} "
                      f"(plain violations missed: {r.metrics.get('plain_violation_miss_rate', float('nan')):.1%})" for r in injection]
        lines += ["", *per_policy_table(rs), ""]
    return "\n".join(lines)


def per_policy_table(rs: list[SystemResult]) -> list[str]:
    policies = [p for p in POLICY_IDS if any(f"{p}/f1" in r.metrics for r in rs)]
    if len(policies) < 2:
        return []
    lines = ["| policy | " + " | ".join(f"{r.system} P / R / F1" for r in rs) + " |", "|---" * (len(rs) + 1) + "|"]
    for p in policies:
        cells = []
        for r in rs:
            m = r.metrics
            cells.append(" / ".join("–" if math.isnan(m.get(f"{p}/{k}", math.nan)) else f"{m[f'{p}/{k}']:.2f}"
                                    for k in ("precision", "recall", "f1")))
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


def plot_all(results: list[SystemResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    for set_name, rs in by_set(results).items():
        paths.append(_plot_pr(set_name, rs, out_dir / f"pr_{set_name}.png"))
        if per_policy_table(rs):
            paths.append(_plot_f1_bars(set_name, rs, out_dir / f"f1_{set_name}.png"))
        if any("ece" in r.metrics for r in rs):
            paths.append(_plot_reliability(set_name, rs, out_dir / f"calibration_{set_name}.png"))
        for r in rs:
            if any(d is not None for d in r.labels.gold_decision):  # only sets that label decisions
                paths.append(_plot_confusion(r, out_dir / f"confusion_{set_name}_{r.system}.png"))
    return paths


def _plot_pr(set_name: str, rs: list[SystemResult], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rs:
        present = r.labels.gold.any(0)
        y, s = r.labels.gold[:, present].ravel(), r.labels.scores[:, present].ravel()
        if y.any():
            precision, recall, _ = precision_recall_curve(y, s)
            ax.plot(recall, precision, label=f"{r.system} (AUPRC {r.metrics.get('macro_auprc', float('nan')):.2f})")
    ax.set(xlabel="recall", ylabel="precision", title=f"{set_name}: micro PR curve", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_reliability(set_name: str, rs: list[SystemResult], path: Path) -> Path:
    """Reliability diagram: observed violation frequency against score, per system."""
    import matplotlib.pyplot as plt

    from moderation.metrics import reliability

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for r in rs:
        present, valid = r.labels.gold.any(0), r.labels.valid
        if "ece" in r.metrics:
            conf, freq, _ = reliability(r.labels.gold[valid][:, present], r.labels.scores[valid][:, present])
            ax.plot(conf, freq, marker="o", label=f"{r.system} (ECE {r.metrics['ece']:.3f})")
    ax.set(xlabel="score", ylabel="share that violates", title=f"{set_name}: calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_f1_bars(set_name: str, rs: list[SystemResult], path: Path) -> Path:
    import matplotlib.pyplot as plt

    policies = [p for p in POLICY_IDS if any(f"{p}/f1" in r.metrics for r in rs)]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(rs)
    for k, r in enumerate(rs):
        values = [np.nan_to_num(r.metrics.get(f"{p}/f1", 0.0)) for p in policies]
        ax.bar(np.arange(len(policies)) + k * width, values, width, label=r.system)
    ax.set_xticks(np.arange(len(policies)) + 0.4 - width / 2, policies, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="F1", ylim=(0, 1), title=f"{set_name}: F1 per policy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_confusion(r: SystemResult, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows, cols = list(DECISIONS), [*DECISIONS, "error"]
    matrix = np.zeros((len(rows), len(cols)), dtype=int)
    for gold, pred in zip(r.labels.gold_decision, r.labels.pred_decision):
        if gold is not None:
            matrix[rows.index(gold), cols.index(pred if pred is not None else "error")] += 1
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="predicted decision", ylabel="gold decision", title=f"{r.set_name}: {r.system} decisions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def html_page(markdown_text: str, images: list[Path], title: str = "Moderation evaluation") -> str:
    """One self-contained page: tables rendered from the Markdown, plots inlined as data URIs."""
    body = []
    table: list[str] = []
    for line in markdown_text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|- "):
                cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode()
        body.append(f'<figure><img alt="{html.escape(image.stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(image.stem)}</figcaption></figure>')
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}figure{display:inline-block;margin:8px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def splice_markdown(path: Path, block: str, start: str, end: str) -> None:
    """Put a generated block (which begins with `start` and ends with `end`) into a Markdown file
    in place of the text between those markers, or at its end when they are not there yet."""
    text = path.read_text() if path.is_file() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
