"""Non-LLM systems in the same table as the LLM: keyword rules, and TF-IDF + logistic regression.

Each system scores items with an (items x policies) matrix in [0, 1].
"""

from __future__ import annotations

import logging

import numpy as np

from moderation.datasets import LabelledItem
from moderation.items import Item
from moderation.metrics import label_matrix
from moderation.rules import rule_matches

logger = logging.getLogger(__name__)


class RuleBaseline:
    """1.0 for each policy whose keyword rules fire, else 0.0. The rules are written for the default
    taxonomy's ids (moderation.rules): under another taxonomy only the ids it shares can fire."""

    name = "rules"
    tunable = False
    trains = False

    def __init__(self, policy_ids: tuple[str, ...]):
        self.policy_ids = tuple(policy_ids)

    def fit(self, train: list[LabelledItem]) -> RuleBaseline:
        return self

    def score(self, items: list[Item]) -> np.ndarray:
        fired = [set(rule_matches(item.text())) & set(self.policy_ids) for item in items]
        return label_matrix(fired, self.policy_ids).astype(float)


class TfidfBaseline:
    """Character n-gram TF-IDF (works across scripts and obfuscations) and one balanced
    logistic regression per policy, trained on the train splits."""

    name = "tfidf"
    tunable = True
    trains = True

    def __init__(self, policy_ids: tuple[str, ...], max_features: int = 200_000, seed: int = 0):
        self.policy_ids = tuple(policy_ids)
        self.max_features = max_features
        self.seed = seed
        self.models: dict[int, object] = {}

    def fit(self, train: list[LabelledItem]) -> TfidfBaseline:
        return self.fit_texts([li.item.text() for li in train], label_matrix([li.gold_violations for li in train], self.policy_ids))

    def fit_texts(self, texts: list[str], y: np.ndarray) -> TfidfBaseline:
        """Fit on texts and their (texts x policies) 0/1 labels."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True,
                                          max_features=self.max_features)
        x = self.vectorizer.fit_transform(texts)
        for i, policy in enumerate(self.policy_ids):
            if y[:, i].any() and not y[:, i].all():
                model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=self.seed)
                self.models[i] = model.fit(x, y[:, i])
            else:
                logger.warning("tfidf: no positives for %s in the training data; it scores 0", policy)
        return self

    def score(self, items: list[Item]) -> np.ndarray:
        x = self.vectorizer.transform([item.text() for item in items])
        scores = np.zeros((len(items), len(self.policy_ids)))
        for i, model in self.models.items():
            scores[:, i] = model.predict_proba(x)[:, 1]
        return scores


BASELINES = {"rules": RuleBaseline, "tfidf": TfidfBaseline}
