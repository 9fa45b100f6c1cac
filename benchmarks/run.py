"""python -m benchmarks.run: train and evaluate one method on one dataset, fold by fold.

  python -m benchmarks.run --method clip_lung --dataset LIDC-B            # 5 folds, paper profile
  python -m benchmarks.run --method ce --dataset LIDC-C --fold 0 --profile smoke --json
  python -m benchmarks.run --list

A fold whose record exists is not recomputed (``--force`` to redo it); a killed
run resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import ArgumentParser, add_folds_seeds, add_plugin_flag, load_plugins, parse_folds, warn_phantom
from benchmarks.config import apply_overrides, field_types
from benchmarks.data.protocols import DEFAULT_MIN_READERS, PROTOCOLS, check_fold, check_min_readers, get_protocol, protocol_hash
from benchmarks.errors import UserError, cli_main
from benchmarks.io import atomic_write_bytes, writable_dir
from benchmarks.metrics import evaluate, summarize
from benchmarks.profiles import PROFILES, get_profile
from benchmarks.records import RUNS_ENV, SCHEMA, RunSpec, git_commit, package_versions, read_record, runs_dir, write_record

log = logging.getLogger("benchmarks.run")


def make_spec(method: str, dataset: str, fold: int, seed: int = 0, profile: str = "paper", source: str = "phantom",
              min_readers: int = DEFAULT_MIN_READERS, sets: list[str] | None = None) -> RunSpec:
    """Resolve every config of a run (registry defaults, profile, ``--set``) into a spec."""
    import methods  # noqa: PLC0415
    from benchmarks.data.cache import check_source  # noqa: PLC0415

    m = methods.get_method(method)
    get_protocol(dataset)
    check_fold(fold)
    check_source(source)
    check_min_readers(min_readers)
    prof = get_profile(profile)
    mcfg = m.config
    own = {k: v for k, v in prof.method_overrides.items() if k in field_types(mcfg)}
    if own:
        mcfg = dataclasses.replace(mcfg, **own)
    cfgs = apply_overrides({"train": prof.train, "method": mcfg}, sets or [])
    backbone_plugin = None
    if hasattr(cfgs["method"], "backbone"):
        from methods.backbones import BACKBONES, ORIGIN  # noqa: PLC0415

        if cfgs["method"].backbone not in BACKBONES:
            raise UserError(f"--set backbone={cfgs['method'].backbone!r}: unknown backbone; known: {', '.join(sorted(BACKBONES))}")
        backbone_plugin = plugin_id(ORIGIN.get(cfgs["method"].backbone))
    return RunSpec(
        method=method, dataset=dataset, fold=int(fold), seed=int(seed), profile=profile, source=source,
        min_readers=int(min_readers), method_config=dataclasses.asdict(cfgs["method"]),
        train_config=dataclasses.asdict(cfgs["train"]), protocol_hash=protocol_hash(min_readers),
        method_version=m.version, plugin=plugin_id(m.origin), backbone_plugin=backbone_plugin,
    )


def plugin_id(origin: dict | None) -> str | None:
    """The identity of a plugin that enters the run key: "name@version" or "name#sha256[:16]"."""
    if not origin:
        return None
    name = origin.get("distribution") or origin["plugin"]
    return f"{name}@{origin['version']}" if origin.get("version") else f"{name}#{origin.get('sha256', '')[:16]}"


def existing_record(spec: RunSpec) -> dict | None:
    """The spec's record when it exists and is whole; a damaged one is moved aside (None)."""
    path = spec.path(".json")
    if not path.exists():
        return None
    try:
        rec = read_record(path)
        log.info("record exists, reused: %s", path)
        return rec
    except (OSError, ValueError) as e:  # damaged: keep it for inspection, compute the run again
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        log.warning("the record %s is damaged (%s); moved it to %s and running again", path, e, bad)
        return None


@dataclasses.dataclass
class Prepared:
    """A run ready to train: its data, its freshly seeded model, and where it checkpoints."""

    spec: RunSpec
    method: object  # methods.registry.Method
    data: object  # benchmarks.data.FoldData
    info: object  # methods.DataInfo
    model: object  # torch.nn.Module
    train: object  # TrainConfig
    device: object  # torch.device
    ckpt: Path
    t0: float = 0.0


def prepare_run(spec: RunSpec, device: str = "auto", force: bool = False, progress: bool = True) -> Prepared:
    """Load the spec's fold and build its model from the run's seed (the global RNG is left
    where the model's construction leaves it: training continues from there)."""
    import torch  # noqa: PLC0415

    import methods  # noqa: PLC0415
    from benchmarks.data import load_fold  # noqa: PLC0415
    from benchmarks.train import TrainConfig, resolve_device  # noqa: PLC0415

    m = methods.get_method(spec.method)
    from methods.backbones import ORIGIN  # noqa: PLC0415

    # A sweep task whose plugin (of the method or of its backbone) changed since it was submitted.
    for what, loaded, wanted in ((spec.method, plugin_id(m.origin), spec.plugin),
                                 (f"backbone {spec.backbone}", plugin_id(ORIGIN.get(spec.backbone)), spec.backbone_plugin)):
        if loaded != wanted:
            raise UserError(f"{what}: the plugin loaded here is {loaded}, the run was made for {wanted}; submit it again")
    dev = resolve_device(device)
    data = load_fold(spec.dataset, spec.fold, source=spec.source, min_readers=spec.min_readers, progress=progress)
    info = methods.DataInfo(
        num_classes=data.num_classes, class_names=data.class_names, attribute_names=data.attribute_names,
        class_counts=tuple(int((data.train.labels == k).sum()) for k in range(data.num_classes)),
    )
    mcfg = m.cls.Config(**spec.method_config)
    tcfg = TrainConfig(**spec.train_config)
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed % (2**32))
    model = m.cls(mcfg, info)
    ckpt = spec.path(".ckpt")
    if force and ckpt.exists():
        ckpt.unlink()
    return Prepared(spec, m, data, info, model, tcfg, dev, ckpt, time.perf_counter())


def finish_run(p: Prepared, result: dict, keep_weights: bool = True) -> dict:
    """Metrics, record and final weights of a trained run (nothing written if it diverged)."""
    import torch  # noqa: PLC0415

    from benchmarks.train import Diverged  # noqa: PLC0415

    spec, data, tcfg, dev = p.spec, p.data, p.train, p.device
    probs = result["probs"]
    if not np.isfinite(probs).all():
        p.ckpt.unlink(missing_ok=True)
        raise Diverged(f"{spec.method} on {spec.dataset} fold {spec.fold}: the test probabilities are not finite after "
                       f"{tcfg.epochs} epochs (lr {tcfg.lr}); no record written; {Diverged.advice}")
    rule = getattr(p.model, "decision_rule", "argmax")
    metrics = evaluate(probs, data.test.labels, data.class_names, data.test_class_names, rule)
    record = {
        "schema": SCHEMA,
        "key": spec.key,
        "config_hash": spec.config_hash,
        **{k: v for k, v in dataclasses.asdict(spec).items() if k not in ("method_config", "train_config")},
        "variant_of": p.method.variant_of,
        "config": {"method": spec.method_config, "train": spec.train_config},
        "text_encoder": getattr(p.model, "text_encoder_name", None),
        "decision_rule": rule,
        "backbone": spec.backbone,
        "plugin_origin": p.method.origin,  # beside "plugin" (the identity in the key): where it was loaded from
        "data": {
            "class_names": list(data.class_names), "test_class_names": list(data.test_class_names),
            "n_train": len(data.train), "n_train_used": result["n_train_used"], "n_test": len(data.test),
            "missing": data.missing,
        },
        "git": git_commit(),
        "versions": package_versions(),
        "device": {"type": dev.type, "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                   "threads": torch.get_num_threads()},
        "timing": {"seconds_per_epoch": result["seconds_per_epoch"], "eval_seconds": result["eval_seconds"],
                   "total_seconds": time.perf_counter() - p.t0, **({"packed_with": result["packed_with"]} if "packed_with" in result else {})},
        "history": result["history"],
        "metrics": metrics,
        "predictions": [
            {"id": str(i), "label": int(y), "probs": [round(float(q), 6) for q in row]}
            for i, y, row in zip(data.test.nodule_ids, data.test.labels, probs)
        ],
        "weights": spec.path(".pt").name if keep_weights else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if keep_weights:
        buf = io.BytesIO()
        torch.save({"method": spec.method, "method_config": spec.method_config, "info": dataclasses.asdict(p.info),
                    "state_dict": result["state_dict"]}, buf)
        atomic_write_bytes(spec.path(".pt"), buf.getvalue())
    write_record(spec.path(".json"), record)
    p.ckpt.unlink(missing_ok=True)
    return record


def run_one(spec: RunSpec, device: str = "auto", force: bool = False, progress: bool = True, keep_weights: bool = True) -> dict:
    """Run (or reuse) one spec; returns its record. Pure function of the spec: the same
    call runs in-process, in a subprocess or as a Slurm task."""
    from benchmarks.train import Diverged, fit  # noqa: PLC0415

    rec = None if force else existing_record(spec)
    if rec is not None:
        return rec
    p = prepare_run(spec, device, force, progress)
    try:
        result = fit(p.model, p.data, p.train, spec.seed, p.device, checkpoint=p.ckpt, checkpoint_tag=spec.key, progress=progress)
    except Diverged:
        p.ckpt.unlink(missing_ok=True)  # resuming a diverging run would only diverge again
        raise
    return finish_run(p, result, keep_weights)


def _fmt(v: dict) -> str:
    return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"


def _print_summary(method: str, dataset: str, profile: str, source: str, records: list[dict]) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    test_classes = records[0]["data"]["test_class_names"]
    one_seed = len({r["seed"] for r in records}) == 1
    rows = []
    for r in records:
        m = r["metrics"]
        row = [r["fold"] if one_seed else f"{r['fold']} (seed {r['seed']})", f"{100 * m['accuracy']:.1f}"]
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
        print("± is the sample standard deviation over " + ("folds" if one_seed else "folds and seeds"))


def _list_methods() -> None:
    import methods  # noqa: PLC0415

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


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--method", help="a registered method (see --list)")
    ap.add_argument("--dataset", help=f"one of {', '.join(PROTOCOLS)}")
    add_folds_seeds(ap)
    ap.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    ap.add_argument("--source", default="phantom", help="phantom (offline, rendered from the annotations) or lidc (prepared CT crops)")
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
    load_plugins(args)
    if args.list:
        _list_methods()
        return
    if not args.method or not args.dataset:
        raise UserError("--method and --dataset are required (or --list)")
    folds = parse_folds(args.folds)
    specs = [make_spec(args.method, args.dataset, f, s, args.profile, args.source, args.min_readers, args.set)
             for s in args.seeds for f in folds]
    writable_dir(runs_dir(), "runs folder", f"set ${RUNS_ENV} to a writable folder")
    warn_phantom(args.profile, args.source)
    t0 = time.perf_counter()
    if args.pack:
        from benchmarks.pack import run_pack  # noqa: PLC0415

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
