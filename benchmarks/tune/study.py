"""Optuna studies: the storage, one study per cell and fold, and trials claimed exactly once.

Storage: Optuna's journal file (``<results>/tune/journal.log`` by default), which
needs no server and works on a cluster's shared file system (appends under
Optuna's open-file lock), or a database URL (``--storage
mysql+pymysql://user:pw@host/db``, ``postgresql://...``, ``sqlite:///file.db``)
for clusters that run one.

Claiming a trial. Workers (local processes, Slurm array tasks) pull trials from
a shared study. Each claim happens under an exclusive lock on a file in the
results folder (``tune/locks/<study>.lock``), which every worker shares since
it writes its records there too: the claim (1) marks the RUNNING trials of dead
workers FAILED (a worker on this host whose process is gone, the earlier life
of a requeued Slurm task, or a worker silent for longer than ``stale_after``),
(2) enqueues the parameters of every failed trial not yet retried (at most
:data:`MAX_TRIES` times), (3) counts finished (completed or pruned) and running
trials and stops at the budget, and (4) asks Optuna for the next trial. So the
budget is never overrun and never counted twice, and a killed trial's
parameters are tried again.

Determinism. The sampler is TPE (Bergstra et al., NeurIPS 2011) seeded per budget
slot (slot j = the j-th finished-or-running trial; seed ``SAMPLER_SEED * 100003 +
j``), and it sees only completed and pruned trials (failed ones never), as does
the median pruner. With one worker a study therefore proposes the same
parameters for slot j whether or not an earlier trial was killed and retried,
and training is deterministic on the CPU, so the chosen configuration is the
same as an uninterrupted study's. With several workers the order in which
trials finish depends on timing (TPE's constant liar takes running trials into
account), so only the budget and the bookkeeping are promised, not the chosen
configuration.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from benchmarks.data.processes import alive, pid_start
from benchmarks.errors import UserError
from benchmarks.io import exclusive_lock
from benchmarks.paths import tune_dir
from benchmarks.tune.summary import SAMPLER_SEED, SCHEMA, write_study_record

log = logging.getLogger(__name__)

MAX_TRIES = 3  # a trial's parameters are run at most this many times (the first and two retries)
LOCK_WAIT_S = 300.0
STALE_AFTER_S = 3600.0  # a running trial whose worker has not reported for this long is taken as dead
CONNECT_TIMEOUT_S = 10


def default_storage() -> str:
    return str(tune_dir() / "journal.log")


def redact(url: str) -> str:
    """A storage URL without its password, for messages and records."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def open_storage(url: str | None, write: bool = True):
    """The Optuna storage of ``url`` (a journal file path, or a database URL), reachable; one line
    and exit 2 when it is not. A journal is checked first (``benchmarks.tune.journal``): a torn or
    garbled last record is set aside, with one warning. ``write=False`` (``tune status``): the
    journal must exist, and nothing is written to it or beside it (a read-only folder is fine)."""
    import optuna  # noqa: PLC0415  (deferred for --help speed)

    from benchmarks.tune import journal  # noqa: PLC0415  (optuna)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our lines say what happens; Optuna's INFO repeats them
    url = url or default_storage()
    if "://" not in url:  # a journal file
        path = Path(url)
        if not write:
            if not path.is_file():
                raise UserError(f"no study journal {path}" + (" (a folder)" if path.is_dir() else "")
                                + ": give --storage the journal of `tune run`, or run `tune run` first")
            return optuna.storages.JournalStorage(journal.ReadOnlyJournal(path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a"):
                pass
        except OSError as e:
            raise UserError(f"cannot write the study journal {path}: {e.strerror or e}; give --storage a writable file or a database URL") from None
        journal.repair(path)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock  # noqa: PLC0415

        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    kwargs = {}
    if url.startswith(("mysql", "postgresql")):
        kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as e:  # noqa: BLE001  an unknown driver, a refused connection, bad credentials: one line
        why = " ".join(str(e).split("\n")[0].split())[:300] or type(e).__name__
        raise UserError(f"cannot reach the study storage {redact(url)}: {why}") from None


def _lock(name: str):
    folder = tune_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    return exclusive_lock(path, LOCK_WAIT_S, f"another tuning worker has held {path} for over {LOCK_WAIT_S:g} s")


def sampler(slot: int, budget: int):
    import optuna  # noqa: PLC0415

    return optuna.samplers.TPESampler(seed=SAMPLER_SEED * 100003 + slot, n_startup_trials=startup_trials(budget), constant_liar=True)


def startup_trials(budget: int) -> int:
    """TPE's random start-up trials: half the budget, at most Optuna's default 10."""
    return min(10, max(1, budget // 2))


def pruner(epochs: int):
    import optuna  # noqa: PLC0415

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup_epochs(epochs))


def warmup_epochs(epochs: int) -> int:
    """The first epoch at which the pruner may stop a trial: a quarter into its schedule (Optuna's
    ``n_warmup_steps``: no pruning at a step below it)."""
    return max(1, epochs // 4)


def describe_search(budget: int, epochs: int) -> dict:
    """The sampler and pruner, in words and numbers (study records, captions)."""
    return {"sampler": f"TPE (seed {SAMPLER_SEED} per slot, {startup_trials(budget)} random start-up trials, constant liar)",
            "pruner": f"median (after 2 completed trials, from epoch {warmup_epochs(epochs)} of {epochs})"}


def differences(have: dict, want: dict) -> list[str]:
    keys = sorted(set(have) | set(want))
    return [f"{k} {have.get(k)!r} there, {want.get(k)!r} here" for k in keys if have.get(k) != want.get(k)]


def prepare_study(storage, name: str, setting: dict, budget: int, defaults: dict, create: bool) -> dict:
    """Check (``create=False``) or create/extend (``create=True``) study ``name``: a study of the
    same name made for another setting is refused naming how they differ; a budget below the
    trials already finished is refused. A new study gets the defaults as its first trial."""
    import optuna  # noqa: PLC0415

    try:
        names = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read the studies of the storage: {' '.join(str(e).split())[:200]}") from None
    if name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        have = study.user_attrs.get("setting")
        if have != setting:
            diff = "; ".join(differences(have or {}, setting))
            raise UserError(f"the storage holds a study {name} of another setting ({diff}); use another --storage or --tag")
        n = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
        if n > budget:
            raise UserError(f"the study {name} already has {n} finished trials, more than --budget {budget}")
        if create and study.user_attrs.get("budget") != budget:
            study.set_user_attr("budget", budget)
        return {"name": name, "new": False, "finished": n}
    if create:
        with _lock(name):
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
            if not study.get_trials(deepcopy=False):
                study.set_user_attr("setting", setting)
                study.set_user_attr("budget", budget)
                study.enqueue_trial(defaults, user_attrs={"defaults": True})
    return {"name": name, "new": True, "finished": 0}


def worker_identity(owner: dict | None = None, command: str | None = None) -> dict:
    """Who runs a trial: host, pid (and its start time), Slurm task, ``owner``, the local command
    that started the worker ({"pid", "start"}; None on Slurm, whose tasks outlive their command),
    and ``command``, an id of that `tune run`."""
    task = os.environ.get("SLURM_ARRAY_JOB_ID")
    slurm = f"{task}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if task else os.environ.get("SLURM_JOB_ID")
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": pid_start(os.getpid()), "slurm": slurm, "owner": owner, "command": command}


def _stale(attrs: dict, me: dict, stale_after: float) -> str | None:
    """Why the worker of a RUNNING trial is dead, else None."""
    w = attrs.get("worker") or {}
    if w.get("host") == me["host"] and w.get("pid") is not None:
        if w["pid"] == me["pid"] and w.get("pid_start") == me["pid_start"]:
            return None  # ours (cannot happen between trials, but never reap ourselves)
        if pid_start(w["pid"]) != w.get("pid_start"):
            return f"its worker (pid {w['pid']} on {w['host']}) is gone"
        if not alive(w.get("owner")):  # its worker goes with it within a second (end_with_process): do not wait for that
            return f"the command that started its worker (pid {w['owner']['pid']} on {w['host']}) is gone"
        return None
    if me["slurm"] and w.get("slurm") == me["slurm"]:
        return f"its Slurm task {w['slurm']} was requeued"
    beat = attrs.get("heartbeat") or attrs.get("claimed")
    if beat is not None and time.time() - beat > stale_after:
        return f"its worker on {w.get('host')} has not reported for {time.time() - beat:.0f} s"
    return None


def claim(storage, name: str, budget: int, epochs: int, distributions: dict, stale_after: float = STALE_AFTER_S,
          owner: dict | None = None, command: str | None = None):
    """The next trial of study ``name`` for this worker, or None when the budget is taken (or when
    ``owner``, the command that started this worker, is gone: its worker takes nothing more; or when
    a trial of this ``command`` failed with an error that recurs: trying again would fail again)."""
    import optuna  # noqa: PLC0415
    from optuna.trial import TrialState  # noqa: PLC0415

    me = worker_identity(owner, command)
    with _lock(name):
        if not alive(owner):
            return None
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            why = _stale(t.user_attrs, me, stale_after) if t.state == TrialState.RUNNING else None
            if why:
                storage.set_trial_user_attr(t._trial_id, "error", f"worker died: {why}")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                log.warning("study %s: trial %d failed (%s); its parameters will be tried again", name, t.number, why)
        trials = study.get_trials(deepcopy=False)
        if command and any(t.state == TrialState.FAIL and t.user_attrs.get("recurs") and (t.user_attrs.get("worker") or {}).get("command") == command
                           for t in trials):
            return None
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if t.state == TrialState.FAIL and t.number not in retried and t.user_attrs.get("tries", 1) < MAX_TRIES:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "tries": t.user_attrs.get("tries", 1) + 1,
                                                          **({"defaults": True} if t.user_attrs.get("defaults") else {})})
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if done + running >= budget:
            return None
        slot = done + running
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler(slot, budget), pruner=pruner(epochs))
        trial = study.ask(distributions)
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("worker", me)
        trial.set_user_attr("claimed", time.time())
        return study, trial


def finish(storage, study, trial, state: str, value: float | None = None, **attrs) -> None:
    """Tell the study how ``trial`` ended ("COMPLETE", "PRUNED" or "FAIL") and rewrite the study record."""
    from optuna.trial import TrialState  # noqa: PLC0415

    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if state == "COMPLETE":
        study.tell(trial, value)
    else:
        study.tell(trial, state=getattr(TrialState, state))
    write_record(storage, study.study_name)


def write_record(storage, name: str, storage_label: str = "") -> Path:
    """Rewrite study ``name``'s record from the storage (under the study's lock)."""
    import optuna  # noqa: PLC0415

    with _lock(name):
        study = optuna.load_study(study_name=name, storage=storage)
        return write_study_record(study_record(study, storage_label))


def study_record(study, storage_label: str = "") -> dict:
    trials = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        trials.append({
            "number": t.number, "state": t.state.name, "params": t.params,
            "value": None if t.value is None else float(t.value),
            "intermediate": {str(k): float(v) for k, v in sorted(t.intermediate_values.items())},
            "slot": a.get("slot"), "retry_of": a.get("retry_of"), "defaults": bool(a.get("defaults")),
            "error": a.get("error"), "diverged": a.get("diverged"), "worker": a.get("worker"),
            "epochs_run": a.get("epochs_run"), "seconds": a.get("seconds"), "setup_seconds": a.get("setup_seconds"),
            "log_loss": a.get("log_loss"), "recurs": bool(a.get("recurs")),
            "started": t.datetime_start.timestamp() if t.datetime_start else None,
            "finished": t.datetime_complete.timestamp() if t.datetime_complete else None,
        })
    counts = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    return {"schema": SCHEMA, "kind": "study", "study": study.study_name, "storage": storage_label,
            "setting": study.user_attrs.get("setting"), "budget": study.user_attrs.get("budget"), "counts": counts,
            "trials": trials, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
