"""The one dataset API: protocol + fold + source -> train and test arrays."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmarks.data import cache
from benchmarks.data.index import ATTRIBUTES
from benchmarks.data.inner import inner_fold_table
from benchmarks.data.protocols import CLASS_NAMES, DEFAULT_MIN_READERS, check_fold, fold_table, get_protocol, labelled_folds, protocol_hash

log = logging.getLogger(__name__)


class Rows:
    """Rows of a larger array gathered when read: a fold's training crops in the cache,
    (N, 32, 32, 32) float32 as ``np.asarray`` gives them. A run that trains on a subset
    (``train_limit``) reads only its rows: no copy of the whole split (~200 MB) per process."""

    def __init__(self, base: np.ndarray, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        picked = self.rows[first]
        out = np.asarray(self.base[picked])  # (n, 32, 32, 32), or (32, 32, 32) for one row
        if not rest:
            return out
        return out[rest] if np.ndim(picked) == 0 else out[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.base[self.rows])
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass(frozen=True)
class Split:
    images: np.ndarray | Rows  # (N, 32, 32, 32) float32 in [0, 1], axes (slice, row, col)
    labels: np.ndarray  # (N,) int64, index into FoldData.class_names
    attributes: np.ndarray  # (N, 8) float32, mean reader scores in ATTRIBUTES order
    nodule_ids: np.ndarray  # (N,) str
    patient_ids: np.ndarray  # (N,) str
    malignancy: np.ndarray  # (N,) float32, mean reader malignancy (the label's source)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FoldData:
    protocol: str
    fold: int
    source: str
    min_readers: int
    protocol_hash: str
    class_names: tuple[str, ...]  # training classes, in benign, unsure, malignant order
    test_class_names: tuple[str, ...]  # classes present in the test split
    attribute_names: tuple[str, ...]
    train: Split
    test: Split
    missing: dict = field(default_factory=dict)  # {"train": n, "test": n} nodules without images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _split(rows: pd.DataFrame, images: np.ndarray, class_names: tuple[str, ...]) -> Split:
    # Labels are renumbered into the protocol's training classes: LIDC-C's
    # malignant is 1, LIDC-A/B's is 2.
    remap = {CLASS_NAMES.index(c): i for i, c in enumerate(class_names)}
    return Split(
        images=images,
        labels=rows["label"].map(remap).to_numpy(np.int64),
        attributes=rows[list(ATTRIBUTES)].to_numpy(np.float32),
        nodule_ids=rows["nodule_id"].to_numpy(str),
        patient_ids=rows["patient_id"].to_numpy(str),
        malignancy=rows["malignancy"].to_numpy(np.float32),
    )


_SAID: set[tuple] = set()


def _say_slices_coverage(man: dict, table: pd.DataFrame, min_readers: int) -> None:
    """Once per process and label rule: how many of the protocol's nodules the slices release covers,
    and why the others are left out (of every fold, for every method alike)."""
    key = (man.get("ids_sha256"), min_readers)
    if key in _SAID:
        return
    _SAID.add(key)
    why = ", ".join(f"{n} {w}" for w, n in sorted(man.get("left_out", {}).items(), key=lambda kv: -kv[1]))
    part = " (a PARTIAL copy of the release: not results on the whole dataset)" if man.get("partial") else ""
    log.info("source slices: %d of the protocol's %d nodules (>= %d readers) have slices%s; the other %d are left out of "
             "every fold for every method alike (%s)", man["n"], len(table), min_readers, part, len(table) - man["n"], why or "none")


def load_fold(
    protocol: str,
    fold: int,
    source: str = "phantom",
    min_readers: int = DEFAULT_MIN_READERS,
    progress: bool = True,
    split: str | None = None,
    repeat: int = 0,
) -> FoldData:
    """Train and test splits of one fold of one protocol.

    The phantom source builds its cache on first use (see ``benchmarks.data.cache``).
    The lidc source serves what ``prepare crops --source lidc`` prepared; nodules
    whose scans were missing from the download or unreadable are left out and
    counted in ``FoldData.missing`` (the warning tells the two apart). The slices
    source serves what ``prepare slices`` prepared; the protocol's nodules without
    a usable folder of the release are left out of every fold alike, counted in
    ``FoldData.missing`` and said once per process.
    ``split="inner"``: ``train`` and ``test`` are the inner training and validation parts of
    the fold's training folds (``benchmarks.data.inner``), for tuning trials.
    ``repeat``: the partition (0: the committed folds; ``benchmarks.data.partitions``); the
    crops are the same in every partition, so their cache is keyed by repeat 0's protocol hash.
    """
    p = get_protocol(protocol)
    check_fold(fold)
    cache.check_source(source)
    table = labelled_folds(min_readers, repeat)
    ft = fold_table(protocol, fold, min_readers, table=table)
    if split == "inner":  # a tuning trial: the training folds' inner split; the test fold is never loaded
        ft = inner_fold_table(ft)
    phash = protocol_hash(min_readers)
    missing = {"train": 0, "test": 0}
    train_rows, test_rows = ft.train, ft.test
    if source == "lidc":
        from benchmarks.data.lidc import describe_no_crop, lidc_volumes  # noqa: PLC0415

        ids, vols, man = lidc_volumes(table, phash)
    elif source == "slices":
        from benchmarks.data.slices_crop import slices_volumes  # noqa: PLC0415  (PIL, the release's layout: loaded when used)

        ids, vols, man = slices_volumes(table, phash)
        _say_slices_coverage(man, table, min_readers)
    else:
        ids, vols = cache.phantom_volumes(table, phash, progress=progress)
    if source != "phantom":  # the real CT holds crops of some of the protocol's nodules: the others are left out, counted
        held = set(ids)
        train_rows = ft.train[ft.train["nodule_id"].isin(held)].reset_index(drop=True)
        test_rows = ft.test[ft.test["nodule_id"].isin(held)].reset_index(drop=True)
        missing = {"train": len(ft.train) - len(train_rows), "test": len(ft.test) - len(test_rows)}
    if source == "lidc" and (missing["train"] or missing["test"]):
        # Nodules of scans missing from the download or unreadable: say so per split, and which scans to fetch again.
        no_crop = {k: r[~r["nodule_id"].isin(held)] for k, r in (("train", ft.train), ("test", ft.test))}
        log.warning(
            "%s fold %d, source lidc: %d of %d train and %d of %d test nodules have no CT crop: %s",
            p.name, ft.fold, missing["train"], len(ft.train), missing["test"], len(ft.test),
            describe_no_crop(man, no_crop, cache.cache_dir("lidc", phash) / "manifest.json"),
        )
    pos = pd.Series(np.arange(len(ids)), index=ids)
    train_img = Rows(vols, pos.loc[train_rows["nodule_id"]].to_numpy())  # gathered when read (a subset, or once)
    test_img = vols[pos.loc[test_rows["nodule_id"]].to_numpy()]
    return FoldData(
        protocol=p.name,
        fold=ft.fold,
        source=source,
        min_readers=min_readers,
        protocol_hash=phash,
        class_names=p.train_classes,
        test_class_names=p.test_classes,
        attribute_names=ATTRIBUTES,
        train=_split(train_rows, train_img, p.train_classes),
        test=_split(test_rows, test_img, p.train_classes),
        missing=missing,
    )
