import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, recall_score, roc_auc_score

from benchmarks.metrics import decide, evaluate, summarize

C3 = ("benign", "unsure", "malignant")


def test_three_class_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 2, 2, 0]]  # predictions 0 1 1 2 2 0
    m = evaluate(probs, labels, C3, C3)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["recall"] == {"benign": 0.5, "unsure": 0.5, "malignant": 0.5}
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["mae"] == pytest.approx((0 + 1 + 0 + 1 + 0 + 2) / 6)
    assert m["f1"]["unsure"] == pytest.approx(0.5)
    assert "auc" not in m


def test_against_scikit_learn_on_random_data():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, 200)
    m = evaluate(probs, labels, C3, C3)
    pred = probs.argmax(1)
    np.testing.assert_allclose(list(m["recall"].values()), recall_score(labels, pred, average=None))
    np.testing.assert_allclose(list(m["f1"].values()), f1_score(labels, pred, average=None))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert m["qwk"] == pytest.approx(cohen_kappa_score(labels, pred, weights="quadratic"))


def test_lidc_b_decision_is_malignant_versus_benign_only():
    probs = np.array([[0.30, 0.60, 0.10], [0.10, 0.60, 0.30], [0.5, 0.0, 0.5 + 1e-9]])
    np.testing.assert_array_equal(decide(probs, C3, ("benign", "malignant")), [0, 2, 2])
    # Same as the expected class index above 1 (for K = 3).
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=500)
    expected = p @ np.arange(3)
    np.testing.assert_array_equal(decide(p, C3, ("benign", "malignant")) == 2, expected > 1)
    labels = rng.choice([0, 2], 500)
    m = evaluate(p, labels, C3, ("benign", "malignant"))
    assert set(m["recall"]) == {"benign", "malignant"} and "unsure" not in m["f1"]
    assert m["auc"] == pytest.approx(roc_auc_score(labels == 2, p[:, 2] - p[:, 0]))
    assert np.array(m["confusion"]).shape == (2, 2)


def test_lidc_c_two_classes():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    m = evaluate(probs, np.array([0, 1, 1, 1]), ("benign", "malignant"), ("benign", "malignant"))
    assert m["accuracy"] == 0.75 and m["recall"]["malignant"] == pytest.approx(2 / 3) and m["auc"] == 1.0


def test_summarize_uses_sample_std():
    s = summarize([{"accuracy": 0.5, "recall": {"b": 1.0}}, {"accuracy": 0.7, "recall": {"b": 0.0}}])
    assert s["accuracy"]["mean"] == pytest.approx(0.6)
    assert s["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s["recall.b"]["n"] == 2
