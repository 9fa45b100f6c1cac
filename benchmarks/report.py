"""python -m benchmarks.report: one page of results, from run records only.

  python -m benchmarks.report --profile quick            # results/report/report.md and report.html

The page says the setting first (source, profile, text encoder, label rule,
seeds, how many records, the code's commits, devices and package versions;
for the phantom source, that its numbers check the pipeline and are not
results; for partial data, how much of it), then how to read a difference, Tables
1-3 with the paper's numbers under ours (seed aggregation, bootstrap intervals,
corrected paired comparisons with Holm-adjusted p: ``benchmarks.tables``), the
one-glance figure (``figures tables``), the methods' ranks over datasets and
folds (Friedman test and critical-difference diagram, ``figures cd``), CE against
CLIP-Lung per backbone where such records exist, and the interpretability figures
of the same setting found in the figures folder (with the command for each one
that is missing). It goes to ``$CLIPLUNG_RESULTS/report`` (``--out`` for another
folder). The Markdown links its images; the HTML holds them inline, so it opens
from disk without a server.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from benchmarks.cli import (
    ArgumentParser,
    add_plugin_flag,
    add_setting_filters,
    add_tables_flag,
    check_datasets,
    load_plugins,
    output_folder,
    refuse_unknown_methods,
    runs_folder,
)
from benchmarks.errors import UserError, cli_main
from benchmarks.io import atomic_write_text

PHANTOM_WARNING = ("These numbers come from the phantom source (CT-like volumes rendered from the readers' annotations): "
                   "they check the pipeline; they are not results about CT scans.")


def setting_lines(recs: list[dict]) -> list[str]:
    """The facts a reader needs before any number: one bullet each."""
    r0 = recs[0]
    enc = sorted({r["text_encoder"] for r in recs if r.get("text_encoder")})
    commits = sorted({(r.get("git") or {}).get("commit") or "unknown" for r in recs})
    dirty = sum(1 for r in recs if (r.get("git") or {}).get("dirty"))
    devices = sorted({(r.get("device") or {}).get("name", "?") for r in recs})
    versions = {}
    for r in recs:
        for k, v in (r.get("versions") or {}).items():
            versions.setdefault(k, set()).add(v)
    return [
        f"source **{r0['source']}**, profile **{r0['profile']}**, text encoder {', '.join(enc) or 'none'}, "
        f"nodules with at least {r0.get('min_readers')} readers",
        f"{len(recs)} run records; seeds {', '.join(map(str, sorted({r['seed'] for r in recs})))}",
        f"code: commit{'s' if len(commits) > 1 else ''} {', '.join(c[:12] for c in commits)}"
        + (f" ({dirty} records from a working tree with uncommitted changes)" if dirty else ""),
        f"devices: {', '.join(devices)}",
        "packages: " + ", ".join(f"{k} {'/'.join(sorted(map(str, v)))}" for k, v in sorted(versions.items())),
        plugins_line(recs),
    ]


def plugins_line(recs: list[dict]) -> str:
    """'plugins: cliplung-coral@0.1.0 (coral)': each plugin identity the records were made with (name@version of
    an installed package, name#sha256 of a file's source), with its methods or backbones."""
    used: dict[str, set] = {}
    for r in recs:
        for ident, what in ((r.get("plugin"), r.get("method")), (r.get("backbone_plugin"), f"backbone {r.get('backbone')}")):
            if ident:
                used.setdefault(ident, set()).add(what)
    if not used:
        return "plugins: none (every method and backbone built in)"
    return "plugins: " + "; ".join(f"`{k}` ({', '.join(sorted(v))})" for k, v in sorted(used.items()))


def interpretability(figures: Path, profile: str, source: str) -> tuple[list[Path], list[str]]:
    """The t-SNE, Grad-CAM and curve PNGs of this setting in ``figures``, and a line for each kind that is missing."""
    found, missing = [], []
    for kind, cmd in (("tsne", "tsne --dataset LIDC-B"), ("gradcam", "gradcam --dataset LIDC-B"), ("curves", "curves --dataset LIDC-B")):
        hits = sorted(p for p in figures.glob(f"{kind}_*_{profile}_{source}*.png"))
        if hits:
            found += hits
        else:
            missing.append(f"no {kind} figure of this setting yet: `python -m benchmarks.figures {cmd} --profile {profile} --source {source}`")
    return found, missing


READING = ("How to read a difference. The unit of every comparison is a test fold of a partition: a method's seeds on one "
           "fold are averaged first (they share its training and test sets, so they are not extra samples), and with repeated "
           "partitions (--repeats) every partition's folds count, n = folds x partitions. Each Δ is the paired difference of a "
           "method to the reference over those units, with the interval of the corrected resampled t-test (Nadeau & Bengio "
           "2003; Bouckaert & Frank 2004), whose variance accounts for the overlap of the folds' training sets; its p is "
           "Holm-adjusted across the methods of the table. A method is better than the reference on a dataset when the "
           "interval lies above 0 and the adjusted p is below 0.05; an interval that holds 0 says the folds cannot tell them "
           "apart, and each table's caption says how large a difference its folds could have detected (80% power). P(>) is the "
           "share of those units on which the method beats the reference, with its bootstrap interval (Bouthillier et al., MLSys "
           "2021); it carries no verdict mark, because the rule that draws one rejected too many null benchmarks in the "
           "calibration (docs/statistics.md). With five units P(>) moves in steps of 0.2 and its interval is wide: repeated "
           "partitions narrow it. The "
           "bracket after an accuracy is the 95% patient-bootstrap interval of that number (how much it would move with "
           "other patients), not a test of a difference. The radiologists' row is a reference: how well one reader agrees "
           "with the others on the same test folds; it is never ranked or compared.")


def build_markdown(recs: list[dict], tables, out: Path, figures: Path, backbones: list[dict], datasets=None, reference: str = "clip_lung",
                   test: str = "corrected_t", n_boot: int = 2000, left_out: dict | None = None,
                   paper_recs: list[dict] | None = None) -> tuple[str, list[Path]]:
    """The page in Markdown (images linked relative to ``out``) and the images it shows; ``left_out``: {(method,
    dataset): why} of the cells whose records were all left out (their rows say so)."""
    from benchmarks import tables as tb  # noqa: PLC0415
    from benchmarks.figures import cd  # noqa: PLC0415
    from benchmarks.figures.common import save_figure  # noqa: PLC0415
    from benchmarks.figures.glance import draw_tables  # noqa: PLC0415
    from benchmarks.grid import display  # noqa: PLC0415
    from benchmarks.tables.levels import caption_note  # noqa: PLC0415
    from benchmarks.tables.tuning import tuning_note  # noqa: PLC0415

    r0 = recs[0]
    paper = json.loads(tb.PAPER.read_text())
    data = tb.build(recs, tables, datasets, reference, test, n_boot, left_out=left_out)
    labels = tb.labels_of(recs, left_out)
    tuned = [r for r in recs if r.get("tuning")]
    objective = tuned[0]["tuning"]["objective"] if tuned else None
    lines = [f"# Results: profile {r0['profile']}, source {r0['source']}" + (f", tuned (validation {objective})" if tuned else ""), ""]
    if r0["source"] == "phantom":
        lines += [f"> **{PHANTOM_WARNING}**", ""]
    if tb.source_note(recs):
        lines += [f"> {tb.source_note(recs).strip()}", ""]
    partial = tb.partial_note(recs)
    if partial:
        lines += [f"> **{partial.strip()} Their cells are marked ‡.**", ""]
    if r0["profile"] != "paper":
        lines += [f"> The `{r0['profile']}` profile trains briefly: a check that everything runs, not the paper's schedule.", ""]
    lines += ["## Setting", ""] + [f"- {x}" for x in setting_lines(recs)]
    if tuned:
        budgets = "/".join(map(str, sorted({r["tuning"]["budget"] for r in tuned})))
        lines.append(f"- **tuned**: each method's configuration chosen per test fold by its own study of {budgets} trials on an inner "
                     f"validation split (objective validation {objective}); search spaces, chosen parameters and cost under Tuning")
    lines += [""]
    glance = save_figure(draw_tables(recs, tables, paper, datasets), out, "tables_at_a_glance")[0]
    images = [glance]
    lines += ["## At a glance", "", f"![accuracy per method and dataset beside the paper's]({glance.name})", ""]
    lines += ["## Reading the comparisons", "", READING, ""]
    for t in tables:
        if not data[t]:
            continue
        parts = (tb.caption_for(t, recs, reference, test, labels, n_boot, datasets), caption_note(data, t, test, display(reference, labels.get(reference))),
                 tuning_note(recs))
        cap = " ".join(x.strip() for x in parts if x.strip())
        _, md = tb.render_3(data, paper, cap, False, left_out) if t == 3 else tb.render_12(t, data, paper, cap, False, labels, reference, left_out)
        lines += [f"## Table {t}" + (" (tuned)" if tuned else ""), "", cap, "", md.strip(), ""]
    lines += pathology_section(recs, datasets, n_boot)
    lines += variance_section(data, tables, out, images)
    ranks = cd.rank_test(recs, tables, "accuracy", datasets)
    lines += ["## Ranks over datasets and folds", ""]
    if ranks is None:
        lines += ["- too few methods or complete (dataset, fold) blocks for the Friedman test (it needs 2 of each)", ""]
    else:
        fig = save_figure(cd.draw(ranks, "accuracy", recs), out, "cd_accuracy")[0]
        images.append(fig)
        lines += [f"Friedman test of {len(ranks.methods)} methods by accuracy over {len(ranks.blocks)} (dataset, fold) blocks (seeds "
                  "averaged; the folds of a dataset share training data and patients, so these blocks are not independent and the "
                  "test is exploratory; `python -m benchmarks.figures cd --blocks datasets` ranks over Demsar's dataset blocks): "
                  f"chi2 = {ranks.statistic:.2f} (df {ranks.df}), p = {ranks.p:.3g}; Iman-Davenport F = {ranks.iman_davenport:.2f}, "
                  f"p = {ranks.p_iman_davenport:.3g}. Methods joined by a bar are not told apart by the Nemenyi test at "
                  f"{ranks.alpha:g} (critical difference {ranks.cd:.2f} ranks).", "", f"![critical-difference diagram]({fig.name})", ""]
    if backbones:
        bdata = tb.build_backbones(backbones, test, n_boot)
        _, md = tb.render_backbones(bdata, paper, "CE and CLIP-Lung per backbone")
        lines += ["## CE vs CLIP-Lung per backbone", "", md.strip(), ""]
    lines += tuning_section(recs, paper_recs, out, images)
    found, missing = interpretability(figures, r0["profile"], r0["source"])
    lines += ["## Interpretability", ""]
    for p in found:
        images.append(p)
        lines += [f"![{p.stem}]({_relative(p, out)})", ""]
    lines += [f"- {m}" for m in missing] + [""]
    return "\n".join(lines), images


def pathology_section(recs: list[dict], datasets, n_boot: int) -> list[str]:
    """'Against pathology': the table of ``tables --truth pathology`` (``benchmarks.tables.pathology``)."""
    from benchmarks.tables.pathology import build_pathology, caption, render  # noqa: PLC0415

    data = build_pathology(recs, datasets, n_boot)
    _, md = render(data, "")
    return ["## Against pathology", "", caption(data, recs, n_boot), "", md.strip(), ""]


def tuning_section(recs: list[dict], paper: list[dict] | None, out: Path, images: list) -> list[str]:
    """The Tuning section of a tuned setting's report: how it was tuned, each method's paper configuration
    against its tuned one with the chosen parameters, and the best-so-far curves of the studies."""
    from benchmarks.figures.common import save_figure  # noqa: PLC0415
    from benchmarks.figures.tuning import draw  # noqa: PLC0415
    from benchmarks.tables.tuning import build_tuning, render_spaces, render_tuning, spaces, tuning_note  # noqa: PLC0415
    from benchmarks.tune.summary import read_study_record  # noqa: PLC0415

    tuned = [r for r in recs if r.get("tuning")]
    if not tuned:
        return []
    labels = {r["method"]: r.get("label") for r in tuned}
    lines = ["## Tuning", "", tuning_note(tuned) + "Trials never saw a test fold (docs/tuning.md).", ""]
    lines += ["### Search spaces and cost", "", "Each method's search space (every method also over the shared learning rate and weight "
              "decay; an ablation only over the weights of the terms it trains), its studies and trials per study, and what they cost: "
              "the trials' training and validation, and the set-up before them (loading folds, the crop cache built once, models).", "",
              render_spaces(spaces(tuned), labels).strip(), ""]
    _, md = render_tuning(build_tuning(tuned, paper or []), "", labels)
    lines += ["### Paper configuration vs tuned, and the chosen parameters", "", md.strip(), ""]
    studies = [s for s in (read_study_record(n) for n in sorted({r["tuning"]["study"] for r in tuned})) if s]
    if studies:
        fig, _ = draw(studies)
        img = save_figure(fig, out, "tuning_best_so_far")[0]
        images.append(img)
        lines += ["Best validation value after each finished trial, per method (thin: each fold's study; thick: their mean): a "
                  "curve still climbing at the last trial means the budget was too small for that method.", "",
                  f"![best-so-far validation per trial]({img.name})", ""]
    return lines


def variance_section(data: dict, tables, out: Path, images: list) -> list[str]:
    """'What moves a cell': the share of each cell's accuracy variance from the partition, the fold and the seed
    (``benchmarks.stats.variance``), as a small figure and a table."""
    from benchmarks.figures.common import save_figure  # noqa: PLC0415
    from benchmarks.figures.variance import draw_variance, variance_rows  # noqa: PLC0415

    rows = variance_rows(data, tables)
    lines = ["## What moves a cell", ""]
    if not rows:
        return lines + ["- no cell has two runs to split its variance", ""]
    fig = save_figure(draw_variance(rows), out, "variance_accuracy")[0]
    images.append(fig)
    lines += ["Each cell's accuracy variance split by a nested analysis of variance (method of moments; negative estimates "
              "set to 0) into the share of the partition (with --repeats), the test fold and the seed. A level the records "
              "do not vary has no share (one seed: the fold's share holds the seed's too). Hyperparameters get a share once "
              "tuned records exist.", "", f"![variance shares per cell]({fig.name})", "",
              "| Cell | partition | fold | seed | runs |", "|---|---|---|---|---|"]
    for ds, m, comp in rows:
        sh = comp["shares"]
        cells = ["—" if sh.get(k) is None else f"{sh[k]:.2f}" for k in ("partition", "fold", "seed")]
        lines.append(f"| {m}, {ds} | " + " | ".join(cells) + f" | {comp['n']} |")
    return lines + [""]


def _relative(p: Path, base: Path) -> str:
    import os  # noqa: PLC0415

    return os.path.relpath(p.resolve(), base.resolve())


_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"), (re.compile(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])"), r"<em>\1</em>"),
           (re.compile(r"`([^`]+)`"), r"<code>\1</code>")]


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pat, rep in _INLINE:
        out = pat.sub(rep, out)
    return out


def to_html(markdown: str, images: dict[str, Path], title: str) -> str:
    """The page's Markdown (headings, paragraphs, quotes, bullets, pipe tables, images) as one
    HTML document with the images inline (data: URIs)."""
    body, table, items = [], [], []

    def flush():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|?(\s*-+\s*\|)+\s*-*\s*", r)]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            body.append("<table>")
            body.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells[0]) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append("</table>")
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in markdown.splitlines():
        img = re.fullmatch(r"!\[(.*)\]\((.+)\)", line.strip())
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if img:
            path = images[img.group(2)]
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(img.group(1))}" src="data:image/png;base64,{data}"></figure>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("> "):
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}blockquote{border-left:4px solid #d62728;margin:1em 0;padding:.3em 1em;background:#fff5f5}"
             "code{background:#f3f3f3;padding:0 3px}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def write_report(recs: list[dict], tables, out: Path, figures: Path, backbones: list[dict] | None = None, datasets=None,
                 reference: str = "clip_lung", test: str = "corrected_t", n_boot: int = 2000, left_out: dict | None = None,
                 paper_recs: list[dict] | None = None) -> list[Path]:
    md, images = build_markdown(recs, tables, out, figures, backbones or [], datasets, reference, test, n_boot, left_out, paper_recs)
    by_link = {_relative(p, out) if p.parent.resolve() != out.resolve() else p.name: p for p in images}
    title = md.splitlines()[0].lstrip("# ")
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", to_html(md, by_link, title))
    return [out / "report.md", out / "report.html"]


@cli_main
def main(argv=None):
    from benchmarks.tables.cli import add_comparison_flags  # noqa: PLC0415

    ap = ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    add_tables_flag(ap)
    add_setting_filters(ap)
    add_comparison_flags(ap)
    ap.add_argument("--figures", default=None, help="where to look for the interpretability figures (default: $CLIPLUNG_RESULTS/figures)")
    ap.add_argument("--out", default=None, help="folder of report.md, report.html and its figures (default: $CLIPLUNG_RESULTS/report)")
    add_plugin_flag(ap)
    args = ap.parse_args(argv)
    refuse_unknown_methods([args.reference] if args.reference else [], args.plugin)  # a typo answers before torch is imported
    load_plugins(args)
    from benchmarks import tables as tb  # noqa: PLC0415  (scipy, the registry: deferred for --help speed)
    from benchmarks.paths import output_dir  # noqa: PLC0415
    from benchmarks.records import backbone_of, read_records  # noqa: PLC0415
    from benchmarks.selection import Setting  # noqa: PLC0415
    from benchmarks.tables.cli import reference_of  # noqa: PLC0415

    datasets = check_datasets(args.datasets, args.tables)
    runs = runs_folder(args)
    out = output_folder(args.out, "report", "report folder")
    records = read_records(runs)
    setting = Setting.from_args(args)
    left_out: dict = {}
    recs = tb.select(records, args.tables, setting, runs, datasets, left_out=left_out)
    if setting.tuned:  # each tuned record's study tuned for the code that made the record
        from benchmarks.tune.summary import check_tuned_records  # noqa: PLC0415

        check_tuned_records(recs, setting.tag)
    reference = reference_of(recs, args.reference)
    r0 = recs[0]
    try:  # CE vs CLIP-Lung per backbone, when records of another backbone than the paper's exist
        pinned = Setting(r0["source"], r0["profile"], r0.get("min_readers"), args.text_encoder, tuple(args.set))
        backbones = tb.select_backbones(records, pinned, runs)
    except UserError:
        backbones = []
    if len({backbone_of(r) for r in backbones}) < 2:
        backbones = []
    figures = Path(args.figures) if args.figures else output_dir("figures")
    paper_recs = None
    if setting.tuned:  # the Tuning section sets each method's paper configuration beside its tuned one
        import dataclasses  # noqa: PLC0415

        try:
            untuned = [r for r in records if not r.get("tuning")]  # (else select says the tuned ones are left out, "pick them with --tuned")
            paper_recs = tb.select(untuned, args.tables, dataclasses.replace(setting, tuned=False), runs, datasets)
        except UserError:
            paper_recs = []
    paths = write_report(recs, args.tables, out, figures, backbones, datasets, reference, args.test, args.bootstrap, left_out, paper_recs)
    if r0["source"] == "phantom":
        print(f"warning: {PHANTOM_WARNING}")
    print(f"{len(recs)} records -> " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
