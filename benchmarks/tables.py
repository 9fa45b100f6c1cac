r"""python -m benchmarks.tables: Tables 1-3 of the paper from run records (and nothing else).

Writes ``results/tables/table{1,2,3}_<profile>_<source>.tex`` and ``.md``, plus
``tables_<profile>_<source>.json`` with every number: the file names, like the
captions, say which data and schedule made them. The LaTeX needs the packages
``booktabs`` (rules), ``graphicx`` (``\resizebox``) and ``amssymb``
(``\checkmark``): ``preamble.tex`` beside the tables loads them
(``\input{preamble}`` in your document's preamble), and
``tables_<profile>_<source>.tex`` is a standalone document of all the tables
written (``pdflatex`` it in that folder). Tables of the ``paper`` profile on the
``phantom`` source also print a warning line: their numbers are not results. Each cell is the mean over the cell's
records (5 folds x seeds) with the sample standard deviation (ddof = 1);
accuracy is shown as mean ± std, recall and F1 as means, as in the paper.
The best mean of each column is bold; a cell with fewer than 5 folds is marked
with a dagger, a missing cell is shown as a dash. The Markdown puts the
paper's reported numbers (``benchmarks/reported/``, package data) under ours; ``--with-paper``
does the same in LaTeX. Beyond the paper, Tables 1-2 give for every method the
paired difference of accuracy to CLIP-Lung over the same folds and seeds
(mean and 95% t-interval).

Records of different data sources, profiles, text encoders or label rules are
never averaged together: if the records hold more than one, the command stops
and lists them, unless ``--source``, ``--profile``, ``--text-encoder`` or
``--min-readers`` picks one.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.cli import ArgumentParser, add_plugin_flag, add_setting_filters, add_tables_flag, load_plugins, runs_folder, warn_phantom
from benchmarks.data.protocols import N_FOLDS
from benchmarks.errors import UserError, cli_main
from benchmarks.grid import ABLATION_LOSSES, BACKBONE_TABLE, DISPLAY, TABLES, cells

PAPER_METHODS = {m for t in TABLES.values() for m in t["methods"]}
from benchmarks.io import atomic_write_text, writable_dir
from benchmarks.records import DEFAULT_BACKBONE, backbone_of, check_one_setting, filter_setting, read_records, runs_dir

# The paper's reported numbers, typed from it: package data, so that an installed wheel has them too.
PAPER = Path(__file__).resolve().parent / "reported" / "clip_lung_miccai2023.json"
CLASS_ORDER = {1: ("benign", "malignant", "unsure"), 2: ("benign", "malignant")}  # the paper's column order


def _setting(rec: dict) -> tuple:
    return (rec["source"], rec["profile"], rec.get("text_encoder"), rec.get("min_readers"))


def extra_method(method: str) -> bool:
    """A method outside the paper's tables (a plugin's, or any other registered one): shown as
    rows below the paper's in Tables 1-2."""
    return method not in PAPER_METHODS


def select(records: list[dict], tables, source=None, profile=None, text_encoder=None, min_readers=None, runs: Path | None = None) -> list[dict]:
    """The records of the tables' cells (and of other methods on the datasets of Tables 1-2) in
    one setting, on the paper's backbone; a UserError when the choice is ambiguous."""
    want = set(cells(tables))
    extra_ds = {ds for t in tables if t in (1, 2) for ds in TABLES[t]["datasets"]}
    recs = [r for r in records if backbone_of(r) == DEFAULT_BACKBONE
            and ((r.get("method"), r.get("dataset")) in want or (extra_method(r.get("method")) and r.get("dataset") in extra_ds))]
    return _one_setting(recs, (source, profile, text_encoder, min_readers),
                        f"no run records for tables {', '.join(map(str, tables))} in {runs or runs_dir()} with these filters; "
                        "run them with `python -m benchmarks.sweep run` or `python -m benchmarks.run`")


def _one_setting(recs: list[dict], filters: tuple, none_found: str) -> list[dict]:
    """The records of one setting among ``recs`` (``filters``: source, profile, text encoder,
    min readers); ``none_found`` is the error when there are none."""
    recs = filter_setting(recs, *filters)
    if not recs:
        raise UserError(none_found)
    check_one_setting(recs)
    return recs


def _flat(metrics: dict) -> dict:
    out = {"accuracy": metrics["accuracy"]}
    for kind in ("recall", "f1"):
        for c, v in metrics[kind].items():
            out[f"{kind}.{c}"] = v
    return out


def cell_stats(recs: list[dict]) -> dict:
    """{metric: {"mean", "std", "n"}} in percent, over the cell's records; plus folds and seeds."""
    vals = defaultdict(list)
    for r in recs:
        for k, v in _flat(r["metrics"]).items():
            vals[k].append(100.0 * v)
    stats = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), "n": len(v)} for k, v in vals.items()}
    return {"metrics": stats, "folds": sorted({r["fold"] for r in recs}), "seeds": sorted({r["seed"] for r in recs})}


def paired_difference(recs: list[dict], ref: list[dict]) -> dict | None:
    """Accuracy of ``recs`` minus that of ``ref`` over the (fold, seed) pairs both have: mean and 95% t-interval, in points."""
    from scipy import stats  # noqa: PLC0415

    a = {(r["fold"], r["seed"]): r["metrics"]["accuracy"] for r in recs}
    b = {(r["fold"], r["seed"]): r["metrics"]["accuracy"] for r in ref}
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    d = 100.0 * np.array([a[k] - b[k] for k in keys])
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half), "n": len(d)}


def build(records: list[dict], tables) -> dict:
    """Every number of the requested tables: {table: {dataset: {method: stats}}}, the paper's
    methods first, then (Tables 1-2) the other methods found in the records, by name."""
    by_cell = defaultdict(list)
    for r in records:
        by_cell[(r["method"], r["dataset"])].append(r)
    out = {}
    for t in tables:
        out[t] = {}
        extras = sorted({m for m, ds in by_cell if extra_method(m) and ds in TABLES[t]["datasets"]}) if t in (1, 2) else []
        for ds in TABLES[t]["datasets"]:
            out[t][ds] = {}
            for m in (*TABLES[t]["methods"], *extras):
                recs = by_cell.get((m, ds), [])
                entry = cell_stats(recs) if recs else None
                if entry is not None and t in (1, 2) and m != "clip_lung":
                    entry["vs_clip_lung"] = paired_difference(recs, by_cell.get(("clip_lung", ds), []))
                out[t][ds][m] = entry
    return out


# ---------------------------------------------------------------- formatting
def _best(table: dict, ds: str, key: str):
    means = [e["metrics"][key]["mean"] for e in table[ds].values() if e and key in e["metrics"]]
    return max(means) if means else None


def _fmt(entry, key, best, latex, with_std=False):
    if not entry or key not in entry["metrics"]:
        return "--" if latex else "—"
    s = entry["metrics"][key]
    text = f"{s['mean']:.1f}"
    if with_std and not math.isnan(s["std"]):
        text += (r" $\pm$ " if latex else " ± ") + f"{s['std']:.1f}"
    if best is not None and abs(s["mean"] - best) < 1e-9:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if len(entry["folds"]) < N_FOLDS:
        text += r"$^\dagger$" if latex else "†"
    return text


def _fmt_diff(d, latex):
    if d is None:
        return "--" if latex else "—"
    pm = "$-$" if latex else "−"
    sign = lambda x: (pm if x < 0 else "+") + f"{abs(x):.1f}"  # noqa: E731
    return f"{sign(d['mean'])} [{sign(d['low'])}, {sign(d['high'])}]"


def _paper_row(paper, key, t, ds, m, classes):
    p = paper.get(key, {}).get(ds, {}).get(m)
    if not p:
        return None
    row = [f"{p['accuracy'][0]:.1f} ± {p['accuracy'][1]:.1f}"]
    for c in classes:
        row += [f"{p['recall'][c]:.1f}" if "recall" in p else "", f"{p['f1'][c]:.1f}" if "f1" in p else ""]
    return row


def display(method: str) -> str:
    """The row label: the paper's name, or a method's own name marked as not in the paper."""
    return DISPLAY[method] if method in DISPLAY else f"{method} (not in the paper)"


def _first_extra(methods) -> str | None:
    return next((m for m in methods if extra_method(m)), None)


def render_12(t: int, data: dict, paper: dict, caption: str, with_paper: bool) -> tuple[str, str]:
    """Tables 1 and 2 as (LaTeX, Markdown)."""
    classes = CLASS_ORDER[t]
    table = data[t]
    md, tex = [], []
    n_cols = 1 + 2 * len(classes)
    for ds in TABLES[t]["datasets"]:
        head = ["Method", "Accuracy"] + [f"{c.capitalize()} {k}" for c in classes for k in ("recall", "F1")] + ["Δ acc. vs CLIP-Lung [95% CI]"]
        md.append(f"**{ds}**\n")
        md.append("| " + " | ".join(head) + " |")
        md.append("|" + "---|" * len(head))
        for m in table[ds]:
            e = table[ds][m]
            row = [display(m), _fmt(e, "accuracy", _best(table, ds, "accuracy"), False, True)]
            for c in classes:
                for k in ("recall", "f1"):
                    row.append(_fmt(e, f"{k}.{c}", _best(table, ds, f"{k}.{c}"), False))
            row.append(_fmt_diff(e.get("vs_clip_lung") if e else None, False) if m != "clip_lung" else "")
            md.append("| " + " | ".join(row) + " |")
            pr = _paper_row(paper, f"table{t}", t, ds, m, classes)
            if pr:
                md.append("| *paper* | " + " | ".join(f"*{x}*" if x else "" for x in pr) + " | |")
        md.append("")
    # LaTeX: the paper's layout, one block of columns per dataset.
    dsets = TABLES[t]["datasets"]
    cols = "l" + ("c" * (n_cols + 1)) * len(dsets)
    tex.append(r"\begin{table}[t]")
    tex.append(r"\centering")
    tex.append(rf"\caption{{{_tex_escape(caption)}}}")
    tex.append(rf"\label{{tab:table{t}}}")
    tex.append(r"\resizebox{\linewidth}{!}{%")
    tex.append(rf"\begin{{tabular}}{{{cols}}}")
    tex.append(r"\toprule")
    if len(dsets) > 1:
        tex.append(" & " + " & ".join(rf"\multicolumn{{{n_cols + 1}}}{{c}}{{{d}}}" for d in dsets) + r" \\")
        tex.append("".join(rf"\cmidrule(lr){{{2 + i * (n_cols + 1)}-{1 + (i + 1) * (n_cols + 1)}}}" for i in range(len(dsets))))
    top = ["Method"]
    for _ in dsets:
        top += ["Accuracy"] + [rf"\multicolumn{{2}}{{c}}{{{c.capitalize()}}}" for c in classes] + [r"$\Delta$ vs CLIP-Lung"]
    tex.append(" & ".join(top) + r" \\")
    sub = [""]
    for _ in dsets:
        sub += [""] + ["Recall", "F1"] * len(classes) + [""]
    tex.append(" & ".join(sub) + r" \\")
    tex.append(r"\midrule")
    for m in table[dsets[0]]:
        if m == _first_extra(table[dsets[0]]):
            tex.append(r"\midrule")
        row = [_tex_escape(display(m))]
        prow = [r"\quad\textit{paper}"]
        has_paper = False
        for ds in dsets:
            e = table[ds][m]
            row.append(_fmt(e, "accuracy", _best(table, ds, "accuracy"), True, True))
            for c in classes:
                for k in ("recall", "f1"):
                    row.append(_fmt(e, f"{k}.{c}", _best(table, ds, f"{k}.{c}"), True))
            row.append(_fmt_diff(e.get("vs_clip_lung") if e else None, True) if m != "clip_lung" else "")
            pr = _paper_row(paper, f"table{t}", t, ds, m, classes)
            if pr:
                has_paper = True
                prow += [r"\textit{" + _tex_escape(x) + "}" if x else "" for x in pr] + [""]
            else:
                prow += [""] * (n_cols + 1)
        tex.append(" & ".join(row) + r" \\")
        if with_paper and has_paper:
            tex.append(" & ".join(prow) + r" \\")
    tex.append(r"\bottomrule")
    tex.append(r"\end{tabular}}")
    tex.append(r"\end{table}")
    return "\n".join(tex) + "\n", "\n".join(md) + "\n"


def render_3(data: dict, paper: dict, caption: str, with_paper: bool) -> tuple[str, str]:
    table = data[3]
    dsets = TABLES[3]["datasets"]
    md = ["| $L_{IC}$ | $L_{IA}$ | $L_{CA}$ | " + " | ".join(dsets) + " |", "|---|---|---|" + "---|" * len(dsets)]
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(caption)}}}", r"\label{tab:table3}",
           rf"\begin{{tabular}}{{ccc{'c' * len(dsets)}}}", r"\toprule",
           r"$\mathcal{L}_{IC}$ & $\mathcal{L}_{IA}$ & $\mathcal{L}_{CA}$ & " + " & ".join(dsets) + r" \\", r"\midrule"]
    for m in TABLES[3]["methods"]:
        marks = ABLATION_LOSSES[m]
        cells_md = [_fmt(table[ds][m], "accuracy", _best(table, ds, "accuracy"), False, True) for ds in dsets]
        cells_tex = [_fmt(table[ds][m], "accuracy", _best(table, ds, "accuracy"), True, True) for ds in dsets]
        md.append("| " + " | ".join("✓" if x else "" for x in marks) + " | " + " | ".join(cells_md) + " |")
        tex.append(" & ".join(r"\checkmark" if x else "" for x in marks) + " & " + " & ".join(cells_tex) + r" \\")
        p = [paper.get("table3", {}).get(ds, {}).get(m) for ds in dsets]
        if any(p):
            vals = [f"{x['accuracy'][0]:.1f} ± {x['accuracy'][1]:.1f}" if x else "" for x in p]
            md.append("| | | *paper* | " + " | ".join(f"*{v}*" if v else "" for v in vals) + " |")
            if with_paper:
                tex.append(r" & & \textit{paper} & " + " & ".join(r"\textit{" + _tex_escape(v) + "}" if v else "" for v in vals) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(tex) + "\n", "\n".join(md) + "\n"


def _tex_escape(s: str) -> str:
    """Plain text -> LaTeX that pdflatex takes (no raw Unicode symbols)."""
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("±", r"$\pm$"), ("†", r"$^\dagger$"),
                 ("—", "--"), ("Δ", r"$\Delta$"), ("−", "-"), ("≥", r"$\geq$")):
        s = s.replace(a, b)
    return s


def caption_for(t: int, recs: list[dict]) -> str:
    r0 = recs[0]
    enc = sorted({r["text_encoder"] for r in recs if r.get("text_encoder")})
    seeds = sorted({r["seed"] for r in recs})
    what = {1: "Classification results on the test sets of LIDC-A", 2: "Classification results on the test sets of LIDC-B and LIDC-C",
            3: "Ablation of the alignment losses: accuracy"}[t]
    return (f"{what} (ours: source {r0['source']}, profile {r0['profile']}"
            + (f", text encoder {', '.join(enc)}" if enc else "")
            + f", at least {r0.get('min_readers')} readers, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}). "
            "Mean ± sample standard deviation (ddof = 1) over folds and seeds for accuracy, means for recall and F1, in %; "
            "bold: best of ours per column; † fewer than 5 folds; — missing."
            + (" Δ: paired accuracy difference to CLIP-Lung over the same folds, mean [95% t-interval]." if t in (1, 2) else "")
            + " Paper: reported by Lei et al. (MICCAI 2023).")


# What the generated LaTeX uses: rules, \resizebox, \checkmark.
PREAMBLE = "% Packages the tables of benchmarks.tables need.\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\usepackage{amssymb}\n"


def setting_tag(records: list[dict]) -> str:
    """'<profile>_<source>' of one setting's records: in every file name the tables make."""
    return f"{records[0]['profile']}_{records[0]['source']}"


def write_tables(tables, records: list[dict], out_dir: Path, with_paper: bool = False) -> list[Path]:
    paper = json.loads(PAPER.read_text())
    data = build(records, tables)
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = setting_tag(records)
    for t in tables:
        cap = caption_for(t, records)
        tex, md = render_3(data, paper, cap, with_paper) if t == 3 else render_12(t, data, paper, cap, with_paper)
        for suffix, text in ((".tex", tex), (".md", f"### Table {t}\n\n{cap}\n\n{md}")):
            p = out_dir / f"table{t}_{tag}{suffix}"
            atomic_write_text(p, text)
            paths.append(p)
    for name, text in (("preamble.tex", PREAMBLE),
                       (f"tables_{tag}.tex", "\\documentclass{article}\n\\input{preamble}\n\\begin{document}\n"
                        + "".join(f"\\input{{table{t}_{tag}}}\n" for t in tables) + "\\end{document}\n")):
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    j = out_dir / f"tables_{tag}.json"
    atomic_write_text(j, json.dumps({"setting": dict(zip(("source", "profile", "text_encoder", "min_readers"), _setting(records[0]))),
                                     "tables": {str(t): data[t] for t in tables}}, indent=1, default=str))
    paths.append(j)
    return paths


# ---------------------------------------------------------------- CE vs CLIP-Lung per backbone
def select_backbones(records: list[dict], source=None, profile=None, text_encoder=None, min_readers=None, runs: Path | None = None) -> list[dict]:
    """The records of CE and CLIP-Lung on LIDC-A/B/C, every backbone, one setting."""
    recs = [r for r in records if r.get("method") in BACKBONE_TABLE["methods"] and r.get("dataset") in BACKBONE_TABLE["datasets"]]
    return _one_setting(recs, (source, profile, text_encoder, min_readers),
                        f"no records of {' or '.join(BACKBONE_TABLE['methods'])} in {runs or runs_dir()} with these filters; "
                        "run them with `python -m benchmarks.sweep run --backbones ...`")


def build_backbones(records: list[dict]) -> dict:
    """{backbone: {dataset: {"ce": stats, "clip_lung": stats, "gain": paired CLIP-Lung - CE}}}, the paper's backbone first."""
    by = defaultdict(list)
    for r in records:
        by[(backbone_of(r), r["dataset"], r["method"])].append(r)
    names = sorted({b for b, _, _ in by}, key=lambda b: (b != DEFAULT_BACKBONE, b))
    out = {}
    for b in names:
        out[b] = {}
        for ds in BACKBONE_TABLE["datasets"]:
            ce, cl = by.get((b, ds, "ce"), []), by.get((b, ds, "clip_lung"), [])
            out[b][ds] = {"ce": cell_stats(ce) if ce else None, "clip_lung": cell_stats(cl) if cl else None,
                          "gain": paired_difference(cl, ce)}
    return out


def render_backbones(data: dict, paper: dict, caption: str) -> tuple[str, str]:
    """One row per backbone; per dataset: CE, CLIP-Lung (accuracy mean ± std) and the paired gain."""
    dsets = BACKBONE_TABLE["datasets"]
    md = ["| Backbone | " + " | ".join(f"{ds} CE | {ds} CLIP-Lung | {ds} gain [95% CI]" for ds in dsets) + " |",
          "|---|" + "---|---|---|" * len(dsets)]
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(caption)}}}", r"\label{tab:backbones}",
           r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{l{'ccc' * len(dsets)}}}", r"\toprule",
           " & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{{ds}}}" for ds in dsets) + r" \\",
           "".join(rf"\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(len(dsets))),
           "Backbone & " + " & ".join(r"CE & CLIP-Lung & Gain" for _ in dsets) + r" \\", r"\midrule"]
    for b, row in data.items():
        cells_md, cells_tex = [], []
        for ds in dsets:
            e = row[ds]
            for latex, out in ((False, cells_md), (True, cells_tex)):
                out += [_fmt(e["ce"], "accuracy", None, latex, True), _fmt(e["clip_lung"], "accuracy", None, latex, True), _fmt_diff(e["gain"], latex)]
        md.append(f"| {b} | " + " | ".join(cells_md) + " |")
        tex.append(_tex_escape(b) + " & " + " & ".join(cells_tex) + r" \\")
    tb = paper.get("text_branch")
    if tb:
        i = dsets.index(tb["dataset"])
        vals = ["", "", ""] * len(dsets)
        vals[3 * i: 3 * i + 3] = [f"{tb['without']:.1f}", f"{tb['with']:.1f}", f"+{tb['with'] - tb['without']:.1f}"]
        md.append(f"| *paper: {tb['backbone']}* | " + " | ".join(f"*{v}*" if v else "" for v in vals) + " |")
        tex.append(r"\textit{paper: " + _tex_escape(tb["backbone"]) + "} & " + " & ".join(rf"\textit{{{v}}}" if v else "" for v in vals) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(tex) + "\n", "\n".join(md) + "\n"


def write_backbones(records: list[dict], out_dir: Path) -> list[Path]:
    paper = json.loads(PAPER.read_text())
    data = build_backbones(records)
    r0 = records[0]
    enc = sorted({r["text_encoder"] for r in records if r.get("text_encoder")})
    cap = (f"CE and CLIP-Lung on each image encoder (ours: source {r0['source']}, profile {r0['profile']}"
           + (f", text encoder {', '.join(enc)}" if enc else "") + f", at least {r0.get('min_readers')} readers). "
           "Accuracy mean ± sample standard deviation over folds and seeds, in %; gain: paired accuracy difference "
           "CLIP-Lung minus CE over the same folds, mean [95% t-interval]; † fewer than 5 folds; — missing. "
           "Paper: the text branch on MV-DAR, reported by Lei et al. (MICCAI 2023) for LIDC-A only.")
    tex, md = render_backbones(data, paper, cap)
    paths = []
    tag = setting_tag(records)
    for name, text in ((f"backbones_{tag}.tex", tex), (f"backbones_{tag}.md", f"### CE vs CLIP-Lung per backbone\n\n{cap}\n\n{md}"),
                       ("preamble.tex", PREAMBLE),
                       (f"backbones_{tag}_doc.tex",
                        f"\\documentclass{{article}}\n\\input{{preamble}}\n\\begin{{document}}\n\\input{{backbones_{tag}}}\n\\end{{document}}\n"),
                       (f"backbones_{tag}.json", json.dumps({"setting": dict(zip(("source", "profile", "text_encoder", "min_readers"), _setting(r0))),
                                                      "backbones": data}, indent=1, default=str))):
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


@cli_main
def main(argv=None):
    ap = ArgumentParser(prog="python -m benchmarks.tables", description=__doc__)
    add_tables_flag(ap)
    add_setting_filters(ap)
    ap.add_argument("--out", default="results/tables", help="folder of the tables")
    ap.add_argument("--with-paper", action="store_true", help="also put the paper's numbers in the LaTeX")
    ap.add_argument("--backbones", action="store_true", help="instead of Tables 1-3: CE vs CLIP-Lung on each backbone (backbones_<profile>_<source>.{tex,md,json})")
    add_plugin_flag(ap)
    args = ap.parse_args(argv)
    load_plugins(args)
    runs = runs_folder(args)
    out = writable_dir(args.out, "tables folder", "pick another with --out")
    records = read_records(runs)
    if args.backbones:
        recs = select_backbones(records, args.source, args.profile, args.text_encoder, args.min_readers, runs)
        warn_phantom(recs[0]["profile"], recs[0]["source"])
        paths = write_backbones(recs, out)
        print(f"{len(recs)} records of {len({backbone_of(r) for r in recs})} backbones -> " + ", ".join(str(p) for p in paths))
        return
    recs = select(records, args.tables, args.source, args.profile, args.text_encoder, args.min_readers, runs)
    warn_phantom(recs[0]["profile"], recs[0]["source"])
    paths = write_tables(args.tables, recs, out, args.with_paper)
    n_cells = len({(r["method"], r["dataset"]) for r in recs})
    print(f"{len(recs)} records in {n_cells} of {len(cells(args.tables))} cells -> " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
