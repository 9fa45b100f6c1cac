"""t-SNE of a test fold's image features, a panel per method."""
from __future__ import annotations

import logging
from pathlib import Path

from benchmarks import interpret as ip
from benchmarks.figures.common import CLASS_COLOURS, name, plt_, save_figure, stem
from benchmarks.figures.models import device, rebuilt

log = logging.getLogger(__name__)


def cmd_tsne(args) -> list[Path]:
    plt = plt_()
    recs = ip.find_records(args.methods, args.dataset, [args.fold], args.setting, args.seed, args.runs)
    dev = device(args.device)
    first = recs[(args.methods[0], args.fold)]
    data = ip.load_test(first)
    panels = []
    for m, (_, _, feats, pred) in rebuilt(recs, args.methods, args.fold, data, dev).items():
        log.info("t-SNE of %s: %d x %d features", m, *feats.shape)
        panels.append((m, ip.tsne_embed(feats, seed=args.seed), pred))
    y = data.test.labels
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.6), squeeze=False)
    for ax, (m, emb, pred) in zip(axes[0], panels):
        wrong = pred != y
        for c in data.test_class_names:
            k = data.class_names.index(c)
            colour = CLASS_COLOURS.get(c, "grey")
            ok, bad = (y == k) & ~wrong, (y == k) & wrong
            ax.scatter(emb[ok, 0], emb[ok, 1], s=14, c=colour, alpha=0.75, linewidths=0, label=f"{c} ({int((y == k).sum())})")
            ax.scatter(emb[bad, 0], emb[bad, 1], s=30, c=colour, marker="X", edgecolors="black", linewidths=0.6)
        ax.scatter([], [], s=30, c="lightgrey", marker="X", edgecolors="black", linewidths=0.6,
                   label=f"misclassified ({int(wrong.sum())})")
        ax.set_title(f"{name(m)}: accuracy {100 * (1 - wrong.mean()):.1f}%")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.legend(loc="best", fontsize=7, frameon=True, title="true class (X: misclassified)", title_fontsize=7)
    fig.suptitle(f"t-SNE of test-fold image features (pooled, 512-d): {args.dataset} fold {args.fold}, "
                 f"{len(y)} nodules\n{ip.setting_of(recs.values())}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, args.out, stem("tsne", args.dataset, args.fold, first, args.methods))


