"""Where the suite writes: one results root, and a folder under it for each kind of output.

  $CLIPLUNG_RESULTS   the results root (default ``results``, relative to the working folder)
  $CLIPLUNG_RUNS      run records, weights, checkpoints   (default <root>/runs)
  $CLIPLUNG_SWEEPS    sweep manifests and task logs        (default <root>/sweeps)
  tables, figures and the report go to <root>/tables, <root>/figures and <root>/report
  (each command's ``--out`` picks another folder for one call).

A function, not a constant: a test or a sweep task sets the variables after import.
"""
from __future__ import annotations

import os
from pathlib import Path

RESULTS_ENV = "CLIPLUNG_RESULTS"
RUNS_ENV = "CLIPLUNG_RUNS"
SWEEPS_ENV = "CLIPLUNG_SWEEPS"


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or "results")


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_ENV) or results_dir() / "runs")


def sweeps_dir() -> Path:
    return Path(os.environ.get(SWEEPS_ENV) or results_dir() / "sweeps")


def output_dir(kind: str) -> Path:
    """``tables``, ``figures`` or ``report`` under the results root."""
    return results_dir() / kind
