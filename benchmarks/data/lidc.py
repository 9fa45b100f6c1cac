"""The ``lidc`` image source: crops of the real LIDC-IDRI CT scans.

``python -m benchmarks.prepare crops --source lidc --lidc-root PATH`` reads each
scan that holds an eligible nodule, converts it to HU with each slice's
RescaleSlope and RescaleIntercept, checks it against pylidc's record of the
scan (slice count and z positions) and applies the shared crop of
``benchmarks.data.crop`` to every nodule of the scan.

Finding a scan: like pylidc, under ``<root>/<patient id>/`` either at
``<study uid>/<series uid>/*.dcm`` or, in TCIA's newer nested layout, in the
folder whose DICOM files carry the scan's study and series UIDs. The search and
the reading are done here rather than by pylidc's ``Scan.load_all_dicom_images``
because pylidc stops at the first file that does not parse: one damaged file
of one series then failed every other series of the same patient folder. Here
a file that cannot be read is skipped while looking for the series folder, and
only the series that holds it is skipped (naming the file). pylidc's handling
of the files themselves is kept: only ``*.dcm`` not starting with ``.``, files
of other series ignored, of two slices at the same z the one with the lesser
InstanceNumber kept, slices sorted by z. A root that holds a ``LIDC-IDRI``
folder of patients is accepted too. pylidc still supplies the record (UIDs and
z positions) and the index its nodules.

Three indexed scans have unevenly spaced slices: 128 (steps of 0.5 and 0.75 mm
among 1.25 mm ones), 267 (0.5 among 2.5) and 983 (1.25 among 0.625, i.e. slices
absent); their slices lie up to 2, 4 and 1.9 mm off the regular grid that
:func:`benchmarks.data.crop.crop` assumes (slice k at k * median spacing).
Their crops are sampled at the slices' true z positions
(:func:`crop_at_true_z`); every other scan goes through ``crop`` unchanged.
The manifest lists them (``uneven_slice_scans``). For the nodules indexed
today the difference is small: the regular grid would misplace the crop's
samples by at most 0.11 mm (scan 983), as the other scans' irregular steps lie
outside their nodules' cubes.

Work is done and saved per scan (``scans/scan-<id>.npz`` in the cache folder,
written atomically), so an interrupted preparation continues where it stopped;
the assembled ``volumes.npy`` is the same as from an uninterrupted run. Scans
whose DICOMs are missing or unreadable, or whose series is incomplete, are
skipped, retried on the next run, and listed in the manifest with the file or
folder to fetch again; the dataset API reports per fold how many nodules have
no crop, scans missing from the download apart from unreadable ones.

Worker processes die with the parent (``_die_with_parent``): a killed
``prepare`` leaves no worker holding a scan in memory.
"""
from __future__ import annotations

import ctypes
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.data import cache
from benchmarks.data.crop import CROP_SIZE, FILL_HU, crop, sample_offsets_mm
from benchmarks.data.phantom import centroid_of, spacing_of
from benchmarks.data.pylidc_db import pylidc
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_bytes

log = logging.getLogger(__name__)

Z_TOLERANCE_MM = 0.01
# A scan counts as unevenly spaced when a slice lies further than this from the
# regular grid of pylidc's (median) slice spacing. The even scans of the index
# depart by at most 0.007 mm (float noise of the positions); the three uneven
# ones by 1.9-4 mm.
UNEVEN_MM = 0.05
# Version of what a part file holds. 1 (no version entry): uneven scans cropped
# as if evenly spaced; 2: at their true z positions. Parts of version 1 are
# read again for uneven scans only, since the crops of the others are unchanged.
PART_VERSION = 2
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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


def scan_records(scan_ids) -> dict[int, dict]:
    """pylidc's record of each scan: patient, study and series UIDs, sorted slice z positions (mm)."""
    from sqlalchemy.orm import selectinload  # noqa: PLC0415

    pl = pylidc()
    ids = [int(s) for s in scan_ids]
    if not ids:
        return {}
    # The z positions are a lazy relationship, one query per scan (~20 ms): load them in one go.
    q = pl.query(pl.Scan).filter(pl.Scan.id.in_(ids)).options(selectinload(pl.Scan.zvals))
    return {
        int(s.id): {
            "patient_id": s.patient_id,
            "study_uid": str(s.study_instance_uid).strip(),
            "series_uid": str(s.series_instance_uid).strip(),
            "z": [float(z) for z in s.slice_zvals],
        }
        for s in q
    }


def z_departure_mm(z) -> float:
    """Largest distance (mm) of a slice from the regular grid that the crop assumes: z[0] + k * median spacing."""
    z = np.asarray(z, float)
    if len(z) < 2:
        return 0.0
    return float(np.abs(z - (z[0] + np.arange(len(z)) * np.median(np.diff(z)))).max())


def _dicom_names(folder: Path) -> list[str]:
    # pylidc's choice of files; sorted so that messages name the same file every run.
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".dcm") and not n.startswith("."))
    except OSError:
        return []


def _damage(path: Path, e: BaseException) -> str:
    """What is wrong with a file that did not parse, in a few words."""
    try:
        size = path.stat().st_size
    except OSError:
        return f"cannot be opened: {type(e).__name__}"
    if size == 0:
        return "0 bytes"
    # pydicom's messages run on with advice ("... - the dataset may be corrupted, ..."): keep the first clause.
    first = (str(e).strip().splitlines() or [""])[0].split(" - ")[0]
    return f"{size} bytes, {type(e).__name__}: {first[:100] + '...' * (len(first) > 100)}"


def locate_series(patient_dir: Path, rec: dict) -> tuple[Path | None, str | None]:
    """The folder of the scan's series under its patient folder, or (None, why not)."""
    import pydicom  # noqa: PLC0415

    classic = patient_dir / rec["study_uid"] / rec["series_uid"]
    if classic.is_dir():
        return classic, None
    # TCIA's layout names folders by date and series number: look at the UIDs of
    # one file per folder, the first one that parses (a damaged file must not
    # hide its folder, nor stop the search as it did in pylidc's walk).
    unknown: list[Path] = []
    for dpath, dnames, _ in os.walk(patient_dir):
        dnames.sort()
        names = _dicom_names(Path(dpath))
        if not names:
            continue
        for name in names:
            try:
                ds = pydicom.dcmread(Path(dpath) / name, stop_before_pixels=True)
                uids = (str(ds.StudyInstanceUID).strip(), str(ds.SeriesInstanceUID).strip())
            except Exception:  # noqa: BLE001, S112  pydicom raises anything on a damaged file
                continue
            break
        else:
            unknown.append(Path(dpath))
            continue
        if uids == (rec["study_uid"], rec["series_uid"]):
            return Path(dpath), None
    if unknown:
        return None, (
            f"unreadable: series {rec['series_uid']} not found in {patient_dir}, and no file of "
            f"{unknown[0]} can be read (it may be this series); fetch the folder {unknown[0]} again"
        )
    return None, f"missing: no series {rec['series_uid']} in {patient_dir}; fetch that series into this folder"


def read_series(series_dir: Path, rec: dict) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """The series in ``series_dir`` as HU, (I, J, K) float32 in pylidc's axis order, and its z (mm).

    Returns (volume, z, None) or (None, None, why not).
    """
    import pydicom  # noqa: PLC0415

    again = f"fetch the series folder {series_dir} again"
    slices, damaged = [], []
    for name in _dicom_names(series_dir):
        path = series_dir / name
        try:
            ds = pydicom.dcmread(path)
            if (str(ds.StudyInstanceUID).strip(), str(ds.SeriesInstanceUID).strip()) != (rec["study_uid"], rec["series_uid"]):
                continue  # another series in the same folder: pylidc ignores it too
            z = float(ds.ImagePositionPatient[2])
            inum = float(ds.get("InstanceNumber") or 0)
            pixels = ds.pixel_array  # decoded here, so that a truncated pixel block names its file
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        except Exception as e:  # noqa: BLE001  pydicom raises anything on a damaged file
            damaged.append((path, _damage(path, e)))
            continue
        slices.append((z, inum, pixels, slope, intercept))
    if damaged:
        path, what = damaged[0]
        if len(damaged) == 1:
            return None, None, f"unreadable: damaged file {path} ({what}); {again}"
        return None, None, f"unreadable: {len(damaged)} damaged files in {series_dir}, first {path.name} ({what}); {again}"
    # Of two slices at the same z keep the lesser InstanceNumber (pylidc's choice), then sort by z.
    by_z: dict[float, tuple] = {}
    for s in sorted(slices, key=lambda s: s[1]):
        by_z.setdefault(s[0], s)
    slices = [by_z[z] for z in sorted(by_z)]
    want = np.asarray(rec["z"], float)
    if len(slices) != len(want):
        return None, None, f"unreadable: incomplete series in {series_dir}: {len(slices)} of {len(want)} slices; {again}"
    z = np.array([s[0] for s in slices])
    if not np.allclose(z, want, atol=Z_TOLERANCE_MM, rtol=0):
        gap = float(np.abs(z - want).max())
        return None, None, f"unreadable: slice positions in {series_dir} differ from pylidc's record by up to {gap:.2f} mm; {again}"
    if len({s[2].shape for s in slices}) != 1:
        return None, None, f"unreadable: slices of different sizes in {series_dir}; {again}"
    vol = np.empty((*slices[0][2].shape, len(slices)), np.float32)
    for k, (_, _, pixels, slope, intercept) in enumerate(slices):
        # The conversion of Scan.to_volume, kept in float (to_volume rounds to int16).
        vol[:, :, k] = pixels.astype(np.float32) * slope + intercept
    return vol, z, None


def crop_at_true_z(volume_hu: np.ndarray, z_mm, row) -> np.ndarray:
    """:func:`crop` of a scan whose slices are unevenly spaced, sampled at the slices' true z.

    ``crop`` puts slice k at k * slice spacing, which misplaces the slices of
    an uneven scan by up to a few mm. Trilinear interpolation is separable, so
    interpolating along z first (linearly between the two slices around each
    of the crop's 32 sample heights, by their true positions) and handing the
    resulting 32-slice slab to ``crop`` with the crop's sample step as slice
    spacing gives the trilinear crop at true positions: ``crop``'s z samples
    fall exactly on the slab's slices and it interpolates only in-plane.
    Heights outside the scan read ``FILL_HU``, as in ``crop``.
    """
    z_mm = np.asarray(z_mm, float)
    d = float(row["eq_diameter_mm"])
    side = 2.0 * d
    idx = np.arange(len(z_mm), dtype=float)
    heights = np.interp(float(row["centroid_k"]), idx, z_mm) + sample_offsets_mm(side)  # (32,)
    k = np.interp(heights, z_mm, idx)
    k0 = np.clip(np.floor(k).astype(int), 0, len(z_mm) - 2)
    w = (k - k0).astype(np.float32)
    slab = volume_hu[:, :, k0] * (1 - w) + volume_hu[:, :, k0 + 1] * w
    slab[:, :, (heights < z_mm[0]) | (heights > z_mm[-1])] = FILL_HU
    # One repeated slice at each end: crop's samples land on slab slices 1..32,
    # never on the edge, where map_coordinates reads a hair beyond as outside.
    slab = np.concatenate([slab[:, :, :1], slab, slab[:, :, -1:]], axis=2)
    centre = centroid_of(row)
    centre[2] = (CROP_SIZE + 1) / 2  # sample n of the crop lands on slab slice n + 1
    ps = float(row["pixel_spacing"])
    return crop(slab, (ps, ps, side / CROP_SIZE), centre, d)


def part_path(folder: Path, scan_id: int) -> Path:
    return folder / "scans" / f"scan-{scan_id:04d}.npz"


def part_version(path: Path) -> int | None:
    """Version of a part file, None when there is none; a damaged part is deleted (None)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            return int(z["version"]) if "version" in z.files else 1
    except Exception as e:  # noqa: BLE001  a damaged zip raises anything
        log.warning("part file %s is damaged (%s: %s); reading its scan again", path, type(e).__name__, e)
        path.unlink(missing_ok=True)
        return None


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the parent ends, however it ends.

    A SIGKILLed parent runs no clean-up, and a ProcessPoolExecutor worker holds
    both ends of its task queue, so it would wait for work forever with a
    scan's volume (~450 MB) in memory. On Linux the kernel sends the worker
    SIGKILL when the parent dies (PR_SET_PDEATHSIG; it fires when the thread
    that started the worker ends: here the main thread, as ProcessPoolExecutor
    starts spawn workers from ``submit``). The getppid check covers a parent
    that died before the prctl call, when the worker was already re-parented.
    Elsewhere a thread polls the parent once a second.
    """
    if sys.platform.startswith("linux"):
        try:
            if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl failed")
        except (OSError, AttributeError):
            threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def prepare_scan(scan_id: int, rows: list[dict], folder: str, patient_dir: str, rec: dict) -> dict:
    """Find and read one scan, crop its nodules, save the part file. Returns a status dict."""
    t0 = time.perf_counter()
    status = {"scan_id": scan_id, "patient_id": rows[0]["patient_id"], "seconds": 0.0}
    series_dir, why = locate_series(Path(patient_dir), rec)
    if series_dir is not None:
        vol, z, why = read_series(series_dir, rec)
    if why is not None:
        return {**status, "status": why.split(":", 1)[0], "why": why}
    departure = z_departure_mm(z)
    if departure > UNEVEN_MM:
        crops = [crop_at_true_z(vol, z, r) for r in rows]
    else:
        crops = [crop(vol, spacing_of(r), centroid_of(r), float(r["eq_diameter_mm"])) for r in rows]
    buf = io.BytesIO()
    np.savez(buf, nodule_ids=np.array([r["nodule_id"] for r in rows]), crops=np.stack(crops),
             version=np.array(PART_VERSION), z_departure_mm=np.array(departure))
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
    versions = {s: part_version(part_path(folder, s)) for s in by_scan}
    present = {s for s, rows in by_scan.items() if (root / rows[0]["patient_id"]).is_dir()}
    recs = scan_records(s for s in by_scan if versions[s] != PART_VERSION and (s in present or versions[s] is not None))
    # A part of an older version is still good unless its scan is uneven (see PART_VERSION).
    done = [s for s in by_scan if versions[s] == PART_VERSION or (versions[s] is not None and z_departure_mm(recs[s]["z"]) <= UNEVEN_MM)]
    results: list[dict] = []
    todo = []
    for s in by_scan:
        if s in done:
            continue
        if s in present:
            todo.append(s)
        else:  # no need to start a worker to find that out
            pdir = root / by_scan[s][0]["patient_id"]
            results.append({"scan_id": s, "patient_id": by_scan[s][0]["patient_id"], "status": "missing",
                            "why": f"missing: no folder {pdir}; fetch the CT series of {pdir.name} into it"})
    if done:
        log.info("%d of %d scans already prepared in %s; continuing with %d", len(done), len(by_scan), folder, len(todo))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="reading scans", unit="scan", disable=not progress)
    args = {s: (s, by_scan[s], str(folder), str(root / by_scan[s][0]["patient_id"]), recs[s]) for s in todo}
    if workers == 1:
        for s in todo:
            results.append(prepare_scan(*args[s]))
            bar.update()
    else:
        # spawn: a forked child would share the parent's SQLite connection of pylidc.
        ex = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_die_with_parent, initargs=(os.getpid(),))
        try:
            futs = [ex.submit(prepare_scan, *args[s]) for s in todo]
            for f in as_completed(futs):
                results.append(f.result())
                bar.update()
        except BaseException:
            # Ctrl-C or a failed write: do not read the scans still queued before stopping.
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    bar.close()
    seconds = time.perf_counter() - t0
    read = [r for r in results if r["status"] == "ok"]
    skipped = sorted((r for r in results if r["status"] != "ok"), key=lambda r: r["scan_id"])
    for r in skipped:
        # A scan is either held by a current part or listed as skipped: drop an outdated part.
        part_path(folder, r["scan_id"]).unlink(missing_ok=True)
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
    uneven = []
    patient = dict(zip(table["scan_id"], table["patient_id"]))
    for s in sorted(table["scan_id"].unique()):
        p = part_path(folder, int(s))
        if p.exists():
            with np.load(p) as z:
                crops.update(zip(z["nodule_ids"].tolist(), z["crops"]))
                departure = float(z["z_departure_mm"]) if "z_departure_mm" in z.files else 0.0
            if departure > UNEVEN_MM:
                uneven.append({"scan_id": int(s), "patient_id": patient[s], "max_departure_mm": round(departure, 3),
                               "cropped": "at the slices' true z positions"})
    ids = [n for n in table["nodule_id"] if n in crops]
    vols = np.stack([crops[n] for n in ids]) if ids else np.zeros((0, CROP_SIZE, CROP_SIZE, CROP_SIZE), np.float32)
    extra = {
        "lidc_root": str(root),
        "scans_total": int(table["scan_id"].nunique()),
        "scans_held": int(sum(part_path(folder, int(s)).exists() for s in table["scan_id"].unique())),
        "nodules_total": len(table),
        "skipped_scans": [{k: r[k] for k in ("scan_id", "patient_id", "status", "why")} for r in skipped],
        "uneven_slice_scans": uneven,
    }
    cache.install(folder, "lidc", phash, ids, vols.astype(np.float32), extra)
    return {"folder": str(folder), "nodules_held": len(ids), **{k: v for k, v in extra.items() if k != "skipped_scans"}}


def skip_status(entry: dict) -> str:
    """``missing`` or ``unreadable`` for a manifest entry (manifests before the ``status`` key too)."""
    return entry.get("status") or entry["why"].split(" ", 1)[0].rstrip(":")


def describe_no_crop(man: dict, rows: dict[str, pd.DataFrame], manifest: Path) -> str:
    """Why the nodules in ``rows`` ({split: rows}, all without a crop) have none, missing apart from unreadable.

    e.g. ``train 12, test 3 of scans missing from the download; train 2, test 0 of
    unreadable scans 10, 368 (the file or folder to fetch again for each: <manifest>)``
    """
    unreadable = {int(e["scan_id"]) for e in man.get("skipped_scans", []) if skip_status(e) == "unreadable"}
    bad = {k: r[r["scan_id"].astype(int).isin(unreadable)] for k, r in rows.items()}
    text = ", ".join(f"{k} {len(r) - len(bad[k])}" for k, r in rows.items()) + " of scans missing from the download"
    bad_scans = sorted({int(s) for r in bad.values() for s in r["scan_id"]})
    if bad_scans:
        text += (f"; {', '.join(f'{k} {len(r)}' for k, r in bad.items())} of unreadable scan{'s' * (len(bad_scans) > 1)} "
                 f"{', '.join(map(str, bad_scans))} (the file or folder to fetch again for each: {manifest})")
    return text


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
