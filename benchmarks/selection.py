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
   download is cropped, or the reverse), or on other folds (protocol hash), is left
   out with a warning naming it. A record
   of a method that is not registered here (its plugin not loaded) is left out with
   a warning saying so.
3. The evidence: each record's metrics are recomputed from its own test predictions
   (``benchmarks.records.evidence``) and those are used; a record whose stored metrics
   disagree with its predictions is left out with a warning naming its file.

Nothing here refuses a folder because it holds several ``--set`` settings or old
records: the warnings say what was left out and why.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from benchmarks.errors import UserError
from benchmarks.lifecycle import check_sets, make_spec, sets_for
from benchmarks.records import LEGACY_BACKBONE, backbone_of, evidence

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

    @classmethod
    def from_args(cls, args) -> Setting:
        return cls(getattr(args, "source", None), getattr(args, "profile", None), getattr(args, "min_readers", None),
                   getattr(args, "text_encoder", None), tuple(getattr(args, "set", None) or ()))

    def flags(self) -> str:
        """The command-line flags that pick this setting (for messages)."""
        parts = [f"--profile {self.profile}" if self.profile else "", f"--source {self.source}" if self.source else "",
                 f"--min-readers {self.min_readers}" if self.min_readers else "",
                 f"--text-encoder {self.text_encoder}" if self.text_encoder else ""]
        parts += [f"--set {s}" for s in self.sets]
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
    """'every nodule of the protocol' or '126 of 1880 nodules of the protocol (partial data)'."""
    if not tag:
        return "every nodule of the protocol"
    held, total = tag.split(":")[1].split("of")
    return f"{held} of {total} nodules of the protocol (partial data)"


def _not_current(r: dict, want) -> str | None:
    """Why a record is not of today's code and data (its method's version, its plugins, the crops
    prepared now, the folds), or None; ``want``: the spec its setting gives today."""
    if r.get("method_version", 1) != want.method_version:
        return f"made by version {r.get('method_version', 1)} of {r['method']}, the current one is {want.method_version} (rerun it)"
    for what, have, now in (("its plugin", r.get("plugin"), want.plugin), ("its backbone's plugin", r.get("backbone_plugin"), want.backbone_plugin)):
        if have != now:
            return f"made by {what} {have}, the one loaded now is {now} (rerun it)"
    if r.get("data_scope") != want.data_scope:
        return f"made on {_scope_text(r.get('data_scope'))}, the crops prepared now hold {_scope_text(want.data_scope)}"
    if r.get("protocol_hash") != want.protocol_hash:
        return f"made on other folds of the label rule (protocol {str(r.get('protocol_hash'))[:12]}, today's {want.protocol_hash[:12]})"
    return None


def select(records: list[dict], setting: Setting, where=None, vary_backbone: bool = False, none_found: str = "") -> list[dict]:
    """The records of one setting among those ``where(record)`` keeps, by the rules above, with
    their metrics recomputed from their predictions. ``vary_backbone``: each record's own
    image encoder is part of its setting (the backbone table), instead of the one ``--set``
    names. A UserError ``none_found`` when nothing is left."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)

    recs = [r for r in records if where is None or where(r)]
    recs = [r for r in recs if all(getattr(setting, f) is None or r.get(f) == getattr(setting, f) for f in SETTING_FLAGS)]
    if not recs:
        raise UserError(none_found or "no run records with these filters")
    chosen = _one_value(recs, setting)
    names = sorted({r["method"] for r in recs if r.get("method") in methods.REGISTRY})
    check_sets(setting.sets, names or ["ce"])
    expected: dict[tuple, object] = {}
    unregistered: Counter = Counter()
    other: dict[tuple, list] = defaultdict(list)
    out = []
    for r in recs:
        m = methods.REGISTRY.get(r["method"])
        if m is None:
            unregistered[r["method"]] += 1
            continue
        bb = backbone_of(r) if vary_backbone else None
        key = (r["method"], r["dataset"], bb)
        if key not in expected:
            sets = list(sets_for(r["method"], setting.sets))
            if setting.text_encoder and hasattr(m.config, "text_encoder"):
                sets.append(f"text_encoder={setting.text_encoder!r}")
            if bb is not None and hasattr(m.config, "backbone"):
                sets.append(f"backbone={bb!r}")
            expected[key] = make_spec(r["method"], r["dataset"], 0, 0, chosen["profile"], chosen["source"], chosen["min_readers"], sets)
        want = expected[key]
        why = _not_current(r, want)
        if why:
            log.warning("leaving out %s: %s", r.get("_path", r.get("key")), why)
        elif r["config_hash"] != want.config_hash:
            other[key].append(r)
        else:
            got, problem = evidence(r)
            if problem:
                log.warning("leaving out %s: %s", r.get("_path", r.get("key")), problem)
            else:
                out.append({**r, "metrics": got, "stored_metrics": r["metrics"], "label": m.label})
    for method, n in sorted(unregistered.items()):
        log.warning("leaving out %d records of %s: no such method is registered here (load its plugin with --plugin)", n, method)
    for (method, dataset, _), rs in other.items():
        diff, flags = how_they_differ(rs[0], expected[(method, dataset, _)])
        log.warning("leaving out %d records of %s on %s of another setting (%s)%s", len(rs), method, dataset, diff,
                    f"; pick them with {flags}" if flags else "")
    if not out and other:  # the folder holds only other settings' records of these cells: say which flags pick them
        picks = sorted({how_they_differ(rs[0], expected[k])[1] for k, rs in other.items()} - {""})
        raise UserError(f"no run records of this setting ({setting.flags() or 'the profile as it is'}); the records here were made "
                        f"with other overrides: pick them with {' or '.join(picks) if picks else '--set'}")
    if not out:
        raise UserError(none_found or "no run records of this setting")
    return out
