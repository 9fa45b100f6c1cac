"""Every metric, computed the same way for every method (scikit-learn under the hood).

Decision rule. The predicted class is the argmax of the probabilities over the
classes the test split can hold. On LIDC-A and LIDC-C that is every training
class. On LIDC-B (trained on benign/unsure/malignant, tested on benign and
malignant) it is the argmax over {benign, malignant} of the 3-class
probabilities: p(malignant) > p(benign). For K = 3 this is the same as an
expected class index E = p_unsure + 2 p_malignant above 1, since
E - 1 = p_malignant - p_benign.

A method may decide by the median instead (``decision_rule = "median"`` on the
model; CORF's default): the first class, in the ordinal order of the test
classes, whose cumulative probability reaches 0.5 (renormalised over the test
classes). For cumulative probabilities P(y > k) that fall with k this is the
count of those above 0.5, the rule of the binary-decomposition ordinal
methods. With two test classes both rules agree (up to exact ties).

Reported: accuracy; recall and F1 of each test class; macro F1 over the test
classes; the confusion matrix (rows true, columns predicted, test classes);
on binary test sets the AUC of p(malignant) - p(benign) (for K = 2 a monotone
function of p(malignant)); on LIDC-A the mean absolute error of the class
index and Cohen's quadratic-weighted kappa.
"""
from __future__ import annotations

import numpy as np

RULES = ("argmax", "median")


def decide(probs: np.ndarray, class_names, test_class_names, rule: str = "argmax") -> np.ndarray:
    """(N, K) probabilities -> (N,) predicted indices into ``class_names``, restricted to the test
    classes (kept in the order of ``class_names``, which is the ordinal order)."""
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; one of {RULES}")
    allowed = np.array(sorted(list(class_names).index(c) for c in test_class_names))
    p = np.asarray(probs, dtype=np.float64)[:, allowed]  # (N, K_test)
    if rule == "argmax":
        return allowed[p.argmax(1)]
    cdf = np.cumsum(p, 1) / p.sum(1, keepdims=True)  # (N, K_test)
    return allowed[(cdf >= 0.5).argmax(1)]  # the first class whose cumulative probability reaches 1/2


def evaluate(probs, labels, class_names, test_class_names, rule: str = "argmax") -> dict:
    """Metrics of one test split. ``labels`` index ``class_names``; ``probs`` is (N, K);
    ``rule`` the decision rule (``decide``)."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score, recall_score, roc_auc_score  # noqa: PLC0415

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = decide(probs, class_names, test_class_names, rule)
    idx = [list(class_names).index(c) for c in test_class_names]
    recall = recall_score(labels, pred, labels=idx, average=None, zero_division=0)
    f1 = f1_score(labels, pred, labels=idx, average=None, zero_division=0)
    out = {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)),
        "recall": {c: float(r) for c, r in zip(test_class_names, recall)},
        "f1": {c: float(f) for c, f in zip(test_class_names, f1)},
        "macro_f1": float(np.mean(f1)),
        "confusion": confusion_matrix(labels, pred, labels=idx).tolist(),
    }
    if len(test_class_names) == 2:
        b, m = idx
        score = probs[:, m] - probs[:, b]
        out["auc"] = float(roc_auc_score(labels == m, score)) if len(set(labels)) == 2 else float("nan")
    if len(test_class_names) == 3:
        out["mae"] = float(np.abs(pred - labels).mean())
        out["qwk"] = float(cohen_kappa_score(labels, pred, weights="quadratic"))
    return out


def log_loss(probs, labels, eps: float = 1e-12) -> float:
    """Mean cross-entropy of the true class, -mean log p[y] (``probs`` (N, K) over the training
    classes, ``labels`` their indices): a tuning trial's secondary validation score, which tells
    apart trials of the same accuracy (the count of right answers ties often on a few hundred
    nodules; how sure they are rarely does)."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, eps, 1.0)).mean())


def summarize(fold_metrics: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1) over folds of every scalar metric."""
    def flat(m, prefix=""):
        for k, v in m.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)) and k != "n":
                yield f"{prefix}{k}", float(v)

    keys: dict[str, list[float]] = {}
    for m in fold_metrics:
        for k, v in flat(m):
            keys.setdefault(k, []).append(v)
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
        for k, v in keys.items()
    }
