"""Grad-CAM over the nodule's central axial slice, with the readers' consensus contour: a row per nodule, a column per method."""
from __future__ import annotations

import logging
from pathlib import Path

from benchmarks import interpret as ip
from benchmarks.errors import UserError
from benchmarks.figures.common import CONTOUR, FOOTPRINT, name, plt_, save_figure, stem
from benchmarks.figures.models import device, index_rows, rebuilt

log = logging.getLogger(__name__)


def cmd_gradcam(args) -> list[Path]:
    from matplotlib.lines import Line2D  # noqa: PLC0415

    from benchmarks.data.masks import consensus_crop_masks  # noqa: PLC0415

    plt = plt_()
    if args.nodules < 1:
        raise UserError("--nodules must be at least 1")
    recs = ip.find_records(args.methods, args.dataset, [args.fold], args.setting, args.seed, args.runs)
    dev = device(args.device)
    first = recs[(args.methods[0], args.fold)]
    data = ip.load_test(first)
    built = rebuilt(recs, args.methods, args.fold, data, dev, args.layer)
    models = {m: b[0] for m, b in built.items()}
    probs = {m: b[1] for m, b in built.items()}
    preds = {m: b[3] for m, b in built.items()}
    ids = list(data.test.nodule_ids)
    class_idx = [data.class_names.index(c) for c in data.test_class_names]
    if args.ids:
        unknown = [i for i in args.ids if i not in ids]
        if unknown:
            raise UserError(f"nodule {unknown[0]} is not in the test set of {args.dataset} fold {args.fold}")
        rows = [ids.index(i) for i in args.ids]
        rule = "nodules given by --ids"
    else:
        rows = ip.pick_nodules(data.test.labels, [probs[m] for m in args.methods], class_idx, args.nodules, ids)
        rule = ("rows picked by rule: the hardest nodules every method gets right (smallest mean margin), "
                "then the most confidently wrong ones")
    index = index_rows(data.min_readers, data.test.nodule_ids[rows])
    masks = consensus_crop_masks(index)  # (R, 32, 32, 32)
    fps = ip.footprint(masks)  # (R, 32, 32)
    images = data.test.images[rows]
    cams = {m: ip.gradcam(models[m], images, preds[m][rows], dev, args.layer) for m in args.methods}
    mid = images.shape[1] // 2  # the central axial slice: the 17th of 32, half a sample from the centroid
    ncol = 1 + len(args.methods)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.3 * ncol, 2.45 * len(rows) + 0.9), squeeze=False)
    im = None
    for r, i in enumerate(rows):
        true = data.class_names[data.test.labels[i]]
        for c in range(ncol):
            ax = axes[r, c]
            ax.imshow(images[r, mid], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if c > 0:
                m = args.methods[c - 1]
                im = ax.imshow(cams[m][r], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
                p = preds[m][i]
                verdict = "right" if p == data.test.labels[i] else "wrong"
                # The probability among the test classes, the ones the decision chooses from.
                p_test = probs[m][i, p] / probs[m][i, class_idx].sum()
                zero = "; zero map" if not cams[m][r].any() else ""
                ax.set_xlabel(f"{data.class_names[p]} {p_test:.2f} ({verdict}{zero})", fontsize=7)
            if masks[r, mid].any():
                ax.contour(masks[r, mid], levels=[0.5], colors=CONTOUR, linewidths=1.0)
            if fps[r].any():
                ax.contour(fps[r], levels=[0.5], colors=FOOTPRINT, linewidths=0.7, linestyles="--")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("CT slice" if c == 0 else name(args.methods[c - 1]), fontsize=9)
        axes[r, 0].set_ylabel(f"{ids[i].replace('LIDC-IDRI-', '')}\n{true}, malignancy {data.test.malignancy[i]:.2f}", fontsize=7)
    handles = [Line2D([], [], color=CONTOUR, lw=1.2, label="readers' 50% consensus, this slice"),
               Line2D([], [], color=FOOTPRINT, lw=1.0, ls="--", label="consensus footprint, all slices, +1 px (scored)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"Grad-CAM at {args.layer} for the predicted class (under each map: predicted class, its probability among the "
                 f"test classes): {args.dataset} fold {args.fold}\n"
                 f"{ip.setting_of(recs.values())}; {rule}", fontsize=8)
    fig.tight_layout(rect=(0, 0.035, 0.93, 1))
    if im is not None:
        cax = fig.add_axes((0.94, 0.2, 0.015, 0.6))
        fig.colorbar(im, cax=cax, label="Grad-CAM (scaled to [0, 1])")
    return save_figure(fig, args.out, stem(f"gradcam_{args.layer}", args.dataset, args.fold, first, args.methods))


