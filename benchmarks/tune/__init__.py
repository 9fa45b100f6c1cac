"""Equal tuning budget for every method, nested so that the test fold never chooses.

  python -m benchmarks.tune run --methods ce nsb clip_lung --datasets LIDC-C --budget 20
  python -m benchmarks.tune status
  python -m benchmarks.sweep run --tuned ...      # the chosen configurations, on the test folds
  python -m benchmarks.tables --tuned ...         # Tables 1-2 of the tuned setting, tuned vs paper

Modules: ``summary`` (study names and the study records that sweeps, tables, figures
and the report read, the chosen trial and its tie-break, the check that a study is of
today's code; no Optuna), ``study`` (Optuna storage, claiming trials, stale workers),
``journal`` (the journal file checked: a torn last record set aside, a reader that
never writes), ``worker`` (the task a local process or Slurm array element runs; it
ends with the local command that started it), ``cli`` (the command). See docs/tuning.md.
"""
