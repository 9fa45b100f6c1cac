"""python -m benchmarks.sweep: the runs of Tables 1-3 on Slurm (job arrays) or locally, through submitit.

  python -m benchmarks.sweep run --tables 1 2 3 --executor slurm --partition gpu --gpus-per-node 1
  python -m benchmarks.sweep run --tables 1 2 3 --dry-run --json     # the matrix, nothing submitted
  python -m benchmarks.sweep status --profile paper                  # per cell: done / queued / running / failed / missing
  python -m benchmarks.sweep run --retry-failed                      # resubmit the failed runs only

The matrix is every (method, dataset) cell of the tables x 5 folds x seeds for
one setting (``--profile``, ``--source``, ``--seeds``, ``--min-readers``,
``--set``; ``--folds`` / ``--methods`` restrict it); a run shared by two tables
is run once. ``run`` leaves out every run whose record exists and every run
that is queued or running in any sweep of the same runs folder (it says how
many and in which sweep): a run is never submitted twice. The rest goes out
as one job array (``executor.map_array``). Each task is checkpointable: on
time-out or preemption submitit requeues it, and the run resumes from its last
epoch checkpoint, ending with the same record as an uninterrupted run. Records
are written atomically and named by the run's config hash, so two tasks never
write the same record. ``local`` runs the tasks as local processes (and waits
for them); ``debug`` runs them in this process. Sweep state (job ids, which
task is which run, submitit logs) lives under ``results/sweeps/<id>/``
(``$CLIPLUNG_SWEEPS``).

``status`` takes the same setting flags as ``run`` and gives each run of that
matrix one state: ``done`` (its record exists and reads as a complete record,
whoever made it: a sweep or ``benchmarks.run``), else what the newest sweep
that holds the run says: ``queued``, ``running`` or ``failed`` (with the last
error line of the task and its log), else ``missing`` (never submitted).

Slurm commands (``sinfo``, ``squeue``, ``sacct``) are given
``$CLIPLUNG_SLURM_TIMEOUT`` seconds (default 20); a controller (or accounting
daemon) that does not answer in that time ends in one line naming
``$SLURM_CONF``.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from benchmarks.cli import SEED_MAX, ArgumentParser, add_plugin_flag, int_in, load_plugins, parse_folds, warn_phantom
from benchmarks.errors import UserError, cli_main
from benchmarks.grid import BACKBONE_TABLE, TABLES, cells
from benchmarks.io import atomic_write_text, writable_dir
from benchmarks.records import DEFAULT_BACKBONE, RunSpec, read_record, runs_dir

log = logging.getLogger("benchmarks.sweep")

EXECUTORS = ("slurm", "local", "debug")
N_FOLDS = 5
STATES = ("done", "queued", "running", "failed", "missing")
SLURM_TIMEOUT_ENV = "CLIPLUNG_SLURM_TIMEOUT"
SLURM_TIMEOUT_S = 20.0
LOCK_WAIT_S = 120.0


def sweeps_dir() -> Path:
    return Path(os.environ.get("CLIPLUNG_SWEEPS", "results/sweeps"))


def matrix(tables, seeds=(0,), profile="paper", source="phantom", min_readers=2, sets=None,
           folds=None, methods=None, backbones=None) -> list[RunSpec]:
    """Every run of the tables, each once.

    ``methods`` restricts the tables' methods; a registered method that is not in the
    tables (a plugin's, say) is added on every dataset of the named tables, with the
    same folds, seeds and profile. ``backbones`` adds the runs of the backbone table
    (CE and CLIP-Lung on LIDC-A/B/C with ``backbone=`` each name). ``folds`` restricts
    the folds (pilots, tests).
    """
    import methods as registry  # noqa: PLC0415
    from benchmarks.run import make_spec  # noqa: PLC0415
    from methods.backbones import BACKBONES  # noqa: PLC0415

    for t in tables:
        if t not in TABLES:
            raise UserError(f"unknown table {t}; choose from {', '.join(map(str, TABLES))}")
    for m in methods or []:
        registry.get_method(m)  # an unknown name: one line listing the known ones
    for b in backbones or []:
        if b not in BACKBONES:
            raise UserError(f"--backbones {b}: unknown backbone; known backbones: {', '.join(sorted(BACKBONES))}")
    in_tables = {m for m, _ in cells(tables)}
    datasets = list(dict.fromkeys(ds for t in tables for ds in TABLES[t]["datasets"]))
    grid = [(m, ds, ()) for m, ds in cells(tables) if not methods or m in methods]
    grid += [(m, ds, ()) for m in (methods or []) if m not in in_tables for ds in datasets]
    grid += [(m, ds, (f"backbone={b!r}",)) for b in (backbones or []) for m in BACKBONE_TABLE["methods"] for ds in BACKBONE_TABLE["datasets"]]
    specs, seen = [], set()
    for method, dataset, extra in grid:
        for seed in seeds:
            for fold in (folds if folds is not None else range(N_FOLDS)):
                s = make_spec(method, dataset, fold, seed, profile, source, min_readers, [*(sets or []), *extra])
                if s.key not in seen:
                    seen.add(s.key)
                    specs.append(s)
    return specs


class RunTask:
    """The picklable task a Slurm array element (or local process) runs: one RunSpec, or a pack
    of them (``--runs-per-task``), trained together by ``benchmarks.pack``.

    Subclasses submitit's Checkpointable (see :func:`_task`): on time-out or
    preemption the same call is resubmitted, and every run resumes from its
    epoch checkpoint. The task loads the plugins the submitting command had.
    """

    def __init__(self, runs_root: str, cache_root: str | None, device: str = "auto", plugins=()):
        self.runs_root = runs_root
        self.cache_root = cache_root
        self.device = device
        self.plugins = list(plugins)

    def __call__(self, spec) -> str:
        os.environ["CLIPLUNG_RUNS"] = self.runs_root
        if self.cache_root:
            os.environ["CLIPLUNG_CACHE"] = self.cache_root
        from benchmarks.errors import setup_logging  # noqa: PLC0415
        from benchmarks.plugins import load_all  # noqa: PLC0415
        from benchmarks.run import run_one  # noqa: PLC0415

        setup_logging()  # the task's log shows the epochs and a resume
        load_all(getattr(self, "plugins", []))
        if isinstance(spec, dict):
            s = RunSpec(**spec)
            run_one(s, device=self.device, progress=False)
            return str(s.path(".json", Path(self.runs_root)))
        from benchmarks.pack import run_pack  # noqa: PLC0415

        specs = [RunSpec(**d) for d in spec]
        out = run_pack(specs, device=self.device)
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
        import submitit  # noqa: PLC0415

        cls = type("CheckpointableRunTask", (RunTask, submitit.helpers.Checkpointable), {"__module__": __name__})
        globals()["CheckpointableRunTask"] = cls
    return cls


def __getattr__(name):
    # A task unpickles ``benchmarks.sweep.CheckpointableRunTask`` in a fresh process: make it there too.
    if name == "CheckpointableRunTask":
        return _checkpointable_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _task(runs_root, cache_root, device, plugins=()):
    # The class of the importable module, also when this file runs as ``__main__`` (python -m): the
    # task pickles it by reference, and the array task finds it by importing benchmarks.sweep.
    from benchmarks import sweep  # noqa: PLC0415

    return sweep._checkpointable_class()(runs_root, cache_root, device, plugins)


# ---------------------------------------------------------------------------------------------
# Slurm commands: every call bounded, every failure one line.

def _last_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    return lines[-1] if lines else ""


def slurm_timeout() -> float:
    raw = os.environ.get(SLURM_TIMEOUT_ENV, "")
    if not raw.strip():
        return SLURM_TIMEOUT_S
    try:
        t = float(raw)
    except ValueError:
        t = -1.0
    if not t > 0:
        raise UserError(f"${SLURM_TIMEOUT_ENV}={raw!r}: expected a number of seconds above 0")
    return t


def slurm_cmd(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a Slurm client command with a bounded wait (``$CLIPLUNG_SLURM_TIMEOUT``).

    A controller that is down or overloaded makes ``sinfo``/``squeue`` retry for
    their MessageTimeout and ``sacct`` wait ~45 s for slurmdbd; we stop earlier and
    say which daemon of which configuration did not answer.
    """
    t = slurm_timeout()
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=t)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} is not on PATH: this machine has no Slurm client; run where sbatch works") from None
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        daemon = "accounting daemon (slurmdbd)" if cmd[0] == "sacct" else "controller (slurmctld)"
        conf = os.environ.get("SLURM_CONF") or "unset, so the default /etc/slurm/slurm.conf"
        raise UserError(f"{cmd[0]} got no answer within {t:g} s: the Slurm {daemon} of SLURM_CONF={conf} does not respond; "
                        f"check that it runs (or give it longer with ${SLURM_TIMEOUT_ENV})") from None


def check_slurm(partition: str | None) -> None:
    """sbatch on PATH, the controller answering, and ``partition`` (if any) one of its partitions."""
    if not shutil.which("sbatch"):
        raise UserError("--executor slurm: Slurm is not reachable (sbatch is not on PATH); "
                        "use --executor local, or run where sbatch works")
    p = slurm_cmd(["sinfo", "-h", "-o", "%P"])
    if p.returncode != 0:
        why = _last_line(p.stderr) or _last_line(p.stdout) or f"sinfo exited {p.returncode}"
        raise UserError(f"--executor slurm: Slurm is not reachable ({why}); use --executor local, or run where sbatch works")
    names = [x.strip().rstrip("*") for x in p.stdout.split()]
    if partition and partition not in names:
        raise UserError(f"Slurm partition {partition!r} does not exist; partitions: {', '.join(names) or 'none'}")


def make_executor(args, folder: Path):
    """The submitit executor of ``args`` (Slurm is checked by :func:`check_slurm` before)."""
    import submitit  # noqa: PLC0415

    ex = submitit.AutoExecutor(folder=str(folder), cluster=args.executor)
    params = {"timeout_min": args.timeout_min, "name": "cliplung"}
    if args.executor == "slurm":
        params.update(slurm_array_parallelism=args.array_parallelism, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb)
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.gpus_per_node:
            params["gpus_per_node"] = args.gpus_per_node
        extra = {}
        for item in args.sbatch or []:
            if "=" not in item:
                raise UserError(f"--sbatch expects key=value (an sbatch option without its dashes), got {item!r}")
            k, v = item.split("=", 1)
            extra[k.strip().lstrip("-").replace("-", "_")] = v
        if extra:
            params["slurm_additional_parameters"] = extra
    elif args.executor == "local":
        params.update(cpus_per_task=args.cpus_per_task, gpus_per_node=args.gpus_per_node or 0)
    ex.update_parameters(**params)
    return ex


# ---------------------------------------------------------------------------------------------
# Submission.

def _describe(s: RunSpec) -> dict:
    return {"key": s.key, "stem": s.stem, "method": s.method, "dataset": s.dataset, "fold": s.fold, "seed": s.seed}


@contextlib.contextmanager
def submit_lock(folder: Path):
    """Hold the sweeps folder's lock from the state check to the manifest written: two
    ``sweep run`` at once would each see a run as not submitted and both submit it."""
    path = folder / ".submit.lock"
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"another `sweep run` has been submitting into {folder} for over {LOCK_WAIT_S:g} s "
                                    f"(it holds {path}); try again when it is done") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _refusal(e: Exception, printed: str) -> str:
    """sbatch's own reason, from the exception submitit raises (its stderr) or what it printed."""
    lines = [x.strip() for x in f"{e}\n{printed}".splitlines() if x.strip()]
    errs = [x for x in lines if "error" in x.lower()]
    return (errs or lines or [type(e).__name__])[-1]


def _new_sweep_folder() -> Path:
    """A fresh ``<sweeps>/<date-time>-<pid>[-n]/``: two sweeps submitted within one second by one
    process (a script calling ``main`` twice) must not share a folder and a manifest."""
    base = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    for n in range(1, 1000):
        folder = sweeps_dir().resolve() / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise UserError(f"cannot make a new sweep folder under {sweeps_dir()}: {base}-1 to -999 exist")


def command_plugins(flags) -> list[str]:
    from benchmarks.plugins import PLUGINS_ENV  # noqa: PLC0415

    return [s for s in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if s.strip()] + list(flags or [])


def runs_per_task(args) -> int:
    """``--runs-per-task``, or its default: packs of 4 on GPU tasks (small runs leave a GPU mostly
    idle), one run per task otherwise."""
    if args.runs_per_task:
        return args.runs_per_task
    return 4 if args.gpus_per_node or args.device.startswith("cuda") else 1


def _packs(specs: list[RunSpec], n: int) -> list[list[RunSpec]]:
    """Groups of at most ``n`` runs, those of one dataset together (they share a training split size)."""
    by_ds: dict[str, list[RunSpec]] = {}
    for s in specs:
        by_ds.setdefault(s.dataset, []).append(s)
    return [group[i:i + n] for group in by_ds.values() for i in range(0, len(group), n)]


def submit(specs: list[RunSpec], args, runs_root: Path) -> dict:
    folder = _new_sweep_folder()
    sweep_id, logs = folder.name, folder / "logs"
    printed = io.StringIO()
    per_task = runs_per_task(args)
    packs = _packs(specs, per_task) if per_task > 1 else [[s] for s in specs]
    # This command's plugins ($CLIPLUNG_PLUGINS, then --plugin), files as absolute paths: the tasks load them.
    plugins = [str(Path(p).resolve()) if Path(p).exists() else p for p in command_plugins(getattr(args, "plugin", []))]
    try:
        ex = make_executor(args, logs)
        cache = os.environ.get("CLIPLUNG_CACHE")
        task = _task(str(runs_root.resolve()), str(Path(cache).resolve()) if cache else None, args.device, plugins)
        items = [asdict(p[0]) if len(p) == 1 else [asdict(s) for s in p] for p in packs]
        # submitit prints sbatch's stderr itself before raising: we keep it, to quote it in our one line.
        with contextlib.redirect_stderr(printed):
            jobs = ex.map_array(task, items)
    except UserError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except Exception as e:  # noqa: BLE001  sbatch's refusal (bad partition, no GPUs, ...): Slurm's own words
        shutil.rmtree(folder, ignore_errors=True)
        what = "Slurm refused the job array" if args.executor == "slurm" else f"the {args.executor} executor could not start the tasks"
        raise UserError(f"{what}: {_refusal(e, printed.getvalue())}") from None
    if printed.getvalue().strip():
        log.info("submitit: %s", printed.getvalue().strip())
    manifest = {
        "id": sweep_id, "executor": args.executor, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "submitted_at": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
        "runs_dir": str(runs_root.resolve()), "logs": str(logs), "plugins": plugins, "runs_per_task": per_task,
        "jobs": [{"job_id": j.job_id, **_describe(s)} for j, p in zip(jobs, packs) for s in p],
        "tasks": len(jobs),
    }
    atomic_write_text(folder / "sweep.json", json.dumps(manifest, indent=1))
    return {"manifest": manifest, "jobs": jobs, "path": folder / "sweep.json"}


# ---------------------------------------------------------------------------------------------
# State of each run.

class _PlainUnpickler(pickle.Unpickler):
    """Loads plain values only (tuples, strings, numbers): no class or function is ever looked up,
    so a result pickle cannot run code while we read it."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def _error_line(trace: str) -> str:
    """The last line of a traceback, its exception's module path dropped:
    'UserError: --device cuda: CUDA is not available on this machine; use --device cpu'."""
    line = _last_line(trace) or "error"
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))", "", line)


def _result(logs: Path, job_id: str) -> tuple[str | None, str | None]:
    """('success' | 'error' | None, last error line) from submitit's result pickle of a task.

    submitit names it ``<job id>_<task>_result.pkl`` (task 0: one task per job). We read
    only files under the sweep's own logs folder, which the user's own jobs wrote, and
    with an unpickler that refuses every class: submitit stores ``("success", <our
    return value, a str>)`` or ``("error", <the traceback, a str>)``.
    """
    p = logs / f"{job_id}_0_result.pkl"
    try:
        with open(p, "rb") as f:
            outcome, value = _PlainUnpickler(f).load()
    except FileNotFoundError:
        return None, None
    except Exception as e:  # noqa: BLE001  unreadable: say so rather than guess
        return "error", f"unreadable result file {p.name} ({type(e).__name__})"
    if outcome == "success":
        return "success", None
    return "error", _error_line(str(value))


def _log_tail(log_path: Path) -> str:
    """The last line of a task's log that says 'error' (Slurm's "*** JOB 5 CANCELLED AT ... ***" is
    one), else its last line; only the end of the file is read (training logs grow)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [x.strip() for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errs = [x for x in lines if "error" in x.lower()]
    return (errs or lines or [""])[-1]


# Slurm's job states (sacct/squeue), as our run states; any other state has ended without a result.
SLURM_STATES = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
                "CONFIGURING": "queued", "SUSPENDED": "queued", "STOPPED": "queued", "SPECIAL_EXIT": "queued",
                "RESV_DEL_HOLD": "queued", "RUNNING": "running", "COMPLETING": "running", "RESIZING": "running",
                "SIGNALING": "running", "STAGE_OUT": "running"}
# sacct shows an array's pending tasks as one row, e.g. "2_[2-5%6]" or "2_[1,3-4]".
_ARRAY_ROW = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")


def expand_job_id(jid: str) -> list[str]:
    """'2_[2-4%6]' -> ['2_2', '2_3', '2_4']; any other id as it is."""
    m = _ARRAY_ROW.match(jid.strip())
    if not m:
        return [jid.strip()]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _parse_states(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "|" in line:
            jid, st = line.split("|", 1)
            for j in expand_job_id(jid):
                out[j] = st.split()[0] if st.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return out


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job / array task id, from sacct, and squeue for the jobs sacct
    does not know yet (accounting lags the controller by a moment after sbatch)."""
    if not job_ids:
        return {}
    arrays = ",".join(sorted({j.split("_")[0] for j in job_ids}, key=lambda x: (len(x), x)))
    p = slurm_cmd(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", arrays])
    if p.returncode != 0:
        raise UserError(f"cannot read the state of Slurm job(s) {arrays}: {_last_line(p.stderr) or f'sacct exited {p.returncode}'}")
    states = _parse_states(p.stdout)
    if any(j not in states for j in job_ids):
        q = slurm_cmd(["squeue", "-h", "-r", "-o", "%i|%T", "-j", arrays])
        if q.returncode == 0:
            states = {**_parse_states(q.stdout), **states}
        elif "invalid job id" not in q.stderr.lower():  # every job gone from the controller: sacct had the last word
            raise UserError(f"cannot read the state of Slurm job(s) {arrays}: {_last_line(q.stderr) or f'squeue exited {q.returncode}'}")
    return states


def _pid_alive(pid: int, marker: str | None) -> bool:
    """Is process ``pid`` alive (and, where /proc tells, running a command that contains ``marker``)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return bool(cmdline) and (marker is None or marker.encode() in cmdline)  # a zombie has an empty cmdline


def _is_manifest(m) -> bool:
    return (isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("id", "executor", "runs_dir", "logs"))
            and isinstance(m.get("jobs"), list)
            and all(isinstance(j, dict) and isinstance(j.get("key"), str) and isinstance(j.get("job_id"), str) for j in m["jobs"]))


def manifests(runs_root: Path | None = None) -> list[dict]:
    """The sweeps (of the runs folder ``runs_root``, when given), oldest first."""
    out = []
    want = str(runs_root.resolve()) if runs_root is not None else None
    for p in sweeps_dir().glob("*/sweep.json"):
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            m = None
        if not _is_manifest(m):
            log.warning("skipping %s: not a readable sweep manifest", p)
        elif want is None or m["runs_dir"] == want:
            out.append(m)
    return sorted(out, key=lambda m: (m.get("submitted_at", 0), m.get("id", "")))


def run_states(specs: list[RunSpec], runs_root: Path) -> list[dict]:
    """One state per spec: done / queued / running / failed / missing, with the sweep, job,
    log and last error line where there is one.

    done: the record exists and reads as complete (whoever made it). Otherwise the newest
    sweep of this runs folder that holds the run decides: its task's result file first
    (no Slurm call needed), then the scheduler. A run in no sweep is missing.
    """
    newest: dict[str, tuple[dict, dict]] = {}
    for m in manifests(runs_root):  # oldest first: a later sweep's entry replaces an earlier one
        for j in m.get("jobs", []):
            newest[j["key"]] = (m, j)
    out, ask_slurm = [], []
    for s in specs:
        st = {**_describe(s), "state": "missing", "sweep": None, "job_id": None, "log": None, "error": None}
        out.append(st)
        path = s.path(".json", runs_root)
        damaged = None
        if path.exists():
            try:
                read_record(path)
                st["state"] = "done"
                continue
            except (OSError, ValueError) as e:  # a damaged record is redone: not done
                damaged = f"its record {path.name} is damaged ({e})"
        if s.key not in newest:
            st["error"] = damaged
            continue
        m, j = newest[s.key]
        logs = Path(m["logs"])
        st.update(sweep=m["id"], job_id=j["job_id"], log=str(logs / f"{j['job_id']}_0_log.err"))
        outcome, err = _result(logs, j["job_id"])
        if outcome == "error":
            st.update(state="failed", error=err)
        elif outcome == "success":  # the task ended well, yet no usable record: moved, deleted or damaged since
            st.update(state="failed", error=damaged or f"the task finished but its record {path.name} is gone")
        elif m["executor"] == "slurm":
            ask_slurm.append((st, logs, j, damaged))
        elif m.get("host") not in (None, socket.gethostname()):
            st["state"] = "running"  # a local task of another machine: we cannot look at its process from here
        elif m["executor"] == "local":
            # submitit's local job id is the pid of its job controller (python -m submitit.local._local).
            if j["job_id"].isdigit() and _pid_alive(int(j["job_id"]), "submitit"):
                st["state"] = "running"
            else:
                st.update(state="failed", error="the task ended without a result (killed?); see its log")
        else:  # debug: the tasks run inside the `sweep run` process, which writes their errors into the manifest
            err = m.get("errors", {}).get(s.key)
            if err:
                st.update(state="failed", error=err)
            elif m.get("pid") and _pid_alive(int(m["pid"]), None):
                st["state"] = "running"
            else:
                st.update(state="failed", error="the debug sweep ended without a record")
    if ask_slurm:
        slurm = slurm_states([j["job_id"] for _, _, j, _ in ask_slurm])
        for st, logs, j, damaged in ask_slurm:
            raw = slurm.get(j["job_id"])
            mapped = SLURM_STATES.get(raw) if raw else None
            if mapped:
                st["state"] = mapped
                continue
            outcome, err = _result(logs, j["job_id"])  # it may have ended between our two looks
            st["state"] = "failed"
            if outcome == "error":
                st["error"] = err
            elif outcome == "success":
                st["error"] = damaged or "the task finished but its record is gone"
            elif raw is None:
                st["error"] = f"Slurm no longer knows job {j['job_id']} and it left no result"
            else:
                tail = _log_tail(Path(st["log"]))
                st["error"] = f"Slurm state {raw}" + (f"; log: {tail}" if tail else "")
    return out


def status(specs: list[RunSpec], tables, runs_root: Path | None = None) -> dict:
    """Per table cell: how many runs of the matrix ``specs`` are done / queued / running / failed /
    missing, every run's state, and the failed runs with their error line."""
    runs_root = runs_root or runs_dir()
    runs = run_states(specs, runs_root)
    cellmap = {}  # in the matrix's order: the tables' cells, added methods, then backbones
    for s, st in zip(specs, runs):
        name = f"{s.method}/{s.dataset}" + ("" if s.backbone == DEFAULT_BACKBONE else f"@{s.backbone}")
        cellmap.setdefault(name, dict.fromkeys(STATES, 0))[st["state"]] += 1
    totals = {k: sum(v[k] for v in cellmap.values()) for k in STATES}
    return {"cells": cellmap, "totals": totals, "runs": runs, "failed": [r for r in runs if r["state"] == "failed"],
            "sweeps": len(manifests(runs_root)), "runs_dir": str(runs_root)}


# ---------------------------------------------------------------------------------------------
# Command line.

def _setting(args) -> dict:
    return {"profile": args.profile, "source": args.source, "seeds": args.seeds, "min_readers": args.min_readers,
            "overrides": list(args.set), "tables": args.tables, "methods": args.methods, "folds": args.folds,
            "backbones": args.backbones}


def _setting_line(args) -> str:
    s = (f"setting: profile {args.profile}, source {args.source}, seeds {' '.join(map(str, args.seeds))}, "
         f"min readers {args.min_readers}, overrides {' '.join(args.set) or 'none'}; tables {' '.join(map(str, args.tables)) or 'none'}")
    if args.methods:
        s += f"; methods {' '.join(args.methods)}"
    if args.folds is not None:
        s += f"; folds {' '.join(map(str, args.folds))}"
    if args.backbones:
        s += f"; backbones {' '.join(args.backbones)}"
    return s


def _add_setting_flags(p) -> None:
    p.add_argument("--tables", nargs="+", type=int, default=None, help="which of the paper's tables (default: 1 2 3, none with --backbones)")
    p.add_argument("--profile", default="paper", help="paper, quick or smoke")
    p.add_argument("--source", default="phantom", help="phantom (offline, a pipeline check) or lidc (the real CT)")
    p.add_argument("--seeds", "--seed", nargs="+", type=int_in(0, SEED_MAX), default=[0], metavar="SEED", help="training seeds")
    p.add_argument("--folds", "--fold", nargs="+", default=None, metavar="FOLD",
                   help="only these test folds, 0-4 (or all; 0,1 works too) (default: all five)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only these methods of the tables; other registered methods are added on the tables' datasets")
    p.add_argument("--backbones", nargs="+", default=None, metavar="NAME",
                   help="the backbone table's runs (CE and CLIP-Lung on LIDC-A/B/C) on these backbones; alone unless --tables is given")
    add_plugin_flag(p)
    p.add_argument("--min-readers", type=int, default=2, help="label rule: nodules with at least this many readers")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _parser():
    ap = ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="submit the runs of the tables that have no record and are not queued or running")
    _add_setting_flags(r)
    r.add_argument("--executor", default="slurm", help="slurm (default), local or debug")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda, in each task")
    r.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    r.add_argument("--gpus-per-node", type=int_in(0, 64), default=0, help="GPUs per Slurm task")
    r.add_argument("--cpus-per-task", type=int_in(1, 4096), default=4, help="CPU cores per task")
    r.add_argument("--mem-gb", type=int_in(1, 10**6), default=16, help="memory per task, GB")
    r.add_argument("--timeout-min", type=int_in(1, 10**6), default=240, help="time limit per task, minutes")
    r.add_argument("--array-parallelism", type=int_in(1, 10**6), default=64, help="tasks running at once")
    r.add_argument("--runs-per-task", type=int_in(1, 64), default=None,
                   help="runs packed into each task, trained together (default: 4 with GPUs, else 1)")
    r.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option, e.g. account=abc")
    r.add_argument("--dry-run", action="store_true", help="print the matrix, submit nothing")
    r.add_argument("--wait", action="store_true", help="wait for the jobs to finish")
    r.add_argument("--retry-failed", action="store_true", help="resubmit only the runs that failed")
    s = sub.add_parser("status", help="per cell: runs done / queued / running / failed / missing, for one setting")
    _add_setting_flags(s)
    return ap


def _print_status(st: dict, args) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    print(_setting_line(args))
    rows = [[c, *(v[k] for k in STATES)] for c, v in st["cells"].items()]
    rows.append(["total", *(st["totals"][k] for k in STATES)])
    print(tabulate(rows, headers=["cell", *STATES]))
    for f in st["failed"]:
        print(f"failed: {f['stem']}  (sweep {f['sweep']}, job {f['job_id']})  log {f['log']}\n  {f['error']}")


def _in_sweeps(states: list[dict]) -> str:
    ids = sorted({s["sweep"] for s in states})
    return ("sweep " if len(ids) == 1 else "sweeps ") + ", ".join(ids)


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.folds is not None:
        args.folds = parse_folds(args.folds)
    load_plugins(args)
    if args.tables is None:
        args.tables = [] if args.backbones else [1, 2, 3]
    if args.cmd == "status":
        specs = matrix(args.tables, args.seeds, args.profile, args.source, args.min_readers, args.set, args.folds, args.methods, args.backbones)
        st = status(specs, args.tables)
        if args.json:
            print(json.dumps({"setting": _setting(args), **st}, indent=1))
        else:
            _print_status(st, args)
        return
    if args.executor not in EXECUTORS:
        raise UserError(f"unknown executor {args.executor!r}; choose one of {', '.join(EXECUTORS)}")
    runs_root = runs_dir()
    specs = matrix(args.tables, args.seeds, args.profile, args.source, args.min_readers, args.set, args.folds, args.methods, args.backbones)
    warn_phantom(args.profile, args.source)
    if not args.dry_run:
        writable_dir(runs_root, "runs folder", "set $CLIPLUNG_RUNS to a writable folder")
        writable_dir(sweeps_dir(), "sweeps folder", "set $CLIPLUNG_SWEEPS to a writable folder")
    with contextlib.nullcontext() if args.dry_run else submit_lock(sweeps_dir()):
        states = run_states(specs, runs_root)
        by_state = {k: [s for s in states if s["state"] == k] for k in STATES}
        busy = by_state["queued"] + by_state["running"]
        wanted = ("failed",) if args.retry_failed else ("failed", "missing")
        keys = {s["key"] for s in states if s["state"] in wanted}
        todo = [s for s in specs if s.key in keys]
        n_done = len(by_state["done"])
        if args.dry_run:
            out = {"runs": len(specs), "recorded": n_done, "queued_or_running": len(busy), "failed": len(by_state["failed"]),
                   "to_run": len(todo), "matrix": [_describe(s) for s in todo]}
            if args.json:
                print(json.dumps(out, indent=1))
            else:
                print(f"{len(specs)} runs in the matrix (tables {' '.join(map(str, args.tables)) or 'none'}"
                      + (f", backbones {' '.join(args.backbones)}" if args.backbones else "") + f"): {n_done} recorded, "
                      f"{len(busy)} queued or running, {len(todo)} to run")
            return
        if busy:
            print(f"{len(busy)} runs already queued or running in {_in_sweeps(busy)}: skipped")
        if not todo:
            if args.retry_failed:
                print(f"no failed runs to retry ({n_done} of {len(specs)} recorded, {len(busy)} queued or running, "
                      f"{len(by_state['missing'])} never submitted)")
            elif n_done == len(specs):
                print(f"nothing to run: all {len(specs)} runs have records")
            else:
                print(f"nothing to run: {n_done} of {len(specs)} runs recorded, the other {len(busy)} queued or running")
            return
        if args.executor == "slurm":
            check_slurm(args.partition)
        sub_ = submit(todo, args, runs_root)
    man, jobs = sub_["manifest"], sub_["jobs"]
    ids = sorted({j.job_id.split("_")[0] for j in jobs})
    tasks = f" in {len(jobs)} tasks" if len(jobs) != len(man["jobs"]) else ""
    print(f"submitted {len(man['jobs'])} runs{tasks} ({n_done} already recorded) as {args.executor} job(s) {', '.join(ids)}; "
          f"sweep {man['id']}, logs in {man['logs']}")
    if args.wait or args.executor in ("local", "debug"):
        _wait(jobs, man, sub_["path"])


def _wait(jobs, man: dict, manifest_path: Path) -> None:
    """Wait for every task; a failed task's error goes to each of its runs (a pack holds
    several) that has no record."""
    by_job = defaultdict(list)  # task's job id -> the runs it holds (one, or a pack)
    for entry in man["jobs"]:
        by_job[entry["job_id"]].append(entry)
    runs_root = Path(man["runs_dir"])
    errors = {}
    for j in jobs:
        try:
            j.result()
        except Exception as e:  # noqa: BLE001  a failed task: its own last error line, not submitit's wrapper text
            _, err = _result(Path(man["logs"]), j.job_id)
            err = err or (_error_line(str(e)) if str(e).strip() else type(e).__name__)
            for entry in by_job[j.job_id]:
                if not (runs_root / f"{entry['stem']}.json").exists():
                    errors[entry["key"]] = err
                    print(f"failed: {entry['stem']} (job {j.job_id}): {err}", file=sys.stderr)
    if errors and man["executor"] == "debug":  # no result files in debug mode: status reads the errors from here
        atomic_write_text(manifest_path, json.dumps({**man, "errors": errors}, indent=1))
    n = len(man["jobs"])
    print(f"{n - len(errors)} of {n} runs finished; see `python -m benchmarks.sweep status`")
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
