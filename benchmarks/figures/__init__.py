"""Figures from run records: one module per figure family.

  common        names, colours, file names, PNG and PDF written atomically
  models        each record's model rebuilt from its weights, run on its test fold
  tsne, gradcam, localisation, curves, glance (``figures tables``), cd
  cli           ``python -m benchmarks.figures`` (its docstring is the user's guide)
"""
from benchmarks.figures.cli import main
from benchmarks.figures.common import DEFAULT_LAYER, LAYER_NAMES

__all__ = ["DEFAULT_LAYER", "LAYER_NAMES", "main"]
