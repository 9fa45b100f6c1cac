"""The inner validation split of a test fold: where tuning measures its objective.

Nested protocol (benchmarks.tune): for outer test fold f, the training folds
(every fold but f) are split once more into an inner training part and an inner
validation part. Trials train on the inner training part and are scored on the
inner validation part; the test fold is never read. The chosen configuration is
then trained on the whole outer training split and evaluated on fold f.

The inner split is patient-grouped and stratified like the outer folds:
scikit-learn's StratifiedGroupKFold with :data:`INNER_SPLITS` splits, shuffled
with the seed ``INNER_SEED + f``, over the outer training rows of the protocol
(stratified by label, grouped by patient); its first split's held-out patients
are the validation patients (about 1 in 5). The validation part holds the
protocol's *test* classes only, so it scores a trial the way the test fold
scores a run (LIDC-B: trained on three classes, scored on benign and
malignant); the unsure nodules of LIDC-B's validation patients are in neither
part, so that no patient is on both sides. Deterministic: a function of the
committed folds, the protocol and these constants, all in :func:`inner_hash`.
"""
from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from benchmarks.data.protocols import CLASS_NAMES, DEFAULT_MIN_READERS, FoldTable, protocol_hash

INNER_SPLITS = 5
INNER_SEED = 1000  # + the outer fold: each outer fold gets its own inner split


def inner_fold_table(ft: FoldTable) -> FoldTable:
    """The inner split of outer fold ``ft``: ``train`` the inner training rows, ``test`` the inner
    validation rows (the protocol's test classes of the held-out patients)."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    rows = ft.train
    skf = StratifiedGroupKFold(n_splits=INNER_SPLITS, shuffle=True, random_state=INNER_SEED + ft.fold)
    _, held = next(skf.split(rows, rows["label"].to_numpy(), groups=rows["patient_id"].to_numpy()))
    val_patients = set(rows["patient_id"].iloc[held])
    is_val = rows["patient_id"].isin(val_patients).to_numpy()
    scored = rows["label"].isin([CLASS_NAMES.index(c) for c in ft.protocol.test_classes]).to_numpy()
    train = rows[~is_val].reset_index(drop=True)
    val = rows[is_val & scored].reset_index(drop=True)
    return FoldTable(ft.protocol, ft.fold, train, val)


@functools.lru_cache(maxsize=8)
def inner_hash(min_readers: int = DEFAULT_MIN_READERS) -> str:
    """sha256 of the inner-split rule and the protocol it splits (every trial's protocol hash)."""
    rule = {"inner_splits": INNER_SPLITS, "inner_seed": INNER_SEED, "validation": "first split, test classes only",
            "splitter": "StratifiedGroupKFold(shuffle=True)"}
    return hashlib.sha256((json.dumps(rule, sort_keys=True) + protocol_hash(min_readers)).encode()).hexdigest()


def inner_ids(dataset: str, fold: int, min_readers: int = DEFAULT_MIN_READERS) -> tuple[np.ndarray, np.ndarray]:
    """(inner training ids, inner validation ids) of one outer fold (for tests and docs)."""
    from benchmarks.data.protocols import fold_table  # noqa: PLC0415

    t = inner_fold_table(fold_table(dataset, fold, min_readers))
    return t.train["nodule_id"].to_numpy(str), t.test["nodule_id"].to_numpy(str)
