"""What a trends report shows; moderation.trends computes it. The report as blocks (headings,
paragraphs, lists, tables), the same for the Markdown file, the standalone HTML page and the review
app's trends page; the three figures' series, drawn as inline SVG (HTML page, review app) and as
PNG files (matplotlib).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from moderation.trends import ANY


# -- blocks: the same for Markdown, HTML and the review app ------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def rate_table(result: dict[str, Any], dimension: str = "all", value: str = "all") -> tuple[list[str], list[list[str]]]:
    """Flagged rate [Wilson interval] per policy (rows) and period (columns), for one group."""
    periods = [p["name"] for p in result["periods"]]
    cell = {(r["policy"], r["period"]): r for r in result["rates"] if r["dimension"] == dimension and r["value"] == value}
    rows = []
    for policy in result["policies"]:
        found = [cell.get((policy, p)) for p in periods]
        if any(r and r["flagged"] for r in found) or policy == ANY:
            rows.append([policy] + [f"{_pct(r['rate'])} [{_pct(r['low'])}, {_pct(r['high'])}] ({r['flagged']}/{r['n']})"
                                    if r else "" for r in found])
    return ["policy", *periods], rows


def blocks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as blocks ({"h": title} / {"p": text} / {"table": (header, rows)} / {"items": [...]}),
    the same for Markdown, HTML and the review app's trends page."""
    periods = result["periods"]
    out: list[dict[str, Any]] = [{"p": f"{len(periods)} periods, {periods[0]['name']} to {periods[-1]['name']}; "
                                       f"taxonomy {result['policy']}. {len(result['alerts'])} alerts, "
                                       f"{len(result['emerging'])} emerging clusters."}]
    out.append({"h": f"Alerts ({len(result['alerts'])})"})
    quiet = {"p": "No rate moved and no score distribution drifted beyond the bounds."}
    out.append({"table": (["period", "type", "group", "policy", "what moved"],
                          [[a["period"], a["type"], f"{a['dimension']}={a['value']}", a["policy"], a["detail"]]
                           for a in result["alerts"]])} if result["alerts"] else quiet)
    out.append({"h": f"Emerging clusters ({len(result['emerging'])})"})
    if not result["emerging"]:
        out.append({"p": "No cluster of flagged or near-threshold items is new or growing."})
    for e in result["emerging"]:
        out.append({"p": f"{e['period']}: cluster {e['cluster']} is {e['status']}: {e['count']} items (most in the "
                         f"window before: {e['baseline']}); counts per period {e['counts']}; {e['flagged']} flagged, "
                         f"{e['near_threshold']} near threshold; policies {e['policies']}; distinctive terms: "
                         f"{', '.join(e['terms']) or 'none'}."})
        out.append({"items": [f"{x['item']} ({x['status']}, {x['policy']} {x['score']}): {x['text']}"
                              for x in e["examples"]]})
    out.append({"h": "Flagged rate, all items (Wilson intervals)"})
    out.append({"table": rate_table(result)})
    drift = [d for d in result["drift"] if d["dimension"] == "all"]
    if drift:
        names = list(dict.fromkeys(d["period"] for d in drift))
        cell = {(d["policy"], d["period"]): d for d in drift}
        out.append({"h": "Score drift, all items (PSI / KS against the reference)"})
        out.append({"table": (["policy", *names], [[p] + [f"{cell[p, n]['psi']:.3f} / {cell[p, n]['ks']:.3f}"
                                                          if (p, n) in cell else "" for n in names]
                                                   for p in result["policies"]])})
    if result["clusters"]:
        names = [p["name"] for p in periods]
        out.append({"h": "Clusters that reached the emerging size in some period"})
        out.append({"table": (["cluster", *names, "example"], [[c["id"], *(str(c["counts"][n]) for n in names), c["example"]]
                                                               for c in result["clusters"]])})
    return out


# -- figures: their series, drawn as inline SVG ------------------------------------------------
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def figure_series(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The three figures' data: flagged rates with intervals, PSI with its bound, emerging clusters' counts."""
    periods = [p["name"] for p in result["periods"]]
    rates = {(r["policy"], r["period"]): r for r in result["rates"] if r["dimension"] == "all"}
    top = sorted((p for p in result["policies"] if p != ANY),
                 key=lambda p: -max((rates[p, n]["rate"] or 0) for n in periods if (p, n) in rates))[:4]
    rate_series = {p: [rates[p, n]["rate"] if (p, n) in rates else None for n in periods] for p in [ANY, *top]}
    intervals = {p: [(rates[p, n]["low"], rates[p, n]["high"]) if (p, n) in rates else None for n in periods]
                 for p in rate_series}
    psi = {(d["policy"], d["period"]): d["psi"] for d in result["drift"] if d["dimension"] == "all"}
    moved = sorted({p for p, _ in psi}, key=lambda p: -max(v for (q, _), v in psi.items() if q == p))[:5]
    emerged = list(dict.fromkeys(e["cluster"] for e in result["emerging"]))
    terms = {e["cluster"]: e["terms"][:2] for e in result["emerging"]}
    counts = {c["id"]: c["counts"] for c in result["clusters"]}
    return [
        {"title": "Flagged rate per period, all items (95% Wilson intervals)", "x": periods, "series": rate_series,
         "intervals": intervals, "percent": True},
        {"title": "Score drift per period (PSI against the reference), all items", "x": periods,
         "series": {p: [psi.get((p, n)) for n in periods] for p in moved}, "bound": result["settings"]["psi_bound"]},
        {"title": "Emerging clusters: items per period", "x": periods,
         "series": {f"{c} {' '.join(terms[c])}": [counts.get(c, {}).get(n, 0) for n in periods] for c in emerged}},
    ]


def svg_figure(fig: dict[str, Any], width: int = 620, height: int = 250) -> str:
    """One figure as inline SVG: lines with points (and intervals), a dashed bound; labels escaped."""
    left, right, top, bottom = 52, 170, 26, 34
    xs, series = fig["x"], fig["series"]
    values = [v for vs in series.values() for v in vs if v is not None]
    values += [iv[1] for ivs in fig.get("intervals", {}).values() for iv in ivs if iv] + [fig.get("bound") or 0]
    high = max(values or [1]) * 1.1 or 1.0
    x = lambda i: left + (width - left - right) * (i / max(1, len(xs) - 1))  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (1 - v / high)  # noqa: E731
    label = (lambda v: f"{v:.0%}" if high < 0.2 else f"{v:.0%}") if fig.get("percent") else (lambda v: f"{v:.3g}")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="chart" '
             f'aria-label="{escape(fig["title"])}"><text x="0" y="16" class="chart-title">{escape(fig["title"])}</text>',
             f'<line x1="{left}" y1="{y(0)}" x2="{width - right}" y2="{y(0)}" stroke="#999"/>']
    for v in (0, high / 2, high / 1.1):
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{escape(label(v))}</text>')
    for i, name in enumerate(xs):
        parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 14}" text-anchor="middle" font-size="10">{escape(name)}</text>')
    if fig.get("bound"):
        parts.append(f'<line x1="{left}" y1="{y(fig["bound"]):.1f}" x2="{width - right}" y2="{y(fig["bound"]):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="4 3"/><text x="{width - right + 4}" y="{y(fig["bound"]) + 4:.1f}" '
                     f'font-size="10">bound {fig["bound"]:g}</text>')
    if not series:
        parts.append(f'<text x="{left + 10}" y="{top + 40}" class="chart-empty">nothing to show</text>')
    for n, (name, vs) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        for i, iv in enumerate(fig.get("intervals", {}).get(name, [])):
            if iv:
                parts.append(f'<line x1="{x(i):.1f}" y1="{y(iv[0]):.1f}" x2="{x(i):.1f}" y2="{y(iv[1]):.1f}" stroke="{color}" '
                             f'stroke-opacity="0.5"/>')
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs) if v is not None)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        parts += [f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>' for i, v in enumerate(vs) if v is not None]
        parts.append(f'<text x="{width - right + 8}" y="{top + 14 * n + 10}" font-size="11" fill="{color}">'
                     f'{escape(name[:28])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_figures(result: dict[str, Any]) -> list[str]:
    return [svg_figure(fig) for fig in figure_series(result)]


# -- files: Markdown, HTML and PNG ----------------------------------------------------------
def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    clean = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "\n".join(["| " + " | ".join(map(clean, header)) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(map(clean, row)) + " |" for row in rows)])


def markdown(result: dict[str, Any], images: list[str] = ()) -> str:
    """The report as Markdown: the blocks of `blocks`, then the plots."""
    out = ["# Trends", ""]
    for block in blocks(result):
        if "h" in block:
            out += [f"## {block['h']}", ""]
        elif "p" in block:
            out += [block["p"], ""]
        elif "items" in block:
            out += [*(f"- {' '.join(i.split())}" for i in block["items"]), ""]
        else:
            out += [_markdown_table(*block["table"]), ""]
    out += [f"![{name}]({name})" for name in images]
    return "\n".join(out) + "\n"


def write_markdown(result: dict[str, Any], path: Path, images: list[str]) -> Path:
    path.write_text(markdown(result, images), encoding="utf-8")
    return path


def html_page(result: dict[str, Any]) -> str:
    """A standalone HTML page: the same blocks, and the figures as inline SVG (as the review app shows them)."""
    out = ["<!doctype html><html lang='en'><meta charset='utf-8'><title>Trends</title><body><h1>Trends</h1>",
           *(f"<figure>{svg}</figure>" for svg in svg_figures(result))]
    for block in blocks(result):
        if "h" in block:
            out.append(f"<h2>{escape(block['h'])}</h2>")
        elif "p" in block:
            out.append(f"<p>{escape(block['p'])}</p>")
        elif "items" in block:
            out.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block["items"]) + "</ul>")
        else:
            header, rows = block["table"]
            out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
                       + "</table>")
    return "\n".join(out) + "\n</body></html>\n"


def write_html(result: dict[str, Any], path: Path) -> Path:
    path.write_text(html_page(result), encoding="utf-8")
    return path


def write_plots(result: dict[str, Any], stem: Path) -> list[Path]:
    """The three figures (`figure_series`) as PNG files beside the stem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for fig, name in zip(figure_series(result), ("rates", "drift", "emerging")):
        figure, ax = plt.subplots(figsize=(7, 3.4))
        x = range(len(fig["x"]))
        for label, values in fig["series"].items():
            points = [(i, v) for i, v in zip(x, values) if v is not None]
            intervals = fig.get("intervals", {}).get(label)
            if intervals and points:
                low = [v - intervals[i][0] for i, v in points]
                high = [intervals[i][1] - v for i, v in points]
                ax.errorbar(*zip(*points), yerr=[low, high], marker="o", capsize=3, label=label)
            elif points:
                ax.plot(*zip(*points), marker="o", label=label)
        if fig.get("bound"):
            ax.axhline(fig["bound"], color="red", linestyle="--", linewidth=1, label=f"bound {fig['bound']:g}")
        if fig.get("percent"):
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_xticks(list(x), fig["x"], fontsize=8)
        ax.set_title(fig["title"], fontsize=10)
        if fig["series"]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            ax.text(0.5, 0.5, "nothing to show", transform=ax.transAxes, ha="center")
        figure.tight_layout()
        path = stem.parent / f"{stem.name}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths
