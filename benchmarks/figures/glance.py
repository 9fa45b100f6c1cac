"""Results at one glance: each method's accuracy per table and dataset beside the paper's."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from benchmarks.figures.common import plt_, save_figure
from benchmarks.grid import TABLES, display, extra_method
from benchmarks.paths import runs_dir
from benchmarks.records import read_records
from benchmarks.selection import Setting
from benchmarks.tables.build import PAPER, labels_of, select, setting_tag, table_datasets

log = logging.getLogger(__name__)


def draw_tables(recs: list[dict], tables, paper: dict, datasets=None):
    """A panel per (table, dataset): each method's accuracy over its records (dot: mean; bar:
    min to max over folds and seeds; small ticks: each record) and the paper's (diamond: mean;
    bar: mean +- its reported std). Returns the figure."""
    plt = plt_()
    labels = labels_of(recs)
    by = {}
    for r in recs:
        by.setdefault((r["method"], r["dataset"]), []).append(100 * r["metrics"]["accuracy"])
    panels = [(t, ds) for t in tables for ds in table_datasets(t, datasets)]
    # Each panel's rows: the table's methods, then (Tables 1-2) the others found on its dataset.
    rows_of = {(t, ds): [*TABLES[t]["methods"], *(sorted({m for m, d in by if d == ds and extra_method(m)}) if t in (1, 2) else [])]
               for t, ds in panels}
    # A dataset without records of ours would be the paper's numbers alone: leave its panel out, say so.
    empty = [(t, ds) for t, ds in panels if not any(d == ds for _, d in by)]
    if len(empty) < len(panels):
        for t, ds in empty:
            log.info("table %s: no records on %s, its panel is left out", t, ds)
        panels = [p for p in panels if p not in empty]
    rows = max(len(rows_of[p]) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.38 * rows + 1.6), squeeze=False)
    labelled = set()  # each legend entry once

    def label(what):
        if what in labelled:
            return None
        labelled.add(what)
        return what

    for ax, (t, ds) in zip(axes[0], panels):
        names = rows_of[(t, ds)][::-1]  # the paper's first row on top
        for y, m in enumerate(names):
            accs = by.get((m, ds), [])
            if accs:
                ax.plot([min(accs), max(accs)], [y, y], color="#1f77b4", lw=2, solid_capstyle="butt")
                ax.plot(accs, [y] * len(accs), "|", color="#1f77b4", ms=6)
                ax.plot([np.mean(accs)], [y], "o", color="#1f77b4", ms=5, label=label("ours"))
            ref = paper.get(f"table{t}", {}).get(ds, {}).get(m)
            if ref:
                mean, std = ref["accuracy"]
                ax.errorbar([mean], [y - 0.25], xerr=[std], fmt="D", color="#d62728", ms=4, capsize=2, label=label("paper"))
        ax.set_yticks(range(len(names)), [display(m, labels.get(m)).replace(" (not in the paper)", "*") for m in names], fontsize=7)
        ax.set_title(f"Table {t}: {ds}", fontsize=9)
        ax.set_xlabel("accuracy (%)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels())}
    # Outside the panels, right of the last: inside, it covered the rows at the bottom (a plugin's, added last).
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    r0 = recs[0]
    enc = sorted({r["text_encoder"] for r in recs if r.get("text_encoder")})
    tuned = next((r["tuning"] for r in recs if r.get("tuning")), None)
    fig.suptitle(f"Accuracy per method and dataset: ours{', tuned (validation ' + tuned['objective'] + ')' if tuned else ''} "
                 f"(profile {r0['profile']}, source {r0['source']}"
                 + (f", text encoder {', '.join(enc)}" if enc else "") + ")\ndot: mean, bar: min-max over folds, ticks: each fold; "
                 "paper: diamond, mean +- std; * not in the paper", fontsize=8)
    fig.tight_layout()
    return fig


def cmd_tables(args) -> list[Path]:
    runs = args.runs or runs_dir()
    recs = select(read_records(runs), args.tables, Setting.from_args(args), runs, args.datasets)
    fig = draw_tables(recs, args.tables, json.loads(PAPER.read_text()), args.datasets)
    return save_figure(fig, args.out, f"tables{''.join(map(str, args.tables))}_{setting_tag(recs, args.datasets)}")
