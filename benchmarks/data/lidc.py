"""The ``lidc`` image source: crops of the real LIDC-IDRI CT scans, read with pylidc.

``python -m benchmarks.prepare crops --source lidc --lidc-root PATH`` reads each
scan that holds an eligible nodule with pylidc (``Scan.load_all_dicom_images``,
the reader behind ``Scan.to_volume``: same file search, same duplicate-z
clean-up, same z sort), converts to HU with each slice's RescaleSlope and
RescaleIntercept, and applies the shared crop of ``benchmarks.data.crop`` to
every nodule of the scan.

pylidc normally reads the DICOM root from ``~/.pylidcrc``; here the root given
on the command line is installed in pylidc's own lookup for this process and
its workers, so the user edits nothing. pylidc finds a scan under
``<root>/<patient id>/`` either at ``<study uid>/<series uid>/*.dcm`` or by
walking the patient folder for a series whose UIDs match (TCIA's newer nested
layout). A root that holds a ``LIDC-IDRI`` folder of patients is accepted too.

Work is done and saved per scan (``scans/scan-<id>.npz`` in the cache folder,
written atomically), so an interrupted preparation continues where it stopped;
the assembled ``volumes.npy`` is the same as from an uninterrupted run. Scans
whose DICOMs are missing or unreadable, or whose series is incomplete (slice
count or z positions differ from pylidc's record), are skipped, retried on the
next run, and listed in the manifest; the dataset API reports per fold how
many nodules have no crop.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.data import cache
from benchmarks.data.crop import CROP_SIZE, crop
from benchmarks.data.phantom import centroid_of, spacing_of
from benchmarks.data.pylidc_db import pylidc
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_bytes

log = logging.getLogger(__name__)

Z_TOLERANCE_MM = 0.01


def resolve_root(root: str | os.PathLike, patient_ids) -> Path:
    """The folder that holds ``LIDC-IDRI-dddd`` patient folders, or a :class:`UserError`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"--lidc-root {root} does not exist or is not a folder")
    wanted = set(patient_ids)
    for cand in (root, root / "LIDC-IDRI"):
        if cand.is_dir() and any((cand / p).is_dir() for p in wanted):
            return cand.resolve()
    raise UserError(
        f"no DICOM folder of any indexed scan under {root} "
        f"(expected patient folders such as {root}/LIDC-IDRI-0001/ from the TCIA download)"
    )


def use_dicom_root(root: str | os.PathLike) -> None:
    """Point pylidc's DICOM lookup at ``root`` for this process (no ~/.pylidcrc edit)."""
    pylidc()
    scan_module = sys.modules["pylidc.Scan"]
    scan_module._get_dicom_file_path_from_config_file = lambda: str(root)


def read_scan_hu(scan_id: int, n_slices: int) -> tuple[np.ndarray | None, str | None]:
    """One scan as HU, (I, J, K) float32 in pylidc's axis order, or (None, why not).

    ``why`` starts with ``missing`` (no DICOM folder or series found) or
    ``unreadable`` (files that fail to parse, or an incomplete series).
    """
    pl = pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.id == scan_id).one()
    try:
        images = scan.load_all_dicom_images(verbose=False)
    except (RuntimeError, OSError) as e:  # pylidc's "Couldn't find DICOM files for ..."
        return None, f"missing ({e})"
    except Exception as e:  # noqa: BLE001  a broken file can raise anything from pydicom
        return None, f"unreadable ({type(e).__name__}: {e})"
    if len(images) != n_slices:
        return None, f"unreadable (incomplete series: {len(images)} of {n_slices} slices)"
    try:
        z = np.array([float(im.ImagePositionPatient[2]) for im in images])
        if not np.allclose(z, np.asarray(scan.slice_zvals, float), atol=Z_TOLERANCE_MM):
            return None, "unreadable (slice positions differ from pylidc's record)"
        # The conversion of Scan.to_volume, kept in float (to_volume rounds to int16).
        vol = np.stack(
            [im.pixel_array.astype(np.float32) * float(im.RescaleSlope) + float(im.RescaleIntercept) for im in images],
            axis=-1,
        )
    except Exception as e:  # noqa: BLE001
        return None, f"unreadable ({type(e).__name__}: {e})"
    return vol, None


def part_path(folder: Path, scan_id: int) -> Path:
    return folder / "scans" / f"scan-{scan_id:04d}.npz"


def _init_worker(root: str) -> None:
    use_dicom_root(root)


def prepare_scan(scan_id: int, rows: list[dict], folder: str) -> dict:
    """Read one scan, crop its nodules, save the part file. Returns a status dict."""
    t0 = time.perf_counter()
    vol, why = read_scan_hu(scan_id, int(rows[0]["n_slices"]))
    status = {"scan_id": scan_id, "patient_id": rows[0]["patient_id"], "seconds": 0.0}
    if vol is None:
        return {**status, "status": why.split(" ", 1)[0], "why": why}
    crops = np.stack([crop(vol, spacing_of(r), centroid_of(r), float(r["eq_diameter_mm"])) for r in rows])
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    np.savez(buf, nodule_ids=np.array([r["nodule_id"] for r in rows]), crops=crops)
    atomic_write_bytes(part_path(Path(folder), scan_id), buf.getvalue())
    return {**status, "status": "ok", "n": len(rows), "seconds": time.perf_counter() - t0}


def prepare_lidc(table: pd.DataFrame, phash: str, lidc_root, workers: int | None = None, progress: bool = True) -> dict:
    """Prepare (or continue preparing) the lidc cache of ``table``'s nodules. Returns a summary."""
    from tqdm import tqdm  # noqa: PLC0415

    root = resolve_root(lidc_root, table["patient_id"].unique())
    cache.writable_root()
    folder = cache.cache_dir("lidc", phash)
    (folder / "scans").mkdir(parents=True, exist_ok=True)
    by_scan = {int(s): g.to_dict("records") for s, g in table.groupby("scan_id", sort=True)}
    done = [s for s in by_scan if part_path(folder, s).exists()]
    todo = [s for s in by_scan if s not in set(done)]
    if done:
        log.info("%d of %d scans already prepared in %s; continuing with %d", len(done), len(by_scan), folder, len(todo))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    results: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="reading scans", unit="scan", disable=not progress)
    if workers == 1:
        use_dicom_root(root)
        for s in todo:
            results.append(prepare_scan(s, by_scan[s], str(folder)))
            bar.update()
    else:
        # spawn: pylidc holds an SQLite connection that must not cross a fork.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(str(root),)) as ex:
            futs = [ex.submit(prepare_scan, s, by_scan[s], str(folder)) for s in todo]
            for f in as_completed(futs):
                results.append(f.result())
                bar.update()
    bar.close()
    seconds = time.perf_counter() - t0
    read = [r for r in results if r["status"] == "ok"]
    skipped = sorted((r for r in results if r["status"] != "ok"), key=lambda r: r["scan_id"])
    if not done and not read:
        raise UserError(f"no indexed scan could be read under {root}: {skipped[0]['why'] if skipped else 'nothing to do'}")
    summary = assemble(table, phash, folder, root, skipped)
    summary.update(
        scans_read_now=len(read),
        scans_done_before=len(done),
        seconds=round(seconds, 2),
        scans_per_minute=round(60 * len(read) / seconds, 1) if read and seconds > 0 else None,
        skipped=skipped,
    )
    return summary


def assemble(table: pd.DataFrame, phash: str, folder: Path, root: Path, skipped: list[dict]) -> dict:
    """Join the per-scan parts into ``volumes.npy`` + ids + manifest, in index order."""
    crops: dict[str, np.ndarray] = {}
    for s in sorted(table["scan_id"].unique()):
        p = part_path(folder, int(s))
        if p.exists():
            with np.load(p) as z:
                crops.update(zip(z["nodule_ids"].tolist(), z["crops"]))
    ids = [n for n in table["nodule_id"] if n in crops]
    vols = np.stack([crops[n] for n in ids]) if ids else np.zeros((0, CROP_SIZE, CROP_SIZE, CROP_SIZE), np.float32)
    extra = {
        "lidc_root": str(root),
        "scans_total": int(table["scan_id"].nunique()),
        "scans_held": int(sum(part_path(folder, int(s)).exists() for s in table["scan_id"].unique())),
        "nodules_total": len(table),
        "skipped_scans": [{k: r[k] for k in ("scan_id", "patient_id", "why")} for r in skipped],
    }
    cache.install(folder, "lidc", phash, ids, vols.astype(np.float32), extra)
    return {"folder": str(folder), "nodules_held": len(ids), **{k: v for k, v in extra.items() if k != "skipped_scans"}}


def lidc_volumes(table: pd.DataFrame, phash: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ids, volumes, manifest) of a prepared lidc cache; a clear error when there is none."""
    folder = cache.cache_dir("lidc", phash)
    why = cache.validate(folder, "lidc", phash)
    if why is not None:
        raise UserError(
            f"no usable lidc crop cache in {folder} ({why}); prepare it from the DICOM download with "
            f"`python -m benchmarks.prepare crops --source lidc --lidc-root PATH`"
        )
    ids, vols = cache.load_memo(folder)
    man = json.loads((folder / "manifest.json").read_text())
    unknown = set(ids) - set(table["nodule_id"])
    if unknown:
        raise UserError(f"lidc cache {folder} holds nodules not in the index; prepare it again")
    return ids, vols, man
