"""What one array task (or local process) of a sweep runs: one run, or a pack of runs."""
from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.data.processes import end_with_process
from benchmarks.errors import UserError
from benchmarks.lifecycle import machine_share, run_one
from benchmarks.pack import run_pack
from benchmarks.paths import RUNS_ENV
from benchmarks.records import RunSpec


class RunTask:
    """The picklable task a Slurm array element (or local process) runs: one RunSpec, or a pack
    of them (``--runs-per-task``), trained together by ``benchmarks.pack``.

    Subclasses submitit's Checkpointable (see :func:`make_task`): on time-out or
    preemption the same call is resubmitted, and every run resumes from its
    epoch checkpoint. The task loads the plugins the submitting command had. On the
    local executor it runs with ``threads`` torch threads, and its records say how
    many tasks shared the machine (``tasks_at_once``; None on Slurm, whose scheduler
    decides).
    """

    def __init__(self, runs_root: str, cache_root: str | None, device: str = "auto", plugins=(), threads: int | None = None,
                 tasks_at_once: int | None = None, scheduler: str = "slurm", owner: dict | None = None):
        self.runs_root = runs_root
        self.cache_root = cache_root
        self.device = device
        self.plugins = list(plugins)
        self.threads = threads
        self.tasks_at_once = tasks_at_once
        self.scheduler = scheduler
        self.owner = owner  # the local `sweep run` that started the task ({"pid", "start"}); None on Slurm

    def __call__(self, spec) -> str:
        started = time.time()
        # A local task ends with its `sweep run` however that ends (kill -9 too): the rerun then finds
        # its runs failed, not running, and resumes them from their checkpoints.
        end_with_process(self.owner)
        os.environ[RUNS_ENV] = self.runs_root
        if self.cache_root:
            os.environ["CLIPLUNG_CACHE"] = self.cache_root
        import torch  # noqa: PLC0415  (deferred: `sweep --help` imports this module)

        from benchmarks.errors import setup_logging  # noqa: PLC0415
        from benchmarks.plugins import load_plugins  # noqa: PLC0415  (the registry: torch, as above)

        setup_logging()  # the task's log shows the epochs and a resume
        if self.threads:
            torch.set_num_threads(self.threads)
        load_plugins(self.plugins)
        if isinstance(spec, dict):
            s = RunSpec(**spec)
            run_one(s, device=self.device, progress=False, machine=machine_share(self.tasks_at_once, 1, self.scheduler, started))
            return str(s.path(".json", Path(self.runs_root)))
        specs = [RunSpec(**d) for d in spec]
        out = run_pack(specs, device=self.device, machine=machine_share(self.tasks_at_once, len(specs), self.scheduler, started))
        failed = [(s, r) for s, r in zip(specs, out) if isinstance(r, BaseException)]
        if failed:  # the task fails (its runs with records are done all the same): one line naming each failed run
            raise UserError(f"{len(failed)} of {len(specs)} runs of this pack failed: "
                            + "; ".join(f"{s.stem}: {str(e).splitlines()[-1] if str(e) else type(e).__name__}" for s, e in failed))
        return ",".join(str(s.path(".json", Path(self.runs_root))) for s in specs)


def _checkpointable_class():
    """RunTask with submitit's Checkpointable, made on first use (submitit is imported only by
    commands that submit)."""
    cls = globals().get("CheckpointableRunTask")
    if cls is None:
        import submitit  # noqa: PLC0415  (deferred for --help speed)

        cls = type("CheckpointableRunTask", (RunTask, submitit.helpers.Checkpointable), {"__module__": __name__})
        globals()["CheckpointableRunTask"] = cls
    return cls


def __getattr__(name):
    # A task unpickles ``benchmarks.sweep.task.CheckpointableRunTask`` in a fresh process: make it there too.
    if name == "CheckpointableRunTask":
        return _checkpointable_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_task(runs_root, cache_root, device, plugins=(), threads=None, tasks_at_once=None, scheduler="slurm", owner=None):
    """The checkpointable task object submitit pickles (by reference to this module's class)."""
    return _checkpointable_class()(runs_root, cache_root, device, plugins, threads, tasks_at_once, scheduler, owner)
