"""LIDC-IDRI: nodule index, protocols LIDC-A/B/C, folds, crops and their cache.

Everything after the data layer calls :func:`load_fold`.
"""
from benchmarks.data.dataset import FoldData, Split, load_fold
from benchmarks.data.index import ATTRIBUTES
from benchmarks.data.protocols import CLASS_NAMES, PROTOCOLS

__all__ = ["ATTRIBUTES", "CLASS_NAMES", "PROTOCOLS", "FoldData", "Split", "load_fold"]
