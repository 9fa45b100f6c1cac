"""python -m benchmarks.sweep: the runs of Tables 1-3 on Slurm (job arrays) or locally, through submitit.

  python -m benchmarks.sweep run --tables 1 2 3 --executor slurm --partition gpu --gpus-per-node 1
  python -m benchmarks.sweep run --tables 1 2 3 --dry-run --json     # the matrix, nothing submitted
  python -m benchmarks.sweep status --profile paper                  # per cell: done / queued / running / failed / missing
  python -m benchmarks.sweep run --retry-failed                      # resubmit the failed runs only

The matrix is every (method, dataset) cell of the tables x 5 folds x seeds for
one setting (``--profile``, ``--source``, ``--seeds``, ``--min-readers``,
``--set``; ``--folds`` / ``--methods`` / ``--datasets`` restrict it); a run shared
by two tables is run once. Each ``--set`` goes to every method whose config has
its key (a training-config key to all). ``run`` leaves out every run whose record exists and every run
that is queued or running in any sweep of the same runs folder (it says how
many and in which sweep): a run is never submitted twice. The rest goes out
as one job array (``executor.map_array``). Each task is checkpointable: on
time-out or preemption submitit requeues it, and the run resumes from its last
epoch checkpoint, ending with the same record as an uninterrupted run. Records
are written atomically and named by the run's config hash, so two tasks never
write the same record. ``local`` runs the tasks as local processes, at most as
many at once as this machine's cores and memory hold (``--max-parallel`` to
choose fewer: more is capped, with a warning; it is refused with Slurm, whose
``--array-parallelism`` it is), each with its share of the cores as torch threads, and waits for them;
every record says how many tasks shared the machine and with how many threads.
``debug`` runs the tasks in this process. Sweep state (job ids, which task is
which run, submitit logs) lives under ``$CLIPLUNG_SWEEPS/<id>/`` (default
``$CLIPLUNG_RESULTS/sweeps``, i.e. ``results/sweeps``).

``run`` ends with the exact ``status`` command of its setting (flags and plugins).
``status`` takes the same setting flags as ``run`` and gives each run of that
matrix one state: ``done`` (its record exists and reads as a complete record,
whoever made it: a sweep or ``benchmarks.run``), else what the newest sweep
that holds the run says: ``queued`` (a local run waiting for a free slot is
queued too), ``running`` or ``failed`` (with the last error line of the task and
its log), else ``missing`` (never submitted).

Slurm commands (``sinfo``, ``squeue``, ``sacct``) are given
``$CLIPLUNG_SLURM_TIMEOUT`` seconds (default 20); a controller (or accounting
daemon) that does not answer in that time ends in one line naming
``$SLURM_CONF``.
"""
from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path

from benchmarks.cli import (
    SEED_MAX,
    ArgumentParser,
    add_datasets_flag,
    add_plugin_flag,
    add_tuned_flags,
    check_datasets,
    int_in,
    load_plugins,
    parse_folds,
    refuse_unknown_methods,
    warn_phantom,
)
from benchmarks.data.protocols import DEFAULT_MIN_READERS
from benchmarks.errors import UserError, cli_main
from benchmarks.io import writable_dir
from benchmarks.paths import file_in_the_way, hint_for, runs_dir, sweeps_dir
from benchmarks.sweep.matrix import describe, matrix
from benchmarks.sweep.slurm import check_slurm
from benchmarks.sweep.state import STATES, run_states, status
from benchmarks.sweep.submit import check_sbatch, run_local, submit, submit_lock, wait
from benchmarks.tune.summary import tuned_specs

EXECUTORS = ("slurm", "local", "debug")


def _setting(args) -> dict:
    return {"profile": args.profile, "source": args.source, "seeds": args.seeds, "min_readers": args.min_readers,
            "overrides": list(args.set), "tables": args.tables, "methods": args.methods, "folds": args.folds,
            "backbones": args.backbones, "datasets": args.datasets}


def _setting_line(args) -> str:
    s = (f"setting: profile {args.profile}, source {args.source}, seeds {' '.join(map(str, args.seeds))}, "
         f"min readers {args.min_readers}, overrides {' '.join(args.set) or 'none'}; tables {' '.join(map(str, args.tables)) or 'none'}")
    if args.methods:
        s += f"; methods {' '.join(args.methods)}"
    if args.folds is not None:
        s += f"; folds {' '.join(map(str, args.folds))}"
    if args.backbones:
        s += f"; backbones {' '.join(args.backbones)}"
    if args.datasets:
        s += f"; datasets {' '.join(args.datasets)}"
    return s


def status_command(args) -> str:
    """The ``sweep status`` command of this very setting, with its plugins: what ``run`` tells the
    user to type (a bare ``sweep status`` would show the paper profile's matrix, not this one)."""
    from benchmarks.plugins import plugin_specs  # noqa: PLC0415

    parts = ["python -m benchmarks.sweep status"]
    if list(args.tables) != ([] if args.backbones else [1, 2, 3]):  # status's own default
        parts.append("--tables " + " ".join(map(str, args.tables)))
    parts += [f"--profile {args.profile}", f"--source {args.source}"]
    if list(args.seeds) != [0]:
        parts.append("--seeds " + " ".join(map(str, args.seeds)))
    if args.min_readers != DEFAULT_MIN_READERS:
        parts.append(f"--min-readers {args.min_readers}")
    for flag, values in (("--folds", args.folds), ("--methods", args.methods), ("--backbones", args.backbones), ("--datasets", args.datasets)):
        if values:
            parts.append(flag + " " + " ".join(shlex.quote(str(v)) for v in values))
    parts += [f"--set {shlex.quote(s)}" for s in args.set]
    if args.tuned:
        parts += ["--tuned"] + ([f"--objective {args.objective}"] if args.objective != "accuracy" else []) + ([f"--tag {args.tag}"] if args.tag else [])
    # Every plugin the submitting command saw ($CLIPLUNG_PLUGINS too: another shell may not have it), files as absolute paths.
    parts += [f"--plugin {shlex.quote(str(Path(p).resolve()) if Path(p).exists() else p)}" for p in plugin_specs(getattr(args, "plugin", []))]
    return " ".join(parts)


def _add_setting_flags(p) -> None:
    p.add_argument("--tables", nargs="+", type=int, default=None, help="which of the paper's tables (default: 1 2 3, none with --backbones)")
    p.add_argument("--profile", default="paper", help="paper, quick or smoke")
    p.add_argument("--source", default="phantom", help="phantom (offline, a pipeline check), slices (real CT, the public slices release) or lidc (real CT, the DICOM download)")
    p.add_argument("--seeds", "--seed", nargs="+", type=int_in(0, SEED_MAX), default=[0], metavar="SEED", help="training seeds")
    p.add_argument("--folds", "--fold", nargs="+", default=None, metavar="FOLD",
                   help="only these test folds, 0-4 (or all; 0,1 works too) (default: all five)")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="repeated partitions: the folds of partitions 0..R-1 (1-10; 0 is the committed one; default 1)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only these methods of the tables; other registered methods are added on the tables' datasets")
    p.add_argument("--backbones", nargs="+", default=None, metavar="NAME",
                   help="the backbone table's runs (CE and CLIP-Lung on LIDC-A/B/C) on these backbones; alone unless --tables is given")
    add_datasets_flag(p)
    add_plugin_flag(p)
    add_tuned_flags(p)
    p.add_argument("--min-readers", type=int, default=DEFAULT_MIN_READERS, help="label rule: nodules with at least this many readers")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable): each method whose config has the key takes it, the training config's keys all")
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
    r.add_argument("--mem-gb", type=int_in(1, 10**6), default=None,
                   help="memory per task, GB (default: 16 on Slurm; locally 2.5 per run, the measured peak of a CPU run)")
    r.add_argument("--max-parallel", type=int_in(1, 4096), default=None,
                   help="local executor: tasks alive at once (default: as many as the cores and the available memory hold)")
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


def _load_recorded_plugins(args) -> None:
    """``status --methods X`` where X is a plugin's method that this command did not load: load the
    plugins the sweeps of this runs folder recorded (newest sweep first) until X is known, saying so."""
    import methods as registry  # noqa: PLC0415  (torch: deferred for --help speed)
    from benchmarks.plugins import LOADED, load  # noqa: PLC0415
    from benchmarks.sweep.state import manifests  # noqa: PLC0415

    unknown = [m for m in args.methods or [] if m not in registry.REGISTRY]
    for man in reversed(manifests(runs_dir()) if unknown else []):
        for spec in man.get("plugins") or []:
            if not isinstance(spec, str) or (Path(spec).is_absolute() and not Path(spec).exists()):
                continue  # a plugin file moved or deleted since: nothing to load
            if spec in LOADED:
                continue
            load(spec)
            print(f"loaded plugin {spec}, as recorded by sweep {man['id']} (--plugin {spec})", file=sys.stderr)
        unknown = [m for m in unknown if m not in registry.REGISTRY]
        if not unknown:
            return
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r} (no sweep of {runs_dir()} recorded a plugin that registers it: "
                        f"load its plugin with --plugin MODULE|FILE.py); known methods: {', '.join(sorted(registry.REGISTRY))}")


def _matrix(args):
    """The runs of this setting: the tables' matrix, or with ``--tuned`` each run with the configuration
    its fold's study chose (``benchmarks.tune``)."""
    specs = matrix(args.tables, args.seeds, args.profile, args.source, args.min_readers, args.set, args.folds, args.methods, args.backbones, args.datasets,
                   getattr(args, "repeats", 1))
    if args.tuned:
        if args.backbones:
            raise UserError("--tuned runs the tuned configurations of Tables 1-3's cells; the backbone table is not tuned")
        if getattr(args, "repeats", 1) > 1:  # the studies tuned on partition 0's folds (benchmarks.data.inner)
            raise UserError("--tuned runs the folds of partition 0, where the studies tuned; drop --repeats")
        specs = tuned_specs(specs, args.set, args.objective, args.tag)
    return specs


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.folds is not None:
        args.folds = parse_folds(args.folds)
    if args.cmd == "run":  # a wrong name or option ends here, before the seconds torch and the plugins take to import
        refuse_unknown_methods(args.methods, args.plugin)
        if args.executor not in EXECUTORS:
            raise UserError(f"unknown executor {args.executor!r}; choose one of {', '.join(EXECUTORS)}")
        check_sbatch(args.sbatch, args.executor)
    load_plugins(args)
    if args.tables is None:
        args.tables = [] if args.backbones else [1, 2, 3]
    args.datasets = check_datasets(args.datasets, None if args.backbones else args.tables)
    if args.cmd == "status":
        for kind, folder in (("runs", runs_dir()), ("sweeps", sweeps_dir())):
            bad = file_in_the_way(folder)
            if bad is not None:  # else every read comes back empty and every run looks missing
                raise UserError(f"the {kind} folder {folder} cannot be read: {bad} is a file, not a folder; {hint_for(kind)}")
        _load_recorded_plugins(args)
        specs = _matrix(args)
        st = status(specs, args.tables)
        if args.json:
            print(json.dumps({"setting": _setting(args), **st}, indent=1))
        else:
            _print_status(st, args)
        return
    if args.max_parallel and args.executor != "local":
        raise UserError("--max-parallel is for --executor local; " + ("on Slurm, --array-parallelism sets how many tasks run at once"
                        if args.executor == "slurm" else "the debug executor runs its tasks one by one in this process"))
    runs_root = runs_dir()
    specs = _matrix(args)
    warn_phantom(args.profile, args.source)
    if not args.dry_run:
        writable_dir(runs_root, "runs folder", hint_for("runs"))
        writable_dir(sweeps_dir(), "sweeps folder", hint_for("sweeps"))
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
                   "to_run": len(todo), "matrix": [describe(s) for s in todo]}
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
        args.status_command = status_command(args)  # into the manifest: the last line names it
        sub_ = submit(todo, args, runs_root)
    man, jobs = sub_["manifest"], sub_["jobs"]
    if sub_["local"]:
        lim = sub_["local"]
        if lim.get("warning"):
            print(f"warning: {lim['warning']}", file=sys.stderr)
        print(f"submitted {len(man['jobs'])} runs in {man['tasks']} local tasks ({n_done} already recorded), at most "
              f"{lim['tasks_at_once']} at once ({lim['why']}), {lim['threads']} torch threads each; sweep {man['id']}, logs in {man['logs']}")
        run_local(sub_)
        return
    ids = sorted({j.job_id.split("_")[0] for j in jobs})
    tasks = f" in {len(jobs)} tasks" if len(jobs) != len(man["jobs"]) else ""
    print(f"submitted {len(man['jobs'])} runs{tasks} ({n_done} already recorded) as {args.executor} job(s) {', '.join(ids)}; "
          f"sweep {man['id']}, logs in {man['logs']}" + ("" if args.wait or args.executor == "debug" else f"; see `{args.status_command}`"))
    if args.wait or args.executor == "debug":
        wait(jobs, man, sub_["path"])
