import math

import numpy as np
import pytest

from moderation.metrics import (
    Labels,
    bootstrap,
    choose_thresholds,
    decide,
    label_matrix,
    mcnemar,
    point_metrics,
    prf,
    ranking_metrics,
    tpr_at_fpr,
)

P = ("a", "b", "c")


def labels(gold_sets, pred_sets, scores=None, gold_dec=None, pred_dec=None):
    gold, pred = label_matrix(gold_sets, P), label_matrix(pred_sets, P)
    n = len(gold)
    return Labels(gold, pred, pred.astype(float) if scores is None else np.asarray(scores, dtype=float),
                  np.array(gold_dec or [None] * n, dtype=object), np.array(pred_dec or [None] * n, dtype=object),
                  np.ones(n, dtype=bool), P)


def test_prf_by_hand():
    gold = label_matrix([{"a"}, {"a", "b"}, set(), {"b"}], P)
    pred = label_matrix([{"a"}, {"b"}, {"a"}, set()], P)
    precision, recall, f1 = prf(gold, pred)
    assert precision[0] == pytest.approx(0.5) and recall[0] == pytest.approx(0.5)
    assert precision[1] == pytest.approx(1.0) and recall[1] == pytest.approx(0.5) and f1[1] == pytest.approx(2 / 3)
    assert math.isnan(precision[2]) and math.isnan(recall[2])


def test_point_metrics_by_hand():
    lab = labels([{"a"}, {"a", "b"}, set(), {"b"}], [{"a"}, {"b"}, {"a"}, set()],
                 gold_dec=["remove", "remove", "allow", None], pred_dec=["remove", "review", "remove", "allow"])
    m = point_metrics(lab)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (4 + 3))
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)  # c is absent from gold: not averaged
    assert m["decision_accuracy"] == pytest.approx(1 / 3)
    assert m["clean_fpr"] == 1.0 and "c/f1" not in m


def test_ranking_and_tpr_at_fpr():
    y = np.array([0] * 95 + [1] * 5, dtype=bool)
    score = np.r_[np.linspace(0, 0.5, 95), [0.9, 0.8, 0.7, 0.3, 0.2]]
    assert tpr_at_fpr(y, score, 0.0) == pytest.approx(0.6)
    assert tpr_at_fpr(y, score, 0.7) == pytest.approx(1.0)
    lab = labels([{"a"}] * 5 + [set()] * 5, [{"a"}] * 10, scores=[[s, 0, 0] for s in [.9, .8, .7, .6, .2, .5, .4, .3, .1, .05]])
    r = ranking_metrics(lab)
    assert r["a/roc_auc"] == pytest.approx(22 / 25) and "b/auprc" not in r


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    gold = [set(["a"]) if x else set() for x in rng.random(300) < 0.3]
    pred = [g if rng.random() < 0.8 else ({"a"} - g) for g in gold]
    lab = labels(gold, pred)
    a = bootstrap(lab, lambda l: point_metrics(l), n_boot=200, seed=3)
    assert a == bootstrap(lab, lambda l: point_metrics(l), n_boot=200, seed=3)
    low, high = a["micro_f1"]
    assert low < point_metrics(lab)["micro_f1"] < high


def test_thresholds_maximise_dev_f1():
    scores = np.array([[0.9], [0.8], [0.35], [0.3], [0.2], [0.1]])
    gold = np.array([[1], [1], [1], [0], [0], [0]], dtype=bool)
    assert choose_thresholds(scores, gold)[0] == pytest.approx(0.35)
    assert choose_thresholds(scores, np.zeros_like(gold))[0] == 0.5  # no positives: default


def test_decide_takes_the_strongest_action():
    pred = label_matrix([{"a", "b"}, set(), {"c"}], P)
    out = decide(pred, np.array([True, True, False]), {"a": "review", "b": "remove", "c": "restrict"}, P)
    assert list(out) == ["remove", "allow", None]


def test_mcnemar():
    a = np.array([True] * 10 + [False] * 2 + [True] * 50)
    b = np.array([False] * 10 + [True] * 2 + [True] * 50)
    r = mcnemar(a, b)
    assert r["a_only_correct"] == 10 and r["b_only_correct"] == 2 and r["p_value"] < 0.05
