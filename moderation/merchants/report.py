"""Merchant reports as JSON and Markdown with a PNG chart: riskiest merchants, transitions, volume, fairness."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from moderation.merchants.enforcement import Enforcement


def build_report(config: Enforcement, health: list[dict[str, Any]], transitions: list[dict[str, Any]],
                 appeals: list[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """The report's data: tiers, the riskiest merchants, transitions, enforcement volume, appeals."""
    order = {t: i for i, t in enumerate(config.tier_names)}
    riskiest = sorted(health, key=lambda h: (-order[h["tier"]], -h["points"], h["merchant"]))[:top]
    counted = [v for h in health for v in h["violations"] if v["counts"]]
    return {
        "enforcement_version": config.version,
        "as_of": health[0]["as_of"] if health else None,
        "merchants": len(health),
        "tiers": {t: sum(1 for h in health if h["tier"] == t) for t in config.tier_names},
        "riskiest": [{k: h[k] for k in ("merchant", "tier", "points", "points_tier", "strikes", "items", "region",
                                         "language", "pending_review")}
                     | {"escalations": [e["rule"] for e in h["escalations"]]} for h in riskiest],
        # A new merchant entering the best tier is not news; every other change is listed.
        "transitions": [t for t in transitions if t["from_tier"] is not None or t["to_tier"] != config.tier_names[0]],
        "strikes_by_policy": dict(Counter(v["policy"] for v in counted).most_common()),
        "strikes_by_region": dict(Counter(v["region"] or "unknown" for v in counted).most_common()),
        "strikes_by_policy_region": {f"{p}|{r}": n for (p, r), n in
                                     sorted(Counter((v["policy"], v["region"] or "unknown") for v in counted).items())},
        "appeals": dict(Counter(a["status"] for a in appeals)),
    }


def report_chart(report: dict[str, Any], path: Path) -> Path:
    """Merchants per tier, and counted strikes by policy stacked by region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    tiers = report["tiers"]
    ax1.bar(list(tiers), list(tiers.values()), color=["#4c9f70", "#e0b33a", "#e07b39", "#c0392b"][: len(tiers)])
    ax1.set_title("Merchants per tier")
    policies = list(report["strikes_by_policy"])
    regions = list(report["strikes_by_region"])
    bottom = [0] * len(policies)
    for region in regions:
        heights = [report["strikes_by_policy_region"].get(f"{p}|{region}", 0) for p in policies]
        ax2.bar(policies, heights, bottom=bottom, label=region)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax2.set_title("Counted strikes by policy and region")
    ax2.tick_params(axis="x", rotation=35)
    if regions:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report_markdown(report: dict[str, Any], chart: str | None) -> str:
    lines = [f"# Merchant health report (as of {report['as_of']})", "",
             f"Enforcement config {report['enforcement_version']}; {report['merchants']} merchants: "
             + ", ".join(f"{n} {t}" for t, n in report["tiers"].items()) + ".", ""]
    if chart:
        lines += [f"![merchant health]({chart})", ""]
    lines += ["## Riskiest merchants", "", "| merchant | tier | points | strikes | items | region | language | escalations |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {_cell(r['merchant'])} | {r['tier']}{' (pending review)' if r['pending_review'] else ''} | "
              f"{r['points']:.2f} | {r['strikes']} | {r['items']} | {r['region']} | {r['language']} | "
              f"{', '.join(r['escalations']) or '-'} |" for r in report["riskiest"]]
    lines += ["", "## Tier transitions", "", "| merchant | from | to | points | reason | at |", "|---|---|---|---|---|---|"]
    lines += [f"| {_cell(t['merchant'])} | {t['from_tier'] or '(new)'} | {t['to_tier']} | {t['points']:.2f} | "
              f"{t['reason']} | {t['as_of'][:10]} |" for t in report["transitions"]]
    lines += ["", "## Enforcement volume", "", "| policy | counted strikes |", "|---|---|"]
    lines += [f"| {p} | {n} |" for p, n in report["strikes_by_policy"].items()]
    lines += ["", "| region | counted strikes |", "|---|---|"]
    lines += [f"| {r} | {n} |" for r, n in report["strikes_by_region"].items()]
    lines += ["", "Appeals: " + (", ".join(f"{n} {s}" for s, n in report["appeals"].items()) or "none") + "."]
    return "\n".join(lines) + "\n"


def fairness_chart(result: dict[str, Any], path: Path) -> Path:
    """Each table's group rates with their Wilson intervals; flagged groups in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["tables"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, name in zip(axes.flat, names):
        rows = [r for r in result["tables"][name] if r["n"]]
        x = range(len(rows))
        rates = [r["rate"] for r in rows]
        err = [[r["rate"] - r["ci"][0] for r in rows], [r["ci"][1] - r["rate"] for r in rows]]
        ax.bar(x, rates, yerr=err, capsize=3, color=["#c0392b" if r["flag"] else "#5b8db8" for r in rows])
        ax.set_xticks(list(x), [r["group"] for r in rows], rotation=30)
        ax.set_ylim(0, 1)
        ax.set_title(name.replace("_", " "))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fairness_markdown(result: dict[str, Any], chart: str | None, source: str) -> str:
    lines = ["# Enforcement fairness", "", source, "",
             f"Rates with Wilson 95% intervals; each group against all others by a one-sided two-proportion z-test, "
             f"Holm-adjusted per table, flagged when below {result['alpha']} (groups under {result['min_n']} trials "
             "are not tested).", ""]
    if chart:
        lines += [f"![fairness]({chart})", ""]
    for name, rows in result["tables"].items():
        lines += [f"## {name.replace('_', ' ')}", "", "| group | hits / trials | rate | 95% CI | rest | p (Holm) | flag |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['group']} | {r['k']} / {r['n']} | {_pct(r['rate'])} | {_pct(r['ci'][0])}-{_pct(r['ci'][1])} | "
                  f"{_pct(r['rest_rate'])} | {_p(r['p_holm'])} | "
                  f"{'**above the rest**' if r['flag'] else ''} |" for r in rows]
        lines.append("")
    flagged = result["flagged"]
    lines.append("Flagged: " + ("; ".join(f"{f['group']} in {f['table']}" for f in flagged) if flagged else "none") + ".")
    return "\n".join(lines) + "\n"


def write_outputs(stem: Path, data: dict[str, Any], markdown: str) -> list[Path]:
    """STEM.json and STEM.md (the chart is written beside them by the caller)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    md_path.write_text(markdown)
    return [json_path, md_path]


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")
