"""The life of one run: its spec, its preparation, its training, its record.

  make_spec(...)       every config of a run resolved (registry defaults, profile, --set)
  existing_record      the spec's record when it exists and is whole (reuse)
  prepare_run          its fold loaded and its model built from the run's seed
  finish_run           metrics, record and final weights of a trained run
  run_one              the four in a row: what ``benchmarks.run``, a sweep task and a
                       pack (``benchmarks.pack``, which steps prepared runs in turn) share

A run is a pure function of its spec: the same call runs in-process, in a
subprocess or as a Slurm task, and how it was scheduled (alone, packed, how many
tasks shared the machine) is written in its record but never changes its numbers.

torch, the method registry and the data layer are imported inside the functions
that use them: the commands import this module at start-up, and their ``--help``
must not pay for torch.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.config import TrainConfig, apply_overrides, field_types
from benchmarks.data.inner import inner_hash
from benchmarks.data.partitions import check_repeat
from benchmarks.data.protocols import DEFAULT_MIN_READERS, check_fold, check_min_readers, get_protocol, protocol_hash
from benchmarks.errors import UserError
from benchmarks.io import DamagedFile, atomic_write_bytes, load_torch_file, move_aside
from benchmarks.metrics import evaluate
from benchmarks.plugins import plugin_id
from benchmarks.profiles import get_profile
from benchmarks.records import SCHEMA, RunSpec, git_commit, package_versions, read_record, write_record

log = logging.getLogger(__name__)


def make_spec(method: str, dataset: str, fold: int, seed: int = 0, profile: str = "paper", source: str = "phantom",
              min_readers: int = DEFAULT_MIN_READERS, sets: list[str] | None = None, split: str | None = None,
              tuning: dict | None = None, repeat: int = 0) -> RunSpec:
    """Resolve every config of a run (registry defaults, profile, ``--set``) into a spec.

    ``split="inner"``: a tuning trial, trained on the inner training part of the fold's training
    folds and scored on its inner validation part (``benchmarks.data.inner``; its protocol hash
    is the inner split's). ``tuning``: what a tuned run's study chose (``benchmarks.tune``).
    ``repeat``: the partition whose fold ``fold`` is (0: the committed folds; ``benchmarks.data.partitions``)."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)
    from benchmarks.data.cache import check_source  # noqa: PLC0415
    from methods.backbones import BACKBONES, ORIGIN  # noqa: PLC0415

    m = methods.get_method(method)
    if split not in (None, "inner"):
        raise ValueError(f"split must be None or 'inner', got {split!r}")
    get_protocol(dataset)
    check_fold(fold)
    check_source(source)
    check_min_readers(min_readers)
    check_repeat(repeat)
    if split == "inner" and repeat:  # the inner split and its hash are of partition 0's folds
        raise ValueError("a tuning trial (split='inner') runs on partition 0; repeat must be 0")
    prof = get_profile(profile)
    mcfg = m.config
    own = {k: v for k, v in prof.method_overrides.items() if k in field_types(mcfg)}
    if own:
        mcfg = dataclasses.replace(mcfg, **own)
    cfgs = apply_overrides({"train": prof.train, "method": mcfg}, sets or [])
    backbone_plugin = None
    if hasattr(cfgs["method"], "backbone"):
        if cfgs["method"].backbone not in BACKBONES:
            raise UserError(f"--set backbone={cfgs['method'].backbone!r}: unknown backbone; known: {', '.join(sorted(BACKBONES))}")
        backbone_plugin = plugin_id(ORIGIN.get(cfgs["method"].backbone))
    scope = None
    if source == "lidc":
        from benchmarks.data.lidc import scope_tag  # noqa: PLC0415  (pandas, pylidc: deferred for --help speed)

        scope = scope_tag(min_readers)
    elif source == "slices":
        from benchmarks.data.slices_crop import scope_tag  # noqa: PLC0415  (pandas: deferred for --help speed)

        scope = scope_tag(min_readers)
    return RunSpec(
        method=method, dataset=dataset, fold=int(fold), seed=int(seed), profile=profile, source=source,
        min_readers=int(min_readers), method_config=dataclasses.asdict(cfgs["method"]),
        train_config=dataclasses.asdict(cfgs["train"]), protocol_hash=inner_hash(min_readers) if split == "inner" else protocol_hash(min_readers, repeat),
        method_version=m.version, plugin=plugin_id(m.origin), backbone_plugin=backbone_plugin, data_scope=scope,
        split=split, tuning=tuning, repeat=int(repeat),
    )


def set_key(item: str) -> str:
    """The key of one ``--set key=value`` (a UserError when it has no ``=``)."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    return item.split("=", 1)[0].strip()


def _known_keys(method_names) -> set[str]:
    """The ``--set`` keys of the training config and of the configs of ``method_names``."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)

    known = set(field_types(TrainConfig()))
    for m in method_names:
        known |= set(field_types(methods.get_method(m).config))
    return known


def sets_for(method: str, sets) -> list[str]:
    """The ``--set`` overrides that apply to ``method``: those of the training config, and those
    of its own config. A setting of several methods (a sweep, a table) names one override for
    all; each method takes the keys it has. Check with :func:`check_sets` that every key is
    some method's."""
    known = _known_keys([method])
    return [s for s in sets or [] if set_key(s) in known]


def check_sets(sets, method_names) -> None:
    """Every ``--set`` key is a field of the training config or of one of ``method_names``' configs."""
    known = _known_keys(method_names)
    for s in sets or []:
        if set_key(s) not in known:
            raise UserError(f"unknown --set key {set_key(s)!r} for these methods ({', '.join(method_names)}); known keys: {', '.join(sorted(known))}")


def existing_record(spec: RunSpec) -> dict | None:
    """The spec's record when it exists and is whole, and so are the weights it names (reuse);
    else None, and the run is redone: a damaged record, or damaged weights, is moved aside
    (``<name>.bad``, then ``.bad.1``, ... : earlier damaged copies are kept), with one warning."""
    path = spec.path(".json")
    if not path.exists():
        return None
    try:
        rec = read_record(path)
    except (OSError, ValueError) as e:  # damaged: keep it for inspection, compute the run again
        bad = move_aside(path)
        log.warning("the record %s is damaged (%s); moved it to %s and running again", path, e, bad)
        return None
    if rec.get("weights"):  # the record promises its final weights (figures rebuild the model from them)
        weights = spec.path(".pt")
        try:
            saved = load_torch_file(weights)
            if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
                raise DamagedFile(f"{weights}: not the weights of a run (no state_dict)")
        except DamagedFile as e:
            if weights.exists():
                bad = move_aside(weights)
                log.warning("the weights of %s are damaged (%s); moved them to %s and running again", path.name, e, bad)
            else:
                log.warning("the weights of %s are missing (%s); running again", path.name, weights)
            return None
    log.info("record exists, reused: %s", path)
    return rec


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


def prepare_run(spec: RunSpec, device: str = "auto", force: bool = False, progress: bool = True, folds: dict | None = None) -> Prepared:
    """Load the spec's fold and build its model from the run's seed (the global RNG is left
    where the model's construction leaves it: training continues from there). ``folds``: a
    memo of loaded folds kept by the caller (a tuning worker's trials share their fold; the
    splits are read, never written)."""
    import torch  # noqa: PLC0415  (deferred for --help speed, as every torch import here)

    import methods  # noqa: PLC0415
    from benchmarks.data import load_fold  # noqa: PLC0415
    from benchmarks.train import resolve_device  # noqa: PLC0415
    from methods.backbones import ORIGIN  # noqa: PLC0415

    m = methods.get_method(spec.method)
    # A sweep task whose plugin (of the method or of its backbone) changed since it was submitted.
    for what, loaded, wanted in ((spec.method, plugin_id(m.origin), spec.plugin),
                                 (f"backbone {spec.backbone}", plugin_id(ORIGIN.get(spec.backbone)), spec.backbone_plugin)):
        if loaded != wanted:
            raise UserError(f"{what}: the plugin loaded here is {loaded}, the run was made for {wanted}; submit it again")
    dev = resolve_device(device)
    where = (spec.dataset, spec.fold, spec.source, spec.min_readers, spec.split, spec.repeat)
    data = folds.get(where) if folds is not None else None
    if data is None:
        data = load_fold(spec.dataset, spec.fold, source=spec.source, min_readers=spec.min_readers, progress=progress, split=spec.split,
                         repeat=spec.repeat)
        if folds is not None:  # the last fold only: a worker pulling trials of 15 studies must not hold 15 folds
            folds.clear()
            folds[where] = data
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


def machine_share(tasks_at_once: int | None = 1, runs_per_task: int = 1, scheduler: str = "none", task_started: float | None = None) -> dict:
    """How a run shared its machine, for its record: at most ``tasks_at_once`` tasks of its
    sweep ran at once (None: the scheduler decided, e.g. Slurm, whose node may hold other
    jobs), each training ``runs_per_task`` runs (a pack), each with the threads torch had;
    ``task_started``: when its sweep task began (epoch seconds)."""
    import torch  # noqa: PLC0415

    out = {"scheduler": scheduler, "tasks_at_once": tasks_at_once, "runs_per_task": runs_per_task,
           "runs_at_once": tasks_at_once * runs_per_task if tasks_at_once else None, "threads": torch.get_num_threads()}
    return out | ({"task_started": round(task_started, 3)} if task_started is not None else {})


def finish_run(p: Prepared, result: dict, keep_weights: bool = True, machine: dict | None = None) -> dict:
    """Metrics, record and final weights of a trained run (nothing written if it diverged).
    ``machine``: :func:`machine_share` of how it ran (default: alone, in this process)."""
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
    # Nodules of this fold's protocol without a crop (scans missing from a partial download, or
    # unreadable): the record says so, and tables mark its cell, so a pilot never passes for the whole.
    n_missing = int(sum(data.missing.values()))
    n_held = len(data.train) + len(data.test)
    scope = {"partial": n_missing > 0, "nodules_with_crops": n_held, "nodules_of_fold": n_held + n_missing}
    if spec.source == "lidc":
        from benchmarks.data.lidc import download_scope  # noqa: PLC0415

        scope["protocol"] = {k: v for k, v in download_scope(spec.min_readers).items() if k != "download"}
    elif spec.source == "slices":
        # The release never holds every nodule: the same ones are left out for every method, which
        # the captions say; only a partial copy of the release (the test fixture) is partial data.
        from benchmarks.data.slices_crop import coverage  # noqa: PLC0415

        cov = coverage(spec.min_readers)
        scope = {**scope, "partial": cov["partial"], "slices": cov}
    finished = time.time()
    total = time.perf_counter() - p.t0
    record = {
        "schema": SCHEMA,
        "key": spec.key,
        "config_hash": spec.config_hash,
        **{k: v for k, v in dataclasses.asdict(spec).items() if k not in ("method_config", "train_config")},
        "variant_of": p.method.variant_of,
        "label": p.method.label,
        "config": {"method": spec.method_config, "train": spec.train_config},
        "text_encoder": getattr(p.model, "text_encoder_name", None),
        "decision_rule": rule,
        "backbone": spec.backbone,
        "plugin_origin": p.method.origin,  # beside "plugin" (the identity in the key): where it was loaded from
        "data": {
            "class_names": list(data.class_names), "test_class_names": list(data.test_class_names),
            "n_train": len(data.train), "n_train_used": result["n_train_used"], "n_test": len(data.test),
            "missing": data.missing,
            "scope": scope,
        },
        "git": git_commit(),
        "versions": package_versions(),
        "device": {"type": dev.type, "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                   "threads": torch.get_num_threads()},
        "machine": machine or machine_share(runs_per_task=1 + len(result.get("packed_with", []))),
        "timing": {"seconds_per_epoch": result["seconds_per_epoch"], "eval_seconds": result["eval_seconds"],
                   "total_seconds": total, "started": round(finished - total, 3), "finished": round(finished, 3),
                   **({"packed_with": result["packed_with"]} if "packed_with" in result else {})},
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


def run_one(spec: RunSpec, device: str = "auto", force: bool = False, progress: bool = True, keep_weights: bool = True,
            machine: dict | None = None) -> dict:
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
    return finish_run(p, result, keep_weights, machine)
