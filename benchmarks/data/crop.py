"""The one crop every image source goes through.

The paper (Sec. 3.1): "a square shape of a doubled equivalent diameter at the
annotated center, then resized to 32 x 32 x 32". We read that as a cube in
millimetres: side ``2 * eq_diameter_mm``, centred on the readers' mean centroid,
sampled on a regular 32^3 grid with trilinear interpolation, so pixel spacing
and slice spacing are respected (a 2.5 mm slice scan is interpolated along z,
not stretched). Samples outside the scan read ``FILL_HU`` (air), the same in
every source. HU are then windowed to [-1000, 400] (lung to bone-ish, covers
calcification's onset) and mapped linearly to [0, 1].

Axes: volumes come in pylidc's order (row i, column j, slice k); the crop is
returned as (slice, row, col) = (32, 32, 32) so that a 2-D network can take the
32 axial slices as input channels.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

# Bump when the crop changes: caches built by another version are stale.
CROP_VERSION = 1
CROP_SIZE = 32
HU_WINDOW = (-1000.0, 400.0)
FILL_HU = -1000.0


def sample_offsets_mm(side_mm: float, size: int = CROP_SIZE) -> np.ndarray:
    """Positions of the ``size`` sample centres along one axis, in mm from the centre. (size,)"""
    return ((np.arange(size) + 0.5) / size - 0.5) * side_mm


def window_hu(hu: np.ndarray) -> np.ndarray:
    lo, hi = HU_WINDOW
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def resample_cube(volume: np.ndarray, spacing, centroid, diameter_mm: float, size: int = CROP_SIZE, cval: float = FILL_HU) -> np.ndarray:
    """Sample a cube of side ``2 * diameter_mm`` around ``centroid`` on a ``size``^3 grid (trilinear).

    volume:   (I, J, K), pylidc axis order (row, col, slice).
    spacing:  (di, dj, dk) mm per voxel along those axes.
    centroid: (ci, cj, ck) voxel coordinates (may be fractional) in ``volume``.
    Samples outside ``volume`` read ``cval``. Returns (size, size, size) float32, axes (slice, row, col).
    """
    if not np.isfinite(diameter_mm) or diameter_mm <= 0:
        raise ValueError(f"diameter must be positive, got {diameter_mm}")
    off = sample_offsets_mm(2.0 * diameter_mm, size)  # (S,)
    ii = centroid[0] + off / spacing[0]
    jj = centroid[1] + off / spacing[1]
    kk = centroid[2] + off / spacing[2]
    # Output axes (slice, row, col): build (3, S, S, S) coordinates in the volume's (i, j, k) order.
    K, I, J = np.meshgrid(kk, ii, jj, indexing="ij")
    coords = np.stack([I, J, K])
    out = map_coordinates(np.asarray(volume, dtype=np.float32), coords, order=1, mode="constant", cval=cval)
    return out.astype(np.float32)


def crop_hu(volume_hu: np.ndarray, spacing, centroid, diameter_mm: float, size: int = CROP_SIZE) -> np.ndarray:
    """The crop's cube in HU (air outside the scan): :func:`resample_cube` of a CT volume."""
    return resample_cube(volume_hu, spacing, centroid, diameter_mm, size, cval=FILL_HU)


def crop_mask(mask: np.ndarray, spacing, centroid, diameter_mm: float, size: int = CROP_SIZE) -> np.ndarray:
    """A binary mask in scan voxels carried into the crop's grid: (size, size, size) bool, (slice, row, col).

    The mask goes through the same sampling as the image (trilinear, then
    thresholded at 1/2), so it lies where the crop shows the nodule.
    """
    return resample_cube(np.asarray(mask, dtype=np.float32), spacing, centroid, diameter_mm, size, cval=0.0) >= 0.5


def crop(volume_hu: np.ndarray, spacing, centroid, diameter_mm: float, size: int = CROP_SIZE) -> np.ndarray:
    """:func:`crop_hu` followed by the HU window: (size, size, size) float32 in [0, 1]."""
    return window_hu(crop_hu(volume_hu, spacing, centroid, diameter_mm, size))


def region_bounds(centroid, diameter_mm: float, spacing, shape, margin_vox: int = 2) -> tuple[slice, slice, slice]:
    """The voxel box, clipped to ``shape``, that :func:`crop` reads for this nodule.

    Renderers and readers only need this region of a scan: the crop's cube
    (half side ``diameter_mm``) plus ``margin_vox`` voxels for interpolation.
    """
    out = []
    for c, d, n in zip(centroid, spacing, shape):
        half = diameter_mm / d
        lo = max(int(np.floor(c - half)) - margin_vox, 0)
        hi = min(int(np.ceil(c + half)) + margin_vox + 1, n)
        out.append(slice(lo, max(hi, lo + 1)))
    return tuple(out)
