"""The attribute-only reference: what the readers' annotations alone predict, without an image.

Per fold, a logistic regression (scikit-learn, standardised features, L2, ``max_iter=2000``) on the eight mean
attribute scores and the mean diameter (:data:`FEATURES`) of the fold's training nodules, trained on the protocol's
training classes and decided as every method is (``benchmarks.metrics.decide``: the argmax over the test classes;
on LIDC-B over {benign, malignant} of the 3-class probabilities). ``python -m benchmarks.prepare reference`` prints
its accuracy; the pathology table (``benchmarks.stats.pathology``) shows it as a reference row. A model of the
annotations, not a method: it reads the readers' attribute scores of the test nodules, which no method sees at test
time.
"""
from __future__ import annotations

import numpy as np

from benchmarks.data.index import ATTRIBUTES
from benchmarks.data.protocols import CLASS_NAMES, fold_table

FEATURES = (*ATTRIBUTES, "diameter_mm")


def fold_predictions(dataset: str, fold: int, min_readers: int, table) -> tuple[object, np.ndarray, list[str]]:
    """One fold's test rows (``fold_table(...).test``), their probabilities (N, K) over the protocol's training
    classes, and those class names (the order of the columns)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    ft = fold_table(dataset, fold, min_readers, table=table)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(ft.train[list(FEATURES)].to_numpy(), ft.train["label"].to_numpy())
    proba = clf.predict_proba(ft.test[list(FEATURES)].to_numpy())  # (N, K) in the order of clf.classes_ (ascending label)
    classes = [CLASS_NAMES[int(c)] for c in clf.classes_]
    return ft.test, proba, classes
