"""Labels, the LIDC-A/B/C protocols, the 5-fold patient-grouped split and its hash.

Label rule (paper Sec. 3.1, after [11, 18]): from the mean of the readers'
malignancy scores, benign < 2.5 <= unsure <= 3.5 < malignant.

Which nodules: the public annotations do not give the paper's 2,026 nodules
under any obvious rule, so ours is explicit: a nodule is kept when at least
``min_readers`` radiologists annotated it (default 2; 1-4 allowed).

Protocols (one fold assignment serves all three; B and C filter it, so a
patient sits in the same fold everywhere):
  LIDC-A  train benign/unsure/malignant, test benign/unsure/malignant
  LIDC-B  train benign/unsure/malignant, test benign/malignant
  LIDC-C  train benign/malignant,        test benign/malignant

Folds: scikit-learn's StratifiedGroupKFold (5 folds, shuffled with a fixed
seed), stratified by the 3-class label and grouped by patient, computed once
per ``min_readers`` and committed (``folds_min<r>.csv``) so that a new
scikit-learn cannot move a nodule to another fold.

Repeated partitions (``--repeats``): that assignment is repeat 0; repeats 1-9 are
further patient-grouped, stratified partitions of the same nodules, committed in
``repeats_min<r>.csv`` (``benchmarks.data.partitions``). A run of repeat k >= 1
hashes its partition into its protocol hash; repeat 0's hash is what it always was.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.data.partitions import check_repeat, repeat_digest, repeat_folds, write_repeats
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text, sha256_file

if TYPE_CHECKING:
    import pandas as pd

CLASS_NAMES = ("benign", "unsure", "malignant")
BENIGN_BELOW = 2.5
MALIGNANT_ABOVE = 3.5
DEFAULT_MIN_READERS = 2
MIN_READERS_CHOICES = (1, 2, 3, 4)
N_FOLDS = 5
FOLD_SEED = 0


@dataclass(frozen=True)
class Protocol:
    name: str
    train_classes: tuple[str, ...]
    test_classes: tuple[str, ...]


PROTOCOLS = {
    "LIDC-A": Protocol("LIDC-A", CLASS_NAMES, CLASS_NAMES),
    "LIDC-B": Protocol("LIDC-B", CLASS_NAMES, ("benign", "malignant")),
    "LIDC-C": Protocol("LIDC-C", ("benign", "malignant"), ("benign", "malignant")),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def check_fold(fold) -> int:
    if not isinstance(fold, (int, np.integer)) or isinstance(fold, bool) or not 0 <= fold < N_FOLDS:
        raise UserError(f"fold must be an integer in 0-{N_FOLDS - 1}, got {fold!r}")
    return int(fold)


def check_min_readers(r) -> int:
    if r not in MIN_READERS_CHOICES:
        raise UserError(f"min readers must be one of {', '.join(map(str, MIN_READERS_CHOICES))}, got {r!r}")
    return int(r)


def class_of(mean_malignancy) -> np.ndarray:
    """Index into :data:`CLASS_NAMES` of each mean malignancy score."""
    m = np.asarray(mean_malignancy, dtype=float)
    return np.where(m < BENIGN_BELOW, 0, np.where(m > MALIGNANT_ABOVE, 2, 1))


def eligible(index: pd.DataFrame, min_readers: int) -> pd.DataFrame:
    """Nodules annotated by at least ``min_readers`` readers, with their ``label`` (0-2)."""
    out = index[index["n_readers"] >= check_min_readers(min_readers)].copy()
    out["label"] = class_of(out["malignancy"])
    return out.reset_index(drop=True)


def folds_path(min_readers: int) -> Path:
    from benchmarks.data.index import DATA_DIR  # noqa: PLC0415  (pandas and pylidc: loaded when needed, not for --help)

    return DATA_DIR / f"folds_min{min_readers}.csv"


def compute_folds(index: pd.DataFrame, min_readers: int) -> pd.DataFrame:
    """Assign each eligible nodule a fold: columns nodule_id, fold."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    nod = eligible(index, min_readers)
    skf = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=FOLD_SEED)
    fold = np.full(len(nod), -1)
    for k, (_, test) in enumerate(skf.split(nod, nod["label"], groups=nod["patient_id"])):
        fold[test] = k
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame({"nodule_id": nod["nodule_id"], "fold": fold})


def write_folds(index: pd.DataFrame) -> list[Path]:
    """The fold files of every label rule and their repeated partitions (``repeats_min<r>.csv``)."""
    paths = []
    for r in MIN_READERS_CHOICES:
        path = folds_path(r)
        atomic_write_text(path, compute_folds(index, r).to_csv(index=False))
        paths.append(path)
    return paths + write_repeats({r: eligible(index, r) for r in MIN_READERS_CHOICES})


def load_folds(min_readers: int, repeat: int = 0) -> pd.DataFrame:
    """Columns nodule_id, fold of one partition (repeat 0: the committed fold file)."""
    if check_repeat(repeat):
        return repeat_folds(check_min_readers(min_readers), repeat)
    path = folds_path(check_min_readers(min_readers))
    if not path.exists():
        raise UserError(f"fold file {path} is missing; run `python -m benchmarks.prepare index`")
    import pandas as pd  # noqa: PLC0415

    return pd.read_csv(path)


@functools.lru_cache(maxsize=32)
def protocol_hash(min_readers: int = DEFAULT_MIN_READERS, repeat: int = 0) -> str:
    """sha256 over the label rule, the nodule index and the fold assignment.

    Shared by LIDC-A/B/C (they are views of one labelled, folded nodule set);
    every record stores it with the dataset name. Repeat k >= 1 adds its
    partition (the sha256 of its ``nodule_id,fold`` rows) and k; repeat 0 adds
    nothing, so its hash is the one records had before repeats existed. The
    crop caches are keyed by repeat 0's hash (the crops do not depend on the
    partition).
    """
    rule = {
        "classes": CLASS_NAMES,
        "benign_below": BENIGN_BELOW,
        "malignant_above": MALIGNANT_ABOVE,
        "min_readers": check_min_readers(min_readers),
        "n_folds": N_FOLDS,
        "protocols": {k: [p.train_classes, p.test_classes] for k, p in PROTOCOLS.items()},
    }
    h = hashlib.sha256(json.dumps(rule, sort_keys=True).encode())
    from benchmarks.data.index import INDEX_PATH  # noqa: PLC0415

    h.update(sha256_file(INDEX_PATH).encode())
    h.update(sha256_file(folds_path(min_readers)).encode())
    if check_repeat(repeat):
        h.update(f"repeat {repeat}: {repeat_digest(min_readers, repeat)}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class FoldTable:
    """Which nodules are in train and test for one protocol and fold (no images)."""

    protocol: Protocol
    fold: int
    train: pd.DataFrame  # index rows + "label" (0-2, CLASS_NAMES order) + "fold"
    test: pd.DataFrame


def labelled_folds(min_readers: int = DEFAULT_MIN_READERS, repeat: int = 0) -> pd.DataFrame:
    """Eligible nodules with their 3-class label and fold (in partition ``repeat``)."""
    from benchmarks.data.index import load_index  # noqa: PLC0415

    nod = eligible(load_index(), min_readers)
    folds = load_folds(min_readers, repeat)
    merged = nod.merge(folds, on="nodule_id", how="left", validate="one_to_one")
    if merged["fold"].isna().any() or len(folds) != len(nod):
        raise UserError("the fold file does not match the nodule index; run `python -m benchmarks.prepare index`")
    merged["fold"] = merged["fold"].astype(int)
    return merged


def fold_table(protocol: str, fold: int, min_readers: int = DEFAULT_MIN_READERS, table: pd.DataFrame | None = None,
               repeat: int = 0) -> FoldTable:
    """``table``: ``labelled_folds(min_readers, repeat)`` when given (it decides the partition)."""
    p = get_protocol(protocol)
    fold = check_fold(fold)
    t = labelled_folds(min_readers, repeat) if table is None else table
    train_ok = t["label"].isin([CLASS_NAMES.index(c) for c in p.train_classes])
    test_ok = t["label"].isin([CLASS_NAMES.index(c) for c in p.test_classes])
    train = t[(t["fold"] != fold) & train_ok].reset_index(drop=True)
    test = t[(t["fold"] == fold) & test_ok].reset_index(drop=True)
    return FoldTable(p, fold, train, test)
