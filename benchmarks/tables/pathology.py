"""The pathology table (``python -m benchmarks.tables --truth pathology``): each method against the diagnosis TCIA
confirmed per patient, beside the radiologists and the attribute-only model as reference rows (never ranked).

Writes ``pathology_<tag>.{md,tex,json}`` with the tables' setting tag. The evaluation is
``benchmarks.stats.pathology``: per patient with a known diagnosis and test nodules, the highest predicted
malignancy and the method's own decision, pooled over the five folds, with patient-bootstrap intervals.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from benchmarks.data.pathology import METHOD, load
from benchmarks.grid import cells, display
from benchmarks.io import atomic_write_text, json_ready
from benchmarks.stats.pathology import MIN_GROUP, N_BOOT, attribute_rows, evaluate, patients, readers_rows, record_nodules
from benchmarks.tables.render import source_note, tex_escape

REFERENCES = (("readers", "Radiologists (mean rating), reference"), ("attributes", "Attributes only (logistic regression), reference"))
COLUMNS = (("auc", "AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
           ("auc_primary", "AUC primary vs benign"), ("auc_metastatic", "AUC metastatic vs benign"))


def _order(methods: set[str]) -> list[str]:
    """The tables' method order (Tables 1-3), then any other method by name."""
    seen = [m for m, _ in cells((1, 2, 3)) if m in methods]
    return list(dict.fromkeys(seen)) + sorted(methods - set(seen))


def build_pathology(recs: list[dict], datasets=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """{dataset: {"rows": [...], "diagnosis_methods": {...}}}: per dataset the reference rows, then one row per method,
    each ``benchmarks.stats.pathology.evaluate``'s numbers with ``method``, ``label`` and ``reference``."""
    truth_table = load()
    truth = {p: int(d) for p, d in zip(truth_table["patient_id"], truth_table["diagnosis"]) if d in (1, 2, 3)}
    how = dict(zip(truth_table["patient_id"], truth_table["method"]))
    out = {}
    min_readers = recs[0].get("min_readers", 2)
    for ds in sorted({r["dataset"] for r in recs if datasets is None or r["dataset"] in datasets}):
        by_method = {m: [r for r in recs if r["dataset"] == ds and r["method"] == m] for m in {r["method"] for r in recs if r["dataset"] == ds}}
        nodules = {m: record_nodules(rs) for m, rs in by_method.items()}
        ids = {n["id"] for ns in nodules.values() for n in ns}  # the test nodules the methods were scored on
        rows = []
        for key, label in REFERENCES:
            fn = readers_rows if key == "readers" else attribute_rows
            rows.append({"method": key, "label": label, "reference": True, **evaluate(patients(fn(ds, ids, min_readers), truth), n_boot, seed)})
        for m in _order(set(nodules)):
            if nodules[m]:
                label = by_method[m][0].get("label")
                rows.append({"method": m, "label": display(m, label), "reference": False, "folds": sorted({r["fold"] for r in by_method[m]}),
                             **evaluate(patients(nodules[m], truth), n_boot, seed)})
        scored = patients(readers_rows(ds, ids, min_readers), truth)
        mix = Counter(METHOD[int(how[p])] for p in scored)
        out[ds] = {"rows": rows, "diagnosis_methods": dict(sorted(mix.items(), key=lambda kv: -kv[1]))}
    return out


def _cell(v, latex: bool) -> str:
    if v is None:
        return "--" if latex else "—"
    if math.isnan(v["value"]):
        return "--" if latex else "—"
    if math.isnan(v["low"]):  # --bootstrap 0: no intervals
        return f"{v['value']:.3f}"
    return f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def _n(row) -> str:
    n = row["n"]
    return f"{n['patients']} ({n['malignant']}/{n['benign']})"


def caption(data: dict, recs: list[dict], n_boot: int) -> str:
    r0 = recs[0]
    mixes = "; ".join(f"{ds}: " + ", ".join(f"{k} {v}" for k, v in d["diagnosis_methods"].items()) for ds, d in data.items())
    return (f"Against pathology: TCIA's diagnosis per patient (benign vs malignant: primary lung cancer or metastatic), "
            f"ours: source {r0['source']}, profile {r0['profile']}, at least {r0.get('min_readers')} readers. A patient counts when its "
            "diagnosis is known and it has test nodules; its score is the highest p(malignant) − p(benign) over its test nodules in the "
            "one test fold that holds them (seeds averaged), its decision malignant when the method decides malignant for any of them; "
            "the five folds pooled. Patients (malignant/benign) per row; AUC, sensitivity and specificity with 95% patient-bootstrap "
            f"intervals ({n_boot} resamples of patients within folds); the AUC of each malignant kind against the benign patients where "
            f"both hold at least {MIN_GROUP}. Reference rows, scored on the same nodules and never ranked: the radiologists (a nodule's "
            "mean malignancy rating, malignant above 3.5, the label rule) and the attribute-only logistic regression (the readers' eight "
            f"attribute scores and diameter). How the diagnoses were made: {mixes}. The truth is per patient and covers a few "
            "patients: see docs/statistics.md, Against pathology. " + source_note(recs))


def render(data: dict, cap: str) -> tuple[str, str]:
    """(LaTeX, Markdown) of the pathology table."""
    head = ["", "Patients (mal/ben)"] + [c for _, c in COLUMNS]
    md = []
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(cap)}}}", r"\label{tab:pathology}", r"\resizebox{\linewidth}{!}{%",
           r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}", r"\toprule", " & ".join(tex_escape(h) for h in head) + r" \\"]
    for ds, d in data.items():
        md += [f"**{ds}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        tex += [r"\midrule", rf"\multicolumn{{{len(head)}}}{{l}}{{\textit{{{ds}}}}} \\"]
        for row in d["rows"]:
            label = f"*{row['label']}*" if row["reference"] else row["label"]
            md.append("| " + " | ".join([label, _n(row)] + [_cell(row[k], False) for k, _ in COLUMNS]) + " |")
            tl = r"\textit{" + tex_escape(row["label"]) + "}" if row["reference"] else tex_escape(row["label"])
            tex.append(" & ".join([tl, _n(row)] + [_cell(row[k], True) for k, _ in COLUMNS]) + r" \\")
        md.append("")
    tex += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(tex) + "\n", "\n".join(md)


def write_pathology(recs: list[dict], out_dir: Path, tag: str, datasets=None, n_boot: int = N_BOOT) -> list[Path]:
    data = build_pathology(recs, datasets, n_boot)
    cap = caption(data, recs, n_boot)
    tex, md = render(data, cap)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"pathology_{tag}.tex", out_dir / f"pathology_{tag}.md", out_dir / f"pathology_{tag}.json"]
    atomic_write_text(paths[0], tex)
    atomic_write_text(paths[1], f"### Against pathology\n\n{cap}\n\n{md}")
    r0 = recs[0]
    atomic_write_text(paths[2], json.dumps(json_ready({"setting": {"source": r0["source"], "profile": r0["profile"], "min_readers": r0.get("min_readers")},
                                                   "bootstrap": n_boot, "min_group": MIN_GROUP, "datasets": data}), indent=1))
    return paths

