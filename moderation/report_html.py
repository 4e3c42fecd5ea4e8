"""The evaluation report as one self-contained HTML page: the run's settings and a summary table on
top, a table of contents, then one section per set with its plots beside its numbers and its
breakdown by language, kind and region. Plots are inlined as data URIs; nothing is fetched."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from moderation.evaluate import SystemResult
from moderation.report import (
    BREAKDOWN_COLUMNS,
    MAIN_COLUMNS,
    READING,
    by_set,
    counts,
    faithfulness_lines,
    injection_lines,
    latency_text,
    number,
    per_policy_table,
    set_line,
    speed_text,
)
from moderation.report_plots import Figure

SUMMARY_COLUMNS = [("macro_f1", "macro-F1"), ("clean_fpr", "FPR on clean"), ("decision_accuracy", "decision acc."),
                   ("schema_valid_rate", "valid verdicts")]
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#1d1d1f;max-width:1500px;margin:1.5em auto;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #d6d6d6;padding:3px 7px;font-size:13px;
white-space:nowrap;vertical-align:top;text-align:right} th{background:#f3f5f8} td:first-child,th:first-child{text-align:left}
small.ci{display:block;color:#666;font-size:11px} .count{color:#555;font-size:11px} .na{color:#8a6d00}
table.settings td,table.settings th{text-align:left;white-space:normal}
.side{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start} .numbers{flex:1 1 640px;min-width:0;overflow-x:auto}
.plots{flex:1 1 520px;display:flex;flex-wrap:wrap;gap:.8em} figure{margin:0;max-width:560px;border:1px solid #e3e3e3;padding:.4em;background:#fff}
figure img{max-width:100%;height:auto;display:block} figcaption{font-size:12px;color:#333}
figure.not-drawn{background:#fbfaf4;padding:.8em} figure.not-drawn strong{display:block}
nav ol{columns:3} .wide{overflow-x:auto}
"""


def html_page(results: list[SystemResult], figures: list[Figure], meta: dict[str, Any], title: str = "Moderation evaluation") -> str:
    """The whole page."""
    body = [f"<h1>{html.escape(title)}</h1>", settings_section(meta), contents(results), summary_section(results)]
    for set_name, rs in by_set(results).items():
        body.append(set_section(set_name, rs, [f for f in figures if f.set_name == set_name]))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def settings_section(meta: dict[str, Any]) -> str:
    llm = meta.get("llm") or {}
    rows = [("date", meta.get("date")), ("command", meta.get("command")),
            ("test items per set", f"at most {meta['sample']} (a fixed sample)" if meta.get("sample") else "all"),
            ("bootstrap resamples", meta.get("bootstrap")),
            ("LLM", ", ".join(f"{k} {str(llm.get(k))[:16]}" for k in ("model", "backend", "adapter", "prompt_sha", "policy_version")
                              if llm.get(k)) or "not run"),
            ("labelled file", meta.get("labels")), ("TF-IDF trained on", meta.get("tfidf_trained_on")),
            ("thresholds chosen on", meta.get("thresholds_from") or "each set's dev split"),
            *(("note", note) for note in meta.get("skipped", ()))]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<section id='settings'><h2>Settings</h2><table class='settings'>{cells}</table></section>"


def anchor(set_name: str) -> str:
    return "set-" + re.sub(r"[^A-Za-z0-9_-]", "-", set_name)


def contents(results: list[SystemResult]) -> str:
    links = "".join(f"<li><a href='#{anchor(s)}'>{html.escape(s)}</a> (n = {rs[0].n})</li>" for s, rs in by_set(results).items())
    return f"<nav><h2>Contents</h2><ol><li><a href='#summary'>Summary</a></li>{links}</ol></nav>"


def value_cell(r: SystemResult, key: str) -> str:
    """A table cell: the value, its count (2/15) and its interval on a second line; n/a marked."""
    text = number(r.metrics.get(key))
    if text == "n/a":
        return "<td class='na' title='undefined: nothing to take it over'>n/a</td>"
    extra = ""
    count = counts(r).get(key)
    if count is not None:
        extra += " <span class='count'>({}/{})</span>".format(*count)
    if r.intervals.get(key):
        low, high = r.intervals[key]
        extra += f"<small class='ci'>[{low:.2f}, {high:.2f}]</small>"
    return f"<td>{text}{extra}</td>"


def summary_section(results: list[SystemResult]) -> str:
    head = "<tr><th>set</th><th>system</th><th>n</th>" + "".join(f"<th>{t}</th>" for _, t in SUMMARY_COLUMNS) + "</tr>"
    rows = "".join(f"<tr><td><a href='#{anchor(r.set_name)}'>{html.escape(r.set_name)}</a></td><td>{html.escape(r.system)}</td>"
                   f"<td>{r.n}</td>" + "".join(value_cell(r, k) for k, _ in SUMMARY_COLUMNS) + "</tr>" for r in results)
    return (f"<section id='summary'><h2>Summary</h2><p>{html.escape(READING)}</p>"
            f"<div class='wide'><table>{head}{rows}</table></div></section>")


def set_section(set_name: str, rs: list[SystemResult], figures: list[Figure]) -> str:
    head = "<tr><th>system</th>" + "".join(f"<th>{t}</th>" for _, t in MAIN_COLUMNS) + "<th>items/s</th><th>p50 / p95 ms</th></tr>"
    rows = "".join(f"<tr><td>{html.escape(r.system)}</td>" + "".join(value_cell(r, k) for k, _ in MAIN_COLUMNS)
                   + f"<td>{speed_text(r)}</td><td>{latency_text(r)}</td></tr>" for r in rs)
    numbers = [f"<table>{head}{rows}</table>", markdown_block(injection_lines(rs)),
               markdown_block(faithfulness_lines(rs)), markdown_block(per_policy_table(rs))]
    plots = "".join(figure_html(f) for f in figures)
    return (f"<section class='set' id='{anchor(set_name)}'><h2>{html.escape(set_name)} (n = {rs[0].n})</h2>"
            f"<p>{html.escape(set_line(rs[0]))}</p><div class='side'><div class='numbers'>{''.join(numbers)}</div>"
            f"<div class='plots'>{plots}</div></div>{breakdown_html(rs)}</section>")


def figure_html(figure: Figure) -> str:
    if figure.path is None:
        return (f"<figure class='not-drawn'><strong>{html.escape(figure.title)}</strong>"
                f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
    data = base64.b64encode(figure.path.read_bytes()).decode()
    return (f"<figure data-series='{figure.series}'><img alt='{html.escape(figure.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><strong>{html.escape(figure.title)}.</strong> {html.escape(figure.caption)}</figcaption></figure>")


def breakdown_html(rs: list[SystemResult]) -> str:
    parts = []
    for dimension, groups in rs[0].breakdown.items():
        head = (f"<tr><th>{dimension}</th><th>n</th><th>violating</th>"
                + "".join(f"<th>{html.escape(r.system)} {t}</th>" for r in rs for _, t in BREAKDOWN_COLUMNS) + "</tr>")
        rows = "".join(f"<tr><td>{html.escape(g)}</td><td>{f['n']}</td><td>{f['violating']}</td>"
                       + "".join(f"<td>{number(r.breakdown[dimension].get(g, {}).get(k))}</td>" for r in rs for k, _ in BREAKDOWN_COLUMNS)
                       + "</tr>" for g, f in groups.items())
        parts.append(f"<h3>By {dimension}</h3><div class='wide'><table>{head}{rows}</table></div>")
    note = ("<p>Per group: macro-F1 over the policies the group labels; recall = share of its violating items flagged "
            "with any policy; FPR on clean = share of its clean items flagged. Small groups swing widely: read n.</p>")
    return f"<details open><summary>Breakdown by {', '.join(rs[0].breakdown)}</summary>{note}{''.join(parts)}</details>"


def markdown_block(lines: list[str]) -> str:
    """A few Markdown lines (a table, a list, text) as HTML."""
    out, table = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            if not set(line) <= set("|- "):
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in line.strip("|").split("|")) + "</tr>")
            continue
        if table:
            out.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("- "):
            out.append(f"<p>• {html.escape(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "".join(out)
