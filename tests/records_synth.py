"""Run records made without training: the real spec of a run (its configs, key and version), its real test
fold (ids and labels from the committed folds), and test predictions chosen to give a wanted accuracy.

Tables, figures and the report compute every number from a record's predictions, so a test record must
carry predictions that agree with its metrics: here the metrics are computed from the predictions by
``benchmarks.metrics.evaluate``, as a run's are.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from benchmarks.data.protocols import CLASS_NAMES, fold_table
from benchmarks.lifecycle import make_spec, sets_for
from benchmarks.metrics import evaluate


def record(method: str, dataset: str, fold: int, acc: float, seed: int = 0, profile: str = "smoke", source: str = "phantom",
           sets=(), rng_seed: int | None = None, min_readers: int = 2, partial: int = 0, repeat: int = 0) -> dict:
    """A record of ``method`` on ``dataset`` fold ``fold`` whose accuracy is ``acc`` (to one test nodule).

    The predictions put probability 0.7 on the true class for the first round(acc n) nodules of a seeded
    shuffle, and on another test class for the rest. ``partial``: that many test nodules left out, as a
    pilot download would (the record's ``data.scope`` says so). ``repeat``: the partition (its fold's
    test nodules are those of ``fold`` in that repeat).
    """
    spec = make_spec(method, dataset, fold, seed, profile, source, min_readers, sets_for(method, list(sets)), repeat=repeat)
    ft = fold_table(dataset, fold, min_readers, repeat=repeat)
    p = ft.protocol
    test = ft.test.iloc[partial:] if partial else ft.test
    classes, test_classes = list(p.train_classes), list(p.test_classes)
    labels = np.array([classes.index(CLASS_NAMES[k]) for k in test["label"]])  # (N,) index into the training classes
    n, k = len(labels), len(classes)
    tag = f"{method}/{dataset}/{fold}/{seed}" + (f"/rep{repeat}" if repeat else "")
    rng = np.random.default_rng(rng_seed if rng_seed is not None else zlib.crc32(tag.encode()))
    right = np.zeros(n, bool)
    right[rng.permutation(n)[: int(round(acc * n))]] = True
    allowed = [classes.index(c) for c in test_classes]
    probs = np.full((n, k), 0.3 / (k - 1))
    for i, y in enumerate(labels):
        guess = y if right[i] else next(c for c in allowed if c != y)
        probs[i] = 0.3 / (k - 1)
        probs[i, guess] = 0.7
    probs = np.round(probs, 6)
    metrics = evaluate(probs, labels, classes, test_classes, "argmax")
    return {
        "schema": 1, "key": spec.key, "config_hash": spec.config_hash, "method": method, "dataset": dataset, "fold": fold, "seed": seed,
        "profile": profile, "source": source, "min_readers": min_readers, "protocol_hash": spec.protocol_hash,
        "method_version": spec.method_version, "plugin": spec.plugin, "backbone_plugin": spec.backbone_plugin, "data_scope": spec.data_scope,
        "repeat": spec.repeat,
        "config": {"method": spec.method_config, "train": spec.train_config}, "text_encoder": spec.method_config.get("text_encoder"),
        "decision_rule": "argmax", "backbone": spec.backbone,
        "data": {"class_names": classes, "test_class_names": test_classes, "n_train": len(ft.train), "n_train_used": len(ft.train),
                 "n_test": n, "missing": {"train": 0, "test": partial},
                 "scope": {"partial": partial > 0, "nodules_with_crops": len(ft.train) + n, "nodules_of_fold": len(ft.train) + n + partial}},
        "metrics": metrics,
        "predictions": [{"id": i, "label": int(y), "probs": row.tolist()} for i, y, row in zip(test["nodule_id"], labels, probs)],
        "git": {"commit": "0" * 40, "dirty": False}, "versions": {}, "device": {"type": "cpu", "name": "cpu", "threads": 1},
        "weights": None, "created": "2026-11-30T00:00:00",
    }


def write(folder: Path, recs: list[dict]) -> Path:
    """Each record as ``r<i>.json`` in ``folder`` (made)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(recs):
        (folder / f"r{i:03d}.json").write_text(json.dumps(r))
    return folder


def accuracy_of(rec: dict) -> float:
    """The accuracy of a record's predictions, by hand: the argmax over its test classes against the labels."""
    classes, test = rec["data"]["class_names"], rec["data"]["test_class_names"]
    allowed = [classes.index(c) for c in test]
    hits = [allowed[int(np.argmax([p["probs"][c] for c in allowed]))] == p["label"] for p in rec["predictions"]]
    return float(np.mean(hits))
