"""Training curves from the records: loss terms (and recorded test metrics) per epoch."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from benchmarks import interpret as ip
from benchmarks.figures.common import name, plt_, save_figure, stem

log = logging.getLogger(__name__)


SKIP_KEYS = ("epoch", "seconds", "lr", "test")
# Panel titles of the loss terms the methods log (others show their own name), in panel order.
TERM_TITLES = {
    "loss": "total loss", "ce": "cross-entropy", "nll": "negative log-likelihood", "cumulative_bce": "cumulative BCE (CORF)",
    "ic": "L_IC image-class alignment", "ia": "L_IA image-attribute alignment", "ca": "L_CA class-attribute alignment",
}


def cmd_curves(args) -> list[Path]:
    plt = plt_()
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    recs = ip.find_records(args.methods, args.dataset, args.folds, args.setting, args.seed, args.runs)
    terms: list[str] = []
    for r in recs.values():
        for h in r["history"]:
            terms += [k for k in h if k not in SKIP_KEYS and k not in terms]
    order = list(TERM_TITLES)
    terms.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
    tests = [k for k in ("accuracy", "macro_f1") if any("test" in h for r in recs.values() for h in r["history"])]
    panels = terms + [f"test {k}" for k in tests]
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.8 * ncol, 3.0 * nrow), squeeze=False)
    colours = plt.get_cmap("tab10")
    for p, key in enumerate(panels):
        ax = axes[p // ncol, p % ncol]
        for n, m in enumerate(args.methods):
            series = []
            for f in args.folds:
                hist = recs[(m, f)]["history"]
                if key.startswith("test "):
                    pts = [(h["epoch"], h["test"][key[5:]]) for h in hist if "test" in h]
                else:
                    pts = [(h["epoch"], h[key]) for h in hist if key in h]
                if pts:
                    series.append(np.array(pts, dtype=float))
            if not series:
                continue
            length = min(len(s) for s in series)
            x = series[0][:length, 0]
            ys = np.stack([s[:length, 1] for s in series])
            ax.plot(x, ys.mean(0), color=colours(n), marker="o" if length < 12 else None, ms=3, label=name(m))
            if len(series) > 1:
                ax.fill_between(x, ys.min(0), ys.max(0), color=colours(n), alpha=0.15, lw=0)
        ax.set_title(key if key.startswith("test ") else TERM_TITLES.get(key, f"loss term: {key}"), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key.removeprefix("test "))
        ax.legend(fontsize=7)
    for p in range(len(panels), nrow * ncol):
        axes[p // ncol, p % ncol].axis("off")
    folds = ", ".join(map(str, args.folds))
    band = "; line: mean over folds, band: min to max" if len(args.folds) > 1 else ""
    fig.suptitle(f"Training curves: {args.dataset}, fold{'s' if len(args.folds) > 1 else ''} {folds}{band}\n"
                 f"{ip.setting_of(recs.values())}", fontsize=10)
    fig.tight_layout()
    first = recs[(args.methods[0], args.folds[0])]
    return save_figure(fig, args.out, stem("curves", args.dataset, None, first, args.methods))


