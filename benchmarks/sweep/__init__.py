"""The sweep: every run of Tables 1-3 for one setting, on Slurm (job arrays) or locally (submitit).

One concern per module, each pointing down only:
  matrix   the runs of the tables for one setting, each once
  task     what one array task or local process runs (one run, or a pack)
  slurm    Slurm's client commands with bounded waits, and its job states
  state    each run's state: done, queued, running, failed or missing
  submit   the sweep folder, its manifest, submission, the local scheduler, waiting
  cli      ``python -m benchmarks.sweep run|status`` (its docstring is the user's guide)
"""
from benchmarks.sweep.cli import main

__all__ = ["main"]
