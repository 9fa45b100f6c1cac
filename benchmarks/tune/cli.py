"""python -m benchmarks.tune: the same tuning budget for every method, nested so that the test fold never chooses.

  python -m benchmarks.tune run --methods ce nsb clip_lung --datasets LIDC-C --budget 20 --profile quick
  python -m benchmarks.tune run --tables 1 2 --budget 20 --executor slurm --workers 16 --storage mysql+pymysql://u:p@db/optuna
  python -m benchmarks.tune status --profile quick
  python -m benchmarks.sweep run --tuned --methods ce nsb clip_lung --datasets LIDC-C --profile quick --executor local
  python -m benchmarks.tables --tuned --profile quick

One Optuna study per (method, dataset, outer test fold) and setting, each given
``--budget`` N trials: the first is the paper's defaults, the rest come from a
seeded TPE sampler over the method's search space (its ``Config.SEARCH`` and the
shared learning rate and weight decay; ``benchmarks.space``); a median pruner stops
poor trials early on their per-epoch validation objective. A trial trains on the
inner training part of the fold's training folds and is scored on their inner
validation part (``benchmarks.data.inner``): the test fold is never read. Workers
(local processes, at most as many as the machine holds, each ending with this
command however it ends, or the tasks of a Slurm job array) pull trials from the
shared studies; a killed worker's trial is failed and its parameters are tried
again, and every study ends with exactly N finished (completed or pruned) trials.
The chosen configuration is the completed trial of the best validation value, ties
to the lower validation log loss. A trial's error is printed with its study and
trial; one that would recur (a UserError) is not tried again, and the command exits 2. ``sweep run --tuned`` then trains each fold's chosen
configuration on the whole training split and tests it on the fold. See
docs/tuning.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from pathlib import Path

from benchmarks.cli import (
    SEED_MAX,
    ArgumentParser,
    add_datasets_flag,
    add_plugin_flag,
    check_datasets,
    int_in,
    load_plugins,
    parse_folds,
    refuse_unknown_methods,
)
from benchmarks.data.protocols import DEFAULT_MIN_READERS
from benchmarks.errors import UserError, cli_main
from benchmarks.io import writable_dir
from benchmarks.paths import tune_dir
from benchmarks.tune.summary import OBJECTIVES, StudyKey, check_objective, choice_key
from benchmarks.tune.worker import params_text

EXECUTORS = ("local", "slurm", "debug")


def add_tune_setting_flags(p, budget_required: bool = False) -> None:
    """The flags that name a tuned setting (tune run/status, sweep --tuned, tables --tuned)."""
    p.add_argument("--objective", default="accuracy", help=f"validation objective: {', '.join(OBJECTIVES)}")
    p.add_argument("--tag", default="", help="a name appended to the studies' names (a second study of one cell and setting)")
    p.add_argument("--storage", default=None, metavar="FILE|URL",
                   help="Optuna storage: a journal file or a database URL (default: <results>/tune/journal.log)")


def _parser():
    ap = ArgumentParser(prog="python -m benchmarks.tune", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run every study's trials until each has its budget")
    s = sub.add_parser("status", help="per study: trials done, pruned, failed, running, and the best so far")
    for p in (r, s):
        p.add_argument("--tables", nargs="+", type=int, choices=[1, 2, 3], default=[1, 2],
                       help="the tables whose methods and datasets are tuned (--methods, --datasets: only these of them)")
        p.add_argument("--methods", nargs="+", default=None, help="methods to tune (default: those of --tables)")
        add_datasets_flag(p)
        p.add_argument("--folds", "--fold", nargs="+", default=["all"], metavar="FOLD", help="outer test folds 0-4 (or all)")
        p.add_argument("--profile", default="paper", help="paper, quick or smoke")
        p.add_argument("--source", default="phantom", help="phantom (offline, a pipeline check), slices (real CT, the public slices release) or lidc (real CT, the DICOM download)")
        p.add_argument("--min-readers", type=int, default=DEFAULT_MIN_READERS, help="label rule: nodules with at least this many readers")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable), as in sweep")
        add_tune_setting_flags(p)
        add_plugin_flag(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("--budget", type=int_in(1, 100000), required=True, help="trials per (method, dataset, fold), the same for every method")
    r.add_argument("--range", action="append", default=[], metavar="KEY=LOW:HIGH[:log]|KEY=A,B,C",
                   help="replace one range of every method's search space (repeatable)")
    r.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="the trials' training seed")
    r.add_argument("--executor", default="local", help="local (default), slurm or debug")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda, in each worker")
    r.add_argument("--workers", type=int_in(1, 4096), default=None,
                   help="Slurm: tasks of the job array (default: min(trials to run, 16)); local: see --max-parallel")
    r.add_argument("--workers-per-task", type=int_in(1, 64), default=None,
                   help="workers in each task, sharing its GPU (default: 4 with GPUs, else 1), as sweeps pack runs")
    r.add_argument("--max-parallel", type=int_in(1, 4096), default=None,
                   help="local executor: workers at once (default: as many as the cores and the available memory hold)")
    r.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    r.add_argument("--gpus-per-node", type=int_in(0, 64), default=0, help="GPUs per Slurm task")
    r.add_argument("--cpus-per-task", type=int_in(1, 4096), default=4, help="CPU cores per worker")
    r.add_argument("--mem-gb", type=int_in(1, 10**6), default=None, help="memory per worker, GB (default: 16 on Slurm, 2.5 locally)")
    r.add_argument("--timeout-min", type=int_in(1, 10**6), default=240, help="time limit per worker task, minutes (requeued on time-out)")
    r.add_argument("--array-parallelism", type=int_in(1, 10**6), default=64, help="Slurm tasks running at once")
    r.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option, e.g. account=abc")
    r.add_argument("--stale-after", type=int_in(1, 10**6), default=60,
                   help="minutes without a report after which another host's running trial is taken as dead")
    r.add_argument("--wait", action="store_true", help="Slurm: wait for the workers to finish")
    return ap


def plan(args) -> list[dict]:
    """Every study of the command: its name, setting, base run, search space and defaults."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)
    from benchmarks.data.inner import inner_hash  # noqa: PLC0415
    from benchmarks.grid import TABLES  # noqa: PLC0415
    from benchmarks.lifecycle import check_sets, make_spec, sets_for  # noqa: PLC0415
    from benchmarks.space import parse_range, space_hash, space_json, space_of  # noqa: PLC0415
    from benchmarks.tune.study import describe_search  # noqa: PLC0415

    tables = getattr(args, "tables", None) or [1, 2]
    names = args.methods or list(dict.fromkeys(m for t in tables for m in TABLES[t]["methods"]))
    for m in names:
        methods.get_method(m)
    datasets = args.datasets or list(dict.fromkeys(d for t in tables for d in TABLES[t]["datasets"]))
    check_objective(args.objective, datasets)
    check_sets(args.set, names)
    ranges = dict(parse_range(r) for r in getattr(args, "range", []) or [])
    out = []
    for m in names:
        method = methods.get_method(m)
        own = sets_for(m, args.set)
        for ds in datasets:
            for fold in args.folds:
                base = make_spec(m, ds, fold, args.seed, args.profile, args.source, args.min_readers, own, split="inner")
                values = {**base.train_config, **base.method_config}
                space = space_of(method, ranges, values)
                key = StudyKey(m, ds, fold, args.profile, args.source, args.min_readers, tuple(own), args.objective, args.tag)
                epochs = base.train_config["epochs"]
                setting = {"method": m, "dataset": ds, "fold": fold, "profile": args.profile, "source": args.source,
                           "min_readers": args.min_readers, "sets": list(own), "objective": args.objective, "seed": args.seed,
                           "budget": args.budget, "space": space_json(space), "space_hash": space_hash(space),
                           "config_hash": base.config_hash, "method_version": base.method_version, "plugin": base.plugin,
                           "backbone_plugin": base.backbone_plugin, "inner_hash": inner_hash(args.min_readers),
                           **describe_search(args.budget, epochs)}
                out.append({"study": key.name, "key": dataclasses.asdict(key), "sets": list(own), "seed": args.seed, "epochs": epochs,
                            "space": space_json(space), "objective": args.objective, "setting": setting,
                            "defaults": {k: values[k] for k in space}})
    return out


def _executor_args(args):
    """The sweep's executor options for ``benchmarks.sweep.submit.make_executor``."""
    ns = dict(vars(args))
    ns.setdefault("runs_per_task", 1)
    return type("Args", (), ns)()


def _print_status(rows: list[dict]) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    table = [[r["study"], f"{r['finished']}/{r['budget']}", r["COMPLETE"], r["PRUNED"], r["FAIL"], r["RUNNING"],
              "—" if r["best"] is None else f"{r['best']:.4f} (trial {r['best_trial']})",
              " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (r["best_params"] or {}).items())]
             for r in rows]
    print(tabulate(table, headers=["study", "finished/budget", "done", "pruned", "failed", "running", "best so far", "best parameters"]))


def status_rows(storage, names: list[str] | None) -> list[dict]:
    import optuna  # noqa: PLC0415

    out = []
    summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    for s in sorted(summaries, key=lambda s: s.study_name):
        if names is not None and s.study_name not in names:
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {k: sum(t.state.name == k for t in trials) for k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
        done = [t for t in trials if t.state.name == "COMPLETE"]
        best = min(done, key=lambda t: choice_key(t.value, t.user_attrs.get("log_loss"), t.number)) if done else None
        out.append({"study": s.study_name, "budget": study.user_attrs.get("budget"), "finished": counts["COMPLETE"] + counts["PRUNED"],
                    **counts, "best": best.value if best else None, "best_trial": best.number if best else None,
                    "best_params": best.params if best else None})
    return out


def _wait(jobs, storage, names: list[str], total: int, folder: Path) -> list[str]:
    """Wait for the workers with a bar of finished trials; the error line of each failed worker (its own
    last line, read from its result file, not submitit's wrapper text that ends in the log's path)."""
    from tqdm import tqdm  # noqa: PLC0415

    from benchmarks.sweep.state import error_line, task_result  # noqa: PLC0415

    bar = tqdm(total=total, desc="trials", unit="trial", disable=not sys.stderr.isatty())
    try:
        while not all(j.done() for j in jobs):
            time.sleep(1.0)
            try:
                n = sum(r["finished"] for r in status_rows(storage, names))
                bar.update(max(0, n - bar.n))
            except Exception:  # noqa: BLE001  a busy journal: the next poll reads it
                pass
    except KeyboardInterrupt:  # Ctrl-C: stop the workers too (their running trials fail, and are tried again next time)
        for j in jobs:
            try:
                j.cancel()
            except Exception:  # noqa: BLE001  already gone
                pass
        raise
    bar.close()
    errors = []
    for j in jobs:
        try:
            j.result()
        except Exception as e:  # noqa: BLE001  the worker's own last error line
            _, err = task_result(folder, j.job_id)
            errors.append(f"worker {j.job_id}: {err or (error_line(str(e)) if str(e).strip() else type(e).__name__)}")
    return errors


def _failed_trials(names: list[str], command: str) -> list[dict]:
    """The trials this command's workers failed, from the study records: [{"study", "number", "params", "error", "recurs"}]."""
    from benchmarks.tune.summary import read_study_record  # noqa: PLC0415

    if not command:
        return []
    out = []
    for n in names:
        rec = read_study_record(n) or {"trials": []}
        out += [{"study": n, **t} for t in rec["trials"] if t["state"] == "FAIL" and (t.get("worker") or {}).get("command") == command]
    return out


def _end(args, storage, names: list[str], label: str, command: str, errors: list[str]) -> None:
    """What every `tune run` ends with: the studies' status, the failures and what to do about them, or the next command."""
    _finish_records(storage, names, label)
    rows = status_rows(storage, names)
    _print_status(rows)
    failed = _failed_trials(names, command)
    for t in failed:
        print(f"failed: study {t['study']}, trial {t['number']} ({params_text(t['params'])}): {t['error'] or 'no error line'}", file=sys.stderr)
    for e in errors:
        if not any(f"trial {t['number']} (" in e and t["study"] in e for t in failed):  # a worker's error not already said per trial
            print(f"failed: {e}", file=sys.stderr)
    if any(t.get("recurs") for t in failed):
        raise UserError("the error above is one of the setting, the data or the values, and would recur on every try: "
                        "no worker tried it again; fix its cause, then run the same command again")
    if errors or failed:
        print("run the same command again: a failed trial's parameters are tried again (at most three times)", file=sys.stderr)
        raise SystemExit(1)
    done = sum(r["finished"] >= (r["budget"] or 0) for r in rows)
    print(f"{done} of {len(rows)} studies have their {args.budget} trials; studies' records in {tune_dir() / 'studies'}")
    if done == len(rows):
        print("next: the chosen configurations on the test folds: `python -m benchmarks.sweep run --tuned " + _flags(args, sweep=True)
              + " --executor local`, then `python -m benchmarks.tables --tuned " + _flags(args, sweep=True, tables=True) + "`")


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    args.folds = parse_folds(args.folds)
    refuse_unknown_methods(args.methods, args.plugin)  # a typo answers at once, before torch and the plugins are imported
    if args.cmd == "run":
        from benchmarks.sweep.submit import check_sbatch  # noqa: PLC0415

        if args.executor not in EXECUTORS:
            raise UserError(f"unknown executor {args.executor!r}; choose one of {', '.join(EXECUTORS)}")
        check_sbatch(args.sbatch, args.executor)
    load_plugins(args)
    args.datasets = check_datasets(args.datasets)
    if args.cmd == "status":
        from benchmarks.tune.study import open_storage  # noqa: PLC0415

        if args.storage is None and not (tune_dir() / "journal.log").exists():
            raise UserError(f"no studies yet: {tune_dir() / 'journal.log'} does not exist (give --storage, or run `tune run` first)")
        storage = open_storage(args.storage, write=False)  # status reads; it never makes or mends a journal
        rows = status_rows(storage, [p["study"] for p in plan_for_status(args)] if args.methods or args.datasets else None)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            _print_status(rows)
        return
    items = plan(args)
    writable_dir(tune_dir(), "tuning folder", "set $CLIPLUNG_RESULTS to a writable folder")
    from benchmarks.tune.study import open_storage, prepare_study, redact  # noqa: PLC0415

    storage = open_storage(args.storage)
    label = redact(args.storage) if args.storage else str(tune_dir() / "journal.log")
    for it in items:  # every check before anything is created: nothing half-written
        prepare_study(storage, it["study"], it["setting"], args.budget, it["defaults"], create=False)
    todo = 0
    for it in items:
        todo += args.budget - prepare_study(storage, it["study"], it["setting"], args.budget, it["defaults"], create=True)["finished"]
    names = [it["study"] for it in items]
    if todo <= 0:
        print(f"nothing to run: every one of the {len(items)} studies has its {args.budget} trials")
        _end(args, storage, names, label, "", [])
        return
    _launch(args, items, storage, names, todo, label)


def plan_for_status(args) -> list[dict]:
    args.budget, args.seed, args.range = 1, 0, []
    return plan(args)


def _launch(args, items, storage, names, todo, label) -> None:
    from benchmarks.data.processes import identity  # noqa: PLC0415
    from benchmarks.plugins import plugin_specs  # noqa: PLC0415
    from benchmarks.sweep.slurm import check_slurm  # noqa: PLC0415
    from benchmarks.sweep.submit import local_limits, make_executor  # noqa: PLC0415
    from benchmarks.tune.study import STALE_AFTER_S  # noqa: PLC0415
    from benchmarks.tune.worker import make_worker  # noqa: PLC0415

    per_task = args.workers_per_task or (4 if args.gpus_per_node or args.device.startswith("cuda") else 1)
    local = local_limits(args, per_task) if args.executor == "local" else None
    if args.executor == "slurm":
        check_slurm(args.partition)
    workers = min(-(-todo // per_task), local["tasks_at_once"] if local else (args.workers or 16))
    command = uuid.uuid4().hex[:12]  # names this command's workers in the trials they run
    folder = tune_dir() / "logs" / (time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")
    cache = os.environ.get("CLIPLUNG_CACHE")
    plugins = [str(Path(p).resolve()) if Path(p).exists() else p for p in plugin_specs(args.plugin)]
    worker = make_worker(items, args.storage or str((tune_dir() / "journal.log").resolve()), args.budget, str(tune_dir().parent.resolve()),
                         str(Path(cache).resolve()) if cache else None, args.device, plugins, local and local["threads"],
                         args.stale_after * 60.0 if args.stale_after else STALE_AFTER_S, per_task,
                         owner=identity() if args.executor == "local" else None, command=command)
    if args.executor == "debug":  # in this process, one worker, no submitit (whose debug mode stops in pdb on an error)
        print(f"{len(items)} studies, {todo} trials to run in this process; storage {label}")
        errors = []
        try:
            worker(0)
        except UserError:
            pass  # its trial is failed with `recurs`: said by _end
        except Exception as e:  # noqa: BLE001  a trial's fault: its line, then what to do
            errors.append(f"worker: {(str(e).strip().splitlines() or [type(e).__name__])[-1]}")
        _end(args, storage, names, label, command, errors)
        return
    ex = make_executor(_executor_args(args), folder)
    try:
        jobs = ex.map_array(worker, list(range(workers)))
    except Exception as e:  # noqa: BLE001  sbatch's refusal, in its own words
        raise UserError(f"could not start the tuning workers ({args.executor}): {' '.join(str(e).split())[:300]}") from None
    how = f"{local['tasks_at_once']} at once ({local['why']}), {local['threads']} torch threads each" if local else f"job {jobs[0].job_id.split('_')[0]}"
    tasks = f"{workers} {args.executor} workers" if per_task == 1 else f"{workers} {args.executor} tasks of {per_task} workers"
    print(f"{len(items)} studies, {todo} trials to run by {tasks} ({how}); storage {label}; logs in {folder}")
    if args.executor == "slurm" and not args.wait:
        print("see `python -m benchmarks.tune status " + _flags(args) + "`")
        return
    _end(args, storage, names, label, command, _wait(jobs, storage, names, todo, folder))


def _finish_records(storage, names, label) -> None:
    from benchmarks.tune.study import write_record  # noqa: PLC0415

    for n in names:
        write_record(storage, n, label)


def _flags(args, sweep: bool = False, tables: bool = False) -> str:
    """The flags that name this command's setting, for the commands it suggests (``sweep``: as ``sweep
    run --tuned`` and ``tables --tuned`` take them; ``tables``: without the ones tables has not)."""
    import shlex  # noqa: PLC0415

    parts = [f"--profile {args.profile}", f"--source {args.source}"]
    if args.min_readers != DEFAULT_MIN_READERS:
        parts.append(f"--min-readers {args.min_readers}")
    if sweep:
        tables_of = getattr(args, "tables", None)
        parts += ["--tables " + " ".join(map(str, tables_of or [1, 2]))]
    if args.methods and not tables:
        parts += [f"--methods {' '.join(args.methods)}"]
    parts += [f"--datasets {' '.join(args.datasets)}"] if args.datasets else []
    if not tables and list(args.folds) != list(range(5)):
        parts += ["--folds " + " ".join(map(str, args.folds))]
    parts += [f"--set {shlex.quote(s)}" for s in args.set] + ([f"--objective {args.objective}"] if args.objective != "accuracy" else [])
    parts += [f"--tag {args.tag}"] if args.tag else []
    parts += [f"--storage {shlex.quote(args.storage)}"] if args.storage and not sweep else []
    parts += [f"--plugin {shlex.quote(p)}" for p in getattr(args, "plugin", []) or []]
    return " ".join(parts)
