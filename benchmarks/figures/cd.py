"""The critical-difference diagram (Demsar 2006): the methods' average ranks over datasets and folds.

Blocks (``--blocks``): ``folds`` (the default) are (dataset, fold) pairs of the requested
tables (with repeated partitions, (dataset, (repeat, fold))), each method's value in a
block its metric on that fold, averaged over seeds (metrics recomputed from the
records' predictions). These blocks share training data and patients, while the
Friedman test assumes independent blocks: the diagram is exploratory, and says so.
``datasets`` gives Demsar's blocks, one per dataset (the mean over its folds). Blocks
that some method lacks are dropped (the Friedman test needs complete blocks). The Friedman test and the Nemenyi critical difference come
from ``benchmarks.stats.ranks`` (scikit-posthocs draws the diagram).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.figures.common import name, plt_, save_figure
from benchmarks.grid import TABLES
from benchmarks.io import atomic_write_text, json_ready
from benchmarks.paths import runs_dir
from benchmarks.records import read_records
from benchmarks.selection import Setting
from benchmarks.stats import block_table, draw_cd, friedman
from benchmarks.tables.build import select, setting_tag, table_datasets

log = logging.getLogger(__name__)
METRICS = ("accuracy", "auc", "macro_f1")


BLOCK_TEXT = {"folds": "(dataset, fold) blocks; they share training data, so exploratory",
              "datasets": "dataset blocks (Demsar 2006)"}


def rank_test(recs: list[dict], tables, metric: str = "accuracy", datasets=None, alpha: float = 0.05, blocks: str = "folds",
              reasons: list | None = None):
    """The Friedman test of the methods of ``tables`` over the blocks of ``recs`` (``blocks``: "folds", the
    (dataset, fold) pairs, or "datasets"); None when fewer than 2 methods or 2 complete blocks remain: said in the
    log, or appended to ``reasons`` when given (a command then says it in its one error line)."""
    wanted = {m for t in tables for m in TABLES[t]["methods"]} | {r["method"] for r in recs if r["dataset"] in
                                                                    {d for t in tables if t in (1, 2) for d in table_datasets(t, datasets)}}
    repeated = any(r.get("repeat", 0) for r in recs)  # with repeated partitions a fold is (repeat, fold)
    values = {(r["method"], r["dataset"], (r.get("repeat", 0), r["fold"]) if repeated else r["fold"], r["seed"]): r["metrics"][metric]
              for r in recs if r["method"] in wanted and r["metrics"].get(metric) is not None}
    held = _Held()
    ranks_log = logging.getLogger(block_table.__module__)
    ranks_log.addFilter(held)  # the dropped blocks are said once: in the warning below, or in the caller's one line
    try:
        table = block_table(values, blocks)
    finally:
        ranks_log.removeFilter(held)
    if table.shape[0] < 2 or table.shape[1] < 2:
        why = (f"{table.shape[0]} methods over {table.shape[1]} complete {BLOCK_TEXT[blocks]} for {metric}"
               + "".join(f" ({r.getMessage().removeprefix('block_table: ')})" for r in held.records) + "; it needs at least 2 of each")
        if reasons is None:
            log.warning("critical-difference diagram: %s", why)
        else:
            reasons.append(why)
        return None
    for r in held.records:
        ranks_log.handle(r)
    return friedman(table, alpha=alpha)


class _Held(logging.Filter):
    """Keeps the log records it sees instead of letting them through."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record):
        self.records.append(record)
        return False


def summary(res) -> dict:
    """The numbers of a Friedman test, for JSON and the report."""
    kind = "folds" if res.blocks and isinstance(res.blocks[0], tuple) else "datasets"
    return {"methods": res.methods, "blocks": [list(b) if isinstance(b, tuple) else [b] for b in res.blocks], "block_kind": kind,
            "blocks_are": BLOCK_TEXT[kind], "exploratory": kind == "folds", "average_ranks": res.average_ranks, "chi2": res.statistic,
            "df": res.df, "p": res.p, "iman_davenport_F": res.iman_davenport, "p_iman_davenport": res.p_iman_davenport, "cd": res.cd,
            "alpha": res.alpha, "nemenyi_p": res.nemenyi_p.round(6).to_dict() if res.nemenyi_p is not None else None}


def draw(res, metric: str, recs: list[dict]):
    """The diagram as a figure, its methods by their display names."""
    from dataclasses import replace  # noqa: PLC0415

    names = {m: name(m) for m in res.methods}
    shown = replace(res, methods=[names[m] for m in res.methods], average_ranks={names[m]: v for m, v in res.average_ranks.items()},
                    nemenyi_p=res.nemenyi_p.rename(index=names, columns=names) if res.nemenyi_p is not None else None)
    r0 = recs[0]
    fig, ax = plt_().subplots(figsize=(7.0, 1.6 + 0.3 * len(res.methods)))
    kind = "folds" if res.blocks and isinstance(res.blocks[0], tuple) else "datasets"
    blocks = (f"{len(res.blocks)} (dataset, fold) blocks (they share training data: exploratory)" if kind == "folds"
              else f"{len(res.blocks)} datasets (Demsar's blocks)")
    draw_cd(shown, ax, title=f"Average rank by {metric} (1 = best) over {blocks}: profile {r0['profile']}, source {r0['source']}")
    return fig


def cmd_cd(args) -> list[Path]:
    runs = args.runs or runs_dir()
    recs = select(read_records(runs), args.tables, Setting.from_args(args), runs, args.datasets)
    blocks = getattr(args, "blocks", "folds")
    reasons: list[str] = []
    res = rank_test(recs, args.tables, args.metric, args.datasets, blocks=blocks, reasons=reasons)
    if res is None:
        raise UserError(f"no critical-difference diagram: {reasons[0]}")
    stem = ("cd_" if blocks == "folds" else "cd_datasets_") + f"{args.metric}_tables{''.join(map(str, args.tables))}_{setting_tag(recs, args.datasets)}"
    paths = save_figure(draw(res, args.metric, recs), args.out, stem)
    atomic_write_text(args.out / f"{stem}.json", json.dumps(json_ready(summary(res)), indent=1, default=str, allow_nan=False))
    print(f"Friedman test of {len(res.methods)} methods by {args.metric} over {len(res.blocks)} blocks: chi2 = {res.statistic:.2f} "
          f"(df {res.df}), p = {res.p:.3g}; Iman-Davenport F = {res.iman_davenport:.2f}, p = {res.p_iman_davenport:.3g}; "
          f"Nemenyi CD = {res.cd:.2f} at alpha {res.alpha:g}")
    return [*paths, args.out / f"{stem}.json"]
