"""The localisation score: share of the Grad-CAM mass inside the readers' consensus footprint, per method and fold (table)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from benchmarks import interpret as ip
from benchmarks.errors import UserError
from benchmarks.figures.common import methods_tag, name
from benchmarks.figures.models import device, index_rows, rebuilt
from benchmarks.io import atomic_write_text, json_ready
from benchmarks.tables.render import tex_escape

log = logging.getLogger(__name__)


def localisation(args) -> dict:
    """{"datasets": {ds: {row: {"folds": {fold: score}, "mean", "std"}}}, "setting", ...}."""
    from tqdm import tqdm  # noqa: PLC0415

    from benchmarks.data.masks import consensus_crop_masks  # noqa: PLC0415

    dev = device(args.device)
    found = {ds: ip.find_records(args.methods, ds, args.folds, args.setting, args.seed, args.runs) for ds in args.dataset}
    all_recs = [r for f in found.values() for r in f.values()]
    settings = {(r["source"], r["profile"], r.get("min_readers")) for r in all_recs}
    if len(settings) > 1:  # each dataset's records are of one setting; across datasets too
        raise UserError("the datasets' records are of different settings (source, profile, label rule): "
                        + "; ".join(map(str, sorted(settings, key=str))) + "; pick one with --source, --profile, --min-readers")
    out = {"setting": ip.setting_of(all_recs), "profile": all_recs[0]["profile"], "source": all_recs[0]["source"], "layer": args.layer, "dilate_px": ip.DILATE_PX, "folds": args.folds, "datasets": {}}
    masks_by_id: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(args.dataset) * len(args.folds) * len(args.methods), desc="localisation", disable=args.quiet)
    for ds, recs in found.items():
        table = {m: {"folds": {}, "empty_maps": 0, "maps": 0} for m in (*args.methods, "centre", "uniform")}
        for f in args.folds:
            data = ip.load_test(recs[(args.methods[0], f)])
            need = [i for i in data.test.nodule_ids if i not in masks_by_id]
            if need:
                masks_by_id.update(zip(need, ip.footprint(consensus_crop_masks(index_rows(data.min_readers, need)))))
            fps = np.stack([masks_by_id[i] for i in data.test.nodule_ids])  # (N, 32, 32)
            table["uniform"]["folds"][f] = float(fps.mean(axis=(1, 2)).mean())
            table["centre"]["folds"][f] = float(ip.localisation_score(np.broadcast_to(ip.centre_map(args.layer), fps.shape), fps).mean())
            for m, (model, _, _, pred) in rebuilt(recs, args.methods, f, data, dev, args.layer).items():
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
    return [(m, name(m)) for m in args.methods] + [
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
    plain = [[label] + [c for d in dss for c in (_cell(res["datasets"][d][key], False), _zero(res["datasets"][d][key], False))]
             for key, label in rows]
    md = ["| " + " | ".join(headers) + " |", "|---|" + "---|" * (len(headers) - 1)]
    md += ["| " + " | ".join(r) + " |" for r in plain]
    tex = ["\\begin{table}[t]", "\\centering", f"\\caption{{{tex_escape(caption)}}}", "\\label{tab:localisation}",
           "\\begin{tabular}{l" + "cc" * len(dss) + "}", "\\toprule",
           " & " + " & ".join(f"\\multicolumn{{2}}{{c}}{{{d}}}" for d in dss) + " \\\\",
           "Method" + " & score & zero maps" * len(dss) + " \\\\", "\\midrule"]
    for n, (key, label) in enumerate(rows):
        if n == len(args.methods):
            tex.append("\\midrule")
        cells = [c for d in dss for c in (_cell(res["datasets"][d][key], True), _zero(res["datasets"][d][key], True))]
        tex.append(tex_escape(label) + " & " + " & ".join(cells) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return caption, "\n".join(md) + "\n", "\n".join(tex), headers, plain


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
    stem = f"localisation_{'_'.join(args.dataset)}_{args.layer}_{res['profile']}_{res['source']}{methods_tag(args.methods)}"
    paths = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.json"]
    atomic_write_text(paths[0], f"### Localisation\n\n{caption}\n\n{md}")
    atomic_write_text(paths[1], tex)
    atomic_write_text(paths[2], json.dumps(json_ready(res), indent=1, default=str))
    return paths


