"""The cost cascade's first stage: a TF-IDF screen that clears confidently clean items before the LLM.

The screen is the TF-IDF baseline (moderation.baselines.TfidfBaseline): one balanced logistic
regression per policy. Its violation score for an item is the largest per-policy probability,
so an item reaches the LLM as soon as any one policy's classifier finds it suspect. (A single
"any violation" regression on the same features was measured as an alternative on the pooled
dev splits: at the same 1% recall loss it cleared 25% of items against 32% for the maximum.)

Items scoring below the threshold are cleared. The threshold is the largest one that skips at
most `max_recall_loss` of the violating dev items, so it is chosen on dev only.

A fitted screen is saved as plain files, never pickles: `screen.json` (threshold, settings,
sets, dev figures) and `model.npz` (vocabulary, idf, coefficients), loaded with
`allow_pickle=False`. Scores are always computed from those arrays, right after fitting too, so
a loaded screen scores exactly like the one that was fitted.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moderation.baselines import TfidfBaseline
from moderation.datasets import LabelledItem
from moderation.errors import ConfigError
from moderation.items import Item
from moderation.policy import Policy

logger = logging.getLogger(__name__)

FORMAT = "moderation-screen/1"
CARD, ARRAYS = "screen.json", "model.npz"
CRITERIA = ("pooled", "every-set")
# The TfidfVectorizer settings that change what `transform` computes; saved and restored as they are.
VECTORIZER_KEYS = ("analyzer", "ngram_range", "lowercase", "strip_accents", "norm", "use_idf", "smooth_idf", "sublinear_tf")


@dataclass(frozen=True)
class ScreenSettings:
    """How a screen is fitted and its threshold chosen."""

    max_recall_loss: float = field(default=0.01, metadata={"help": "Share of violating dev items the screen may clear, at most."})
    criterion: str = field(default="every-set", metadata={"help": "pooled: the loss bound holds over all dev items together; "
                                                               "every-set: it holds on each set's dev split.",
                                                               "choices": CRITERIA})
    max_features: int = field(default=200_000, metadata={"help": "TF-IDF vocabulary size, at most."})
    seed: int = field(default=0, metadata={"help": "Seed of the logistic regressions."})

    def __post_init__(self):
        if not 0 <= self.max_recall_loss < 1:
            raise ConfigError(f"ScreenSettings.max_recall_loss must be in [0, 1), got {self.max_recall_loss}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"ScreenSettings.criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.max_features < 1:
            raise ConfigError(f"ScreenSettings.max_features must be at least 1, got {self.max_features}")


class TfidfScorer:
    """Per-policy probabilities from stored arrays: a TF-IDF transform, then sigmoid(x . coef + b).

    Policies without a fitted regression (no positives in training) score 0, as in the baseline.
    """

    def __init__(self, vectorizer: dict[str, Any], terms: np.ndarray, idf: np.ndarray, coef: np.ndarray,
                 intercept: np.ndarray, fitted: np.ndarray):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.settings = dict(vectorizer)
        self.terms, self.idf, self.coef, self.intercept, self.fitted = terms, idf, coef, intercept, fitted
        self.vectorizer = TfidfVectorizer(**{**self.settings, "ngram_range": tuple(self.settings["ngram_range"])},
                                          vocabulary=terms.tolist())
        self.vectorizer.idf_ = idf

    @classmethod
    def from_baseline(cls, baseline: TfidfBaseline) -> TfidfScorer:
        v = baseline.vectorizer
        terms = np.array(sorted(v.vocabulary_, key=v.vocabulary_.get))
        p = len(baseline.policy_ids)
        coef, intercept, fitted = np.zeros((p, len(terms))), np.zeros(p), np.zeros(p, dtype=bool)
        for i, model in baseline.models.items():
            coef[i], intercept[i], fitted[i] = model.coef_[0], model.intercept_[0], True
        settings = {k: v.get_params()[k] for k in VECTORIZER_KEYS}
        settings["ngram_range"] = list(settings["ngram_range"])
        return cls(settings, terms, v.idf_.copy(), coef, intercept, fitted)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"terms": self.terms, "idf": self.idf, "coef": self.coef, "intercept": self.intercept, "fitted": self.fitted}

    def score(self, items: list[Item]) -> np.ndarray:
        """(items x policies) probabilities."""
        return self.score_texts([item.text() for item in items])

    def score_texts(self, texts: list[str]) -> np.ndarray:
        """(texts x policies) probabilities."""
        from scipy.special import expit

        x = self.vectorizer.transform(texts)
        return np.where(self.fitted, expit(x @ self.coef.T + self.intercept), 0.0)


class Screen:
    """A fitted scorer and a threshold: `clear(items)` says which items skip the LLM.

    Attributes:
        name: "tfidf", as written in each cleared record's `screen` field.
        policies: the taxonomy it was fitted for (its score columns).
        threshold: items whose violation score is below it are cleared.
        card: what `screen.json` holds besides the threshold: settings, sets, dev figures, dates.
        sha: hash of the saved files (None until saved or when not loaded from disk).
    """

    name = "tfidf"

    def __init__(self, scorer: TfidfScorer, policies: tuple[str, ...], threshold: float, card: dict[str, Any],
                 sha: str | None = None):
        self.scorer, self.policies, self.threshold, self.card, self.sha = scorer, tuple(policies), float(threshold), card, sha

    def violation_scores(self, items: list[Item]) -> np.ndarray:
        """The largest per-policy probability of each item."""
        if not items:
            return np.zeros(0)
        return self.scorer.score(items).max(1)

    def clear(self, items: list[Item]) -> list[dict | None]:
        """Per item: None if it must go to the LLM, else {name, score, threshold, sha}."""
        return [{"name": self.name, "score": float(s), "threshold": self.threshold, "sha": self.sha}
                if s < self.threshold else None for s in self.violation_scores(items)]

    def save(self, directory: str | Path) -> str:
        """Write screen.json and model.npz into `directory`; return (and keep) their hash."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / ARRAYS, **self.scorer.arrays())
        card = {"format": FORMAT, "name": self.name, "threshold": self.threshold,
                "vectorizer": self.scorer.settings, "policies": list(self.policies), **self.card}
        (directory / CARD).write_text(json.dumps(card, indent=2) + "\n")
        self.sha = files_sha(directory)
        return self.sha


def files_sha(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in (CARD, ARRAYS):
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()[:16]


def choose_threshold(scores: np.ndarray, violating: np.ndarray, max_recall_loss: float) -> float:
    """The largest threshold t such that at most `max_recall_loss` of the violating items score below t.

    With v the violating items' scores in ascending order and k = floor(loss * len(v)), t = v[k]:
    only v[0..k-1] (fewer, on ties) lie below it, and any larger t would also clear v[k].

    Raises:
        ConfigError: no violating item to bound the loss on.
    """
    v = np.sort(np.asarray(scores, dtype=float)[np.asarray(violating, dtype=bool)])
    if not len(v):
        raise ConfigError("cannot choose a screen threshold: the dev items hold no violation")
    return float(v[math.floor(max_recall_loss * len(v) + 1e-9)])


def dev_figures(scores: np.ndarray, violating: np.ndarray, threshold: float) -> dict[str, Any]:
    """What the threshold does on some dev items: cleared share, and violations skipped."""
    cleared = scores < threshold
    n, bad = len(scores), int(violating.sum())
    skipped = int((cleared & violating).sum())
    clean = n - bad
    return {"items": n, "violating": bad, "cleared": int(cleared.sum()),
            "cleared_share": float(cleared.mean()) if n else 0.0,
            "clean_cleared_share": float((cleared & ~violating).sum() / clean) if clean else 0.0,
            "skipped_violations": skipped, "recall_loss": skipped / bad if bad else 0.0}


def fit_screen(train: list[LabelledItem], dev: list[LabelledItem], policy_ids: tuple[str, ...],
               max_recall_loss: float = 0.01, *, criterion: str = "every-set", max_features: int = 200_000,
               seed: int = 0) -> Screen:
    """Train the TF-IDF scorer on `train` and choose the threshold on `dev`, for a taxonomy's policies.

    Args:
        train: labelled items of the train splits.
        dev: labelled items of the dev splits (their `source` groups the per-set figures).
        policy_ids: the taxonomy (the policy file's ids) the labels are in; a run refuses a screen of another.
        max_recall_loss, criterion, max_features, seed: see ScreenSettings.

    Returns:
        The screen; `screen.card["dev"]` holds the pooled and per-set dev figures.
    """
    settings = ScreenSettings(max_recall_loss, criterion, max_features, seed)
    if not train or not dev:
        raise ConfigError(f"fit_screen needs train and dev items, got {len(train)} train and {len(dev)} dev")
    logger.info("screen: fitting TF-IDF on %d train items", len(train))
    scorer = TfidfScorer.from_baseline(TfidfBaseline(policy_ids, settings.max_features, settings.seed).fit(train))
    scores = scorer.score([li.item for li in dev]).max(1)
    violating = np.array([bool(li.gold_violations) for li in dev])
    sources = np.array([li.source for li in dev])
    sets = list(dict.fromkeys(sources.tolist()))
    threshold = choose_threshold(scores, violating, settings.max_recall_loss)
    if settings.criterion == "every-set":  # each set bounds the threshold; sets without violations on dev do not
        threshold = min(choose_threshold(scores[sources == s], violating[sources == s], settings.max_recall_loss)
                        for s in sets if violating[sources == s].any())
    figures = {"pooled": dev_figures(scores, violating, threshold),
               "per_set": {s: dev_figures(scores[sources == s], violating[sources == s], threshold) for s in sets}}
    card = {"settings": asdict(settings), "train_sets": sorted({li.source for li in train}), "dev_sets": sets,
            "train_items": len(train), "dev": figures,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    logger.info("screen: threshold %.4f clears %.1f%% of dev items", threshold, 100 * figures["pooled"]["cleared_share"])
    return Screen(scorer, policy_ids, threshold, card)


def load_screen(directory: str | Path, policy: Policy) -> Screen:
    """A screen saved by `Screen.save` (`moderation screen fit`), for the taxonomy of `policy`.

    Raises:
        ConfigError: the directory or a file is missing, unreadable, inconsistent, or was fitted
            for another policy taxonomy (the message names both).
    """
    directory = Path(directory)
    where = f"screen {directory}"
    if not (directory / CARD).is_file() or not (directory / ARRAYS).is_file():
        raise ConfigError(f"{where}: expected {CARD} and {ARRAYS} (written by `moderation screen fit`)")
    try:
        card = json.loads((directory / CARD).read_text())
        with np.load(directory / ARRAYS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("terms", "idf", "coef", "intercept", "fitted")}
    except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError, BadZipFile and pickled arrays are ValueErrors
        raise ConfigError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
    _check(card, arrays, where, policy)
    meta = {k: v for k, v in card.items() if k not in ("format", "name", "threshold", "vectorizer", "policies")}
    scorer = TfidfScorer(card["vectorizer"], arrays["terms"], arrays["idf"], arrays["coef"], arrays["intercept"],
                         arrays["fitted"].astype(bool))
    return Screen(scorer, policy.ids, card["threshold"], meta, files_sha(directory))


def _check(card: dict, arrays: dict[str, np.ndarray], where: str, policy: Policy) -> None:
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ConfigError(f"{where}: {CARD} is not a {FORMAT} file")
    if not isinstance(card.get("threshold"), (int, float)) or not isinstance(card.get("vectorizer"), dict):
        raise ConfigError(f"{where}: {CARD} lacks a numeric threshold or the vectorizer settings")
    if card.get("policies") != list(policy.ids):  # coefficient rows follow the taxonomy's order
        raise ConfigError(f"{where} was fitted for another taxonomy, policies {card.get('policies')}; this run's policy "
                          f"file is {policy.describe()}. Fit one for it: `moderation screen fit --policy FILE`")
    p, v = len(policy.ids), len(arrays["terms"])
    shapes = {"idf": (v,), "coef": (p, v), "intercept": (p,), "fitted": (p,)}
    bad = {k: arrays[k].shape for k, s in shapes.items() if arrays[k].shape != s}
    if bad or arrays["terms"].dtype.kind != "U":
        raise ConfigError(f"{where}: {ARRAYS} arrays do not fit together ({v} terms, {p} policies): {bad}")
