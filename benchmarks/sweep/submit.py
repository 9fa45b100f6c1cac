"""Submission: the executor, the sweep folder and its manifest, packs, the local scheduler, waiting.

Slurm and debug sweeps go out as one job array (``executor.map_array``). A local
sweep is scheduled here: at most ``tasks_at_once`` task processes live at a time,
as many as the machine holds (its cores over ``--cpus-per-task``, its available
memory over ``--mem-gb`` or the measured ~2.2 GB peak of one CPU run, rounded up to
2.5 GB per run), or ``--max-parallel``; each task runs with its share of the cores
as torch threads, and its records say so. The manifest lists every run from the
start (a run not started yet has no job id and counts as queued while this
process lives), so a second ``sweep run`` never submits it twice.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from benchmarks.data.processes import identity
from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text, exclusive_lock
from benchmarks.paths import sweeps_dir
from benchmarks.plugins import plugin_specs
from benchmarks.records import RunSpec
from benchmarks.sweep.matrix import describe
from benchmarks.sweep.state import error_line, task_result
from benchmarks.sweep.task import make_task

log = logging.getLogger(__name__)

LOCK_WAIT_S = 120.0
SLURM_MEM_GB = 16  # --mem-gb when not given, on Slurm
LOCAL_GB_PER_RUN = 2.5  # peak RSS of one smoke run on the CPU, measured 2.0-2.2 GB (clip_lung, ce), with headroom
POLL_S = 0.5


def make_executor(args, folder: Path):
    """The submitit executor of ``args`` (Slurm is checked by ``slurm.check_slurm`` before)."""
    import submitit  # noqa: PLC0415  (deferred for --help speed)

    ex = submitit.AutoExecutor(folder=str(folder), cluster=args.executor)
    params = {"timeout_min": args.timeout_min, "name": "cliplung"}
    if args.executor == "slurm":
        params.update(slurm_array_parallelism=args.array_parallelism, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb or SLURM_MEM_GB)
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.gpus_per_node:
            params["gpus_per_node"] = args.gpus_per_node
        extra = check_sbatch(args.sbatch, args.executor)
        if extra:
            params["slurm_additional_parameters"] = extra
    elif args.executor == "local":
        params.update(cpus_per_task=args.cpus_per_task, gpus_per_node=args.gpus_per_node or 0)
    ex.update_parameters(**params)
    return ex


def check_sbatch(items, executor: str) -> dict:
    """``--sbatch key=value`` options as submitit's ``slurm_additional_parameters``; one line for an item without
    ``=`` or a key that is no word, and for ``--sbatch`` given to an executor that has no sbatch (it would be ignored)."""
    import re  # noqa: PLC0415

    extra = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        key = k.strip().lstrip("-")
        if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise UserError(f"--sbatch expects key=value (an sbatch option without its dashes, e.g. account=abc), got {item!r}")
        extra[key.replace("-", "_")] = v
    if extra and executor != "slurm":
        raise UserError(f"--sbatch is for --executor slurm; the {executor} executor has no sbatch to give it to")
    return extra


def _available_gb() -> float:
    """Memory available for new processes (MemAvailable), in GB; the total where /proc is not."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def local_limits(args, per_task: int) -> dict:
    """How the local executor shares this machine: {"tasks_at_once", "threads", "why"}."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gb = args.mem_gb or LOCAL_GB_PER_RUN * per_task
    by_cpu = max(1, cores // args.cpus_per_task)
    by_mem = max(1, int(_available_gb() // gb))
    if args.max_parallel:
        # Capped by the machine: more live tasks than cores only time-slice them (and every record would
        # claim them as sharing it), more than the memory holds ends in the OOM killer.
        cap = min(cores, by_mem)
        n, why = min(args.max_parallel, cap), "--max-parallel"
        if n < args.max_parallel:
            why += f", capped at {n}"
            warning = (f"--max-parallel {args.max_parallel} capped at {n}: this machine has {cores} cores and "
                       f"{_available_gb():.0f} GB available ({gb:g} GB per task)")
            return {"tasks_at_once": n, "threads": max(1, min(args.cpus_per_task, cores // n)), "why": why, "warning": warning}
    else:
        n = min(by_cpu, by_mem)
        why = f"{cores} cores / {args.cpus_per_task} per task" if by_cpu <= by_mem else f"{_available_gb():.0f} GB available / {gb:g} GB per task"
    return {"tasks_at_once": n, "threads": max(1, min(args.cpus_per_task, cores // n)), "why": why}


def submit_lock(folder: Path):
    """Hold the sweeps folder's lock from the state check to the manifest written: two
    ``sweep run`` at once would each see a run as not submitted and both submit it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".submit.lock"
    return exclusive_lock(path, LOCK_WAIT_S, f"another `sweep run` has been submitting into {folder} for over {LOCK_WAIT_S:g} s "
                                             f"(it holds {path}); try again when it is done")


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
    """Make the sweep folder and its manifest and submit the tasks (Slurm, debug: all, as one
    array; local: none yet, :func:`run_local` starts them). Returns the submission."""
    folder = _new_sweep_folder()
    sweep_id, logs = folder.name, folder / "logs"
    printed = io.StringIO()
    per_task = runs_per_task(args)
    packs = _packs(specs, per_task) if per_task > 1 else [[s] for s in specs]
    # This command's plugins ($CLIPLUNG_PLUGINS, then --plugin), files as absolute paths: the tasks load them.
    plugins = [str(Path(p).resolve()) if Path(p).exists() else p for p in plugin_specs(getattr(args, "plugin", []))]
    local = local_limits(args, per_task) if args.executor == "local" else None
    items = [asdict(p[0]) if len(p) == 1 else [asdict(s) for s in p] for p in packs]
    jobs = []
    try:
        ex = make_executor(args, logs)
        cache = os.environ.get("CLIPLUNG_CACHE")
        task = make_task(str(runs_root.resolve()), str(Path(cache).resolve()) if cache else None, args.device, plugins,
                         threads=local and local["threads"], tasks_at_once=local and local["tasks_at_once"], scheduler=args.executor,
                         owner=identity() if local else None)
        if local is None:
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
        "jobs": [{"job_id": jobs[i].job_id if jobs else None, "task": i, **describe(s)} for i, p in enumerate(packs) for s in p],
        "tasks": len(packs), "status_command": getattr(args, "status_command", None),
        **({"tasks_at_once": local["tasks_at_once"], "threads_per_task": local["threads"]} if local else {}),
    }
    atomic_write_text(folder / "sweep.json", json.dumps(manifest, indent=1))
    return {"manifest": manifest, "jobs": jobs, "path": folder / "sweep.json", "executor": ex, "task": task, "items": items,
            "local": local}


def run_local(sub: dict) -> None:
    """Start the local sweep's tasks, at most ``tasks_at_once`` alive at a time, each as a slot
    frees; every start is written to the manifest (``status`` reads it). Then :func:`wait`."""
    from tqdm import tqdm  # noqa: PLC0415

    man, path, ex, task, items = sub["manifest"], sub["path"], sub["executor"], sub["task"], sub["items"]
    limit = sub["local"]["tasks_at_once"]
    pending, alive, jobs = list(range(len(items))), {}, []
    bar = tqdm(total=len(items), desc=f"tasks ({limit} at once)", unit="task", disable=not sys.stderr.isatty())
    while pending or alive:
        while pending and len(alive) < limit:
            i = pending.pop(0)
            try:
                job = ex.submit(task, items[i])
            except Exception as e:  # noqa: BLE001  the process could not start: the runs not started stay missing
                raise UserError(f"the local executor could not start a task: {type(e).__name__}: {e}") from None
            alive[i] = job
            jobs.append(job)
            for entry in man["jobs"]:
                if entry["task"] == i:
                    entry["job_id"] = job.job_id
            atomic_write_text(path, json.dumps(man, indent=1))
        for i, job in list(alive.items()):
            if job.done():
                del alive[i]
                bar.update(1)
        if alive:
            time.sleep(POLL_S)
    bar.close()
    wait(jobs, man, path)


def wait(jobs, man: dict, manifest_path: Path) -> None:
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
            _, err = task_result(Path(man["logs"]), j.job_id)
            err = err or (error_line(str(e)) if str(e).strip() else type(e).__name__)
            for entry in by_job[j.job_id]:
                if not (runs_root / f"{entry['stem']}.json").exists():
                    errors[entry["key"]] = err
                    print(f"failed: {entry['stem']} (job {j.job_id}): {err}", file=sys.stderr)
    if errors and man["executor"] == "debug":  # no result files in debug mode: status reads the errors from here
        atomic_write_text(manifest_path, json.dumps({**man, "errors": errors}, indent=1))
    n = len(man["jobs"])
    print(f"{n - len(errors)} of {n} runs finished; see `{man.get('status_command') or 'python -m benchmarks.sweep status'}`")
    if errors:
        raise SystemExit(1)
