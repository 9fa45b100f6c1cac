"""The ``slices`` image source: the paper's crop, as far as the public LIDC-IDRI slices release allows.

What a folder of the release holds (``benchmarks/data/slices_match.py`` proves which
nodule it is and where it lies): one 128 x 128 8-bit image per axial slice that the
readers marked, at the scan's own pixel spacing, every slice min-max scaled on its
own (each spans exactly 0-255: Hounsfield units cannot be recovered and grey levels
are not comparable from slice to slice, nor with the DICOM path's fixed window).

The crop is the DICOM path's cube (``benchmarks.data.crop``): side twice the
equivalent diameter around the readers' mean centroid, sampled on a 32^3 grid at
the scan's pixel and slice spacing, at the same positions as the ``lidc`` source
samples the whole scan, trilinear in-plane and between slices. The folder's slices
are placed at their scan slice numbers (``first_slice + s``) and the image at its
origin in the scan (``origin_i``, ``origin_j``), both from the match table.

In z the release stops at the readers' first and last marked slices, while the
paper's cube reaches ``eq_diameter`` mm on either side of the centre (the marked
slices reach a median 53% of the cube's 32 slice positions). A sample beyond the
marked slices reads the nearest marked slice (edge replication: the cube is filled
with the nodule's outermost marked slices, not with the tissue the scan holds
there, which the release does not have). The fill was measured, not assumed: CE,
LIDC-B, ``quick``, folds 0 and 1: 86.8 / 85.6 with edge replication, 83.2 / 85.0
with the marked slices stretched over the 32 positions, 73.1 / 71.9 with the
samples beyond them reading 0 (SLICES_VERSION 2; a black slab above and below
every nodule, which the DICOM path never shows). In-plane a sample beyond the
128-pixel image (a rare cube wider than it) reads 0, the darkest grey of a slice,
in a min-max-scaled lung crop air. The grey levels are divided by 255 into [0, 1].
Each crop's share of the cube's 32 slice positions that the marked slices reach is
kept in the cache's manifest (``z_coverage``).

Nodules of the protocol without a usable folder (no folder agrees with it, its folder
is mixed or a duplicate, or its patient is absent from a partial copy) have no crop;
the dataset leaves them out of every fold the same way for every method, and the
manifest says how many and why.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import map_coordinates

from benchmarks.data import cache
from benchmarks.data.crop import CROP_SIZE, sample_offsets_mm
from benchmarks.data.phantom import centroid_of, spacing_of
from benchmarks.data.protocols import DEFAULT_MIN_READERS, labelled_folds, protocol_hash
from benchmarks.data.slices_match import USABLE, read_png, slice_numbers
from benchmarks.errors import UserError

log = logging.getLogger(__name__)

SLICES_DIR = "LIDC-IDRI-slices"


def folder_volume(release: Path, folder: str) -> np.ndarray:
    """A folder's images as one volume in the scan's axis order: (128, 128, S) float32 in [0, 1], axes (row, col, slice)."""
    d = release / SLICES_DIR / folder / "images"
    return np.stack([read_png(d / f"slice-{s}.png") for s in slice_numbers(d)], axis=-1).astype(np.float32) / 255.0


def local_centroid(row, match) -> np.ndarray:
    """The nodule's centroid (i, j, k) in the folder's voxels: the scan centroid less the folder's origin."""
    return centroid_of(row) - np.array([match["origin_i"], match["origin_j"], match["first_slice"]], dtype=float)


def crop_folder(release: Path, row, match) -> tuple[np.ndarray, float]:
    """The paper's cube from one folder: ((32, 32, 32) float32 in [0, 1], axes (slice, row, col); the share of the
    cube's 32 slice positions that the folder's marked slices reach, each standing for its slab of half a slice
    spacing either side).

    In-plane and between slices: trilinear, as the ``lidc`` source's crop. In z a sample beyond the first or last
    marked slice reads that slice (edge replication; the module's docstring says why and what it measured);
    in-plane a sample beyond the image reads 0."""
    vol = folder_volume(release, match["folder"])  # (128, 128, S), axes (row, col, slice)
    c = local_centroid(row, match)
    spacing = spacing_of(row)
    off = sample_offsets_mm(2.0 * float(row["eq_diameter_mm"]))  # (32,) mm from the centre
    ii, jj, kk = (c[a] + off / spacing[a] for a in range(3))
    last = vol.shape[2] - 1
    reach = (kk >= -0.5) & (kk <= last + 0.5)  # (32,) slice positions within the marked slices' slabs
    kk = np.clip(kk, 0, last)  # beyond the marked slices: the nearest one
    K, I, J = np.meshgrid(kk, ii, jj, indexing="ij")  # output axes (slice, row, col), coordinates in (i, j, k) order
    out = map_coordinates(vol, np.stack([I, J, K]), order=1, mode="constant", cval=0.0)
    return out.astype(np.float32), float(reach.mean())


def usable_matches(match: pd.DataFrame) -> pd.DataFrame:
    """The match table's usable folders (exact, subset, near), indexed by nodule id."""
    return match[match["status"].isin(USABLE)].set_index("nodule_id")


def why_no_crop(table: pd.DataFrame, match: pd.DataFrame, present_patients: set[str] | None) -> pd.Series:
    """For each protocol nodule: '' when it has a usable folder, else why not (one phrase)."""
    use = usable_matches(match)
    other = match[~match["status"].isin(USABLE) & match["nodule_id"].notna()].drop_duplicates("nodule_id").set_index("nodule_id")

    def why(r) -> str:
        n = r["nodule_id"]
        if n in use.index:
            if present_patients is not None and r["patient_id"] not in present_patients:
                return "its patient is not in this partial copy"
            return ""
        if n in other.index:
            return f"its folder is {other.loc[n, 'status']}"
        return "no folder of the release agrees with it"

    return table.apply(why, axis=1) if len(table) else pd.Series([], dtype=str)


def build(table: pd.DataFrame, phash: str, release: Path, match: pd.DataFrame, partial: bool, release_info: dict,
          progress: bool = True) -> dict:
    """Crop every protocol nodule that has a usable folder and install the ``slices`` cache. Returns a summary."""
    from tqdm import tqdm  # noqa: PLC0415

    present = {p.name for p in (release / SLICES_DIR).iterdir() if p.is_dir()} if partial else None
    why = why_no_crop(table, match, present)
    have = table[why == ""]
    use = usable_matches(match)
    cache.writable_root()
    t0 = time.perf_counter()
    vols = np.empty((len(have), CROP_SIZE, CROP_SIZE, CROP_SIZE), np.float32)
    cover = np.empty(len(have))
    for i, row in enumerate(tqdm(have.to_dict("records"), desc="cropping slices", unit="nodule", disable=not progress)):
        vols[i], cover[i] = crop_folder(release, row, use.loc[row["nodule_id"]])
    seconds = time.perf_counter() - t0
    left = why[why != ""]
    extra = {
        "release": release_info,
        "partial": bool(partial),
        "nodules_total": len(table),
        "patients_total": int(table["patient_id"].nunique()),
        "patients_held": int(have["patient_id"].nunique()),
        "match_status": {k: int(v) for k, v in Counter(use.loc[have["nodule_id"], "status"]).items()},
        "left_out": {k: int(v) for k, v in Counter(left).items()},
        "left_out_nodules": {n: w for n, w in zip(table.loc[left.index, "nodule_id"], left)} if len(left) <= 200 else {},
        "z_coverage": {"median": round(float(np.median(cover)), 4) if len(cover) else None,
                       "mean": round(float(np.mean(cover)), 4) if len(cover) else None},
        "build_seconds": round(seconds, 2),
    }
    folder = cache.cache_dir("slices", phash)
    cache.install(folder, "slices", phash, list(have["nodule_id"]), vols, extra)
    log.info("slices cache: %d of %d nodules cropped in %.1f s -> %s", len(have), len(table), seconds, folder)
    return {"folder": str(folder), "nodules_held": len(have), **{k: v for k, v in extra.items() if k != "left_out_nodules"}}


def slices_volumes(table: pd.DataFrame, phash: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ids, volumes, manifest) of the prepared slices cache; a clear error when there is none."""
    folder = cache.cache_dir("slices", phash)
    why = cache.validate(folder, "slices", phash)
    if why is not None:
        raise UserError(f"no usable slices crop cache in {folder} ({why}); prepare it from the public LIDC-IDRI slices release "
                        f"with `python -m benchmarks.prepare slices` (about 150 MB; --from PATH for a copy you have)")
    ids, vols = cache.load_memo(folder)
    man = json.loads((folder / "manifest.json").read_text())
    if set(ids) - set(table["nodule_id"]):
        raise UserError(f"slices cache {folder} holds nodules not in the index; prepare it again: `python -m benchmarks.prepare slices`")
    return ids, vols, man


def _manifest(min_readers: int) -> dict | None:
    try:
        return json.loads((cache.cache_dir("slices", protocol_hash(min_readers)) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def scope_tag(min_readers: int) -> str | None:
    """The part of a run's key that says which crops it saw: ``slices:<held>of<total>:<digest>`` for the whole
    release (it never holds every nodule of the protocol), ``partial:...`` for a partial copy (the test
    fixture); the digest (12 hex digits) is of the held ids and the crop's version, so that crops cut by
    another rule never share a key. None when nothing is prepared (no run can start then)."""
    man = _manifest(min_readers)
    if not man or not isinstance(man.get("n"), int) or not isinstance(man.get("nodules_total"), int):
        return None
    kind = "partial" if man.get("partial") else "slices"
    digest = hashlib.sha256(f"{man.get('ids_sha256')} {man.get('version')}".encode()).hexdigest()[:12]
    return f"{kind}:{man['n']}of{man['nodules_total']}:{digest}"


def coverage(min_readers: int | None = None) -> dict:
    """How much of the protocol the prepared slices crops cover, for a run's record and the tables' captions:
    {"partial" (a partial copy), "nodules_with_crops", "nodules_in_protocol", "patients", "patients_in_protocol",
    "left_out" {why: count}}."""
    min_readers = DEFAULT_MIN_READERS if min_readers is None else min_readers
    table = labelled_folds(min_readers)
    ids, _, man = slices_volumes(table, protocol_hash(min_readers))
    held = table[table["nodule_id"].isin(set(ids))]
    return {
        "partial": bool(man.get("partial")),
        "nodules_with_crops": int(len(held)),
        "nodules_in_protocol": int(len(table)),
        "patients": int(held["patient_id"].nunique()),
        "patients_in_protocol": int(table["patient_id"].nunique()),
        "left_out": man.get("left_out", {}),
    }
