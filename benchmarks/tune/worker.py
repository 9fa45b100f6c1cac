"""What one tuning worker runs (a local process or a Slurm array task): trials, until the budgets are taken.

A worker is given the plan (every study of the command: its name, the base
run it tunes, its search space) and pulls trials from the studies in turn,
starting at its own index so that workers spread over the studies. A trial is
an ordinary run of the method (``benchmarks.lifecycle``: the same spec, data
and training loop) on the fold's inner split (``benchmarks.data.inner``) with
the trial's parameters as ``--set`` overrides, seeded with the run's seed. After
each epoch its validation objective is reported to the study, and the pruner may
stop it (never at its last epoch); its final value is the objective of the
model as training ends (no epoch is chosen). A trial that diverges is pruned
(it spent its budget slot; it is no candidate). Any other error fails the trial
and ends the worker with that error: its parameters are tried again by the
next claim.
"""
from __future__ import annotations

import logging
import os
import time

from benchmarks.paths import RESULTS_ENV, RUNS_ENV

log = logging.getLogger(__name__)


class TuneWorker:
    """The picklable task of a tuning worker (submitit Checkpointable: a requeued task resumes
    its loop, and the trial its earlier life left running is failed and retried)."""

    def __init__(self, plan: list[dict], storage: str, budget: int, results_root: str, cache_root: str | None,
                 device: str = "auto", plugins=(), threads: int | None = None, stale_after: float | None = None, per_task: int = 1,
                 owner: dict | None = None, command: str | None = None):
        self.plan = plan
        self.storage = storage
        self.budget = budget
        self.results_root = results_root
        self.cache_root = cache_root
        self.device = device
        self.plugins = list(plugins)
        self.threads = threads
        self.stale_after = stale_after
        self.per_task = per_task
        self.owner = owner  # the local command that started this worker ({"pid", "start"}); None on Slurm
        self.command = command  # an id of the `tune run` that started it: its workers stop at an error that recurs

    def __call__(self, index: int) -> int:
        """Run this task's worker loop; with ``per_task`` K > 1, K loops at once (K - 1 in child processes that
        end with this one): K trials share the task's GPU, as a sweep packs runs onto one. A local worker ends
        with the command that started it, however that ends (``kill -9`` too): it never claims a trial for a
        command that is gone, and a rerun never finds it still at work."""
        from benchmarks.data.processes import end_with_process  # noqa: PLC0415

        end_with_process(self.owner)
        if self.per_task <= 1:
            return self.loop(index)
        import multiprocessing  # noqa: PLC0415

        ctx = multiprocessing.get_context("spawn")
        children = [ctx.Process(target=_child, args=(self, index * self.per_task + k, os.getpid())) for k in range(1, self.per_task)]
        for c in children:
            c.start()
        try:
            ran = self.loop(index * self.per_task)
        finally:
            for c in children:
                c.join()
        failed = [c.exitcode for c in children if c.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} of this task's {self.per_task} workers failed (exit {', '.join(map(str, failed))}); see the log")
        return ran

    def loop(self, index: int) -> int:
        os.environ[RESULTS_ENV] = self.results_root
        os.environ.pop(RUNS_ENV, None)
        if self.cache_root:
            os.environ["CLIPLUNG_CACHE"] = self.cache_root
        import torch  # noqa: PLC0415  (deferred: `tune --help` imports this module)

        from benchmarks.errors import setup_logging  # noqa: PLC0415
        from benchmarks.plugins import load_plugins  # noqa: PLC0415
        from benchmarks.tune.study import STALE_AFTER_S, claim, open_storage  # noqa: PLC0415

        setup_logging()
        name_trials_in_log()
        if self.threads:
            torch.set_num_threads(self.threads)
        load_plugins(self.plugins)
        storage = open_storage(self.storage)
        n = len(self.plan)
        ran = 0
        for i in range(n):
            item = self.plan[(index + i) % n]
            dists = distributions(item["space"])
            while True:
                got = claim(storage, item["study"], self.budget, item["epochs"], dists, self.stale_after or STALE_AFTER_S, self.owner,
                            self.command)
                if got is None:
                    break
                run_trial(storage, item, *got, device=self.device)
                ran += 1
        return ran


def _child(worker: TuneWorker, index: int, parent: int) -> None:
    import signal  # noqa: PLC0415

    from benchmarks.data.processes import end_with_parent  # noqa: PLC0415

    end_with_parent(parent, signal.SIGKILL, lambda: os._exit(1))  # a killed task leaves no worker behind
    worker.loop(index)


def distributions(space: dict) -> dict:
    """Optuna distributions of a search space as JSON (``benchmarks.space.space_json``)."""
    import optuna  # noqa: PLC0415

    out = {}
    for k, d in space.items():
        if d["type"] == "float":
            out[k] = optuna.distributions.FloatDistribution(d["low"], d["high"], log=d["log"])
        elif d["type"] == "int":
            out[k] = optuna.distributions.IntDistribution(d["low"], d["high"], log=d["log"])
        else:
            out[k] = optuna.distributions.CategoricalDistribution(list(d["options"]))
    return out


# The folds this worker has loaded: its trials share them (0.7 s a trial on LIDC-C, more on LIDC-A and -B).
_FOLDS: dict = {}
# The study and trial this worker trains now: its log lines (the training loop's epochs too) name them.
_NOW = {"text": ""}


class _TrialInLog(logging.Filter):
    """Puts ``[<study> trial <n>] `` in front of every log line of the worker while a trial trains."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trial = _NOW["text"]
        return True


def name_trials_in_log() -> None:
    """Every log line of this worker names the study and trial it belongs to (``setup_logging`` first)."""
    for h in logging.getLogger().handlers:
        # setup_logging's own handler only (a test runner's capturing handlers keep their format)
        if type(h) is logging.StreamHandler and not any(isinstance(f, _TrialInLog) for f in h.filters):
            h.addFilter(_TrialInLog())
            h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(trial)s%(message)s"))


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


class TrialFailed(RuntimeError):
    """A trial's error, with the study and trial it ended (the worker ends with it)."""


def run_trial(storage, item: dict, study, trial, device: str = "auto") -> str:
    """Train one trial on the inner split, reporting each epoch; returns its final state.

    Recorded with it: ``seconds``, what the trial cost (trained, and scored after each epoch),
    apart from ``setup_seconds``, what came before (its model built, and its fold loaded by the
    first trial of a worker on it, for every trial after it: the crop cache built too, once,
    when none was there yet), and ``log_loss``, its final validation log loss (the chosen
    trial's tie-break, ``benchmarks.tune.summary.chosen_trial``). An error of the setting, the data or the values
    (a UserError) would recur on every try: the trial is failed with ``recurs`` set, and no
    worker of the same command claims from the study again."""
    import optuna  # noqa: PLC0415

    from benchmarks.errors import UserError  # noqa: PLC0415
    from benchmarks.lifecycle import make_spec, prepare_run  # noqa: PLC0415
    from benchmarks.train import Diverged, fit  # noqa: PLC0415
    from benchmarks.tune.study import finish  # noqa: PLC0415

    key, objective = item["key"], item["objective"]
    sets = [*item["sets"], *(f"{k}={v!r}" for k, v in sorted(trial.params.items()))]
    t0 = time.perf_counter()
    setup = 0.0
    epochs_run = 0
    last = {}
    _NOW["text"] = f"[{item['study']} trial {trial.number}] "
    log.info("%s (slot %s): %s", "starts" if "retry_of" not in trial.user_attrs else f"starts again (a retry of trial "
             f"{trial.user_attrs['retry_of']})", trial.user_attrs.get("slot"), params_text(trial.params))

    def on_epoch(epoch: int, metrics: dict) -> None:
        nonlocal epochs_run
        epochs_run = epoch
        value = float(metrics[objective])
        last["value"], last["log_loss"] = value, float(metrics.get("log_loss", float("nan")))
        trial.report(value, epoch)
        trial.set_user_attr("heartbeat", time.time())
        log.info("epoch %d of %d: validation %s %.4f, log loss %.4f", epoch, item["epochs"], objective, value, last["log_loss"])
        if epoch < item["epochs"] and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {objective} {value:.4f}")

    def took() -> dict:
        return {"epochs_run": epochs_run, "seconds": round(time.perf_counter() - t0 - setup, 2), "setup_seconds": round(setup, 2)}

    try:
        try:
            spec = make_spec(key["method"], key["dataset"], key["fold"], item["seed"], key["profile"], key["source"],
                             key["min_readers"], sets, split="inner")
            p = prepare_run(spec, device, progress=False, folds=_FOLDS)
            setup = time.perf_counter() - t0  # its fold loaded (a worker's first trial: the crop cache built, if none was) and its model built
            fit(p.model, p.data, p.train, spec.seed, p.device, progress=False, on_epoch=on_epoch)
        except optuna.TrialPruned:
            finish(storage, study, trial, "PRUNED", **took())
            log.info("pruned after epoch %d", epochs_run)
            return "PRUNED"
        except Diverged as e:  # a poor configuration, not a fault: its budget slot is spent
            finish(storage, study, trial, "PRUNED", diverged=str(e).splitlines()[0][:300], **took())
            log.info("diverged: pruned")
            return "PRUNED"
        except BaseException as e:  # a fault (or the task killed): the trial fails
            msg = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300] if str(e).strip() else type(e).__name__
            recurs = isinstance(e, UserError)
            try:
                finish(storage, study, trial, "FAIL", error=msg, recurs=recurs, epochs_run=epochs_run)
            except Exception:  # noqa: BLE001  the storage itself may be what failed: the next claim reaps the trial
                pass
            if isinstance(e, Exception):
                where = f"study {item['study']}, trial {trial.number} ({params_text(trial.params)})"
                raise (UserError if recurs else TrialFailed)(f"{where}: {msg}") from None
            raise
        ll = last["log_loss"] if last["log_loss"] == last["log_loss"] else None  # (NaN is no JSON)
        finish(storage, study, trial, "COMPLETE", last["value"], log_loss=ll, **took())
        log.info("complete: validation %s %.4f", objective, last["value"])
        return "COMPLETE"
    finally:
        _NOW["text"] = ""


def _checkpointable_class():
    cls = globals().get("CheckpointableTuneWorker")
    if cls is None:
        import submitit  # noqa: PLC0415  (deferred for --help speed)

        cls = type("CheckpointableTuneWorker", (TuneWorker, submitit.helpers.Checkpointable), {"__module__": __name__})
        globals()["CheckpointableTuneWorker"] = cls
    return cls


def __getattr__(name):
    # A task unpickles ``benchmarks.tune.worker.CheckpointableTuneWorker`` in a fresh process: make it there too.
    if name == "CheckpointableTuneWorker":
        return _checkpointable_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_worker(*args, **kwargs):
    return _checkpointable_class()(*args, **kwargs)
