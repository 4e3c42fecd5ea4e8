"""Trends over a series of run files (one a day, say): flagged rates with Wilson intervals, drift of
the score distributions, alerts, and emerging clusters of flagged or near-threshold items.

Each run file is one period, ordered by the dates given or else by name (natural order: day-2
before day-10). With the dump each run moderated, rates are also broken down by region and
language, and the items' text feeds the emerging clusters.

- Rates: per period, per policy (and `any`), for all items and per kind, region and language:
  flagged / scored with a Wilson interval. Flagged is the record's `flagged` list (the run's own
  thresholds); a record without one is flagged at the thresholds given here.
- Drift: each policy's score distribution against the reference (the previous period, the first,
  or all earlier ones pooled): the population-stability index over 10 equal bins, and the
  two-sample Kolmogorov-Smirnov statistic on scores binned to 0.001 (run files round scores to 5
  decimals) with its asymptotic p-value. Streaming: a period keeps histograms, not scores.
- Alerts: a flagged rate that moved by at least `rate_bound` with disjoint intervals; a score
  distribution whose PSI reaches `psi_bound` or KS statistic `ks_bound`, when the KS p-value,
  Bonferroni-corrected over the period's comparisons, is also below `ks_alpha`. (A PSI over 10
  bins of two samples of 40 is about 0.45 with no shift at all, and a period makes hundreds of
  comparisons: the size bound alone would alert every day.) Groups smaller than `min_n` on either
  side are not compared.
- Emerging clusters: flagged items and items within `margin` under a threshold, clustered by
  MinHash over their text with contacts and numbers masked (moderation.contacts.mask), so one
  script sent with other phone numbers, names and amounts is one cluster. A cluster is emerging
  in a period when it has at least `min_cluster` items there and at least `growth` times the
  most it had in any of the `window` periods before (new when it had none). The first period
  only sets the baseline. Each comes with examples and its distinctive terms (words in most of
  its items and rare in earlier periods' candidates): the new code word.

What a report shows (Markdown, HTML, the review app's page, the figures) is moderation.trends_report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from moderation.contacts import mask
from moderation.dedup import MinHashIndex, normalise
from moderation.errors import ConfigError, InputError
from moderation.items import Item, read_items
from moderation.runfile import RunRecord, read_records

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
BINS = 1000  # fine histogram of scores in [0, 1]: the KS statistic is read from it
PSI_BINS = 10
REFERENCES = ("previous", "first", "pooled")
ANY = "any"
STOPWORDS = frozenset("the and for with you your our this that are from have has will can not all get now its".split())


@dataclass(frozen=True)
class TrendSettings:
    """Bounds for alerts and emerging clusters."""

    default_threshold: float = field(default=0.5, metadata={"help": "Threshold of a policy the thresholds do not name "
                                                                    "(flags for records without a flagged list, and "
                                                                    "the near-threshold band)."})
    margin: float = field(default=0.1, metadata={"help": "Near threshold: a score in [threshold - margin, threshold)."})
    confidence: float = field(default=0.95, metadata={"help": "Confidence of the Wilson intervals."})
    reference: str = field(default="previous", metadata={"help": "What a period is compared with: the previous "
                                                                 "period, the first, or all earlier ones pooled.",
                                                         "choices": REFERENCES})
    rate_bound: float = field(default=0.02, metadata={"help": "Alert when a flagged rate moves by at least this much "
                                                              "(absolute) and the intervals do not overlap."})
    psi_bound: float = field(default=0.2, metadata={"help": "Alert at this population-stability index or above "
                                                            "(0.1: some shift, 0.2: a large one)."})
    ks_bound: float = field(default=0.1, metadata={"help": "Alert at this KS statistic or above (or at psi_bound), "
                                                           "when the shift is also significant (see ks_alpha)."})
    ks_alpha: float = field(default=0.01, metadata={"help": "Significance level of the KS test, Bonferroni-corrected "
                                                            "over a period's comparisons (groups x policies)."})
    min_n: int = field(default=30, metadata={"help": "Smallest group (items scored) compared for alerts."})
    min_cluster: int = field(default=5, metadata={"help": "Fewest items of a cluster in a period to call it emerging."})
    growth: float = field(default=2.0, metadata={"help": "Emerging: at least this many times the cluster's most "
                                                         "in the window before."})
    window: int = field(default=3, metadata={"help": "Earlier periods a cluster's growth is measured against."})
    cluster_threshold: float = field(default=0.6, metadata={"help": "Estimated Jaccard similarity of masked texts "
                                                                    "that puts two items in one cluster."})
    examples: int = field(default=3, metadata={"help": "Examples shown per emerging cluster."})
    max_candidates: int = field(default=50_000, metadata={"help": "Most flagged and near-threshold items per period "
                                                                  "clustered (the first ones; the rest are counted)."})

    def __post_init__(self):
        for name in ("default_threshold", "margin", "rate_bound", "ks_bound"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"TrendSettings.{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("confidence", "ks_alpha", "cluster_threshold"):
            if not 0 < getattr(self, name) < 1 + (name == "cluster_threshold"):
                raise ConfigError(f"TrendSettings.{name} must be in (0, 1), got {getattr(self, name)!r}")
        for name in ("min_n", "min_cluster", "window", "examples", "max_candidates"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"TrendSettings.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.psi_bound <= 0 or self.growth < 1:
            raise ConfigError(f"TrendSettings.psi_bound must be positive and growth at least 1, got "
                              f"{self.psi_bound!r} and {self.growth!r}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"TrendSettings.reference must be one of {list(REFERENCES)}, got {self.reference!r}")


# -- reading ---------------------------------------------------------------------------------
def taxonomy_problem(record: RunRecord, policy) -> str | None:
    """Why a record was not made under this policy file's taxonomy, or None."""
    made_under = (record.provenance or {}).get("schema_id")
    if made_under and made_under != policy.schema_id:
        return f"verdict schema {made_under}, not {policy.schema_id}"
    named = {v["policy"] for v in (record.verdict or {}).get("violations", [])}
    named |= set((record.scores or {}).get("policies") or {}) | set(record.flagged or [])
    foreign = sorted(named - set(policy.ids))
    return f"it names policies {foreign}" if foreign else None


def checked_records(path: str | Path, policy=None, command: str = "trends") -> Iterator[RunRecord]:
    """A run file's records, each checked to be made under `policy`'s taxonomy (default: the shipped one).

    Raises:
        InputError: the file is missing or not a run file. ConfigError: another taxonomy.
    """
    from moderation.policy import load_policy

    path, policy = Path(path), policy or load_policy()
    if not path.is_file():
        raise InputError(f"run file not found: {path}")
    for record in read_records(path):
        problem = taxonomy_problem(record, policy)
        if problem:
            raise ConfigError(f"{path} was made under another taxonomy ({problem}); the policy file is "
                              f"{policy.describe()}. Give `moderation {command}` the run's own policy file with --policy")
        yield record


@dataclass(frozen=True)
class Period:
    """One run file, the dump it moderated (optional) and its date (optional)."""

    run: Path
    dump: Path | None = None
    date: str | None = None

    @property
    def name(self) -> str:
        return self.date or self.run.stem


def natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def check_files(runs: list[str | Path], dumps: list[str | Path] | None = None) -> None:
    """Raises InputError naming the first run file or dump (--input) that does not exist."""
    for what, paths in (("run file", runs), ("dump (--input)", dumps or [])):
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise InputError(f"{what} not found: {missing[0]}")


def order_periods(runs: list[str | Path], dumps: list[str | Path] | None = None,
                  dates: list[str] | None = None) -> list[Period]:
    """Periods in time order: by the dates when given (one per run), else by run file name.

    Raises:
        ConfigError: dumps or dates given, but not one per run; a repeated date.
    """
    dumps, dates = list(dumps or []), list(dates or [])
    for what, given in (("dump (--input)", dumps), ("date (--date)", dates)):
        if given and len(given) != len(runs):
            raise ConfigError(f"give one {what} per run file, in order, or none: {len(runs)} runs, {len(given)} given")
    if len(set(dates)) != len(dates):
        repeated = sorted(d for d, n in Counter(dates).items() if n > 1)
        raise ConfigError(f"each period needs its own date; repeated: {repeated}")
    periods = [Period(Path(r), Path(dumps[i]) if dumps else None, dates[i] if dates else None) for i, r in enumerate(runs)]
    return sorted(periods, key=lambda p: natural_key(p.date) if p.date else natural_key(p.run.name))


class PeriodData:
    """One period, kept small: per group (dimension, value) the scored count, flagged and
    near-threshold counts per policy and a fine score histogram; and the candidate items' text."""

    def __init__(self, period: Period, policies: tuple[str, ...]):
        self.period, self.policies = period, policies
        self.n: Counter = Counter()
        self.flagged: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(len(policies) + 1, dtype=np.int64))
        self.near: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(len(policies) + 1, dtype=np.int64))
        self.hist: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros((len(policies) + 1, BINS), dtype=np.int64))
        self.candidates: list[dict[str, Any]] = []
        self.stats: Counter = Counter()


def read_period(period: Period, policy, thresholds: dict[str, float], settings: TrendSettings,
                progress: bool = False, **read_options) -> PeriodData:
    """A period's figures: one pass over its run file, one over its dump (when given)."""
    from tqdm import tqdm

    policies = tuple(policy.ids)
    limits = np.array([thresholds.get(p, settings.default_threshold) for p in policies])
    lines, kinds, scores, flags = array("q"), [], array("f"), bytearray()
    records = tqdm(checked_records(period.run, policy), desc=f"reading {period.run.name}", unit=" records",
                   disable=not progress)
    data = PeriodData(period, policies)
    for record in records:
        if record.verdict is None:
            data.stats["errors"] += 1
            continue
        row = (record.scores or {}).get("policies") or {}
        values = [float(row[p]) if p in row else math.nan for p in policies]
        flagged = set(record.flagged) if record.flagged is not None else \
            {p for p, v, t in zip(policies, values, limits) if v >= t} if row else \
            {v["policy"] for v in record.verdict["violations"]} if record.verdict["decision"] != "allow" else set()
        lines.append(record.line)
        kinds.append(record.kind or "none")
        scores.extend(values)
        flags.extend(p in flagged for p in policies)
    data.stats["records"] = len(lines)
    scores_np = np.frombuffer(scores, dtype=np.float32).reshape(-1, len(policies)).astype(np.float64)
    flags_np = np.frombuffer(bytes(flags), dtype=np.uint8).reshape(-1, len(policies)).astype(bool)
    near_np = ~flags_np & (scores_np >= limits - settings.margin) & (scores_np < limits)
    candidates = {int(line): i for i, line in enumerate(lines) if flags_np[i].any() or near_np[i].any()}
    dims = _dimensions(period, np.frombuffer(lines, dtype=np.int64), kinds, candidates, data, settings.max_candidates,
                       progress, **read_options)
    _count(data, dims, scores_np, flags_np, near_np)
    for c in data.candidates:
        i = c.pop("row")
        marked = np.where(flags_np[i] | near_np[i], np.nan_to_num(scores_np[i], nan=0.0), -1.0)
        j = int(np.argmax(marked))
        score = None if math.isnan(scores_np[i, j]) else round(float(scores_np[i, j]), 5)
        c.update(policy=policies[j], score=score, status="flagged" if flags_np[i].any() else "near threshold")
    return data


def _dimensions(period: Period, lines: np.ndarray, kinds: list[str], candidates: dict[int, int], data: PeriodData,
                limit: int, progress: bool, **read_options) -> dict[str, np.ndarray]:
    """Per record, its value of each dimension (object arrays); candidates' text into data.candidates."""
    from tqdm import tqdm

    dims = {"all": np.full(len(lines), "all", dtype=object), "kind": np.array(kinds, dtype=object)}
    if period.dump is None:
        return dims
    where = {int(line): i for i, line in enumerate(lines)}
    region, language = np.full(len(lines), "none", dtype=object), np.full(len(lines), "none", dtype=object)
    rows = tqdm(read_items(period.dump, **read_options), desc=f"reading {period.dump.name}", unit=" rows",
                disable=not progress)
    for line, row in rows:
        i = where.get(line)
        if i is None or not isinstance(row, Item):
            continue
        region[i], language[i] = row.region or "none", row.language or "none"
        if line in candidates:
            if len(data.candidates) >= limit:
                data.stats["candidates not clustered"] += 1
                continue
            text = display_text(row)
            data.candidates.append({"item": row.id, "line": line, "row": candidates[line], "text": text,
                                    "masked": mask(text)})
    return {**dims, "region": region, "language": language}


TEXT_FIELDS = ("title", "description", "name", "about", "contact", "website", "caption", "transcript", "attributes")


def display_text(item: Item) -> str:
    """What people wrote in an item, without its owner, price, region and other bookkeeping
    (which would tell apart two copies of one script): the text clusters compare and examples show."""
    if item.kind == "live_chat":
        return "\n".join(m["text"] for m in item.fields.get("messages", []))
    parts = []
    for name in TEXT_FIELDS:
        value = item.fields.get(name)
        if isinstance(value, dict):
            parts += [f"{k}: {v}" for k, v in value.items()]
        elif value:
            parts.append(str(value))
    return "\n".join(parts)


def _count(data: PeriodData, dims: dict[str, np.ndarray], scores: np.ndarray, flags: np.ndarray, near: np.ndarray) -> None:
    any_score = np.where(np.isnan(scores).all(axis=1), np.nan, np.nanmax(np.where(np.isnan(scores), -1, scores), axis=1))
    scores = np.column_stack([scores, any_score]) if len(scores) else np.zeros((0, scores.shape[1] + 1))
    flags = np.column_stack([flags, flags.any(axis=1)]) if len(flags) else np.zeros((0, flags.shape[1] + 1), bool)
    near = np.column_stack([near, near.any(axis=1) & ~flags[:, -1]]) if len(near) else flags.copy()
    for dimension, values in dims.items():
        for value in sorted(set(values)):
            rows = values == value
            key = (dimension, value)
            data.n[key] = int(rows.sum())
            data.flagged[key] += flags[rows].sum(axis=0)
            data.near[key] += near[rows].sum(axis=0)
            bins = np.clip((scores[rows] * BINS).astype(np.int64, copy=False, casting="unsafe"), 0, BINS - 1)
            for j in range(scores.shape[1]):
                ok = ~np.isnan(scores[rows, j])
                data.hist[key][j] += np.bincount(bins[ok, j], minlength=BINS)


# -- statistics ------------------------------------------------------------------------------
def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population-stability index of two histograms over the same fine bins, regrouped into `bins`
    equal-width bins; empty bins get a share of 0.0001 so the log stays finite."""
    ref = reference.reshape(bins, -1).sum(axis=1) / max(1, reference.sum())
    cur = current.reshape(bins, -1).sum(axis=1) / max(1, current.sum())
    ref, cur = np.maximum(ref, 1e-4), np.maximum(cur, 1e-4)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic of two fine histograms, and its asymptotic p-value."""
    from scipy.special import kolmogorov

    n, m = int(reference.sum()), int(current.sum())
    if not n or not m:
        return 0.0, 1.0
    stat = float(np.abs(np.cumsum(reference) / n - np.cumsum(current) / m).max())
    return stat, float(kolmogorov(stat * math.sqrt(n * m / (n + m))))


def _reference(datas: list[PeriodData], i: int, mode: str) -> list[PeriodData]:
    if mode == "first":
        return [datas[0]]
    return datas[:i] if mode == "pooled" else [datas[i - 1]]


def rates_and_drift(datas: list[PeriodData], settings: TrendSettings) -> tuple[list, list, list]:
    """(rate rows, drift rows, alerts) over every period, group and policy."""
    names = [*datas[0].policies, ANY] if datas else []
    rates, drift, alerts = [], [], []
    for i, data in enumerate(datas):
        refs = _reference(datas, i, settings.reference) if i else []
        compared = []
        for key in sorted(data.n):
            for j, policy in enumerate(names):
                row = _rate_row(data, key, j, policy, settings)
                rates.append(row)
                ref_n = sum(r.n.get(key, 0) for r in refs)
                if refs and min(ref_n, data.n[key]) >= settings.min_n:
                    ref_k = sum(int(r.flagged[key][j]) for r in refs if key in r.n)
                    compared.append((row, _drift_row(data, refs, key, j, policy, ref_n), ref_k, ref_n))
        for row, d, ref_k, ref_n in compared:
            d["ks_p_adjusted"] = min(1.0, d["ks_p"] * len(compared))
            drift.append(d)
            alerts += _alerts(row, d, ref_k, ref_n, settings)
    return rates, drift, alerts


def _rate_row(data: PeriodData, key, j: int, policy: str, settings: TrendSettings) -> dict[str, Any]:
    n, k = data.n[key], int(data.flagged[key][j])
    low, high = wilson(k, n, settings.confidence)
    return {"period": data.period.name, "dimension": key[0], "value": key[1], "policy": policy, "n": n, "flagged": k,
            "rate": k / n if n else None, "low": low, "high": high, "near": int(data.near[key][j])}


def _drift_row(data: PeriodData, refs: list[PeriodData], key, j: int, policy: str, ref_n: int) -> dict[str, Any]:
    ref_hist = sum(r.hist[key][j] for r in refs if key in r.n)
    stat, p = ks(ref_hist, data.hist[key][j])
    return {"period": data.period.name, "reference": ",".join(r.period.name for r in refs), "dimension": key[0],
            "value": key[1], "policy": policy, "n": data.n[key], "n_ref": ref_n,
            "psi": round(psi(ref_hist, data.hist[key][j]), 5), "ks": round(stat, 5), "ks_p": p}


def _alerts(rate: dict, drift: dict, ref_k: int, ref_n: int, settings: TrendSettings) -> list[dict[str, Any]]:
    out, where = [], {k: rate[k] for k in ("period", "dimension", "value", "policy")}
    ref_rate = ref_k / ref_n
    low, high = wilson(ref_k, ref_n, settings.confidence)
    if abs(rate["rate"] - ref_rate) >= settings.rate_bound and (rate["low"] > high or rate["high"] < low):
        out.append({**where, "type": "rate", "value_now": rate["rate"], "value_before": ref_rate,
                    "detail": f"flagged rate {rate['rate']:.1%} [{rate['low']:.1%}, {rate['high']:.1%}] vs "
                              f"{ref_rate:.1%} [{low:.1%}, {high:.1%}] ({rate['flagged']}/{rate['n']} vs {ref_k}/{ref_n})"})
    large = drift["psi"] >= settings.psi_bound or drift["ks"] >= settings.ks_bound
    if large and drift["ks_p_adjusted"] < settings.ks_alpha:
        out.append({**where, "type": "drift", "psi": drift["psi"], "ks": drift["ks"], "ks_p": drift["ks_p"],
                    "detail": f"score drift vs {drift['reference']}: PSI {drift['psi']:.3f}, KS {drift['ks']:.3f} "
                              f"(p {drift['ks_p']:.2g}, corrected {drift['ks_p_adjusted']:.2g}), n {drift['n']} "
                              f"vs {drift['n_ref']}"})
    return out


# -- emerging clusters -----------------------------------------------------------------------
def cluster_candidates(datas: list[PeriodData], settings: TrendSettings) -> list[dict[str, Any]]:
    """Clusters of candidate items across periods (each item joins the cluster of its most similar
    earlier item), with their counts per period."""
    index, cluster_of, clusters = MinHashIndex(threshold=settings.cluster_threshold), {}, []
    for i, data in enumerate(datas):
        for n, c in enumerate(data.candidates):
            key = f"{i}:{n}"
            hit = index.near(c["masked"])
            if hit is None:
                clusters.append({"id": f"C{len(clusters) + 1}", "items": []})
                cluster_of[key] = len(clusters) - 1
            else:
                cluster_of[key] = cluster_of[hit[0]]
            index.add(key, c["masked"])
            clusters[cluster_of[key]]["items"].append((i, c))
    for cluster in clusters:
        cluster["counts"] = [sum(1 for i, _ in cluster["items"] if i == p) for p in range(len(datas))]
    return clusters


def emerging(datas: list[PeriodData], settings: TrendSettings) -> tuple[list[dict], list[dict]]:
    """(emerging cluster rows, every cluster that reached min_cluster in some period)."""
    clusters = cluster_candidates(datas, settings)
    seen_before = _document_frequencies(datas)
    rows = []
    for cluster in clusters:
        counts = cluster["counts"]
        for p in range(1, len(datas)):
            baseline = max(counts[max(0, p - settings.window):p])
            if counts[p] >= settings.min_cluster and counts[p] >= settings.growth * baseline:
                rows.append(_emerging_row(cluster, datas, p, baseline, seen_before[p], settings))
    summary = [{"id": c["id"], "counts": dict(zip((d.period.name for d in datas), c["counts"])),
                "example": " ".join(c["items"][0][1]["text"].split())[:200]}
               for c in clusters if max(c["counts"]) >= settings.min_cluster]
    return rows, summary


def _words(text: str) -> set[str]:
    return {w for w in normalise(text).split() if len(w) >= 3 and not w.isdigit() and w not in STOPWORDS}


def _document_frequencies(datas: list[PeriodData]) -> list[tuple[Counter, int]]:
    """Per period, the word document frequencies of all earlier periods' candidates, and their count."""
    out, df, total = [], Counter(), 0
    for data in datas:
        out.append((df.copy(), total))
        for c in data.candidates:
            df.update(_words(c["masked"]))
        total += len(data.candidates)
    return out


def _emerging_row(cluster, datas, p: int, baseline: int, before: tuple[Counter, int], settings) -> dict[str, Any]:
    items = [c for i, c in cluster["items"] if i == p]
    df, total = before
    own = [c for i, c in cluster["items"] if i < p]  # the background is the other clusters' earlier items
    df, total = df - Counter(w for c in own for w in _words(c["masked"])), total - len(own)
    inside = Counter(w for c in items for w in _words(c["masked"]))
    terms = sorted((w for w, k in inside.items() if k >= len(items) / 2),
                   key=lambda w: (-(inside[w] / len(items)) / (df[w] / max(total, 1) + 0.01), w))
    return {"period": datas[p].period.name, "cluster": cluster["id"], "status": "new" if baseline == 0 else "growing",
            "count": len(items), "baseline": baseline, "counts": cluster["counts"], "terms": terms[:6],
            "flagged": sum(c["status"] == "flagged" for c in items),
            "near_threshold": sum(c["status"] != "flagged" for c in items),
            "policies": dict(Counter(c["policy"] for c in items).most_common()),
            "examples": [{"item": c["item"], "policy": c["policy"], "score": c["score"], "status": c["status"],
                          "text": " ".join(c["text"].split())[:240]} for c in items[:settings.examples]]}


# -- the whole report ------------------------------------------------------------------------
def trends(periods: list[Period], policy=None, thresholds: dict[str, float] | None = None,
           settings: TrendSettings | None = None, progress: bool = False, **read_options) -> dict[str, Any]:
    """Rates, drift, alerts and emerging clusters over the periods (in the order given).

    Raises:
        ConfigError: fewer than two periods; a run under another taxonomy. InputError: a missing file.
    """
    from moderation.policy import load_policy

    policy, settings, thresholds = policy or load_policy(), settings or TrendSettings(), thresholds or {}
    if len(periods) < 2:
        raise ConfigError(f"trends need at least two run files (periods), got {len(periods)}")
    datas = [read_period(period, policy, thresholds, settings, progress, **read_options) for period in periods]
    rates, drift, alerts = rates_and_drift(datas, settings)
    rising, clusters = emerging(datas, settings)
    return {"schema_version": SCHEMA_VERSION, "settings": dataclasses.asdict(settings), "policy": policy.describe(),
            "policies": [*policy.ids, ANY],
            "thresholds": {p: thresholds.get(p, settings.default_threshold) for p in policy.ids},
            "periods": [{"name": d.period.name, "run": str(d.period.run), "date": d.period.date,
                         "dump": str(d.period.dump) if d.period.dump else None, **d.stats,
                         "candidates": len(d.candidates)} for d in datas],
            "rates": rates, "drift": drift, "alerts": alerts, "emerging": rising, "clusters": clusters,
            "histograms": {d.period.name: {p: d.hist[("all", "all")][j].reshape(20, -1).sum(axis=1).tolist()
                                           for j, p in enumerate([*policy.ids, ANY])} for d in datas}}


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """A trends file written by `write_json` (for the review app's trends page).

    Raises:
        InputError: missing, not JSON, or not a trends file.
    """
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"trends file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read trends file {path}: {exc}") from None
    if not isinstance(result, dict) or not {"rates", "alerts", "emerging", "periods"} <= set(result):
        raise InputError(f"{path} is not a trends file written by `moderation trends`")
    return result
