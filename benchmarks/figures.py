"""python -m benchmarks.figures: interpretability figures from run records (Fig. 3 of the paper and beyond).

  tsne          t-SNE of the test fold's image features, a panel per method
  gradcam       Grad-CAM maps over the nodule's central axial slice, with the
                readers' consensus contour, a row per nodule, a column per method
  localisation  share of the Grad-CAM mass inside the readers' consensus mask,
                per method, mean ± std over folds (--tables: Markdown + LaTeX)
  curves        loss terms (and recorded test metrics) per epoch

  python -m benchmarks.figures tsne --dataset LIDC-B --methods clip cocoop clip_lung --fold 0
  python -m benchmarks.figures gradcam --dataset LIDC-B --nodules 6
  python -m benchmarks.figures localisation --dataset LIDC-B --tables
  python -m benchmarks.figures curves --dataset LIDC-B --methods ce clip_lung

Every command reads the records (and the final weights saved beside them) of
one setting: if the runs folder holds several profiles, sources, text encoders
or label rules for the requested runs, pick one with --profile, --source,
--text-encoder or --min-readers. Figures go to results/figures/ as PNG and
PDF, their titles naming the dataset, fold, profile, source and text encoder.
See benchmarks/interpret.py for the Grad-CAM target and the localisation score.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from benchmarks.cli import (
    SEED_MAX,
    ArgumentParser,
    add_folds_seeds,
    add_plugin_flag,
    add_setting_filters,
    add_tables_flag,
    int_in,
    lazy_import,
    load_plugins,
    parse_folds,
)
from benchmarks.data.protocols import PROTOCOLS
from benchmarks.errors import UserError, cli_main
from benchmarks.grid import DISPLAY
from benchmarks.io import atomic_write_bytes, atomic_write_text, writable_dir
from benchmarks.records import check_one_setting

log = logging.getLogger("benchmarks.figures")
ip = lazy_import("benchmarks.interpret")  # torch: loaded when a figure is drawn, not for --help
# interpret.LAYERS and DEFAULT_LAYER, spelled out for the parser (a test keeps them equal).
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_LAYER = "layer4"

DEFAULT_METHODS = ("clip", "cocoop", "clip_lung")
CLASS_COLOURS = {"benign": "#1b9e77", "unsure": "#7570b3", "malignant": "#d95f02"}
CONTOUR = "#39ff14"  # the consensus contour on the slice
FOOTPRINT = "#ffd700"  # the scored footprint


def _name(method: str) -> str:
    return DISPLAY.get(method, method)


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """PNG (200 dpi) and PDF, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=200, bbox_inches="tight")
        p = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(p, buf.getvalue())
        paths.append(p)
    _plt().close(fig)
    return paths


def _methods_tag(methods) -> str:
    """'' for the default trio, else '_' + the methods joined by '+', so that a call with
    other methods writes its own files instead of overwriting the default figure."""
    return "" if tuple(methods) == DEFAULT_METHODS else "_" + "+".join(methods)


def _stem(kind: str, dataset: str, fold, rec: dict, methods=DEFAULT_METHODS) -> str:
    """File name of a figure: kind, dataset, fold, profile, source (and seed, label rule,
    method list when not the defaults)."""
    from benchmarks.data.protocols import DEFAULT_MIN_READERS  # noqa: PLC0415

    f = f"_fold{fold}" if fold is not None else ""
    extra = (f"_seed{rec['seed']}" if rec.get("seed") else "") + \
        (f"_min{rec['min_readers']}" if rec.get("min_readers", DEFAULT_MIN_READERS) != DEFAULT_MIN_READERS else "")
    return f"{kind}_{dataset}{f}_{rec['profile']}_{rec['source']}{extra}{_methods_tag(methods)}"


def _device(name: str):
    from benchmarks.train import resolve_device  # noqa: PLC0415

    return resolve_device(name)


def _rebuilt(recs: dict, methods: list[str], fold: int, data, device, layer: str | None = None) -> dict:
    """{method: (model, probs (N, K), features (N, 512), decided class (N,))} on ``data``'s test fold,
    each record checked against the folds (and ``layer`` against the model) before any work."""
    from benchmarks.metrics import decide  # noqa: PLC0415

    out = {}
    for m in methods:
        rec = recs[(m, fold)]
        ip.check_folds(rec, data)
        model = ip.load_model(rec, device)
        if layer is not None:
            ip.target_layer(model, layer)
        probs, feats = ip.test_features(model, data, device)
        pred = decide(probs, data.class_names, data.test_class_names, getattr(model, "decision_rule", "argmax"))
        ip.check_predictions(rec, data, pred)
        out[m] = (model, probs, feats, pred)
    return out


def _index_rows(min_readers: int, ids):
    """The nodule index rows of ``ids``, in that order."""
    from benchmarks.data.protocols import labelled_folds  # noqa: PLC0415

    return labelled_folds(min_readers).set_index("nodule_id").loc[list(ids)].reset_index()


# ------------------------------------------------------------------ tsne
def cmd_tsne(args) -> list[Path]:
    plt = _plt()
    recs = ip.find_records(args.methods, args.dataset, [args.fold], args.setting, args.runs)
    dev = _device(args.device)
    first = recs[(args.methods[0], args.fold)]
    data = ip.load_test(first)
    panels = []
    for m, (_, _, feats, pred) in _rebuilt(recs, args.methods, args.fold, data, dev).items():
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
        ax.set_title(f"{_name(m)}: accuracy {100 * (1 - wrong.mean()):.1f}%")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.legend(loc="best", fontsize=7, frameon=True, title="true class (X: misclassified)", title_fontsize=7)
    fig.suptitle(f"t-SNE of test-fold image features (pooled, 512-d): {args.dataset} fold {args.fold}, "
                 f"{len(y)} nodules\n{ip.setting_of(recs.values())}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, args.out, _stem("tsne", args.dataset, args.fold, first, args.methods))


# ------------------------------------------------------------------ gradcam
def cmd_gradcam(args) -> list[Path]:
    from matplotlib.lines import Line2D  # noqa: PLC0415

    from benchmarks.data.masks import consensus_crop_masks  # noqa: PLC0415

    plt = _plt()
    if args.nodules < 1:
        raise UserError("--nodules must be at least 1")
    recs = ip.find_records(args.methods, args.dataset, [args.fold], args.setting, args.runs)
    dev = _device(args.device)
    first = recs[(args.methods[0], args.fold)]
    data = ip.load_test(first)
    built = _rebuilt(recs, args.methods, args.fold, data, dev, args.layer)
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
    index = _index_rows(data.min_readers, data.test.nodule_ids[rows])
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
                ax.set_title("CT slice" if c == 0 else _name(args.methods[c - 1]), fontsize=9)
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
    return save_figure(fig, args.out, _stem(f"gradcam_{args.layer}", args.dataset, args.fold, first, args.methods))


# ------------------------------------------------------------------ localisation
def localisation(args) -> dict:
    """{"datasets": {ds: {row: {"folds": {fold: score}, "mean", "std"}}}, "setting", ...}."""
    from tqdm import tqdm  # noqa: PLC0415

    from benchmarks.data.masks import consensus_crop_masks  # noqa: PLC0415

    dev = _device(args.device)
    found = {ds: ip.find_records(args.methods, ds, args.folds, args.setting, args.runs) for ds in args.dataset}
    all_recs = [r for f in found.values() for r in f.values()]
    check_one_setting(all_recs)  # each dataset's records are of one setting; across datasets too
    out = {"setting": ip.setting_of(all_recs), "profile": all_recs[0]["profile"], "source": all_recs[0]["source"], "layer": args.layer, "dilate_px": ip.DILATE_PX, "folds": args.folds, "datasets": {}}
    masks_by_id: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(args.dataset) * len(args.folds) * len(args.methods), desc="localisation", disable=args.quiet)
    for ds, recs in found.items():
        table = {m: {"folds": {}, "empty_maps": 0, "maps": 0} for m in (*args.methods, "centre", "uniform")}
        for f in args.folds:
            data = ip.load_test(recs[(args.methods[0], f)])
            need = [i for i in data.test.nodule_ids if i not in masks_by_id]
            if need:
                masks_by_id.update(zip(need, ip.footprint(consensus_crop_masks(_index_rows(data.min_readers, need)))))
            fps = np.stack([masks_by_id[i] for i in data.test.nodule_ids])  # (N, 32, 32)
            table["uniform"]["folds"][f] = float(fps.mean(axis=(1, 2)).mean())
            table["centre"]["folds"][f] = float(ip.localisation_score(np.broadcast_to(ip.centre_map(args.layer), fps.shape), fps).mean())
            for m, (model, _, _, pred) in _rebuilt(recs, args.methods, f, data, dev, args.layer).items():
                s = ip.localisation_score(ip.gradcam(model, data.test.images, pred, dev, args.layer), fps)
                table[m]["empty_maps"] += int(np.isnan(s).sum())
                table[m]["maps"] += len(s)
                table[m]["folds"][f] = float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
                bar.update()
        for v in table.values():
            vals = np.array(list(v["folds"].values()))
            v["mean"] = float(np.mean(vals))
            v["std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        out["datasets"][ds] = table
    bar.close()
    return out


def _row_names(args) -> list[tuple[str, str]]:
    g = 32 // ip.LAYER_STRIDE[args.layer]
    return [(m, _name(m)) for m in args.methods] + [
        ("centre", f"reference: centre-biased map (central half of the {g} x {g} grid)"),
        ("uniform", "reference: uniform map (= area share)"),
    ]


def _cell(v: dict, latex: bool) -> str:
    if not np.isfinite(v["mean"]):
        return "--" if latex else "—"
    if not np.isfinite(v["std"]):
        return f"{v['mean']:.3f}"
    pm = r"$\pm$" if latex else "±"
    return f"{v['mean']:.3f} {pm} {v['std']:.3f}"


def _zero(v: dict, latex: bool) -> str:
    if not v["maps"]:
        return "--" if latex else "—"
    pct = r"\%" if latex else "%"
    return f"{100 * v['empty_maps'] / v['maps']:.1f}{pct}"


def render_localisation(res: dict, args) -> tuple[str, str, str, list[str], list[list[str]]]:
    """(caption, Markdown, LaTeX, plain headers, plain rows) of the localisation table."""
    from benchmarks.tables import _tex_escape  # noqa: PLC0415

    folds = res["folds"]
    fold_text = f"folds {folds[0]}-{folds[-1]}" if folds == list(range(folds[0], folds[-1] + 1)) and len(folds) > 1 else \
        "fold" + ("s " if len(folds) > 1 else " ") + ", ".join(map(str, folds))
    caption = (f"Localisation score: share of the Grad-CAM mass ({res['layer']}, predicted class) inside the readers' "
               f"consensus footprint (all slices, dilated by {res['dilate_px']} px), averaged over the test nodules of each fold; "
               f"mean ± sample std (ddof = 1) over {fold_text}. Zero maps: share of test nodules whose map is zero everywhere "
               f"after the package's ReLU and min-max scaling (no positive evidence at this layer, or a constant map), "
               f"left out of that method's mean; the references average over every test nodule. Runs: {res['setting']}.")
    dss = list(res["datasets"])
    rows = _row_names(args)
    headers = ["method"] + [h for d in dss for h in (d, f"{d} zero maps")]
    plain = [[name] + [c for d in dss for c in (_cell(res["datasets"][d][key], False), _zero(res["datasets"][d][key], False))]
             for key, name in rows]
    md = ["| " + " | ".join(headers) + " |", "|---|" + "---|" * (len(headers) - 1)]
    md += ["| " + " | ".join(r) + " |" for r in plain]
    tex = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex_escape(caption)}}}", "\\label{tab:localisation}",
           "\\begin{tabular}{l" + "cc" * len(dss) + "}", "\\toprule",
           " & " + " & ".join(f"\\multicolumn{{2}}{{c}}{{{d}}}" for d in dss) + " \\\\",
           "Method" + " & score & zero maps" * len(dss) + " \\\\", "\\midrule"]
    for n, (key, name) in enumerate(rows):
        if n == len(args.methods):
            tex.append("\\midrule")
        cells = [c for d in dss for c in (_cell(res["datasets"][d][key], True), _zero(res["datasets"][d][key], True))]
        tex.append(_tex_escape(name) + " & " + " & ".join(cells) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return caption, "\n".join(md) + "\n", "\n".join(tex), headers, plain


def _no_nan(x):
    """NaN -> None, so the JSON is standard."""
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else x


def cmd_localisation(args) -> list[Path]:
    from tabulate import tabulate  # noqa: PLC0415

    res = localisation(args)
    caption, md, tex, headers, rows = render_localisation(res, args)
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print(caption)
    if not args.tables:
        return []
    out = Path(args.tables_out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"localisation_{'_'.join(args.dataset)}_{args.layer}_{res['profile']}_{res['source']}{_methods_tag(args.methods)}"
    paths = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.json"]
    atomic_write_text(paths[0], f"### Localisation\n\n{caption}\n\n{md}")
    atomic_write_text(paths[1], tex)
    atomic_write_text(paths[2], json.dumps(_no_nan(res), indent=1, default=str))
    return paths


# ------------------------------------------------------------------ curves
SKIP_KEYS = ("epoch", "seconds", "lr", "test")
# Panel titles of the loss terms the methods log (others show their own name), in panel order.
TERM_TITLES = {
    "loss": "total loss", "ce": "cross-entropy", "nll": "negative log-likelihood", "cumulative_bce": "cumulative BCE (CORF)",
    "ic": "L_IC image-class alignment", "ia": "L_IA image-attribute alignment", "ca": "L_CA class-attribute alignment",
}


def cmd_curves(args) -> list[Path]:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    recs = ip.find_records(args.methods, args.dataset, args.folds, args.setting, args.runs)
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
            ax.plot(x, ys.mean(0), color=colours(n), marker="o" if length < 12 else None, ms=3, label=_name(m))
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
    return save_figure(fig, args.out, _stem("curves", args.dataset, None, first, args.methods))


# ------------------------------------------------------------------ CLI
# ------------------------------------------------------------------ results at one glance
def draw_tables(recs: list[dict], tables, paper: dict):
    """A panel per (table, dataset): each method's accuracy over its records (dot: mean; bar:
    min to max over folds and seeds; small ticks: each record) and the paper's (diamond: mean;
    bar: mean +- its reported std). Returns the figure."""
    from benchmarks import tables as tb  # noqa: PLC0415

    plt = _plt()
    data = tb.build(recs, tables)
    by = {}
    for r in recs:
        by.setdefault((r["method"], r["dataset"]), []).append(100 * r["metrics"]["accuracy"])
    panels = [(t, ds) for t in tables for ds in tb.TABLES[t]["datasets"]]
    # A dataset without records of ours would be the paper's numbers alone: leave its panel out, say so.
    empty = [(t, ds) for t, ds in panels if not any(d == ds for _, d in by)]
    if len(empty) < len(panels):
        for t, ds in empty:
            log.info("table %s: no records on %s, its panel is left out", t, ds)
        panels = [p for p in panels if p not in empty]
    rows = max(len(data[t][ds]) for t, ds in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.38 * rows + 1.6), squeeze=False)
    labelled = set()  # each legend entry once

    def label(what):
        if what in labelled:
            return None
        labelled.add(what)
        return what

    for ax, (t, ds) in zip(axes[0], panels):
        names = list(data[t][ds])[::-1]  # the paper's first row on top
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
        ax.set_yticks(range(len(names)), [tb.display(m).replace(" (not in the paper)", "*") for m in names], fontsize=7)
        ax.set_title(f"Table {t}: {ds}", fontsize=9)
        ax.set_xlabel("accuracy (%)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels())}
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="lower left")
    r0 = recs[0]
    enc = sorted({r["text_encoder"] for r in recs if r.get("text_encoder")})
    fig.suptitle(f"Accuracy per method and dataset: ours (profile {r0['profile']}, source {r0['source']}"
                 + (f", text encoder {', '.join(enc)}" if enc else "") + ")\ndot: mean, bar: min-max over folds, ticks: each fold; "
                 "paper: diamond, mean +- std; * not in the paper", fontsize=8)
    fig.tight_layout()
    return fig


def cmd_tables(args) -> list[Path]:
    from benchmarks import tables as tb  # noqa: PLC0415
    from benchmarks.records import read_records, runs_dir  # noqa: PLC0415

    runs = args.runs or runs_dir()
    recs = tb.select(read_records(runs), args.tables, args.source, args.profile, args.text_encoder, args.min_readers, runs)
    fig = draw_tables(recs, args.tables, json.loads(tb.PAPER.read_text()))
    r0 = recs[0]
    stem = f"tables{''.join(map(str, args.tables))}_{r0['profile']}_{r0['source']}"
    return save_figure(fig, args.out, stem)


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m benchmarks.figures", description=__doc__)
    sub = ap.add_subparsers(dest="command", metavar="{tsne,gradcam,localisation,curves,tables}")
    common = ArgumentParser(add_help=False)
    common.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="registered methods")
    common.add_argument("--seeds", "--seed", nargs=1, type=int_in(0, SEED_MAX), default=[0], metavar="SEED", help="the runs' seed (one)")
    add_setting_filters(common)
    common.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    common.add_argument("--out", default="results/figures", help="folder of the figures")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    add_plugin_flag(common)
    one = ArgumentParser(add_help=False)
    one.add_argument("--dataset", required=True, help=f"one of {', '.join(PROTOCOLS)}")
    one.add_argument("--folds", "--fold", nargs=1, default=["0"], metavar="FOLD", help="the test fold (one, 0-4)")
    layer = ArgumentParser(add_help=False)
    layer.add_argument("--layer", default=DEFAULT_LAYER, help=f"Grad-CAM layer: one of {', '.join(LAYER_NAMES)} "
                       f"({DEFAULT_LAYER}: the last convolutional block, a 4 x 4 map on a 32 x 32 crop)")
    sub.add_parser("tsne", parents=[common, one], help="t-SNE of test-fold image features",
                   description="t-SNE (scikit-learn, PCA init) of the pooled image features of a test fold, one panel per method; "
                               "points coloured by true class, misclassified nodules marked x.")
    g = sub.add_parser("gradcam", parents=[common, one, layer], help="Grad-CAM over the central axial slice",
                       description="Grad-CAM for the predicted class, over the nodule's central axial slice with the readers' "
                                   "consensus contour. Rows are picked by rule: the hardest nodules every method gets right "
                                   "(smallest mean margin p(true) - max p(other)), then the most confidently wrong ones.")
    g.add_argument("--nodules", type=int_in(1, 64), default=4, help="number of rows")
    g.add_argument("--ids", nargs="+", help="show these test nodules instead of the rule's")
    loc = sub.add_parser("localisation", parents=[common, layer], help="localisation score table",
                         description="Share of Grad-CAM mass inside the readers' consensus footprint, per method and fold, "
                                     "with a centre-biased and a uniform reference map.")
    loc.add_argument("--dataset", nargs="+", required=True, help=f"one or more of {', '.join(PROTOCOLS)}")
    add_folds_seeds(loc, seeds=False)
    loc.add_argument("--tables", action="store_true", help="write localisation_<datasets>_<layer>_<profile>_<source>.{md,tex,json} under --tables-out")
    loc.add_argument("--tables-out", default="results/tables", help="folder of --tables")
    cur = sub.add_parser("curves", parents=[common], help="training curves from records",
                         description="Loss terms per epoch (and test metrics where the runs recorded them, --set eval_every=N).")
    cur.add_argument("--dataset", required=True, help=f"one of {', '.join(PROTOCOLS)}")
    add_folds_seeds(cur, seeds=False)
    tab = sub.add_parser("tables", help="results at one glance: accuracy per method and dataset beside the paper's",
                         description="A panel per table and dataset: each method's accuracy over its records (mean, min-max over "
                                     "folds) beside the paper's reported mean +- std; from run records only.")
    add_tables_flag(tab)
    add_setting_filters(tab)
    tab.add_argument("--out", default="results/figures", help="folder of the figures")
    add_plugin_flag(tab)
    return ap


@cli_main
def main(argv=None):
    from benchmarks.data.protocols import get_protocol  # noqa: PLC0415

    ap = _parser()
    args = ap.parse_args(argv)
    if not args.command:
        raise UserError("name a figure: tsne, gradcam, localisation, curves or tables (see --help)")
    load_plugins(args)
    if args.runs:
        args.runs = Path(args.runs)
        if not args.runs.is_dir():
            raise UserError(f"--runs {args.runs} is not a folder")
    if args.command == "tables":
        args.out = writable_dir(args.out, "figures folder", "pick another with --out")
        print("wrote " + ", ".join(str(p) for p in cmd_tables(args)))
        return
    for ds in args.dataset if isinstance(args.dataset, list) else [args.dataset]:
        get_protocol(ds)
    args.folds = parse_folds(args.folds)
    if args.command in ("tsne", "gradcam"):
        if len(args.folds) > 1:
            raise UserError(f"{args.command} draws one test fold; got {len(args.folds)}")
        args.fold = args.folds[0]
    args.seed = args.seeds[0]
    if len(set(args.methods)) != len(args.methods):
        raise UserError("--methods names a method twice")
    args.out = writable_dir(args.out, "figures folder", "pick another with --out")
    args.setting = ip.Setting(args.source, args.profile, args.text_encoder, args.min_readers, args.seed)
    paths = {"tsne": cmd_tsne, "gradcam": cmd_gradcam, "localisation": cmd_localisation, "curves": cmd_curves}[args.command](args)
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
