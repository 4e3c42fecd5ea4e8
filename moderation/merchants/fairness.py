"""Fairness monitoring: enforcement and overturn rates by region and language, with intervals and tests.

Each group's rate gets a Wilson 95% interval. Each group is tested against all other groups
together with a one-sided two-proportion z-test (is this group's rate higher?); the p-values of
one table (one dimension, one rate) are Holm-adjusted, and a group is flagged when its adjusted
p-value is below alpha. On live data an overturn is an appeal a reviewer overturned (of decided
appeals); on labelled sets it is a model enforcement that gold labels call wrong (a false
positive, of the model's enforcements).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError, InputError

DIMENSIONS = ("region", "language")
RATES = ("enforcement", "overturn")


@dataclass(frozen=True)
class FairnessConfig:
    """How groups are tested."""

    alpha: float = field(default=0.05, metadata={"help": "Family-wise error rate per table (Holm)."})
    min_n: int = field(default=5, metadata={"help": "Groups with fewer trials (or rest) are shown but not tested."})

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ConfigError(f"FairnessConfig.alpha must be in (0, 1), got {self.alpha!r}")
        if not isinstance(self.min_n, int) or self.min_n < 1:
            raise ConfigError(f"FairnessConfig.min_n must be an integer >= 1, got {self.min_n!r}")


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def z_test_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that proportion 1 exceeds proportion 2 (pooled two-proportion z-test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def rate_table(trials: list[tuple[str | None, bool]], config: FairnessConfig) -> list[dict[str, Any]]:
    """One row per group: successes, trials, rate, Wilson interval, one-sided test against the rest."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for group, hit in trials:
        cell = counts[group or "unknown"]
        cell[0] += int(hit)
        cell[1] += 1
    total_k, total_n = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    rows = []
    for group, (k, n) in sorted(counts.items()):
        rest_k, rest_n = total_k - k, total_n - n
        tested = n >= config.min_n and rest_n >= config.min_n
        lo, hi = wilson(k, n)
        rows.append({"group": group, "k": k, "n": n, "rate": k / n if n else None, "ci": [lo, hi],
                     "rest_rate": rest_k / rest_n if rest_n else None,
                     "p": z_test_greater(k, n, rest_k, rest_n) if tested else None})
    tested_rows = [r for r in rows if r["p"] is not None]
    for row, adj in zip(tested_rows, holm([r["p"] for r in tested_rows])):
        row["p_holm"] = adj
    for row in rows:
        row.setdefault("p_holm", None)
        row["flag"] = row["p_holm"] is not None and row["p_holm"] < config.alpha
    return rows


def fairness(enforcement: list[dict[str, Any]], overturns: list[dict[str, Any]],
             config: FairnessConfig | None = None) -> dict[str, Any]:
    """Tables by region and language of the enforcement rate and the overturn rate.

    Args:
        enforcement: one row per moderated item: {"region", "language", "hit": enforced or not}.
        overturns: one row per decided appeal (or model enforcement on a labelled set):
            {"region", "language", "hit": overturned or not}.
    """
    config = config or FairnessConfig()
    tables = {}
    for rate, rows in (("enforcement", enforcement), ("overturn", overturns)):
        for dim in DIMENSIONS:
            tables[f"{rate}_by_{dim}"] = rate_table([(r.get(dim), bool(r["hit"])) for r in rows], config)
    flagged = [{"table": name, "group": r["group"], "rate": r["rate"], "rest_rate": r["rest_rate"], "p_holm": r["p_holm"]}
               for name, rows in tables.items() for r in rows if r["flag"]]
    return {"alpha": config.alpha, "min_n": config.min_n, "tables": tables, "flagged": flagged}


def labelled_file(path: str | Path) -> dict[str, tuple[dict[str, Any], frozenset[str]]]:
    """A labelled JSONL file in the marketplace set's record format (e.g. eval_sets/kyc/shops.jsonl),
    validated: item id -> (item record, gold violations).

    Raises:
        InputError: the file is missing or a record is invalid.
    """
    from moderation.evalsets import validate_record
    from moderation.items import ReadLimits, build_item

    path, out = Path(path), {}
    if not path.is_file():
        raise InputError(f"labels file not found: {path}")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        problems = validate_record(record, f"{path.name}:{n}")
        if problems:
            raise InputError(f"invalid labelled record: {problems[0]}")
        fields = {k: v for k, v in record.items() if k not in ("split", "gold", "tags")}
        item = build_item(fields, n, columns={}, default_kind="listing", limits=ReadLimits())
        out[item.id] = ({"id": item.id, **item.content()}, frozenset(record["gold"]["violations"]))
    return out


def _gold_of(run: Path, labels: str | Path | None, data_dir: str | None) -> dict[str, tuple[dict, frozenset[str]]]:
    from moderation.evalsets import load_set

    if labels is not None:
        return labelled_file(labels)
    return {li.item.id: (li.item.record(), li.gold_violations) for li in load_set(run.stem, data_dir=data_dir)}


def eval_rows(runs: str | Path, counts_fn, data_dir: str | None = None,
              labels: str | Path | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """Enforcement and overturn rows from run files over labelled items, joined by item id.

    Args:
        runs: a folder of SET.jsonl run files (as `moderation eval` writes under OUT_DIR/runs), or one run file
            named after its set.
        counts_fn: (item record, run record) -> True when the model's verdict enforces.
        data_dir: where public sets are read from.
        labels: a labelled JSONL file to join with instead of a set named after the run file.

    Returns:
        (enforcement rows, overturn rows, set names).
    """
    from moderation.runfile import load_run

    path = Path(runs)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"no run files (*.jsonl) in {runs}")
    enforcement, overturns, names = [], [], []
    for run in files:
        gold = _gold_of(run, labels, data_dir)
        names.append(Path(labels).name if labels else run.stem)
        for record in load_run(run):
            item, violations = gold.get(record.id, (None, None))
            if item is None or record.verdict is None:
                continue
            hit = counts_fn(item, record)
            row = {"region": item.get("region"), "language": item.get("language"), "set": names[-1]}
            enforcement.append({**row, "hit": hit})
            if hit:
                overturns.append({**row, "hit": not violations, "item_id": item["id"]})
    return enforcement, overturns, names


def store_rows(health: list[dict[str, Any]], inputs, appeals: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Enforcement rows (one per moderated item: has it a counted strike?) and overturn rows (decided appeals)."""
    struck = {v["item_id"] for h in health for v in h["violations"] if v["counts"]}
    enforcement = [{"region": v.item.get("region"), "language": v.item.get("language"), "hit": v.item["id"] in struck}
                   for v in inputs]
    overturns = [{"region": a["region"], "language": a["language"], "hit": a["status"] == "overturned"}
                 for a in appeals if a["status"] in ("upheld", "overturned")]
    return enforcement, overturns
