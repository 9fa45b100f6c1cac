"""Studies as records: their names, settings, and what sweeps, tables and figures read of them.

One study per (method, dataset, outer test fold) and setting. Its trials live in
Optuna's storage (``benchmarks.tune.study``); after every finished trial the
worker also writes the study's record, ``<results>/tune/studies/<name>.json``
(atomic): the setting, the budget, every trial (number, state, parameters,
validation value per epoch, final value, who ran it, how long), the counts and
the chosen trial. Everything downstream (``sweep run --tuned``, ``tables
--tuned``, ``figures tuning``, the report) reads these records, never the
storage, so they need neither Optuna nor a database. Trials are records of their
own kind (``"kind": "study"``), kept out of the runs folder: no table shows a
trial as a result.

The chosen configuration of a finished study (as many finished trials, completed
or pruned, as its budget) is its completed trial of the best validation value;
among trials of equal value, the one of the lower validation log loss (accuracy
on a few hundred nodules ties often: going to the earliest trial, the defaults,
would pull the tuned result towards the paper's), then the earliest
(:func:`choice_key`). The paper's defaults are trial 0, so the chosen value is
never below the default's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.io import atomic_write_text
from benchmarks.paths import tune_dir

OBJECTIVES = ("accuracy", "macro_f1", "auc", "qwk")
# The objective needs a metric the validation split has: AUC on binary test sets, QWK on LIDC-A.
OBJECTIVE_DATASETS = {"auc": ("LIDC-B", "LIDC-C"), "qwk": ("LIDC-A",)}
SCHEMA = 1
SAMPLER_SEED = 0


def check_objective(objective: str, datasets) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    allowed = OBJECTIVE_DATASETS.get(objective)
    bad = [d for d in datasets if allowed and d not in allowed]
    if bad:
        raise UserError(f"--objective {objective} is not defined on {', '.join(bad)} (only on {', '.join(allowed)})")
    return objective


@dataclasses.dataclass(frozen=True)
class StudyKey:
    """What names a study: a cell's fold, its setting and the objective."""

    method: str
    dataset: str
    fold: int
    profile: str
    source: str
    min_readers: int
    sets: tuple[str, ...] = ()  # the --set overrides that apply to this method
    objective: str = "accuracy"
    tag: str = ""

    @property
    def name(self) -> str:
        norm = sorted(_normal_set(x) for x in self.sets)  # "lr=1e-2" and "lr=0.01" name one study
        extra = f".set-{hashlib.sha256(json.dumps(norm).encode()).hexdigest()[:8]}" if self.sets else ""
        tag = f".{self.tag}" if self.tag else ""
        return (f"{self.method}.{self.dataset}.fold{self.fold}.{self.profile}.{self.source}.min{self.min_readers}"
                f".{self.objective}{extra}{tag}")


def _normal_set(item: str) -> str:
    import ast  # noqa: PLC0415

    key, _, text = item.partition("=")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = text.strip()
    return f"{key.strip()}={value!r}"


def studies_dir() -> Path:
    return tune_dir() / "studies"


def record_path(name: str) -> Path:
    return studies_dir() / f"{name}.json"


def write_study_record(rec: dict) -> Path:
    path = record_path(rec["study"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rec, indent=1, allow_nan=False, default=_json_default))
    return path


def _json_default(x):
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    raise TypeError(f"not JSON: {type(x).__name__}")


def read_study_record(name: str) -> dict | None:
    """The study record of ``name``, None when there is none; one line when it is damaged."""
    path = record_path(name)
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or rec.get("kind") != "study" or not isinstance(rec.get("trials"), list):
            raise ValueError("not a study record")
    except (OSError, ValueError) as e:
        raise UserError(f"the study record {path} is damaged ({type(e).__name__}: {e}); run `python -m benchmarks.tune run` "
                        "with the same flags again to rewrite it from the storage") from None
    return rec


def read_study_records(root: Path | None = None) -> list[dict]:
    """Every readable study record (a damaged one is skipped with a warning)."""
    import logging  # noqa: PLC0415

    out = []
    for p in sorted((root or studies_dir()).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            logging.getLogger(__name__).warning("skipping %s: not a readable study record (%s)", p, e)
            continue
        if isinstance(rec, dict) and rec.get("kind") == "study":
            out.append(rec)
    return out


def finished(rec: dict) -> int:
    """Trials that count against the budget: completed and pruned."""
    return sum(t["state"] in ("COMPLETE", "PRUNED") for t in rec["trials"])


def choice_key(value: float, log_loss, number: int) -> tuple:
    """How trials rank, best first: the higher validation objective; among equal ones the lower validation
    log loss (the trials agree on the count of right answers, not on how sure they were); then the earlier
    trial (a log loss missing, from a study of an older release, ranks last among the ties)."""
    ll = log_loss if isinstance(log_loss, (int, float)) and log_loss == log_loss else float("inf")
    return (-value, ll, number)


def chosen_trial(rec: dict) -> dict | None:
    """The completed trial of the best value, ties broken by :func:`choice_key`, else None."""
    done = [t for t in rec["trials"] if t["state"] == "COMPLETE" and t.get("value") is not None]
    if not done:
        return None
    return min(done, key=lambda t: choice_key(t["value"], t.get("log_loss"), t["number"]))


def best_so_far(rec: dict) -> list[float | None]:
    """The best completed value after each finished trial, in the order they finished (budget slots)."""
    out, best = [], None
    for t in sorted((t for t in rec["trials"] if t["state"] in ("COMPLETE", "PRUNED")), key=lambda t: (t.get("finished") or 0, t["number"])):
        if t["state"] == "COMPLETE" and t.get("value") is not None:
            best = t["value"] if best is None else max(best, t["value"])
        out.append(best)
    return out


def tuning_of(rec: dict) -> dict:
    """What a tuned run's spec carries of its study (it enters the run's key)."""
    t = chosen_trial(rec)
    return {"study": rec["study"], "trial": t["number"], "budget": rec["budget"], "objective": rec["setting"]["objective"],
            "params": t["params"], "value": round(float(t["value"]), 6), "inner_split": rec["setting"]["inner_hash"][:12],
            "space": rec["setting"]["space_hash"][:12]}


def chosen_sets(tuning: dict) -> list[str]:
    """The chosen parameters as ``--set`` overrides."""
    return [f"{k}={v!r}" for k, v in sorted(tuning["params"].items())]


def study_for_spec(key: StudyKey) -> dict:
    """The finished study record of ``key``; one line when it is missing or not finished."""
    rec = read_study_record(key.name)
    if rec is None:
        raise UserError(f"no study {key.name} in {studies_dir()}; run `python -m benchmarks.tune run` for it first")
    n = finished(rec)
    if n < rec["budget"]:
        raise UserError(f"the study {key.name} has {n} of its {rec['budget']} trials; finish it with `python -m benchmarks.tune run` first")
    if chosen_trial(rec) is None:
        raise UserError(f"the study {key.name} has no completed trial (every trial was pruned or failed)")
    return rec


IDENTITY = ("method_version", "plugin", "backbone_plugin")  # what makes a study one code's: a study of other code chose for that code


def identity_differences(setting: dict, now: dict, keys=IDENTITY) -> list[str]:
    """How a study's ``setting`` differs from ``now`` (a run spec as a dict, or a record) in the code that made it."""
    names = {"method_version": "method version", "plugin": "plugin", "backbone_plugin": "backbone's plugin", "config_hash": "configuration"}
    out = []
    for k in keys:
        have, want = setting.get(k), now.get(k)
        if have != want:
            out.append(f"{names[k]} {str(have)[:24] if k == 'config_hash' else have} there, {str(want)[:24] if k == 'config_hash' else want} now")
    return out


def retune_command(setting: dict, tag: str) -> str:
    """The `tune run` that makes the study of ``setting`` anew, under ``tag`` (the old study keeps its name)."""
    import shlex  # noqa: PLC0415

    from benchmarks.data.protocols import DEFAULT_MIN_READERS  # noqa: PLC0415

    s = setting
    parts = ["python -m benchmarks.tune run", f"--methods {s['method']}", f"--datasets {s['dataset']}", f"--folds {s['fold']}",
             f"--profile {s['profile']}", f"--source {s['source']}"]
    parts += [f"--min-readers {s['min_readers']}"] if s.get("min_readers") not in (None, DEFAULT_MIN_READERS) else []
    parts += [f"--set {shlex.quote(x)}" for x in s.get("sets") or []]
    parts += [f"--objective {s['objective']}"] if s.get("objective", "accuracy") != "accuracy" else []
    parts += [f"--seed {s['seed']}"] if s.get("seed") else []
    return " ".join([*parts, f"--budget {s['budget']}", f"--tag {tag}"])


def new_tag(setting: dict, now: dict, tag: str = "") -> str:
    """A tag for a study re-tuned for the code of ``now``: the plugin's hash or the method's version."""
    import re  # noqa: PLC0415

    ident = now.get("plugin") or now.get("backbone_plugin")
    mark = re.sub(r"[^A-Za-z0-9]+", "-", ident.split("#")[-1].split("@")[-1])[:8] if ident else f"v{now.get('method_version')}"
    return f"{tag}-{mark}" if tag else mark


def check_identity(rec: dict, now: dict, keys=IDENTITY, tag: str = "") -> None:
    """A UserError when study record ``rec`` was tuned for other code than ``now``'s (another method version or
    plugin identity): naming the difference and the command that tunes it anew."""
    diff = identity_differences(rec.get("setting") or {}, now, keys)
    if diff:
        t = new_tag(rec["setting"], now, tag)
        raise UserError(f"the study {rec['study']} was tuned for other code ({'; '.join(diff)}): its choice is not this code's; "
                        f"tune it anew: `{retune_command(rec['setting'], t)}`, then use --tag {t}")


def check_tuned_records(recs: list[dict], tag: str = "") -> None:
    """Every tuned record's study (its record, where still there) was tuned for the code that made the record:
    a UserError otherwise (``tables --tuned``, ``report --tuned``), naming the difference and the re-tune command."""
    seen = set()
    for r in recs:
        name = (r.get("tuning") or {}).get("study")
        if not name or name in seen:
            continue
        seen.add(name)
        study = read_study_record(name)
        if study is not None:
            check_identity(study, r, IDENTITY, tag)


def tuned_specs(specs: list, sets=(), objective: str = "accuracy", tag: str = "") -> list:
    """The tuned runs of a sweep's matrix: each spec's method, dataset, fold and seed with the
    configuration its finished study chose (the ``--set`` overrides ``sets`` that apply to its
    method, plus the chosen parameters), naming the study in its ``tuning``; one line naming the
    first study missing or unfinished, or tuned for other code than this (another method version,
    plugin identity or resolved configuration: :func:`check_identity`)."""
    from benchmarks.lifecycle import make_spec, sets_for  # noqa: PLC0415

    out = []
    for s in specs:
        own = sets_for(s.method, sets)
        key = StudyKey(s.method, s.dataset, s.fold, s.profile, s.source, s.min_readers, tuple(own), objective, tag)
        rec = study_for_spec(key)
        base = make_spec(s.method, s.dataset, s.fold, s.seed, s.profile, s.source, s.min_readers, own, split="inner")
        check_identity(rec, {"method_version": base.method_version, "plugin": base.plugin, "backbone_plugin": base.backbone_plugin,
                             "config_hash": base.config_hash}, (*IDENTITY, "config_hash"), tag)
        tuning = tuning_of(rec)
        out.append(make_spec(s.method, s.dataset, s.fold, s.seed, s.profile, s.source, s.min_readers,
                             [*own, *chosen_sets(tuning)], tuning=tuning))
    return out
