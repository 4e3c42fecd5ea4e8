"""The report of an assessed policy change (moderation.impact.assess): impact.json, impact.md, a self-contained
impact.html and its PNG plots, the proposed thresholds and the review sample.

The Markdown and the HTML are made from the same sections; the plots are drawn with matplotlib (imported where
it draws) and embedded in the HTML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moderation.impact import Assessment
from moderation.impact_measure import DIMENSIONS, DIRECTIONS, write_sample
from moderation.schema import DECISIONS

STATUS_TEXT = {
    "unmeasured": "**Status: unmeasured.** Part of this change has no case check behind it (see below): how good "
                  "it is is not known, so it is not known to be safe. Review the proposed sample first, then run "
                  "impact again with --db.",
    "thin": "**Status: thin.** Every part of the change has case checks behind it, but some rest on fewer than "
            "{min_checks}: read the intervals; the proposed sample adds checks.",
    "measured": "**Status: measured** on the case checks below. Measured is not safe: read the rates and intervals.",
    "no change": "**Status: no change.** No decision of these runs changes under the proposal.",
}


def write_report(assessment: Assessment, out_dir: str | Path, policy_path: str | None = None,
                 proposed_path: str | None = None) -> list[Path]:
    """Write OUT_DIR/impact.json, impact.md, impact.html (self-contained), the plots, thresholds.json (the
    proposed thresholds, for `moderation run --thresholds`) and the proposed review sample. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = assessment.result
    dumps = {str(s.run): str(s.dump) if s.dump else None for s in assessment.request.sources()}
    result["sample"] = write_sample(assessment.impacts, result["estimates"], out, assessment.settings, dumps,
                                    policy_path or assessment.request.policy,
                                    proposed_path or assessment.request.proposed_policy, assessment.checked_ids)
    thresholds = out / "thresholds.json"
    thresholds.write_text(json.dumps(assessment.proposal.thresholds, indent=2) + "\n")
    figures = plot_all(result, out)
    paths = [out / "impact.json", out / "impact.md", out / "impact.html"]
    paths[0].write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    paths[1].write_text(markdown(result, figures))
    paths[2].write_text(html_page(result, figures))
    return [*paths, thresholds, *(f.path for f in figures if f.path)]


def sections(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The report as (heading, Markdown lines) sections, shared by the Markdown and the HTML."""
    return [("The change", change_lines(result)), ("Decisions that change", decision_lines(result)),
            ("Review queue", queue_lines(result)), ("Merchants", merchant_lines(result)),
            ("Case checks behind it", estimate_lines(result)), ("Proposed sample", sample_lines(result))]


def headline(result: dict[str, Any]) -> list[str]:
    t = result["tallies"]
    status = STATUS_TEXT[result["status"]].format(min_checks=result["settings"]["min_checks"])
    d = t["directions"]
    return [status, "", f"{t['changed']} of {t['records']} records change decision or policies: "
            f"{d['newly_flagged']} newly flagged, {d['newly_cleared']} newly cleared, {d['decision_changed']} with "
            f"another decision, {d['policies_changed']} with other policies only. Decided again from stored scores "
            "with the pipeline's own decision function, no model run."]


def change_lines(result: dict[str, Any]) -> list[str]:
    change, lines = result["change"], []
    if change["thresholds"]:
        lines += ["| policy | threshold now | proposed |", "|---|---|---|"]
        lines += [f"| {p} | {_t(v['from'])} | {_t(v['to'])} |" for p, v in change["thresholds"].items()]
        lines.append("")
    if change["policy"]:
        lines += ["Policy file:", "", *[f"- `{line}`" for line in change["policy"]["text"].splitlines()], ""]
    lines += [f"Current thresholds: {change['current_source']}."]
    rep = result["current_reproduced"]
    if rep["checked"]:
        lines.append(f"The current thresholds give again {rep['same']} of the {rep['checked']} stored score-first "
                     "verdicts" + ("." if rep["same"] == rep["checked"] else ": the 'before' side is the stored verdicts."))
    how = result["tallies"]["how"]
    lines.append("Records: " + ", ".join(f"{n} {HOW[k]}" for k, n in how.items()) + ".")
    lines += ["", *[f"- {note}" for note in change["notes"]]]
    return lines


HOW = {"re-decided": "decided again", "screened": "cleared by the screen (as they would be again: it runs first)",
       "unscored": "without scores (not decided again)", "error": "error records (no verdict)",
       "overlay": "in a region whose overlay changes (to be scored again)"}


def _t(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def decision_lines(result: dict[str, Any]) -> list[str]:
    t = result["tallies"]
    lines = ["| from -> to | items |", "|---|---|", *[f"| {k} | {n} |" for k, n in t["transitions"].items()], ""]
    if t["by_policy"]:
        lines += ["| policy | newly flagged | newly cleared |", "|---|---|---|"]
        lines += [f"| {p} | {c['flagged']} | {c['cleared']} |" for p, c in t["by_policy"].items()]
        lines.append("")
    for dimension in DIMENSIONS:
        groups = t[f"by_{dimension}"]
        lines += [f"By {dimension}:", "", f"| {dimension} | items | changed | newly flagged | newly cleared | "
                  "decision changed | policies changed | not decided again |", "|---" * 8 + "|"]
        lines += [f"| {g} | {c['items']} | {c['changed']} | " + " | ".join(str(c[d]) for d in DIRECTIONS)
                  + f" | {c['not_re_decided']} |" for g, c in groups.items()]
        lines.append("")
    return lines


def queue_lines(result: dict[str, Any]) -> list[str]:
    q = result["review_queue"]
    return [f"Items held for review (decision `review`): {q['before']} now, {q['after']} proposed, over "
            f"{q['days']:g} day(s) of traffic ({q['days_source']}): {q['per_day_before']:.1f} -> "
            f"{q['per_day_after']:.1f} a day.",
            f"At {q['throughput']:g} case checks a day ({q['throughput_source']}), that is "
            f"{q['load_before']:.2f} -> {q['load_after']:.2f} reviewer-days of work per day "
            "(above 1.00 the queue grows)." + (f" {q['not_re_decided']} records were not decided again and are "
                                                "counted as they are." if q["not_re_decided"] else "")]


def merchant_lines(result: dict[str, Any]) -> list[str]:
    m = result["merchants"]
    if not m["available"]:
        return [f"Not assessed: {m['why']}."]
    tiers = " | ".join(m["tier_names"])
    lines = [f"{m['merchants']} merchants, strike rules of enforcement {m['enforcement_version']} as of {m['as_of']}, "
             "over these runs only (history in the merchants store is not included):", "",
             f"| | {tiers} |", "|---" * (len(m["tier_names"]) + 1) + "|"]
    for side in ("before", "after"):
        lines.append(f"| {'now' if side == 'before' else 'proposed'} | "
                     + " | ".join(str(m[f"tiers_{side}"].get(t, 0)) for t in m["tier_names"]) + " |")
    lines += ["", f"{len(m['changes'])} merchants change tier."]
    if m["changes"]:
        lines += ["", "| merchant | from | to | points now | proposed |", "|---|---|---|---|---|"]
        lines += [f"| {c['merchant']} | {c['from']} | {c['to']} | {c['points_before']:.2f} | {c['points_after']:.2f} |"
                  for c in m["changes"][:30]]
    return lines


ESTIMATE_ROWS = (("newly_flagged", "newly flagged: precision (reviewer flags it too)"),
                 ("newly_cleared", "newly cleared: violations missed (reviewer flags it)"),
                 ("decision_changed", "decision changed: reviewer takes the new decision"),
                 ("policies_changed", "policies changed: reviewer agrees with each policy added and dropped"),
                 ("still_flagged", "flagged before and after: precision (for recall lost)"))


def _rate(e: dict[str, Any]) -> str:
    if e["status"] == "unmeasured":
        return "unmeasured (0 checks)"
    if e.get("interval") is None:
        return "no item moves" if e["status"] == "no change" else e["status"]
    low, high = e["interval"]
    return f"{e['rate']:.2f} [{low:.2f}, {high:.2f}]"


def estimate_lines(result: dict[str, Any]) -> list[str]:
    est, conf = result["estimates"], result["settings"]["confidence"]
    lines = [f"{est['checks']['finished']} finished case checks in the store ({result['store'] or 'none given'}), "
             f"{est['checks']['usable']} of them on items with scores made the same way. Rates with {conf:.0%} Wilson "
             "intervals; 'unmeasured' means no check: not safe, not known.", "",
             "| group | changed items | checks | rate [interval] | status |", "|---|---|---|---|---|"]
    lines += [f"| {text} | {est[k]['items']} | {est[k]['checks']} | {_rate(est[k])} | {est[k]['status']} |"
              for k, text in ESTIMATE_ROWS]
    r = est["recall_lost"]
    lines += ["", "Recall lost (share of the violations caught now that the change clears): "
              + ("none, nothing is cleared" if r["status"] == "no change" else _rate(r))
              + (f", on {r['checks']} checks" if r["checks"] else "") + "."]
    if est["by_policy"]:
        lines += ["", "| policy | newly flagged: items, checks, precision | newly cleared: items, checks, violation rate |",
                  "|---|---|---|"]
        for p, sides in est["by_policy"].items():
            cells = [f"{s['items']}, {s['checks']}, {_rate(s)}" if (s := sides.get(side)) else "–"
                     for side in ("flagged", "cleared")]
            lines.append(f"| {p} | {cells[0]} | {cells[1]} |")
    return lines


def sample_lines(result: dict[str, Any]) -> list[str]:
    s = result["sample"]
    lines = []
    if s["items"]:
        lines += [f"{s['items']} changed items ({', '.join(f'{n} {d}' for d, n in s['by_direction'].items())}) to "
                  "review first: those of each direction or policy with fewer than "
                  f"{result['settings']['min_checks']} checks. Queue them, review them, and run impact again with --db:",
                  "", *[f"- `{c}`" for c in s["commands"]]]
    else:
        lines.append("None: every direction and policy the change moves has enough case checks.")
    if s["rescore"]["items"]:
        lines += ["", f"{s['rescore']['items']} items are in regions whose overlay changes: their prompts change, so "
                  "their scores must be made again before anything is known of them:", "",
                  *[f"- `{c}`" for c in s["rescore"]["commands"]]]
    return lines


def markdown(result: dict[str, Any], figures: list) -> str:
    lines = ["# Impact of a policy change", "", *headline(result), ""]
    for title, body in sections(result):
        lines += [f"## {title}", "", *body, ""]
        for f in figures:
            if f.set_name == title:
                lines += [f"![{f.title}]({f.path.name})" if f.path else f"*{f.title}: not drawn.*", "",
                          f"*{f.caption}*", ""]
    return "\n".join(lines)


def html_page(result: dict[str, Any], figures: list) -> str:
    import html

    from moderation.report_html import STYLE, figure_html, markdown_block

    body = ["<h1>Impact of a policy change</h1>", markdown_block(headline(result))]
    for title, lines in sections(result):
        plots = "".join(figure_html(f) for f in figures if f.set_name == title)
        body.append(f"<section><h2>{html.escape(title)}</h2><div class='side'><div class='numbers'>"
                    f"{markdown_block(lines)}</div><div class='plots'>{plots}</div></div></section>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Impact of a policy change</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


# -- the plots ----------------------------------------------------------------------------------
def plot_all(result: dict[str, Any], out: Path) -> list:
    """The report's plots (moderation.report_plots.Figure, `set_name` = the section they go with), PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    figures = [_plot_matrix(result, out / "transitions.png"), _plot_policies(result, out / "policies.png"),
               _plot_queue(result, out / "review_queue.png"), _plot_estimates(result, out / "estimates.png")]
    if result["merchants"]["available"]:
        figures.append(_plot_tiers(result, out / "merchant_tiers.png"))
    return figures


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_matrix(result: dict[str, Any], path: Path):
    import matplotlib.pyplot as plt

    from moderation.report_plots import Figure

    matrix = result["tallies"]["matrix"]
    counts = [[matrix.get(f"{b} -> {a}", 0) for a in DECISIONS] for b in DECISIONS]
    moved = max([counts[i][j] for i in range(4) for j in range(4) if i != j] or [0])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow([[0 if i == j else v for j, v in enumerate(row)] for i, row in enumerate(counts)], cmap="Oranges",
              vmin=0, vmax=max(1, moved))
    for i, row in enumerate(counts):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=10, color="#777777" if i == j else "#111111",
                    fontweight="normal" if i == j else "bold")
    ax.set_xticks(range(4), DECISIONS)
    ax.set_yticks(range(4), DECISIONS)
    ax.set(xlabel="proposed decision", ylabel="decision now", title="Decisions now and proposed")
    total = sum(map(sum, counts))
    caption = (f"The {total} records decided again: off the diagonal (bold, coloured) the "
               f"{total - sum(counts[i][i] for i in range(4))} whose decision changes; the grey diagonal keeps its decision.")
    return Figure("Decisions that change", "Decision transitions", caption, _save(fig, path), total)


def _plot_policies(result: dict[str, Any], path: Path):
    import matplotlib.pyplot as plt

    from moderation.report_plots import Figure

    by_policy = result["tallies"]["by_policy"]
    title = "Flags gained and lost per policy"
    if not by_policy:
        return Figure("Decisions that change", title, "Not drawn: no policy gains or loses a flag.", None)
    names = list(by_policy)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 4))
    up = ax.bar(names, [by_policy[p]["flagged"] for p in names], color="#c0392b", label="newly flagged")
    down = ax.bar(names, [-by_policy[p]["cleared"] for p in names], color="#2e86c1", label="newly cleared")
    ax.bar_label(up, labels=[str(by_policy[p]["flagged"] or "") for p in names], fontsize=8)
    ax.bar_label(down, labels=[str(by_policy[p]["cleared"] or "") for p in names], fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(ylabel="items", title=title)
    ax.tick_params(axis="x", rotation=35)
    ax.legend(fontsize=8)
    caption = "Per policy, items that gain it (up) and lose it (down) under the proposal."
    return Figure("Decisions that change", title, caption, _save(fig, path), len(names))


def _plot_queue(result: dict[str, Any], path: Path):
    import matplotlib.pyplot as plt

    from moderation.report_plots import Figure

    q = result["review_queue"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    bars = ax.bar(["now", "proposed"], [q["per_day_before"], q["per_day_after"]], color=["#7f8c8d", "#e67e22"])
    ax.bar_label(bars, fmt="%.1f")
    ax.axhline(q["throughput"], color="#c0392b", linestyle="--", label=f"throughput {q['throughput']:g}/day")
    ax.set(ylabel="items held for review per day", title="Review queue per day",
           ylim=(0, 1.15 * max(q["per_day_before"], q["per_day_after"], q["throughput"])))
    ax.legend(fontsize=8)
    caption = (f"Items with decision `review` per day over {q['days']:g} day(s); the dashed line is the team's "
               f"throughput ({q['throughput_source'].split(':')[0]}).")
    return Figure("Review queue", "Review queue per day", caption, _save(fig, path), 2)


def _plot_estimates(result: dict[str, Any], path: Path):
    import matplotlib.pyplot as plt

    from moderation.report_plots import Figure

    est = result["estimates"]
    rows = [(text.split(":")[0], est[k]) for k, text in ESTIMATE_ROWS if est[k]["items"]]
    title = "What the case checks say"
    if not rows:
        return Figure("Case checks behind it", title, "Not drawn: no item changes.", None)
    fig, ax = plt.subplots(figsize=(6, 0.7 * len(rows) + 1.6))
    for y, (name, e) in enumerate(rows):
        if e["rate"] is None:
            ax.text(0.75, y, f"UNMEASURED: 0 checks on {e['items']} items", ha="center", va="center", color="#c0392b",
                    fontweight="bold", fontsize=9)
            continue
        low, high = e["interval"]
        ax.errorbar(e["rate"], y, xerr=[[e["rate"] - low], [high - e["rate"]]], fmt="o", capsize=4,
                    color="#e67e22" if e["status"] == "thin" else "#1f77b4")
        ax.text(1.04, y, f"{e['rate']:.2f} ({e['positives']}/{e['checks']}, {e['status']})", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set(xlim=(0, 1.5), ylim=(len(rows) - 0.5, -0.5), xticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0], xlabel="rate", title=title)
    ax.axvline(1.0, color="#dddddd", linewidth=0.8)
    caption = (f"Per group of items the change moves: the rate the reviewers' verdicts give, with its "
               f"{result['settings']['confidence']:.0%} Wilson interval and checks behind it (orange: fewer than "
               f"{result['settings']['min_checks']}). No check: unmeasured, which is not safe.")
    return Figure("Case checks behind it", title, caption, _save(fig, path), sum(e["checks"] > 0 for _, e in rows))


def _plot_tiers(result: dict[str, Any], path: Path):
    import matplotlib.pyplot as plt
    import numpy as np

    from moderation.report_plots import Figure

    m = result["merchants"]
    names, x = m["tier_names"], np.arange(len(m["tier_names"]))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, (side, label) in enumerate((("before", "now"), ("after", "proposed"))):
        bars = ax.bar(x + (k - 0.5) * 0.38, [m[f"tiers_{side}"].get(t, 0) for t in names], 0.38, label=label)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, names)
    ax.set(ylabel="merchants", title="Merchants per health tier")
    ax.legend(fontsize=8)
    caption = f"{m['merchants']} merchants of these runs per tier, now and proposed; {len(m['changes'])} change tier."
    return Figure("Merchants", "Merchants per tier", caption, _save(fig, path), m["merchants"])
