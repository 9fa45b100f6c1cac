"""What moves a cell: each cell's accuracy variance split into partition, fold and seed (a small figure).

The shares come from the tables' numbers (``benchmarks.tables.build``: ``cell["variance"]["accuracy"]``,
``benchmarks.stats.variance``); one horizontal bar per (dataset, method) cell, its segments the shares
of the partition, the fold and the seed (a level the records cannot separate, e.g. the seed with one
seed, has no segment, and the bar's label says which). The report shows it.
"""
from __future__ import annotations

from benchmarks.figures.common import name, plt_

COLOURS = {"partition": "#4c72b0", "fold": "#dd8452", "seed": "#55a868", "hyperparameters": "#c44e52"}


def variance_rows(data: dict, tables, metric: str = "accuracy") -> list[tuple[str, str, dict]]:
    """[(dataset, method, decomposition)] of every cell of ``tables`` in the tables' numbers ``data`` that has one."""
    rows, seen = [], set()
    for t in tables:
        for ds, cells in (data.get(t) or {}).items():
            for m, e in cells.items():
                comp = ((e or {}).get("variance") or {}).get(metric)
                if comp and (ds, m) not in seen:
                    seen.add((ds, m))
                    rows.append((ds, m, comp))
    return rows


def draw_variance(rows: list[tuple[str, str, dict]], metric: str = "accuracy"):
    """The figure: one bar per cell, the shares of its variance (sum 1) by level."""
    plt = plt_()
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.28 * max(1, len(rows))))
    labels = []
    for i, (ds, m, comp) in enumerate(rows):
        left = 0.0
        for level in ("partition", "fold", "seed", "hyperparameters"):
            share = (comp.get("shares") or {}).get(level)
            if share:
                ax.barh(i, share, left=left, color=COLOURS[level], label=level if level not in ax.get_legend_handles_labels()[1] else None)
                left += share
        unseen = [lv for lv in ("partition", "seed") if (comp.get("components") or {}).get(lv) is None]
        labels.append(f"{name(m)}, {ds}" + (f" (no {'/'.join(unseen)} level)" if unseen else ""))
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance of {metric} (nested ANOVA, method of moments)")
    if rows:
        ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)  # above the bars, never on them
    fig.tight_layout()
    return fig
