"""Which records a table, a figure or the report is made of: one setting, today's code, the evidence.

One rule for every command that reads records (tables, figures, report):

1. A setting is what ``sweep`` names one: the data source, the profile, the label
   rule (``--min-readers``) and the ``--set`` overrides. Records of several sources,
   profiles or label rules are separate experiments with no default among them: the
   command stops and names them, and ``--source`` / ``--profile`` / ``--min-readers``
   picks one. Within those, the ``--set`` overrides pick (none: the profile's own
   configs): a record belongs to the setting when its resolved configs are those the
   profile gives with these overrides (its config hash). Records of other overrides
   are left out, with one warning per cell that says how they differ and which
   ``--set`` picks them. ``--text-encoder X`` is ``--set text_encoder=X`` for the
   methods that have a text encoder.
2. Today's code and data: a record made by an older implementation version of its
   method, by another identity of its plugin (method or backbone: the one loaded now
   is used), on other crops than those prepared now (a pilot's records once the whole
   download is cropped, or the reverse; slices crops of another preparation), or on
   other folds (protocol hash), is left out with a warning naming it. Where no slices
   crops are prepared (a fresh clone reading the committed records), slices records
   are taken as they are, provided they are of one preparation. A record
   of a method that is not registered here (its plugin not loaded) is left out with
   a warning saying so.
3. The evidence: each record's predictions are checked against its fold under the
   protocol (``benchmarks.records.predictions_problem``: every test nodule exactly once,
   the protocol's labels, rows of probabilities in [0, 1] summing to 1); its metrics are
   recomputed from them (``benchmarks.records.evidence``) and those are used. A record
   whose predictions fail a check, or whose stored metrics disagree with them, is left
   out with one warning naming its file and what is wrong.

Nothing here refuses a folder because it holds several ``--set`` settings or old
records: the warnings say what was left out and why.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from benchmarks.errors import UserError
from benchmarks.lifecycle import check_sets, make_spec, sets_for
from benchmarks.records import LEGACY_BACKBONE, backbone_of, evidence, predictions_problem

log = logging.getLogger(__name__)

# The record fields that make a setting with no default, and the flag that picks one.
SETTING_FLAGS = {"source": "--source", "profile": "--profile", "min_readers": "--min-readers"}


@dataclass(frozen=True)
class Setting:
    """The filters of one setting (None: whatever the records hold, when they hold one value)."""

    source: str | None = None
    profile: str | None = None
    min_readers: int | None = None
    text_encoder: str | None = None
    sets: tuple[str, ...] = field(default_factory=tuple)
    tuned: bool = False  # the tuned setting: records of runs whose configuration a study chose (benchmarks.tune)
    objective: str = "accuracy"  # with tuned: the studies' objective
    tag: str = ""  # with tuned: the studies' --tag
    repeats: int | None = None  # partitions 0..repeats-1 (None: every partition the records hold)

    @classmethod
    def from_args(cls, args) -> Setting:
        return cls(getattr(args, "source", None), getattr(args, "profile", None), getattr(args, "min_readers", None),
                   getattr(args, "text_encoder", None), tuple(getattr(args, "set", None) or ()), bool(getattr(args, "tuned", False)),
                   getattr(args, "objective", None) or "accuracy", getattr(args, "tag", None) or "", getattr(args, "repeats", None))

    def tuned_here(self, r: dict) -> bool:
        """Whether record ``r`` is of this setting's kind: a tuned run of these studies, or an untuned run."""
        t = r.get("tuning")
        if not self.tuned:
            return not t
        return isinstance(t, dict) and t.get("objective") == self.objective and (t.get("study", "").endswith(f".{self.tag}") if self.tag else True)

    def flags(self) -> str:
        """The command-line flags that pick this setting (for messages)."""
        parts = [f"--profile {self.profile}" if self.profile else "", f"--source {self.source}" if self.source else "",
                 f"--min-readers {self.min_readers}" if self.min_readers else "",
                 f"--text-encoder {self.text_encoder}" if self.text_encoder else ""]
        parts += [f"--set {s}" for s in self.sets]
        parts += [f"--repeats {self.repeats}"] if self.repeats else []
        if self.tuned:
            parts += ["--tuned"] + ([f"--objective {self.objective}"] if self.objective != "accuracy" else []) + ([f"--tag {self.tag}"] if self.tag else [])
        return " ".join(p for p in parts if p)


def _one_value(recs: list[dict], setting: Setting) -> dict:
    """The source, profile and label rule of ``recs`` (each given, or the one value they hold);
    a UserError naming them when the records hold several and no flag picks one."""
    chosen, mixed = {}, {}
    for fld, flag in SETTING_FLAGS.items():
        want = getattr(setting, fld)
        if want is not None:
            chosen[fld] = want
            continue
        found = Counter(r.get(fld) for r in recs)
        if len(found) > 1:
            mixed[flag] = found
        else:
            chosen[fld] = next(iter(found))
    if mixed:
        parts = [f"{k[2:]} " + ", ".join(f"{v} ({n} records)" for v, n in sorted(c.items(), key=str)) for k, c in mixed.items()]
        raise UserError("the records mix settings that are never averaged together: " + "; ".join(parts)
                        + f"; pick one with {', '.join(mixed)}")
    return chosen


def _flat(method_config: dict, train_config: dict) -> dict:
    out = {f"method.{k}": v for k, v in method_config.items()}
    out.update({f"train.{k}": v for k, v in train_config.items()})
    out.setdefault("method.backbone", LEGACY_BACKBONE)
    return out


def how_they_differ(rec: dict, expected) -> tuple[str, str]:
    """("epochs 20 there, 2 here", "--set epochs=20"): how a record's configs differ from those of the
    spec its setting expects, and the flags that pick the record's setting."""
    have = _flat(rec.get("config", {}).get("method", {}), rec.get("config", {}).get("train", {}))
    want = _flat(expected.method_config, expected.train_config)
    diffs, sets = [], []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k, "<missing>"), want.get(k, "<missing>")
        if a != b:
            name = k.split(".", 1)[1]
            diffs.append(f"{name} {a!r} there, {b!r} here")
            if a != "<missing>":
                sets.append(f"--set {name}={a!r}" if isinstance(a, str) else f"--set {name}={a}")
    return "; ".join(diffs) or "their configuration hash", " ".join(sets)


def _scope_text(tag: str | None) -> str:
    """'every nodule of the protocol', '126 of 1880 nodules of the protocol (partial data)' or, for the slices
    release, '1855 of 1880 nodules of the protocol (the slices release's, crops <digest>)'."""
    if not tag:
        return "every nodule of the protocol"
    kind, counts, digest = (tag.split(":") + [""])[:3]
    held, total = counts.split("of")
    if kind == "slices":
        return f"{held} of {total} nodules of the protocol (the slices release's, crops {digest})"
    return f"{held} of {total} nodules of the protocol (partial data)"


def _not_current(r: dict, want) -> str | None:
    """Why a record is not of today's code and data (its method's version, its plugins, the crops
    prepared now, the folds), or None; ``want``: the spec its setting gives today."""
    have = r.get("method_version", 1)
    if have != want.method_version:
        if isinstance(have, int) and have > want.method_version:  # the record is ahead of this copy of the suite
            return f"made by version {have} of {r['method']}, newer code than this copy's version {want.method_version}"
        return f"made by version {have} of {r['method']}, the current one is {want.method_version}"
    for what, have, now in (("its plugin", r.get("plugin"), want.plugin), ("its backbone's plugin", r.get("backbone_plugin"), want.backbone_plugin)):
        if have != now:
            return f"made by {what} {have}, the one loaded now is {now}"
    # Nothing prepared here for the slices source (a fresh clone reading committed records): the records'
    # own crops, provided they are of one preparation (``select`` checks that).
    unprepared_slices = r.get("source") == "slices" and want.data_scope is None
    if r.get("data_scope") != want.data_scope and not unprepared_slices:
        return f"made on {_scope_text(r.get('data_scope'))}, the crops prepared now hold {_scope_text(want.data_scope)}"
    if r.get("protocol_hash") != want.protocol_hash:
        return f"made on other folds of the label rule (protocol {str(r.get('protocol_hash'))[:12]}, today's {want.protocol_hash[:12]})"
    return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning said once per process (the report selects its records for each of its parts)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _predictions_problem(r: dict, folds: dict) -> str | None:
    """Why a record's predictions are not evidence of its fold under today's protocol, else None
    (``folds``: a memo of the folds' test labels)."""
    from benchmarks.data.protocols import CLASS_NAMES, DEFAULT_MIN_READERS, fold_table  # noqa: PLC0415  (pandas)

    key = (r.get("dataset"), r.get("fold"), r.get("min_readers", DEFAULT_MIN_READERS), r.get("repeat", 0))
    if key not in folds:
        try:
            test = fold_table(*key[:3], repeat=key[3]).test
            folds[key] = {str(i): CLASS_NAMES[int(y)] for i, y in zip(test["nodule_id"], test["label"])}
        except UserError as e:  # a fold or label rule the protocols do not have
            folds[key] = str(e)
    if isinstance(folds[key], str):
        return f"its fold is not one of the protocol's ({folds[key]})"
    problem = predictions_problem(r, folds[key])
    return f"its predictions are not those of its fold's test nodules: {problem}" if problem else None


def _fix(why: str, rerun: str) -> str:
    """What to do about records left out for ``why``: the command that remakes them with this code."""
    if "newer code than this copy" in why:
        return f"update this copy of the suite to use them, or remake them with this one: `{rerun}`"
    if why.startswith("made by its"):
        return f"load that plugin to use them, or remake them with the one loaded now: `{rerun}`"
    return f"rerun them: `{rerun}`"


def _rerun_command(method: str, dataset: str, rs: list[dict], chosen: dict, sets: list[str], origin: dict | None) -> str:
    """``python -m benchmarks.run ...`` that remakes the runs of ``rs`` (one method and dataset) in this setting
    (tuned runs: ``python -m benchmarks.sweep run --tuned ...``)."""
    import shlex  # noqa: PLC0415

    from benchmarks.data.protocols import DEFAULT_MIN_READERS  # noqa: PLC0415

    seeds = sorted({r["seed"] for r in rs})
    tuned = next((r["tuning"] for r in rs if r.get("tuning")), None)
    if tuned:  # a tuned run is remade by a tuned sweep (`run --set <chosen>` would make an untuned record)
        study = str(tuned.get("study", ""))
        parts = ["python -m benchmarks.sweep run --tuned", f"--methods {method}", f"--datasets {dataset}",
                 "--folds " + " ".join(map(str, sorted({r["fold"] for r in rs}))), *(["--seeds " + " ".join(map(str, seeds))] if seeds != [0] else []),
                 f"--profile {chosen['profile']}", f"--source {chosen['source']}"]
        parts += [f"--objective {tuned['objective']}"] if tuned.get("objective", "accuracy") != "accuracy" else []
        extra = study.split(".")[7:]  # <method>.<dataset>.fold<f>.<profile>.<source>.min<r>.<objective>[.set-<hash>][.<tag>]
        tag = ".".join(extra[1:] if extra and extra[0].startswith("set-") else extra)
        parts += [f"--tag {tag}"] if tag else []
        sets = [x for x in sets if x not in {f"{k}={v!r}" for k, v in (tuned.get("params") or {}).items()}]
    else:
        parts = ["python -m benchmarks.run", f"--method {method}", f"--dataset {dataset}",
                 "--folds " + " ".join(map(str, sorted({r["fold"] for r in rs}))), *(["--seeds " + " ".join(map(str, seeds))] if seeds != [0] else []),
                 f"--profile {chosen['profile']}", f"--source {chosen['source']}"]
    if chosen["min_readers"] not in (None, DEFAULT_MIN_READERS):
        parts.append(f"--min-readers {chosen['min_readers']}")
    parts += [f"--set {shlex.quote(s)}" for s in sets]
    o = origin or {}  # an installed plugin (a distribution) loads itself; a file or module is named with --plugin
    where = (o.get("path") or o.get("module")) if o.get("plugin") and not o.get("distribution") else None
    return " ".join(parts + ([f"--plugin {shlex.quote(str(where))}"] if where else []))


def select(records: list[dict], setting: Setting, where=None, vary_backbone: bool = False, none_found: str = "",
           left_out: dict | None = None) -> list[dict]:
    """The records of one setting among those ``where(record)`` keeps, by the rules above, with
    their metrics recomputed from their predictions. ``vary_backbone``: each record's own
    image encoder is part of its setting (the backbone table), instead of the one ``--set``
    names. A UserError ``none_found`` when nothing is left. ``left_out`` (a dict, filled):
    {(method, dataset): why} for each cell whose every record was left out, so that a table
    shows it as missing with the reason instead of dropping its row.

    Records left out for not being of today's code and data are said in one warning per
    method, dataset and reason, with their count and the command that remakes them."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)

    recs = [r for r in records if where is None or where(r)]
    if setting.repeats is not None:  # repeated partitions: those asked for (a record from before repeats is of partition 0)
        from benchmarks.data.partitions import check_repeats  # noqa: PLC0415

        recs = [r for r in recs if r.get("repeat", 0) < check_repeats(setting.repeats)]
        missing = sorted(set(range(setting.repeats)) - {r.get("repeat", 0) for r in recs})
        if recs and missing:
            log.warning("--repeats %d: no records of partition(s) %s; run them with `python -m benchmarks.sweep run --repeats %d`",
                        setting.repeats, ", ".join(map(str, missing)), setting.repeats)
    recs = [r for r in recs if all(getattr(setting, f) is None or r.get(f) == getattr(setting, f) for f in SETTING_FLAGS)]
    n_all = len(recs)
    recs = [r for r in recs if setting.tuned_here(r)]
    if len(recs) < n_all:  # tuned and untuned runs are two settings, never mixed
        log.info("%d records of the %s setting are not part of this table (%s)", n_all - len(recs), "untuned" if setting.tuned else "tuned",
                 "drop --tuned to see them" if setting.tuned else "pick them with --tuned")
    if not recs:
        raise UserError(none_found or "no run records with these filters")
    chosen = _one_value(recs, setting)
    names = sorted({r["method"] for r in recs if r.get("method") in methods.REGISTRY})
    check_sets(setting.sets, names or ["ce"])
    expected: dict[tuple, object] = {}
    folds: dict[tuple, dict] = {}  # (dataset, fold, min readers, repeat) -> {test nodule id: class name}
    unregistered: Counter = Counter()
    other: dict[tuple, list] = defaultdict(list)
    stale: dict[tuple, list] = defaultdict(list)  # (*key, why) -> records not of today's code and data
    sets_of: dict[tuple, list] = {}
    reasons: dict[tuple, str] = {}  # (method, dataset) -> why its records were left out
    out = []
    for r in recs:
        m = methods.REGISTRY.get(r["method"])
        if m is None:
            unregistered[r["method"]] += 1
            reasons.setdefault((r["method"], r.get("dataset")), "no such method is registered here (load its plugin with --plugin)")
            continue
        bb = backbone_of(r) if vary_backbone else None
        key = (r["method"], r["dataset"], bb, r.get("repeat", 0))  # a repeat's protocol hash is its own
        chosen_here = [f"{k}={v!r}" for k, v in sorted((r.get("tuning") or {}).get("params", {}).items())]
        if chosen_here:  # a tuned run: the configuration its fold's study chose, on top of the setting's
            key = (*key, tuple(chosen_here))
        if key not in expected:
            sets = list(sets_for(r["method"], setting.sets)) + chosen_here
            if setting.text_encoder and hasattr(m.config, "text_encoder"):
                sets.append(f"text_encoder={setting.text_encoder!r}")
            if bb is not None and hasattr(m.config, "backbone"):
                sets.append(f"backbone={bb!r}")
            expected[key] = make_spec(r["method"], r["dataset"], 0, 0, chosen["profile"], chosen["source"], chosen["min_readers"], sets,
                                      repeat=r.get("repeat", 0))
            sets_of[key] = sets
        want = expected[key]
        why = _not_current(r, want)
        if why:
            stale[(*key, why)].append(r)
        elif r["config_hash"] != want.config_hash:
            other[key].append(r)
        else:
            got, problem = None, _predictions_problem(r, folds)
            if problem:
                _warn_once(f"leaving out {r.get('_path', r.get('key'))}: {problem}")
                continue
            got, problem = evidence(r)
            if problem:
                log.warning("leaving out %s: %s", r.get("_path", r.get("key")), problem)
            else:
                out.append({**r, "metrics": got, "stored_metrics": r["metrics"], "label": m.label})
    for (*key, why), rs in stale.items():
        method, dataset = key[:2]
        rerun = _rerun_command(method, dataset, rs, chosen, sets_of[tuple(key)], methods.REGISTRY[method].origin)
        log.warning("leaving out %d record%s of %s on %s: %s; %s", len(rs), "s" if len(rs) > 1 else "", method, dataset, why, _fix(why, rerun))
        reasons.setdefault((method, dataset), why)
    for key, rs in other.items():
        reasons.setdefault(key[:2], f"{len(rs)} records of another setting ({how_they_differ(rs[0], expected[key])[0]})")
    if left_out is not None:
        kept = {(r["method"], r["dataset"]) for r in out}
        for r in recs:
            cell = (r.get("method"), r.get("dataset"))
            if cell not in kept:  # every record of the cell left out: say why (the warnings above say it per record)
                left_out[cell] = reasons.get(cell, "its records failed the checks of their predictions (see the warnings)")
    for method, n in sorted(unregistered.items()):
        log.warning("leaving out %d records of %s: no such method is registered here (load its plugin with --plugin)", n, method)
    for (method, dataset, *rest), rs in other.items():
        diff, flags = how_they_differ(rs[0], expected[(method, dataset, *rest)])
        log.warning("leaving out %d records of %s on %s of another setting (%s)%s", len(rs), method, dataset, diff,
                    f"; pick them with {flags}" if flags else "")
    if not out and other:  # the folder holds only other settings' records of these cells: say which flags pick them
        picks = sorted({how_they_differ(rs[0], expected[k])[1] for k, rs in other.items()} - {""})
        raise UserError(f"no run records of this setting ({setting.flags() or 'the profile as it is'}); the records here were made "
                        f"with other overrides: pick them with {' or '.join(picks) if picks else '--set'}")
    if not out:
        raise UserError(none_found or "no run records of this setting")
    scopes = Counter(r.get("data_scope") for r in out if r.get("source") == "slices")
    if len(scopes) > 1:  # only when no slices crops are prepared here to pick one preparation
        raise UserError("the slices records were made on crops of different preparations ("
                        + "; ".join(f"{_scope_text(k)}: {n} records" for k, n in sorted(scopes.items(), key=str))
                        + "); prepare the release here (`python -m benchmarks.prepare slices`) to pick the current one")
    return out
