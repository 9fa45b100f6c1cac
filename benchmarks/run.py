"""python -m benchmarks.run: train and evaluate one method on one dataset, fold by fold.

  python -m benchmarks.run --method clip_lung --dataset LIDC-B            # 5 folds, paper profile
  python -m benchmarks.run --method ce --dataset LIDC-C --fold 0 --profile smoke --json
  python -m benchmarks.run --list

A fold whose record exists is not recomputed (``--force`` to redo it); a killed
run resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time

from benchmarks.cli import ArgumentParser, add_folds_seeds, add_plugin_flag, load_plugins, parse_folds, refuse_unknown_methods, warn_phantom
from benchmarks.data.protocols import DEFAULT_MIN_READERS, PROTOCOLS, get_protocol
from benchmarks.errors import UserError, cli_main
from benchmarks.io import writable_dir
from benchmarks.lifecycle import make_spec, run_one
from benchmarks.metrics import summarize
from benchmarks.pack import run_pack
from benchmarks.paths import hint_for, runs_dir
from benchmarks.profiles import PROFILES, get_profile

log = logging.getLogger("benchmarks.run")


def _fmt(v: dict) -> str:
    return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"


def _print_summary(method: str, dataset: str, profile: str, source: str, records: list[dict]) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    test_classes = records[0]["data"]["test_class_names"]
    one_seed = len({r["seed"] for r in records}) == 1
    rows = []
    for r in records:
        m = r["metrics"]
        fold = f"{r['fold']} (partition {r['repeat']})" if r.get("repeat") else r["fold"]
        row = [fold if one_seed else f"{fold} (seed {r['seed']})", f"{100 * m['accuracy']:.1f}"]
        for c in test_classes:
            row += [f"{100 * m['recall'][c]:.1f}", f"{100 * m['f1'][c]:.1f}"]
        row.append(f"{m.get('auc', float('nan')):.3f}" if "auc" in m else f"{m.get('qwk', float('nan')):.3f}")
        rows.append(row)
    last = "AUC" if "auc" in records[0]["metrics"] else "QWK"
    headers = ["fold", "accuracy"] + [f"{c[:3]} {k}" for c in test_classes for k in ("recall", "F1")] + [last]
    if len(records) > 1:
        s = summarize([r["metrics"] for r in records])
        mean = ["mean ± std", _fmt(s["accuracy"])]
        for c in test_classes:
            mean += [_fmt(s[f"recall.{c}"]), _fmt(s[f"f1.{c}"])]
        key = "auc" if last == "AUC" else "qwk"
        mean.append(f"{s[key]['mean']:.3f} ± {s[key]['std']:.3f}")
        rows.append(mean)
    enc = records[0].get("text_encoder")
    print(f"{method} on {dataset}  (profile {profile}, source {source}" + (f", text encoder {enc}" if enc else "") + ")")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    if len(records) > 1:
        over = ("folds" if one_seed else "folds and seeds") + (" and partitions" if any(r.get("repeat") for r in records) else "")
        print("± is the sample standard deviation over the runs' " + over + " (the tables average seeds within a fold first)")


def _list_methods() -> None:
    """Each registered method: what it is, its label in tables (when not its name), its version and options,
    and the search space `tune run` gives it (benchmarks.space)."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)
    from benchmarks.space import space_of  # noqa: PLC0415

    for name, m in sorted(methods.REGISTRY.items()):
        base = m.variant_of
        if base:
            diff = {k: v for k, v in dataclasses.asdict(m.config).items() if dataclasses.asdict(methods.REGISTRY[base].config).get(k) != v}
            print(f"{name:18s} variant of {base}: {diff}")
        else:
            doc = (sys.modules[m.cls.__module__].__doc__ or "").strip().split("\n\n")[0]
            title = " ".join(doc.split())
            origin = f" [plugin {m.origin['plugin']}]" if m.origin else ""
            print(f"{name:18s} {title[:100] + ('...' if len(title) > 100 else '')}{origin}")
            opts = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(m.config).items())
            print(f"{'':18s} version {m.version}; --set {opts}" if opts else f"{'':18s} version {m.version}")
        if m.label != name:
            print(f"{'':18s} label in tables: {m.label}")
        try:
            space = "; ".join(f"{k} {d.describe()}" for k, d in space_of(m).items())
        except UserError as e:  # a plugin's space its config refuses: said here, refused by tune run
            space = f"refused: {e}"
        print(f"{'':18s} tuned over: {space}")


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--method", help="a registered method (see --list)")
    ap.add_argument("--dataset", help=f"one of {', '.join(PROTOCOLS)}")
    add_folds_seeds(ap)
    ap.add_argument("--repeats", type=int, default=1, metavar="R",
                    help="repeated partitions: run the folds of partitions 0..R-1 (1-10; 0 is the committed one)")
    ap.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    ap.add_argument("--source", default="phantom", help="phantom (offline, rendered from the annotations), slices (real CT of the public slices release: prepare slices) or lidc (the DICOM download: prepare crops)")
    ap.add_argument("--min-readers", type=int, default=DEFAULT_MIN_READERS, help="keep nodules annotated by at least this many readers (1-4)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ap.add_argument("--pack", action="store_true", help="train the runs together in one process, stepped in turn (same records)")
    ap.add_argument("--force", action="store_true", help="recompute even if the record exists")
    ap.add_argument("--list", action="store_true", help="list the registered methods and variants")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_plugin_flag(ap)
    return ap


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{s} s"


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if not args.list:  # names that are wrong end here, before the seconds that torch and the plugins take to import
        refuse_unknown_methods([args.method] if args.method else [], args.plugin)
        if args.dataset:
            get_protocol(args.dataset)
        get_profile(args.profile)
        parse_folds(args.folds)
    load_plugins(args)
    if args.list:
        _list_methods()
        return
    if not args.method or not args.dataset:
        raise UserError("--method and --dataset are required (or --list)")
    folds = parse_folds(args.folds)
    from benchmarks.data.partitions import check_repeats  # noqa: PLC0415  (after parsing, as the rest of the data layer)

    specs = [make_spec(args.method, args.dataset, f, s, args.profile, args.source, args.min_readers, args.set, repeat=k)
             for s in args.seeds for k in range(check_repeats(args.repeats)) for f in folds]
    writable_dir(runs_dir(), "runs folder", hint_for("runs"))
    warn_phantom(args.profile, args.source)
    t0 = time.perf_counter()
    if args.pack:
        log.info("%d runs of %s on %s in one pack (%s, %s)", len(specs), args.method, args.dataset, args.profile, args.source)
        records = run_pack(specs, device=args.device, force=args.force, progress=not args.quiet)
        failed = [(s, r) for s, r in zip(specs, records) if isinstance(r, BaseException)]
        if failed:
            s, e = failed[0]
            if isinstance(e, UserError):
                raise UserError(f"{len(failed)} of {len(specs)} runs failed; {s.stem}: {e}")
            raise e
    else:
        records = []
        for i, spec in enumerate(specs):
            seed = f", seed {spec.seed}" if len(args.seeds) > 1 else ""
            log.info("%s on %s, fold %d (%d of %d%s; %s, %s)", spec.method, spec.dataset, spec.fold, i + 1, len(specs), seed,
                     spec.profile, spec.source)
            t = time.perf_counter()
            rec = run_one(spec, device=args.device, force=args.force, progress=not args.quiet)
            records.append(rec)
            took = time.perf_counter() - t
            left = (time.perf_counter() - t0) / (i + 1) * (len(specs) - i - 1)
            log.info("fold %d done (%d of %d): accuracy %.1f, %s%s", spec.fold, i + 1, len(specs), 100 * rec["metrics"]["accuracy"],
                     _duration(took), f"; about {_duration(left)} left" if i + 1 < len(specs) else "")
    paths = [str(s.path(".json")) for s in specs]
    if args.json:
        out = {
            "method": args.method, "dataset": args.dataset, "profile": args.profile, "source": args.source,
            "text_encoder": records[0].get("text_encoder"), "records": paths,
            "folds": {r["fold"]: r["metrics"] for r in records if r["seed"] == args.seeds[0]},
            "runs": [{"fold": r["fold"], "seed": r["seed"], "metrics": r["metrics"]} for r in records],
        }
        if len(records) > 1:
            out["summary"] = summarize([r["metrics"] for r in records])
        print(json.dumps(out, indent=1))
    else:
        _print_summary(args.method, args.dataset, args.profile, args.source, records)
        print("records: " + ", ".join(paths))


if __name__ == "__main__":
    main()
