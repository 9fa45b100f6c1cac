"""Tables 1-3 (and CE vs CLIP-Lung per backbone) as LaTeX and Markdown, from the numbers of ``build``.

Marks, the same in both: **bold** the best mean of ours per column; † fewer than 5
folds; ‡ made on partial data (some of the folds' nodules had no CT crop: a pilot
download); * a difference to the reference method with a Holm-adjusted p below 0.05 (only from a test that kept its level
in the calibration, ``benchmarks.stats.verdicts``);
— a missing cell. The captions name the setting, the seeds and the test.
"""
from __future__ import annotations

import math

from benchmarks.data.protocols import N_FOLDS
from benchmarks.grid import ABLATION_LOSSES, BACKBONE_TABLE, TABLES, display, extra_method

CLASS_ORDER = {1: ("benign", "malignant", "unsure"), 2: ("benign", "malignant")}  # the paper's column order
TEST_NAMES = {"corrected_t": "corrected resampled t-test (Nadeau & Bengio 2003)", "wilcoxon": "Wilcoxon signed-rank test"}


def tex_escape(s: str) -> str:
    """Plain text -> LaTeX that pdflatex takes (no raw Unicode symbols)."""
    # < and > in math mode: in text mode pdflatex's default (OT1) font prints them as inverted punctuation.
    for a, b in (("\\", r"\textbackslash{}"), ("<", "$<$"), (">", "$>$"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("±", r"$\pm$"),
                 ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("—", "--"), ("Δ", r"$\Delta$"), ("−", "-"), ("≥", r"$\geq$"),
                 ("↑", r"$^{\uparrow}$"), ("↓", r"$^{\downarrow}$")):
        s = s.replace(a, b)
    return s


def _dash(latex: bool) -> str:
    return "--" if latex else "—"


def _signed(x: float, latex: bool, digits: int = 1) -> str:
    return ("$-$" if latex else "−") + f"{abs(x):.{digits}f}" if x < 0 else f"+{x:.{digits}f}"


def _best(cells: dict, key: str):
    """(best mean, its fold count) of a column: only the cells with the most folds compete, so that a
    one-fold cell is never bolded beside five-fold ones (one lucky fold is no better mean)."""
    shown = [e for e in cells.values() if e and key in e["metrics"]]
    if not shown:
        return None
    most = max(len(e["folds"]) for e in shown)
    return max(e["metrics"][key]["mean"] for e in shown if len(e["folds"]) == most), most


def fmt_mean(entry, key, best, latex, with_std=False, digits=1) -> str:
    """'84.0 ± 3.2' (bold when best: ``best`` is ``_best``'s (mean, folds); † fewer than 5 folds, ‡ partial data;
    the seed s.d. with several seeds)."""
    if not entry or key not in entry["metrics"]:
        return _dash(latex)
    s = entry["metrics"][key]
    text = f"{s['mean']:.{digits}f}"
    if with_std and not math.isnan(s["std"]):
        text += (r" $\pm$ " if latex else " ± ") + f"{s['std']:.{digits}f}"
    if best is not None and len(entry["folds"]) == best[1] and abs(s["mean"] - best[0]) < 1e-9:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if with_std and s.get("seed_std") is not None:
        text += rf" {{\scriptsize (seed s.d. {s['seed_std']:.{digits}f})}}" if latex else f" (seed s.d. {s['seed_std']:.{digits}f})"
    if with_std and s.get("partition_std") is not None:  # repeated partitions: how far one partition's mean can move
        part = f"{s['n_repeats']} partitions s.d. {s['partition_std']:.{digits}f}"
        text += rf" {{\scriptsize ({part})}}" if latex else f" ({part})"
    if len(entry["folds"]) < N_FOLDS:
        text += r"$^\dagger$" if latex else "†"
    if entry.get("partial"):
        text += r"$^\ddagger$" if latex else "‡"
    return text


def fmt_interval(entry, key, latex, digits=1) -> str:
    """'[81.1, 86.9]': the cell's bootstrap interval of ``key``."""
    iv = (entry or {}).get("interval", {}).get(key)
    if not iv or math.isnan(iv["low"]):
        return _dash(latex)
    return f"[{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"


def fmt_auc(entry, latex) -> str:
    """'0.912 [0.880, 0.940]': the mean AUC over folds and its bootstrap interval."""
    if not entry or "auc" not in entry["metrics"]:
        return _dash(latex)
    text = f"{entry['metrics']['auc']['mean']:.3f}"
    return text + (" " + fmt_interval(entry, "auc", latex, 3) if entry.get("interval", {}).get("auc") else "")


def fmt_diff(c: dict | None, latex: bool) -> str:
    """'−3.8 [−6.2, −1.4]*': a comparison's mean difference and corrected-t interval, * when significant."""
    if not c or c["n"] < 2 or math.isnan(c["low"]):
        return _dash(latex)
    mark = (r"$^{*}$" if latex else "*") if c["significant"] else ""
    return f"{_signed(c['mean'], latex)} [{_signed(c['low'], latex)}, {_signed(c['high'], latex)}]{mark}"


def fmt_prob(c: dict | None, latex: bool) -> str:
    """'0.80 [0.60, 1.00]': P(method > reference) on a random (repeat, fold) and its bootstrap interval; Bouthillier et
    al.'s verdict (↑ better, ↓ worse) only where ``benchmarks.stats.verdicts`` allows it (its ``verdict``)."""
    pr = (c or {}).get("prob")
    if not pr or pr.get("p") is None:
        return _dash(latex)
    mark = {"better": "↑", "worse": "↓"}.get(pr["conclusion"], "") if (pr.get("verdict") or {}).get("mark_allowed") else ""
    text = f"{pr['p']:.2f} [{pr['low']:.2f}, {pr['high']:.2f}]{mark}"
    return tex_escape(text) if latex else text


def reference_row_md(row: dict | None, t: int, classes) -> str | None:
    """The radiologists' reference row of one dataset (Markdown): italic, never bold, nothing compared."""
    if not row:
        return None
    cells = [f"*{row.get('label', 'Radiologists')}* (reference)", f"*{fmt_mean(row, 'accuracy', None, False, True)}*", ""]
    cells += [f"*{fmt_auc(row, False)}*"] if _binary(t) else []
    cells += [f"*{fmt_mean(row, f'{k}.{c}', None, False)}*" for c in classes for k in ("recall", "f1")]
    return "| " + " | ".join(cells + ["", "", ""]) + " |"


def reference_row_tex(rows: dict, t: int, classes, dsets, n_cols: int) -> list[str]:
    """The radiologists' reference row (LaTeX), below a rule, in italics."""
    if not any(rows.get(ds) for ds in dsets):
        return []
    label = next(r.get("label", "Radiologists") for r in rows.values() if r)
    out = [rf"\textit{{{tex_escape(label)}, reference}}"]
    for ds in dsets:
        r = rows.get(ds)
        if not r:
            out += [""] * n_cols
            continue
        cells = [fmt_mean(r, "accuracy", None, True, True), ""] + ([fmt_auc(r, True)] if _binary(t) else [])
        cells += [fmt_mean(r, f"{k}.{c}", None, True) for c in classes for k in ("recall", "f1")]
        out += [rf"\textit{{{x}}}" if x else "" for x in cells] + ["", "", ""]
    return [r"\midrule", " & ".join(out) + r" \\"]


def fmt_p(c: dict | None, latex: bool) -> str:
    """The Holm-adjusted p as text, or why there is none ('cannot reach 0.05 with 5 pairs ...')."""
    if not c:
        return _dash(latex)
    return tex_escape(c["text"]) if latex else c["text"]


def _paper_row(paper, t, ds, m, classes, extra_cols: int) -> list[str] | None:
    p = paper.get(f"table{t}", {}).get(ds, {}).get(m)
    if not p:
        return None
    row = [f"{p['accuracy'][0]:.1f} ± {p['accuracy'][1]:.1f}"] + [""] * extra_cols
    for c in classes:
        row += [f"{p['recall'][c]:.1f}" if "recall" in p else "", f"{p['f1'][c]:.1f}" if "f1" in p else ""]
    return row


def _binary(t: int) -> bool:
    return len(CLASS_ORDER[t]) == 2


def left_out_text(left_out: dict | None, m: str, ds: str, latex: bool) -> str | None:
    """'— (left out: made by version 1 of udm, the current one is 2)': a cell whose every record was left out."""
    why = (left_out or {}).get((m, ds))
    if why is None:
        return None
    return tex_escape(f"— (left out: {why})") if latex else f"— (left out: {why})"


def render_12(t: int, data: dict, paper: dict, caption: str, with_paper: bool, labels: dict, reference: str = "clip_lung",
              left_out: dict | None = None) -> tuple[str, str]:
    """Tables 1 and 2 as (LaTeX, Markdown); ``left_out``: {(method, dataset): why} of the cells whose records were all left out."""
    classes = CLASS_ORDER[t]
    table = data[t]
    dsets = list(table)
    extra = 2 if _binary(t) else 1  # the accuracy interval, and the AUC with its interval on binary test sets
    ref = display(reference, labels.get(reference))
    md = []
    for ds in dsets:
        head = ["Method", "Accuracy", "95% CI"] + (["AUC [95% CI]"] if _binary(t) else []) \
            + [f"{c.capitalize()} {k}" for c in classes for k in ("recall", "F1")] + [f"Δ acc. vs {ref} [95% CI]", "p (Holm)",
                                                                                  f"P(> {ref}) [95% CI]"]
        md += [f"**{ds}**\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, e in table[ds].items():
            row = [display(m, labels.get(m)), (e is None and left_out_text(left_out, m, ds, False)) or fmt_mean(e, "accuracy", _best(table[ds], "accuracy"), False, True),
                   fmt_interval(e, "accuracy", False)]
            row += [fmt_auc(e, False)] if _binary(t) else []
            row += [fmt_mean(e, f"{k}.{c}", _best(table[ds], f"{k}.{c}"), False) for c in classes for k in ("recall", "f1")]
            c = ((e or {}).get("vs_reference") or {}).get("accuracy")
            row += ["", "", ""] if m == reference else [fmt_diff(c, False), fmt_p(c, False), fmt_prob(c, False)]
            md.append("| " + " | ".join(row) + " |")
            pr = _paper_row(paper, t, ds, m, classes, extra)
            if pr:
                md.append("| *paper* | " + " | ".join(f"*{x}*" if x else "" for x in pr) + " | | | |")
        readers = reference_row_md((data.get("readers") or {}).get(ds), t, classes)
        if readers:
            md.append(readers)
        md.append("")
    # LaTeX: the paper's layout, one block of columns per dataset.
    n_cols = 1 + extra + 2 * len(classes) + 3
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}", rf"\label{{tab:table{t}}}",
           r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{l{'c' * n_cols * len(dsets)}}}", r"\toprule"]
    if len(dsets) > 1:
        tex.append(" & " + " & ".join(rf"\multicolumn{{{n_cols}}}{{c}}{{{d}}}" for d in dsets) + r" \\")
        tex.append("".join(rf"\cmidrule(lr){{{2 + i * n_cols}-{1 + (i + 1) * n_cols}}}" for i in range(len(dsets))))
    top, sub = ["Method"], [""]
    for _ in dsets:
        top += ["Accuracy", "95\\% CI"] + (["AUC"] if _binary(t) else []) + [rf"\multicolumn{{2}}{{c}}{{{c.capitalize()}}}" for c in classes]
        top += [rf"$\Delta$ vs {tex_escape(ref)}", "$p$ (Holm)", rf"$P(>)$ {tex_escape(ref)}"]
        sub += ["", ""] + ([""] if _binary(t) else []) + ["Recall", "F1"] * len(classes) + ["", "", ""]
    tex += [" & ".join(top) + r" \\", " & ".join(sub) + r" \\", r"\midrule"]
    first_extra = next((m for m in table[dsets[0]] if extra_method(m)), None)
    for m in table[dsets[0]]:
        if m == first_extra:
            tex.append(r"\midrule")
        row, prow, has_paper = [tex_escape(display(m, labels.get(m)))], [r"\quad\textit{paper}"], False
        for ds in dsets:
            e = table[ds][m]
            row += [(e is None and left_out_text(left_out, m, ds, True)) or fmt_mean(e, "accuracy", _best(table[ds], "accuracy"), True, True),
                    fmt_interval(e, "accuracy", True)]
            row += [fmt_auc(e, True)] if _binary(t) else []
            row += [fmt_mean(e, f"{k}.{c}", _best(table[ds], f"{k}.{c}"), True) for c in classes for k in ("recall", "f1")]
            c = ((e or {}).get("vs_reference") or {}).get("accuracy")
            row += ["", "", ""] if m == reference else [fmt_diff(c, True), fmt_p(c, True), fmt_prob(c, True)]
            pr = _paper_row(paper, t, ds, m, classes, extra)
            has_paper |= pr is not None
            prow += ([r"\textit{" + tex_escape(x) + "}" if x else "" for x in pr] + ["", "", ""]) if pr else [""] * n_cols
        tex.append(" & ".join(row) + r" \\")
        if with_paper and has_paper:
            tex.append(" & ".join(prow) + r" \\")
    tex += reference_row_tex(data.get("readers") or {}, t, classes, dsets, n_cols)
    tex += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(tex) + "\n", "\n".join(md) + "\n"


def _t3_cell(e, table, ds, latex, m=None, left_out=None) -> str:
    text = (e is None and left_out_text(left_out, m, ds, latex)) or fmt_mean(e, "accuracy", _best(table[ds], "accuracy"), latex, True)
    if e:
        text += " " + fmt_interval(e, "accuracy", latex)
        c = (e.get("vs_reference") or {}).get("accuracy")
        if c and c["significant"]:
            text += r"$^{*}$" if latex else "*"
    return text


def render_3(data: dict, paper: dict, caption: str, with_paper: bool, left_out: dict | None = None) -> tuple[str, str]:
    """Table 3 (ablations: accuracy, its interval, * when it differs from the full CLIP-Lung) as (LaTeX, Markdown)."""
    table = data[3]
    dsets = list(table)
    # Plain text in Markdown (the report's HTML shows it as written: no TeX there).
    md = ["| L_IC | L_IA | L_CA | " + " | ".join(dsets) + " |", "|---|---|---|" + "---|" * len(dsets)]
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}", r"\label{tab:table3}",
           r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{ccc{'c' * len(dsets)}}}", r"\toprule",
           r"$\mathcal{L}_{IC}$ & $\mathcal{L}_{IA}$ & $\mathcal{L}_{CA}$ & " + " & ".join(dsets) + r" \\", r"\midrule"]
    for m in TABLES[3]["methods"]:
        marks = ABLATION_LOSSES[m]
        md.append("| " + " | ".join("✓" if x else "" for x in marks) + " | " + " | ".join(_t3_cell(table[ds][m], table, ds, False, m, left_out) for ds in dsets) + " |")
        tex.append(" & ".join(r"\checkmark" if x else "" for x in marks) + " & " + " & ".join(_t3_cell(table[ds][m], table, ds, True, m, left_out) for ds in dsets) + r" \\")
        p = [paper.get("table3", {}).get(ds, {}).get(m) for ds in dsets]
        if any(p):
            vals = [f"{x['accuracy'][0]:.1f} ± {x['accuracy'][1]:.1f}" if x else "" for x in p]
            md.append("| | | *paper* | " + " | ".join(f"*{v}*" if v else "" for v in vals) + " |")
            if with_paper:
                tex.append(r" & & \textit{paper} & " + " & ".join(r"\textit{" + tex_escape(v) + "}" if v else "" for v in vals) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(tex) + "\n", "\n".join(md) + "\n"


def caption_for(t: int, recs: list[dict], reference: str = "clip_lung", test: str = "corrected_t", labels: dict | None = None,
                n_boot: int = 2000, datasets=None) -> str:
    """The caption of table ``t``: the datasets it shows (``datasets``: those ``--datasets`` kept), the setting, the marks."""
    r0 = recs[0]
    shown = [d for d in TABLES[t]["datasets"] if datasets is None or d in datasets]
    enc = sorted({r["text_encoder"] for r in recs if r.get("text_encoder")})
    seeds = sorted({r["seed"] for r in recs})
    ref = display(reference, (labels or {}).get(reference))
    on = " and ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)  # 'LIDC-A, LIDC-B and LIDC-C'
    what = f"Ablation of the alignment losses: accuracy on {on}" if t == 3 else f"Classification results on the test sets of {on}"
    seed_text = (f"seeds {', '.join(map(str, seeds))}: each fold's value is the mean over the seeds, ± the sample standard deviation "
                 "(ddof = 1) over folds of those means, the seed s.d. the pooled within-fold standard deviation over seeds"
                 if len(seeds) > 1 else f"seed {seeds[0]}; ± the sample standard deviation (ddof = 1) over folds")
    text = (f"{what} (ours: source {r0['source']}, profile {r0['profile']}" + (f", text encoder {', '.join(enc)}" if enc else "")
            + f", at least {r0.get('min_readers')} readers; {seed_text}). Accuracy as mean ± s.d., recall and F1 as means, in %; "
            + (f"95% CI: patient bootstrap ({n_boot} resamples of patients within each fold) of the mean accuracy"
               + (" and AUC" if t == 2 else "") + "; " if n_boot else "")
            + "bold: best of ours per column; † fewer than 5 folds; ‡ partial data (not every nodule of the folds had a CT crop); — missing. ")
    if t in (1, 2):
        text += (f"Δ: paired accuracy difference to {ref} over the same test folds (each fold's seeds averaged first), mean [95% interval of the corrected resampled "
                 f"t-test (Nadeau & Bengio 2003)]; p: {TEST_NAMES[test]}, Holm-adjusted across the methods of the table; "
                 "* p < 0.05; 'cannot reach 0.05': no outcome of the test with this many pairs could. "
                 f"P(> {ref}): the share of test folds (seeds averaged; with repeats, of every partition's folds) on which the "
                 "method's accuracy beats the reference's, ties half, [95% bootstrap interval over those folds] (Bouthillier et al., MLSys 2021). "
                 + repeats_note(recs)
                 + "Radiologists (leave-one-out), reference: each reader's own malignancy rating scored against the other readers' "
                 "consensus on the same test folds (repeat 0); not a method, never bold, ranked or compared. ")
    else:
        text += (f"*: differs from {ref} (last row) at a Holm-adjusted p < 0.05 ({TEST_NAMES[test]}, per dataset across the ablations). ")
    return text + source_note(recs) + partial_note(recs) + "Paper: reported by Lei et al. (MICCAI 2023)."


def repeats_note(recs: list[dict]) -> str:
    """What the cells mean when the records hold several partitions (none with one)."""
    reps = sorted({r.get("repeat", 0) for r in recs})
    if len(reps) < 2:
        return ""
    return (f"Repeated partitions {', '.join(map(str, reps))}: the mean is over every partition's folds, ± over the folds of "
            f"partition {reps[0]} (the paper's ±), 'partitions s.d.' the spread of the {len(reps)} partitions' means; the unit of "
            f"Δ, p and P(>) is a test fold of a partition (n = folds x partitions); the 95% CI is partition {reps[0]}'s. ")


def source_note(recs: list[dict]) -> str:
    """What the records' source is, when it is the slices release: real CT, how it differs from the DICOM path,
    and how many of the protocol's nodules it holds (the others left out of every fold for every method alike)."""
    cov = next(((r.get("data") or {}).get("scope", {}).get("slices") for r in recs if r.get("source") == "slices"), None)
    if not cov:
        return ""
    why = ", ".join(f"{n} {w}" for w, n in sorted(cov.get("left_out", {}).items(), key=lambda kv: -kv[1]))
    return (f"Source slices: real CT crops from the public LIDC-IDRI slices release (8-bit images, each slice min-max scaled; the slices stop "
            f"at the readers' marked extent, beyond it the cube repeats the outermost marked slice); {cov['nodules_with_crops']} of the protocol's "
            f"{cov['nodules_in_protocol']} nodules ({cov['patients']} of {cov['patients_in_protocol']} patients) have slices, the other "
            f"{cov['nodules_in_protocol'] - cov['nodules_with_crops']} are left out of every fold for every method alike"
            + (f" ({why})" if why else "") + ". ")


def partial_note(recs: list[dict]) -> str:
    """'PARTIAL DATA: ...' when the records were made on crops that miss some of the protocol's nodules
    (a pilot download, a partial copy of the slices release): how many had crops, so that a pilot never
    passes for the whole dataset."""
    scopes = [(r.get("data") or {}).get("scope") or {} for r in recs]
    if not any(s.get("partial") for s in scopes):
        return ""
    copy = next((s["slices"] for s in scopes if s.get("partial") and s.get("slices")), None)
    if copy:
        return (f"PARTIAL DATA (‡): a partial copy of the slices release, {copy['nodules_with_crops']} of the protocol's "
                f"{copy['nodules_in_protocol']} nodules ({copy['patients']} of {copy['patients_in_protocol']} patients); not results on the "
                "whole dataset. ")
    prot = next((s["protocol"] for s in scopes if s.get("protocol")), None)
    if prot:
        pilot = f", a pilot download of {prot['pilot_patients']} patients" if prot.get("pilot_patients") else ""
        return (f"PARTIAL DATA (‡): {prot['nodules_with_crops']} of the protocol's {prot['nodules_in_protocol']} nodules had a CT crop "
                f"({prot['patients']} of {prot['patients_in_protocol']} patients{pilot}); not results on the whole dataset. ")
    return "PARTIAL DATA (‡): not every nodule of the folds had a CT crop; not results on the whole dataset. "


def render_backbones(data: dict, paper: dict, caption: str) -> tuple[str, str]:
    """One row per backbone; per dataset: CE, CLIP-Lung (accuracy mean ± std) and the paired gain."""
    dsets = BACKBONE_TABLE["datasets"]
    md = ["| Backbone | " + " | ".join(f"{ds} CE | {ds} CLIP-Lung | {ds} gain [95% CI] | {ds} p" for ds in dsets) + " |",
          "|---|" + "---|---|---|---|" * len(dsets)]
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}", r"\label{tab:backbones}",
           r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{l{'cccc' * len(dsets)}}}", r"\toprule",
           " & " + " & ".join(rf"\multicolumn{{4}}{{c}}{{{ds}}}" for ds in dsets) + r" \\",
           "".join(rf"\cmidrule(lr){{{2 + 4 * i}-{5 + 4 * i}}}" for i in range(len(dsets))),
           "Backbone & " + " & ".join(r"CE & CLIP-Lung & Gain & $p$" for _ in dsets) + r" \\", r"\midrule"]
    for b, row in data.items():
        cells_md, cells_tex = [], []
        for ds in dsets:
            e = row[ds]
            for latex, out in ((False, cells_md), (True, cells_tex)):
                out += [fmt_mean(e["ce"], "accuracy", None, latex, True), fmt_mean(e["clip_lung"], "accuracy", None, latex, True),
                        fmt_diff(e["gain"], latex), fmt_p(e["gain"], latex)]
        md.append(f"| {b} | " + " | ".join(cells_md) + " |")
        tex.append(tex_escape(b) + " & " + " & ".join(cells_tex) + r" \\")
    tb = paper.get("text_branch")
    if tb and tb["dataset"] in dsets:
        i = dsets.index(tb["dataset"])
        vals = ["", "", "", ""] * len(dsets)
        vals[4 * i: 4 * i + 3] = [f"{tb['without']:.1f}", f"{tb['with']:.1f}", f"+{tb['with'] - tb['without']:.1f}"]
        md.append(f"| *paper: {tb['backbone']}* | " + " | ".join(f"*{v}*" if v else "" for v in vals) + " |")
        tex.append(r"\textit{paper: " + tex_escape(tb["backbone"]) + "} & " + " & ".join(rf"\textit{{{v}}}" if v else "" for v in vals) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(tex) + "\n", "\n".join(md) + "\n"
