"""Where the suite writes: one results root, and a folder under it for each kind of output.

  $CLIPLUNG_RESULTS   the results root (default ``results``, relative to the working folder)
  $CLIPLUNG_RUNS      run records, weights, checkpoints   (default <root>/runs)
  $CLIPLUNG_SWEEPS    sweep manifests and task logs        (default <root>/sweeps)
  tuning studies: the Optuna journal and the study records under <root>/tune (benchmarks.tune)
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


def tune_dir() -> Path:
    """Tuning: the default Optuna journal, the study records (``studies/``) and their locks."""
    return results_dir() / "tune"


def output_dir(kind: str) -> Path:
    """``tables``, ``figures`` or ``report`` under the results root."""
    return results_dir() / kind


def variable_of(kind: str) -> str:
    """The environment variable that places the ``runs`` or ``sweeps`` folder (or another folder of the
    results root), as ``$NAME`` for messages: its own variable when set, else ``$CLIPLUNG_RESULTS``
    (set or not: it is the one that moves the default ``results/<kind>``)."""
    own = {"runs": RUNS_ENV, "sweeps": SWEEPS_ENV}.get(kind)
    return f"${own}" if own and os.environ.get(own) else f"${RESULTS_ENV}"


def hint_for(kind: str) -> str:
    """'set $CLIPLUNG_RESULTS (or $CLIPLUNG_RUNS) to a writable folder': how to pick another folder of ``kind``."""
    own = {"runs": RUNS_ENV, "sweeps": SWEEPS_ENV}.get(kind)
    var = variable_of(kind)
    return f"set {var} to a writable folder" + (f" (or ${own})" if own and var != f"${own}" else "")


def file_in_the_way(path: Path) -> Path | None:
    """The first existing part of ``path`` (itself or a parent) that is not a folder, or None: a file
    where the results folder should be makes every read of it come back empty, not fail."""
    path = Path(path).absolute()
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
        if not p.exists():
            return None
    return None
