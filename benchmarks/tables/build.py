"""The numbers of Tables 1-3 (and of CE vs CLIP-Lung per backbone), from the records of one setting.

A cell is one method on one dataset: its records over folds and seeds, each
metric recomputed from the record's own test predictions (``benchmarks.selection``).
Per metric (in percent; the AUC as a fraction):
  mean, std     the mean and sample standard deviation (ddof = 1) over folds of
                each fold's mean over seeds (the paper's ±: the spread over folds);
  seed_std      the pooled within-fold standard deviation over seeds (None with one seed);
  interval      accuracy and (binary test sets) AUC: the 95% patient bootstrap of that
                mean, patients resampled within their fold (``benchmarks.stats``);
  with repeated partitions: the mean over partitions, std over the first partition's
  folds, partition_std the spread of the partitions' means (the interval: the first
  partition's); variance: the cell's variance split into partition, fold and seed.
Against a reference method (CLIP-Lung unless ``--reference``), per dataset and metric,
on units = (repeat, fold) test folds, each the mean over the seeds both methods have:
the mean difference, the interval and p of the corrected resampled t-test (Nadeau &
Bengio 2003; n = folds x partitions), or the Wilcoxon signed-rank test's p (``--test
wilcoxon``), Holm-adjusted across the methods of the table, and P(method > reference)
with its bootstrap interval (Bouthillier et al. 2021). A mark (``significant``) only
from a rule that kept its level in the calibration (``tables.levels``); each comparison
and each table's dataset carries the smallest difference the corrected t would detect
with 80% power (``detectable``). Tables 1-2 also get the
radiologists' reference row (``readers``). See ``benchmarks/stats/__init__.py`` and
docs/statistics.md.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.grid import BACKBONE_TABLE, TABLES, cells, extra_method
from benchmarks.paths import runs_dir
from benchmarks.records import backbone_of
from benchmarks.selection import Setting
from benchmarks.selection import select as select_setting
from benchmarks.tables.levels import comparison_levels, detectable_entry, warn_uncalibrated

# The paper's reported numbers, typed from it: package data, so that an installed wheel has them too.
PAPER = Path(__file__).resolve().parent.parent / "reported" / "clip_lung_miccai2023.json"
TESTS = ("corrected_t", "wilcoxon")
N_BOOT = 2000
ALPHA = 0.05


def table_datasets(t: int, datasets=None) -> tuple[str, ...]:
    """The datasets of table ``t``, restricted to ``datasets`` (``--datasets``) when given."""
    return tuple(d for d in TABLES[t]["datasets"] if datasets is None or d in datasets)


def select(records: list[dict], tables, setting: Setting | None = None, runs: Path | None = None, datasets=None,
           left_out: dict | None = None) -> list[dict]:
    """The records of the tables' cells (and of other methods on the datasets of Tables 1-2) in one
    setting (``benchmarks.selection``: the ``--set`` overrides pick the image encoder too);
    ``left_out``, when given, is filled with {(method, dataset): why} of the cells whose every record
    was left out (``build`` keeps their rows)."""
    want = {c for c in cells(tables) if datasets is None or c[1] in datasets}
    extra_ds = {ds for t in tables if t in (1, 2) for ds in table_datasets(t, datasets)}

    def where(r):
        return (r.get("method"), r.get("dataset")) in want or (extra_method(r.get("method")) and r.get("dataset") in extra_ds)

    return select_setting(records, setting or Setting(), where, left_out=left_out,
                          none_found=f"no run records for tables {', '.join(map(str, tables))} in {runs or runs_dir()} with these filters; "
                          "run them with `python -m benchmarks.sweep run` or `python -m benchmarks.run`")


def flat_metrics(metrics: dict) -> dict[str, float]:
    """{"accuracy", "recall.<class>", "f1.<class>", "auc"} of a record's metrics: accuracy, recall and
    F1 in percent, the AUC (binary test sets) as a fraction."""
    out = {"accuracy": 100.0 * metrics["accuracy"]}
    for kind in ("recall", "f1"):
        for c, v in metrics[kind].items():
            out[f"{kind}.{c}"] = 100.0 * v
    if metrics.get("auc") is not None:
        out["auc"] = metrics["auc"]
    return out


def _values(recs: list[dict]) -> dict[str, dict[tuple, float]]:
    """{metric: {(repeat, fold, seed): value}} of a cell's records (a record from before repeats: repeat 0)."""
    per: dict[str, dict[tuple, float]] = defaultdict(dict)
    for r in recs:
        for k, v in flat_metrics(r["metrics"]).items():
            per[k][(r.get("repeat", 0), r["fold"], r["seed"])] = v
    return per


VARIANCE_METRICS = ("accuracy", "auc")  # the metrics whose variance is split into partition, fold and seed


def cell_stats(recs: list[dict], n_boot: int = N_BOOT, boot_seed: int = 0) -> dict:
    """The numbers of one cell (see the module's docstring)."""
    from benchmarks.stats import cell_components, cell_intervals, unit_summary  # noqa: PLC0415  (scipy: deferred for --help speed)

    metrics, variance = {}, {}
    for k, v in _values(recs).items():
        s = unit_summary(v)
        metrics[k] = {"mean": s.mean, "std": s.std, "seed_std": s.seed_std, "n": len(v), "n_folds": s.n_folds, "n_seeds": s.n_seeds}
        if s.n_repeats > 1:  # repeated partitions: the spread of the partitions' means beside the paper's ± (repeat 0's folds)
            metrics[k].update(partition_std=s.partition_std, n_repeats=s.n_repeats, n_units=s.n_units)
        if k in VARIANCE_METRICS:
            variance[k] = cell_components(v)
    repeats = sorted({r.get("repeat", 0) for r in recs})
    first = [r for r in recs if r.get("repeat", 0) == repeats[0]]
    out = {"metrics": metrics, "folds": sorted({r["fold"] for r in first}), "seeds": sorted({r["seed"] for r in recs}), "interval": {},
           "variance": variance}
    if len(repeats) > 1:
        out["repeats"] = repeats
    if n_boot:
        # The patient bootstrap of the first partition's mean (repeat 0: the paper's folds): partitions reuse the same
        # patients, so resampling each partition's folds independently would treat one patient as several.
        for k, b in cell_intervals(first, n_boot=n_boot, seed=boot_seed, alpha=ALPHA).items():
            scale = 100.0 if k == "accuracy" else 1.0
            out["interval"][k] = {"estimate": scale * b.estimate, "low": scale * b.low, "high": scale * b.high, "n_boot": b.n_boot,
                                  "n_valid": b.n_valid, "seed": b.seed, "method": "patient bootstrap within folds, percentile"}
    # Records made on partial crops (a pilot download, scans that could not be read): the cell says how
    # much of the protocol had crops, and the tables mark it, so it never passes for the whole.
    partial = [r["data"]["scope"] for r in recs if ((r.get("data") or {}).get("scope") or {}).get("partial")]
    if partial:
        out["partial"] = partial[0].get("protocol") or {k: partial[0][k] for k in ("nodules_with_crops", "nodules_of_fold")}
    return out


def comparisons(cells_: dict[str, list[dict]], reference: str, test: str = "corrected_t") -> dict[str, dict]:
    """{method: {metric: comparison}} of every method of one table's dataset against ``reference``
    (``cells_``: method -> its records), Holm-adjusted per metric across the methods."""
    from benchmarks.stats import compare_to_reference, split_sizes  # noqa: PLC0415

    if reference not in cells_:
        return {}
    n_train, n_test = split_sizes([r for recs in cells_.values() for r in recs], train_key="n_train_used")
    values = {m: _values(recs) for m, recs in cells_.items()}
    out: dict[str, dict] = defaultdict(dict)
    for metric in values[reference]:
        per = {m: v[metric] for m, v in values.items() if metric in v}
        for m, c in compare_to_reference(per, reference, n_train=n_train, n_test=n_test, test=test, alpha=ALPHA).items():
            lv = comparison_levels(test, c.keys, c.diffs, n_train, n_test)  # the marks it may print, its MDE
            rejects = bool(c.test.reachable and c.p_holm is not None and c.p_holm < ALPHA)
            out[m][metric] = {
                "mean": c.t.mean, "low": c.t.low, "high": c.t.high, "n": len(c.keys), "n_repeats": len({u[0] for u in c.keys}),
                "unit": "(repeat, fold), seeds averaged",
                "prob": {**c.prob.as_dict(), "verdict": lv["prob_verdict"]} if c.prob else None, "test": c.test.test, "p": c.test.p,
                "p_holm": c.p_holm, "reachable": c.test.reachable, "min_p": c.test.min_p, "reason": c.test.reason, "text": c.text,
                "rejects": rejects, "verdict": lv["verdict"], "significant": rejects and lv["verdict"]["mark_allowed"],  # the * printed
                "n_train": n_train, "n_test": n_test, "sd": lv["sd"], "mde": lv["mde"],
            }
    return dict(out)


def build(records: list[dict], tables, datasets=None, reference: str = "clip_lung", test: str = "corrected_t",
          n_boot: int = N_BOOT, boot_seed: int = 0, left_out: dict | None = None) -> dict:
    """Every number of the requested tables: {table: {dataset: {method: cell}}}, the paper's methods
    first, then (Tables 1-2) the other methods found in the records, by name. A cell holds its
    statistics and, for every method but the reference, ``vs_reference``: its comparisons. A method
    outside the paper whose every record on a dataset was left out (``left_out``, from ``select``)
    keeps its row there, empty, as the paper's methods do."""
    if test not in TESTS:
        raise UserError(f"--test {test!r}: choose one of {', '.join(TESTS)}")
    warn_uncalibrated(test, records)
    by_cell = defaultdict(list)
    for r in records:
        by_cell[(r["method"], r["dataset"])].append(r)
    out = {}
    for t in tables:
        out[t] = {}
        dsets = table_datasets(t, datasets)
        extras = sorted({m for m, ds in [*by_cell, *(left_out or {})] if extra_method(m) and ds in dsets}) if t in (1, 2) else []
        for ds in dsets:
            methods = (*TABLES[t]["methods"], *extras)
            found = {m: by_cell[(m, ds)] for m in methods if by_cell.get((m, ds))}
            versus = comparisons(found, reference, test)
            out.setdefault("detectable", {}).setdefault(t, {})[ds] = detectable_entry(versus, "accuracy", reference)
            out[t][ds] = {}
            for m in methods:
                entry = cell_stats(found[m], n_boot, boot_seed) if m in found else None
                if entry is not None and m != reference:
                    entry["vs_reference"] = versus.get(m)
                out[t][ds][m] = entry
    if any(t in (1, 2) for t in tables) and records:
        out["readers"] = readers_rows({ds for t in tables if t in (1, 2) for ds in table_datasets(t, datasets)}, records[0].get("min_readers", 2))
    return out


_READERS: dict[tuple, dict | None] = {}  # (dataset, min readers) -> its row: the annotations do not change within a process


def _reader_row(dataset: str, min_readers: int) -> dict | None:
    import logging  # noqa: PLC0415

    from benchmarks.stats.readers import reference_row  # noqa: PLC0415  (pandas: deferred for --help speed)

    if (dataset, min_readers) not in _READERS:
        try:
            _READERS[(dataset, min_readers)] = reference_row(dataset, min_readers, repeat=0)
        except (UserError, ValueError) as e:  # no annotations for this rule: the tables go on without the row
            logging.getLogger(__name__).warning("no readers' reference row for %s: %s", dataset, e)
            _READERS[(dataset, min_readers)] = None
    return _READERS[(dataset, min_readers)]


def readers_rows(datasets, min_readers: int) -> dict:
    """{dataset: the radiologists' leave-one-out agreement on the same test folds (repeat 0)}: a reference
    row (``benchmarks.stats.readers``), shown in Tables 1-2 and the report, never ranked, bolded or compared."""
    return {ds: _reader_row(ds, int(min_readers)) for ds in sorted(datasets)}


# ---------------------------------------------------------------- CE vs CLIP-Lung per backbone
def select_backbones(records: list[dict], setting: Setting | None = None, runs: Path | None = None) -> list[dict]:
    """The records of CE and CLIP-Lung on LIDC-A/B/C, every backbone, one setting (each record's own
    backbone is part of its setting)."""
    def where(r):
        return r.get("method") in BACKBONE_TABLE["methods"] and r.get("dataset") in BACKBONE_TABLE["datasets"]

    return select_setting(records, setting or Setting(), where, vary_backbone=True,
                          none_found=f"no records of {' or '.join(BACKBONE_TABLE['methods'])} in {runs or runs_dir()} with these filters; "
                          "run them with `python -m benchmarks.sweep run --backbones ...`")


def build_backbones(records: list[dict], test: str = "corrected_t", n_boot: int = N_BOOT) -> dict:
    """{backbone: {dataset: {"ce": cell, "clip_lung": cell, "gain": CLIP-Lung minus CE (accuracy)}}},
    the paper's backbone first; the gain is the paired comparison of the tables (CE as reference)."""
    from methods.backbones import DEFAULT_BACKBONE  # noqa: PLC0415  (torch: deferred for --help speed)

    warn_uncalibrated(test, records)
    by = defaultdict(list)
    for r in records:
        by[(backbone_of(r), r["dataset"], r["method"])].append(r)
    names = sorted({b for b, _, _ in by}, key=lambda b: (b != DEFAULT_BACKBONE, b))
    out = {}
    for b in names:
        out[b] = {}
        for ds in BACKBONE_TABLE["datasets"]:
            ce, cl = by.get((b, ds, "ce"), []), by.get((b, ds, "clip_lung"), [])
            gain = comparisons({"ce": ce, "clip_lung": cl}, "ce", test).get("clip_lung", {}).get("accuracy") if ce and cl else None
            out[b][ds] = {"ce": cell_stats(ce, n_boot) if ce else None, "clip_lung": cell_stats(cl, n_boot) if cl else None, "gain": gain}
    return out


def labels_of(records: list[dict], left_out: dict | None = None) -> dict[str, str]:
    """{method: its row label} (``label`` on its class; the registered name when it has none), for the
    methods of ``records`` and those of the ``left_out`` cells (their label from the registry)."""
    import methods  # noqa: PLC0415  (torch: deferred for --help speed)

    out = {m: methods.REGISTRY[m].label for m, _ in (left_out or {}) if m in methods.REGISTRY}
    return {**out, **{r["method"]: r.get("label") or r["method"] for r in records}}


def setting_tag(records: list[dict], datasets=None) -> str:
    """'<profile>_<source>' of one setting's records, in every file name the tables and figures make;
    preceded by the datasets when ``--datasets`` keeps some ('LIDC-B_quick_phantom') and followed by
    the plugins whose methods or backbones made records among them ('quick_phantom_coral'), so that
    the files of other datasets or plugins never overwrite these."""
    ds = "+".join(sorted(datasets)) + "_" if datasets else ""
    plugins = sorted({plugin_name(p) for r in records for p in (r.get("plugin"), r.get("backbone_plugin")) if p})
    tuned = tuned_tag(records)  # the tuned setting's files never overwrite the paper's, nor another objective's or tag's
    return f"{ds}{records[0]['profile']}_{records[0]['source']}{tuned}" + "".join(f"_{p}" for p in plugins)


def tuned_tag(records: list[dict]) -> str:
    """'' for untuned records; '_tuned' for records tuned on validation accuracy, '_tuned-auc' on another
    objective, '_tuned-auc-<tag>' for studies of a ``--tag``."""
    tunings = [r["tuning"] for r in records if r.get("tuning")]
    if not tunings:
        return ""
    t0 = tunings[0]
    extra = str(t0.get("study", "")).split(".")[7:]  # <method>.<dataset>.fold<f>.<profile>.<source>.min<r>.<objective>[.set-<hash>][.<tag>]
    tag = ".".join(extra[1:] if extra and extra[0].startswith("set-") else extra)
    parts = ([t0["objective"]] if t0.get("objective", "accuracy") != "accuracy" else []) + ([tag] if tag else [])
    return "_tuned" + "".join(f"-{re.sub(r'[^A-Za-z0-9.]+', '-', p)}" for p in parts)


def plugin_name(identity: str) -> str:
    """A plugin's name for a file name: 'coral@0.1.0' -> 'coral', 'my_method.py#0123abcd' -> 'my_method'."""
    name = re.split(r"[@#]", identity, maxsplit=1)[0].strip()
    name = name[:-3] if name.endswith(".py") else name
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-.") or "plugin"
