r"""python -m benchmarks.tables: Tables 1-3 of the paper from run records (and nothing else).

  python -m benchmarks.tables --profile quick                     # Tables 1-3 of the quick runs
  python -m benchmarks.tables --tables 2 --datasets LIDC-B         # one dataset
  python -m benchmarks.tables --set epochs=20                      # the records made with --set epochs=20
  python -m benchmarks.tables --reference ce --test wilcoxon       # compared with CE, by Wilcoxon's test
  python -m benchmarks.tables --truth pathology                    # against the diagnoses TCIA confirmed, per patient

Writes ``table{1,2,3}_<profile>_<source>.tex`` and ``.md``, plus
``tables_<profile>_<source>.json`` with every number, into ``$CLIPLUNG_RESULTS/tables``
(default ``results/tables``; ``--out`` for another folder): the file names, like the
captions, say which data and schedule made them (with ``--datasets``, the datasets
in front: ``table2_LIDC-B_quick_phantom.md``; the plugins whose records they hold
behind: ``table2_quick_phantom_coral.md``). The LaTeX needs the packages
``booktabs`` (rules), ``graphicx`` (``\resizebox``) and ``amssymb``
(``\checkmark``): ``preamble.tex`` beside the tables loads them
(``\input{preamble}`` in your document's preamble), and
``tables_<profile>_<source>.tex`` is a standalone document of all the tables
written (``pdflatex`` it in that folder). Tables of the ``paper`` profile on the
``phantom`` source also print a warning line: their numbers are not results.

Each cell is one method on one dataset over its folds and seeds, every metric
computed from the records' test predictions. With several seeds, a fold's value is
the mean over its seeds; ± is the sample standard deviation (ddof = 1) over folds
of those means, and the seed standard deviation is given beside it. Accuracy is
shown as mean ± std with its 95% patient-bootstrap interval (and, on binary test
sets, the AUC with its interval), recall and F1 as means, as in the paper. Tables
1-2 give for every method the paired difference of accuracy to the reference
(CLIP-Lung) over the same test folds (a fold's seeds averaged first; with
``--repeats``, the folds of every partition), with the interval of the corrected
resampled t-test and its p (or Wilcoxon's, ``--test wilcoxon``), Holm-adjusted
across the methods of the table, and P(> reference) with its bootstrap interval;
below the methods, the radiologists' agreement as a reference row. Table 3 marks
the ablations that differ from the full model. The JSON holds every comparison,
for every metric, each cell's variance split into partition, fold and seed, and
the readers' rows.

Which records: one setting (``benchmarks/selection.py``): records of different data
sources, profiles or label rules are never averaged together (pick one with
``--source``, ``--profile``, ``--min-readers``); the ``--set`` overrides pick the
records made with them (none: the profile's own configs), and records of other
overrides, of older versions of a method or plugin, or whose stored metrics
disagree with their predictions, are left out with a warning naming them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from benchmarks.cli import (
    ArgumentParser,
    add_plugin_flag,
    add_setting_filters,
    add_tables_flag,
    check_datasets,
    int_in,
    load_plugins,
    output_folder,
    refuse_unknown_methods,
    runs_folder,
    warn_phantom,
)
from benchmarks.errors import UserError, cli_main
from benchmarks.grid import cells, display
from benchmarks.io import atomic_write_text, json_ready
from benchmarks.records import backbone_of, read_records
from benchmarks.selection import Setting
from benchmarks.stats.bootstrap import MAX_BOOT, MIN_BOOT
from benchmarks.tables.build import N_BOOT, PAPER, TESTS, build, build_backbones, labels_of, select, select_backbones, setting_tag
from benchmarks.tables.levels import caption_note
from benchmarks.tables.pathology import write_pathology
from benchmarks.tables.render import caption_for, render_3, render_12, render_backbones
from benchmarks.tables.tuning import tuning_note
from benchmarks.tune.summary import check_tuned_records

# What the generated LaTeX uses: rules, \resizebox, \checkmark.
PREAMBLE = "% Packages the tables of benchmarks.tables need.\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\usepackage{amssymb}\n"


def _setting_json(records: list[dict]) -> dict:
    r0 = records[0]
    cov = next(((r.get("data") or {}).get("scope", {}).get("slices") for r in records if r.get("source") == "slices"), None)
    return {"source": r0["source"], "profile": r0["profile"], "min_readers": r0.get("min_readers"),
            "text_encoders": sorted({r["text_encoder"] for r in records if r.get("text_encoder")}),
            "seeds": sorted({r["seed"] for r in records}), **({"slices_coverage": cov} if cov else {})}


def write_tables(tables, records: list[dict], out_dir: Path, with_paper: bool = False, datasets=None, reference: str = "clip_lung",
                 test: str = "corrected_t", n_boot: int = N_BOOT, left_out: dict | None = None) -> list[Path]:
    """The tables' files; ``left_out``: {(method, dataset): why} of the cells whose records were all left out (``select``)."""
    paper = json.loads(PAPER.read_text())
    data = build(records, tables, datasets, reference, test, n_boot, left_out=left_out)
    labels = labels_of(records, left_out)
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = setting_tag(records, datasets)
    note = tuning_note(records).strip()  # the tuned setting: said in every caption and heading
    tuned = " (tuned)" if note else ""
    for t in tables:
        if not data[t]:
            continue  # --datasets left this table none of its datasets
        parts = (caption_for(t, records, reference, test, labels, n_boot, datasets), caption_note(data, t, test, display(reference, labels.get(reference))), note)
        cap = " ".join(x.strip() for x in parts if x.strip())
        tex, md = (render_3(data, paper, cap, with_paper, left_out) if t == 3
                   else render_12(t, data, paper, cap, with_paper, labels, reference, left_out))
        for suffix, text in ((".tex", tex), (".md", f"### Table {t}{tuned}\n\n{cap}\n\n{md}")):
            p = out_dir / f"table{t}_{tag}{suffix}"
            atomic_write_text(p, text)
            paths.append(p)
    written = [t for t in tables if data[t]]
    for name, text in (("preamble.tex", PREAMBLE),
                       (f"tables_{tag}.tex", "\\documentclass{article}\n\\input{preamble}\n\\begin{document}\n"
                        + "".join(f"\\input{{table{t}_{tag}}}\n" for t in written) + "\\end{document}\n")):
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    j = out_dir / f"tables_{tag}.json"
    atomic_write_text(j, json.dumps(json_ready({"setting": _setting_json(records), "reference": reference, "test": test, "bootstrap": n_boot,
                                             "tables": {str(t): data[t] for t in written}, "readers": data.get("readers"),
                                             "detectable": {str(t): data["detectable"][t] for t in written if t in data.get("detectable", {})},
                                             "left_out": [{"method": m, "dataset": d, "why": w} for (m, d), w in sorted((left_out or {}).items())]}),
                                     indent=1))
    paths.append(j)
    return paths


def write_backbones(records: list[dict], out_dir: Path, test: str = "corrected_t", n_boot: int = N_BOOT) -> list[Path]:
    paper = json.loads(PAPER.read_text())
    data = build_backbones(records, test, n_boot)
    r0 = records[0]
    enc = sorted({r["text_encoder"] for r in records if r.get("text_encoder")})
    cap = (f"CE and CLIP-Lung on each image encoder (ours: source {r0['source']}, profile {r0['profile']}"
           + (f", text encoder {', '.join(enc)}" if enc else "") + f", at least {r0.get('min_readers')} readers). "
           "Accuracy mean ± sample standard deviation over folds (of the seed means), in %; gain: paired accuracy difference "
           "CLIP-Lung minus CE over the same test folds (seeds averaged within each), mean [95% interval of the corrected resampled t-test]; p: "
           + ("the corrected resampled t-test" if test == "corrected_t" else "the Wilcoxon signed-rank test")
           + "; † fewer than 5 folds; — missing. Paper: the text branch on MV-DAR, reported by Lei et al. (MICCAI 2023) for LIDC-A only.")
    tex, md = render_backbones(data, paper, cap)
    paths = []
    tag = setting_tag(records)
    for name, text in ((f"backbones_{tag}.tex", tex), (f"backbones_{tag}.md", f"### CE vs CLIP-Lung per backbone\n\n{cap}\n\n{md}"),
                       ("preamble.tex", PREAMBLE),
                       (f"backbones_{tag}_doc.tex",
                        f"\\documentclass{{article}}\n\\input{{preamble}}\n\\begin{{document}}\n\\input{{backbones_{tag}}}\n\\end{{document}}\n"),
                       (f"backbones_{tag}.json", json.dumps(json_ready({"setting": _setting_json(records), "test": test, "backbones": data}), indent=1))):
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


def _write_tuning(records, tuned, args, setting, runs, datasets, out) -> list[Path]:
    import dataclasses  # noqa: PLC0415

    from benchmarks.tables.tuning import write_tuning  # noqa: PLC0415

    try:
        untuned = [r for r in records if not r.get("tuning")]  # (else select says the tuned ones are left out, "pick them with --tuned")
        paper = select(untuned, [t for t in args.tables if t in (1, 2)] or [1, 2], dataclasses.replace(setting, tuned=False), runs, datasets)
    except UserError as e:  # no runs of the paper's configuration: the table shows the tuned side alone
        logging.getLogger(__name__).warning("no runs of the paper's configuration to put beside the tuned ones (%s)", e)
        paper = []
    return write_tuning(tuned, paper, out, setting_tag(tuned, datasets), labels_of(tuned), args.test)


def add_comparison_flags(parser) -> None:
    """``--reference``, ``--test``, ``--bootstrap``: how cells are compared and given intervals (tables, report)."""
    parser.add_argument("--reference", default=None, help="the method every other is compared with (default: clip_lung)")
    parser.add_argument("--test", default="corrected_t", choices=TESTS, help="the paired test whose p is reported (Holm-adjusted)")
    parser.add_argument("--bootstrap", type=boot_count, default=N_BOOT, metavar="N",
                        help=f"patient-bootstrap resamples of each cell's interval: {MIN_BOOT} to {MAX_BOOT:,} (0: no intervals)")


def boot_count(text: str) -> int:
    """argparse type of ``--bootstrap``: 0 (off) or MIN_BOOT to MAX_BOOT resamples (why: ``benchmarks.stats.bootstrap``)."""
    import argparse  # noqa: PLC0415

    v = int_in(0)(text)
    if v and not MIN_BOOT <= v <= MAX_BOOT:
        raise argparse.ArgumentTypeError(f"{v} resamples: use 0 (no intervals) or {MIN_BOOT} to {MAX_BOOT:,}; fewer leave a 95% interval "
                                         "a few replicates per tail (it may even exclude its own estimate), more change nothing shown")
    return v


def reference_of(records: list[dict], given: str | None) -> str:
    """``--reference``, which must have records in the setting; CLIP-Lung when not given (its cells
    then simply have no comparison when it has no records)."""
    if given is not None and given not in {r["method"] for r in records}:
        raise UserError(f"--reference {given}: no records of that method in this setting; "
                        f"methods with records: {', '.join(sorted({r['method'] for r in records}))}")
    return given or "clip_lung"


@cli_main
def main(argv=None):
    ap = ArgumentParser(prog="python -m benchmarks.tables", description=__doc__)
    add_tables_flag(ap)
    add_setting_filters(ap)
    add_comparison_flags(ap)
    ap.add_argument("--out", default=None, help="folder of the tables (default: $CLIPLUNG_RESULTS/tables, i.e. results/tables)")
    ap.add_argument("--with-paper", action="store_true", help="also put the paper's numbers in the LaTeX")
    ap.add_argument("--backbones", action="store_true", help="instead of Tables 1-3: CE vs CLIP-Lung on each backbone (backbones_<profile>_<source>.{tex,md,json})")
    ap.add_argument("--truth", choices=("readers", "pathology"), default="readers",
                    help="readers: Tables 1-3 against the readers' labels; pathology: the patients whose diagnosis TCIA confirmed, per "
                         "patient, with the radiologists and the attribute-only model as reference rows (pathology_<profile>_<source>.{tex,md,json})")
    add_plugin_flag(ap)
    args = ap.parse_args(argv)
    refuse_unknown_methods([args.reference] if args.reference else [], args.plugin)  # a typo answers before torch is imported
    load_plugins(args)
    datasets = check_datasets(args.datasets, None if args.backbones else args.tables)
    runs = runs_folder(args)
    out = output_folder(args.out, "tables", "tables folder")
    records = read_records(runs)
    setting = Setting.from_args(args)
    if args.backbones:
        recs = select_backbones(records, setting, runs)
        warn_phantom(recs[0]["profile"], recs[0]["source"])
        paths = write_backbones(recs, out, args.test, args.bootstrap)
        print(f"{len(recs)} records of {len({backbone_of(r) for r in recs})} backbones -> " + ", ".join(str(p) for p in paths))
        return
    left_out: dict = {}
    recs = select(records, args.tables, setting, runs, datasets, left_out=left_out)
    if setting.tuned:  # each tuned record's study tuned for the code that made the record
        check_tuned_records(recs, setting.tag)
    reference = reference_of(recs, args.reference)
    warn_phantom(recs[0]["profile"], recs[0]["source"])
    if args.truth == "pathology":
        paths = write_pathology(recs, out, setting_tag(recs, datasets), datasets, args.bootstrap)
        print(f"{len(recs)} records of {len({r['method'] for r in recs})} methods scored against pathology -> " + ", ".join(map(str, paths)))
        return
    paths = write_tables(args.tables, recs, out, args.with_paper, datasets, reference, args.test, args.bootstrap, left_out)
    if setting.tuned:  # beside Tables 1-2 of the tuned runs: each method's paper configuration against its tuned one
        paths += _write_tuning(records, recs, args, setting, runs, datasets, out)
    have = {(r["method"], r["dataset"]) for r in recs}
    # The tables' cells, and the cells of the methods outside them (a plugin's) that have records: counted
    # on both sides, so that a plugin's cell never makes "3 of 8" out of what is 3 of 9.
    want = {c for c in cells(args.tables) if datasets is None or c[1] in datasets} | have | set(left_out)
    print(f"{len(recs)} records in {len(have)} of {len(want)} cells -> " + ", ".join(str(p) for p in paths))
