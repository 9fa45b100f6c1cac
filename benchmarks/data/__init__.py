"""LIDC-IDRI: nodule index, protocols LIDC-A/B/C, folds, crops and their cache.

Everything after the data layer calls :func:`load_fold`. The names below load on
first use, so that ``benchmarks.data.protocols`` (names and folds) does not pull
in the crop and cache machinery (a command's ``--help`` stays quick).
"""
import importlib

_WHERE = {"FoldData": "dataset", "Split": "dataset", "load_fold": "dataset", "ATTRIBUTES": "index",
          "CLASS_NAMES": "protocols", "PROTOCOLS": "protocols"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"benchmarks.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'benchmarks.data' has no attribute {name!r}")
