"""python -m benchmarks.sweep: the runs of Tables 1-3 on Slurm (job arrays) or locally, through submitit.

  python -m benchmarks.sweep run --tables 1 2 3 --executor slurm --partition gpu --gpus-per-node 1
  python -m benchmarks.sweep run --tables 1 2 3 --dry-run --json     # the matrix, nothing submitted
  python -m benchmarks.sweep status                                  # per cell: done / queued / running / failed
  python -m benchmarks.sweep run --retry-failed                      # resubmit the failed tasks only

The matrix is every (method, dataset) cell of the tables x 5 folds x seeds; a
run shared by two tables is run once, and a run whose record exists is left
out. The rest goes out as one job array (``executor.map_array``). Each task is
checkpointable: on time-out or preemption submitit requeues it, and the run
resumes from its last epoch checkpoint, ending with the same record as an
uninterrupted run. Records are written atomically and named by the run's
config hash, so two tasks never write the same record. ``local`` runs the
tasks as local processes (and waits for them); ``debug`` runs them in this
process. Sweep state (job ids, which task is which run, submitit logs) lives
under ``results/sweeps/<id>/``.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.cli import SEED_MAX, ArgumentParser, int_in
from benchmarks.errors import UserError, cli_main
from benchmarks.grid import TABLES, cells
from benchmarks.io import atomic_write_text, writable_dir
from benchmarks.records import RunSpec, read_record, runs_dir

EXECUTORS = ("slurm", "local", "debug")
N_FOLDS = 5


def sweeps_dir() -> Path:
    return Path(os.environ.get("CLIPLUNG_SWEEPS", "results/sweeps"))


def matrix(tables, seeds=(0,), profile="paper", source="phantom", min_readers=2, sets=None,
           folds=None, methods=None) -> list[RunSpec]:
    """Every run of the tables, each once (``folds`` / ``methods`` restrict it, for pilots and tests)."""
    import methods as registry  # noqa: PLC0415
    from benchmarks.run import make_spec  # noqa: PLC0415

    for t in tables:
        if t not in TABLES:
            raise UserError(f"unknown table {t}; choose from {', '.join(map(str, TABLES))}")
    in_tables = {m for m, _ in cells(tables)}
    for m in methods or []:
        registry.get_method(m)  # an unknown name: one line listing the known ones
        if m not in in_tables:
            raise UserError(f"--methods {m}: not a method of table(s) {' '.join(map(str, tables))}; "
                            f"their methods: {', '.join(sorted(in_tables))}")
    specs, seen = [], set()
    for method, dataset in cells(tables):
        if methods and method not in methods:
            continue
        for seed in seeds:
            for fold in (folds if folds is not None else range(N_FOLDS)):
                s = make_spec(method, dataset, fold, seed, profile, source, min_readers, sets)
                if s.key not in seen:
                    seen.add(s.key)
                    specs.append(s)
    return specs


class RunTask:
    """The picklable task a Slurm array element (or local process) runs: one RunSpec.

    Subclasses submitit's Checkpointable (see :func:`_task`): on time-out or
    preemption the same call is resubmitted, and ``run_one`` resumes from the
    run's epoch checkpoint.
    """

    def __init__(self, runs_root: str, cache_root: str | None, device: str = "auto"):
        self.runs_root = runs_root
        self.cache_root = cache_root
        self.device = device

    def __call__(self, spec: dict) -> str:
        os.environ["CLIPLUNG_RUNS"] = self.runs_root
        if self.cache_root:
            os.environ["CLIPLUNG_CACHE"] = self.cache_root
        from benchmarks.errors import setup_logging  # noqa: PLC0415
        from benchmarks.run import run_one  # noqa: PLC0415

        setup_logging()  # the task's log shows the epochs and a resume
        s = RunSpec(**spec)
        run_one(s, device=self.device, progress=False)
        return str(s.path(".json", Path(self.runs_root)))


def _task(runs_root, cache_root, device):
    import submitit  # noqa: PLC0415

    class CheckpointableRunTask(RunTask, submitit.helpers.Checkpointable):
        pass

    CheckpointableRunTask.__module__ = __name__
    CheckpointableRunTask.__qualname__ = "CheckpointableRunTask"
    globals()["CheckpointableRunTask"] = CheckpointableRunTask  # picklable by reference
    return CheckpointableRunTask(runs_root, cache_root, device)


def _slurm_reachable() -> str | None:
    """None when Slurm answers, else Slurm's own message."""
    if not shutil.which("sbatch"):
        return "sbatch is not on PATH"
    p = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return (p.stderr or p.stdout).strip().splitlines()[-1] if (p.stderr or p.stdout).strip() else f"sinfo exited {p.returncode}"
    return None


def _check_partition(partition: str | None) -> None:
    if not partition:
        return
    p = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    names = [x.strip().rstrip("*") for x in p.stdout.split()]
    if partition not in names:
        raise UserError(f"Slurm partition {partition!r} does not exist; partitions: {', '.join(names) or 'none'}")


def make_executor(args, folder: Path):
    import submitit  # noqa: PLC0415

    if args.executor == "slurm":
        why = _slurm_reachable()
        if why:
            raise UserError(f"--executor slurm: Slurm is not reachable ({why}); use --executor local, or run where sbatch works")
        _check_partition(args.partition)
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    elif args.executor == "local":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="local")
    else:
        ex = submitit.AutoExecutor(folder=str(folder), cluster="debug")
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


def _has_record(path: Path) -> bool:
    """A complete record at ``path`` (a damaged one counts as absent: its run is redone)."""
    try:
        read_record(path)
        return True
    except (OSError, ValueError):
        return False


def _todo(specs: list[RunSpec], runs_root: Path) -> tuple[list[RunSpec], int]:
    todo = [s for s in specs if not _has_record(s.path(".json", runs_root))]
    return todo, len(specs) - len(todo)


def _describe(s: RunSpec) -> dict:
    return {"key": s.key, "stem": s.stem, "method": s.method, "dataset": s.dataset, "fold": s.fold, "seed": s.seed}


def submit(specs: list[RunSpec], args, runs_root: Path) -> dict:
    sweep_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    folder = sweeps_dir().resolve() / sweep_id
    logs = folder / "logs"
    ex = make_executor(args, logs)
    cache = os.environ.get("CLIPLUNG_CACHE")
    task = _task(str(runs_root.resolve()), str(Path(cache).resolve()) if cache else None, args.device)
    try:
        jobs = ex.map_array(task, [asdict(s) for s in specs])
    except Exception as e:  # noqa: BLE001  sbatch's refusal (bad partition, no GPUs, ...): Slurm's own words
        shutil.rmtree(folder, ignore_errors=True)
        msg = str(e).strip().splitlines()
        raise UserError(f"Slurm refused the job array: {msg[-1] if msg else type(e).__name__}") from None
    manifest = {
        "id": sweep_id, "executor": args.executor, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs_dir": str(runs_root.resolve()), "logs": str(logs),
        "jobs": [{"job_id": j.job_id, **_describe(s)} for j, s in zip(jobs, specs)],
    }
    atomic_write_text(folder / "sweep.json", json.dumps(manifest, indent=1))
    return {"manifest": manifest, "jobs": jobs}


def _result_state(logs: Path, job_id: str) -> tuple[str | None, str | None]:
    """('done'|'failed'|None, last error line) from submitit's result pickle, if written."""
    p = logs / f"{job_id}_result.pkl"
    if not p.exists():
        return None, None
    try:
        with open(p, "rb") as f:
            outcome, value = pickle.load(f)
    except Exception:  # noqa: BLE001
        return None, None
    if outcome == "success":
        return "done", None
    lines = [x for x in str(value).strip().splitlines() if x.strip()]
    return "failed", lines[-1] if lines else "error"


SLURM_STATES = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
                "CONFIGURING": "queued", "RESIZING": "running", "RUNNING": "running", "COMPLETING": "running",
                "COMPLETED": "done", "SUSPENDED": "queued", "PREEMPTED": "queued"}


def job_states(manifest: dict) -> dict[str, dict]:
    """Per run key: state (done / queued / running / failed / unknown), log path, last error line."""
    logs = Path(manifest["logs"])
    runs_root = Path(manifest["runs_dir"])
    slurm = {}
    if manifest["executor"] == "slurm" and shutil.which("sacct"):
        ids = sorted({j["job_id"].split("_")[0] for j in manifest["jobs"]})
        p = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)], capture_output=True, text=True, timeout=60)
        for line in p.stdout.splitlines():
            if "|" in line:
                jid, st = line.split("|", 1)
                slurm[jid.strip()] = st.split()[0] if st.strip() else "UNKNOWN"
    out = {}
    for j in manifest["jobs"]:
        log = logs / f"{j['job_id']}_0_log.err"
        if (runs_root / f"{j['stem']}.json").exists():
            out[j["key"]] = {"state": "done", "log": str(log), "error": None, **j}
            continue
        st, err = _result_state(logs, j["job_id"])
        if st is None and j["job_id"] in slurm:
            st = SLURM_STATES.get(slurm[j["job_id"]], "failed")
            if st == "failed":
                err = f"Slurm state {slurm[j['job_id']]}"
        if st == "failed" and log.exists() and not err:
            lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
            err = lines[-1] if lines else None
        out[j["key"]] = {"state": st or ("running" if manifest["executor"] == "local" else "unknown"), "log": str(log), "error": err, **j}
    return out


def manifests() -> list[dict]:
    out = []
    for p in sorted(sweeps_dir().glob("*/sweep.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def status(tables=(1, 2, 3)) -> dict:
    """Per table cell: counts of runs done / queued / running / failed, and the failed tasks."""
    latest: dict[str, dict] = {}
    for m in manifests():  # a later sweep's view of a run wins
        for key, st in job_states(m).items():
            latest[key] = st
    cellmap = {c: {"done": 0, "queued": 0, "running": 0, "failed": 0, "unknown": 0} for c in cells(tables)}
    failed = []
    for st in latest.values():
        c = (st["method"], st["dataset"])
        if c in cellmap:
            cellmap[c][st["state"]] += 1
            if st["state"] == "failed":
                failed.append(st)
    # Runs recorded outside any sweep count as done too.
    recorded = {p.stem.rsplit("_", 1)[0] for p in runs_dir().glob("*.json")}
    return {"cells": {f"{m}/{d}": v for (m, d), v in cellmap.items()}, "failed": failed, "sweeps": len(manifests()), "records": len(recorded)}


def _parser():
    ap = ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="submit the runs of the tables that have no record yet")
    r.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3])
    r.add_argument("--executor", default="slurm", help="slurm (default), local or debug")
    r.add_argument("--profile", default="paper")
    r.add_argument("--source", default="phantom")
    r.add_argument("--seeds", nargs="+", type=int_in(0, SEED_MAX), default=[0])
    r.add_argument("--folds", nargs="+", type=int_in(0, 4), default=None, help="only these folds (default: all five)")
    r.add_argument("--methods", nargs="+", default=None, help="only these methods of the tables")
    r.add_argument("--min-readers", type=int, default=2)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    r.add_argument("--device", default="auto")
    r.add_argument("--partition")
    r.add_argument("--gpus-per-node", type=int_in(0, 64), default=0)
    r.add_argument("--cpus-per-task", type=int_in(1, 4096), default=4)
    r.add_argument("--mem-gb", type=int_in(1, 10**6), default=16)
    r.add_argument("--timeout-min", type=int_in(1, 10**6), default=240)
    r.add_argument("--array-parallelism", type=int_in(1, 10**6), default=64)
    r.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option, e.g. account=abc")
    r.add_argument("--dry-run", action="store_true", help="print the matrix, submit nothing")
    r.add_argument("--json", action="store_true")
    r.add_argument("--wait", action="store_true", help="wait for the jobs to finish")
    r.add_argument("--retry-failed", action="store_true", help="resubmit only the tasks that failed")
    s = sub.add_parser("status", help="per cell: runs done / queued / running / failed")
    s.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3])
    s.add_argument("--json", action="store_true")
    return ap


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.cmd == "status":
        st = status(args.tables)
        if args.json:
            print(json.dumps(st, indent=1))
            return
        from tabulate import tabulate  # noqa: PLC0415

        rows = [[c, v["done"], v["queued"], v["running"], v["failed"]] for c, v in st["cells"].items()]
        print(tabulate(rows, headers=["cell", "done", "queued", "running", "failed"]))
        for f in st["failed"]:
            print(f"failed: {f['stem']}  log {f['log']}\n  {f['error']}")
        return
    if args.executor not in EXECUTORS:
        raise UserError(f"unknown executor {args.executor!r}; choose one of {', '.join(EXECUTORS)}")
    runs_root = runs_dir()
    specs = matrix(args.tables, args.seeds, args.profile, args.source, args.min_readers, args.set, args.folds, args.methods)
    todo, done = _todo(specs, runs_root)
    if args.retry_failed:
        failed_keys = {f["key"] for f in status(args.tables)["failed"]}
        todo = [s for s in todo if s.key in failed_keys]
    if args.dry_run:
        out = {"runs": len(specs), "recorded": done, "to_run": len(todo), "matrix": [_describe(s) for s in todo]}
        if args.json:
            print(json.dumps(out, indent=1))
        else:
            print(f"{len(specs)} runs in tables {' '.join(map(str, args.tables))}: {done} recorded, {len(todo)} to run")
        return
    if not todo:
        print(f"nothing to run: all {len(specs)} runs have records")
        return
    writable_dir(runs_root, "runs folder", "set $CLIPLUNG_RUNS to a writable folder")
    writable_dir(sweeps_dir(), "sweeps folder", "set $CLIPLUNG_SWEEPS to a writable folder")
    sub_ = submit(todo, args, runs_root)
    man, jobs = sub_["manifest"], sub_["jobs"]
    ids = sorted({j.job_id.split("_")[0] for j in jobs})
    print(f"submitted {len(jobs)} runs ({done} already recorded) as {args.executor} job(s) {', '.join(ids)}; logs in {man['logs']}")
    if args.wait or args.executor in ("local", "debug"):
        failures = 0
        for j in jobs:
            try:
                j.result()
            except Exception as e:  # noqa: BLE001
                failures += 1
                print(f"failed: job {j.job_id}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        print(f"{len(jobs) - failures} of {len(jobs)} runs finished; see `python -m benchmarks.sweep status`")
        if failures:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
