"""The tuned setting beside the paper's: each method's accuracy at the paper's configuration and tuned.

``tables --tuned`` writes Tables 1-2 of the tuned runs (each fold's configuration
chosen by its study, ``benchmarks.tune``) and this table: per method and dataset,
the accuracy at the paper's configuration (the untuned runs of the same setting),
the tuned accuracy, their paired difference over the same test folds (seeds
averaged within a fold first) with the corrected resampled t-test (the tables' test), and the configuration each fold's study chose. The caption names
the budget, sampler, pruner, objective and what the studies cost (trial time,
summed from the study records).
"""
from __future__ import annotations

from collections import defaultdict

from benchmarks.grid import display
from benchmarks.space import describe_json
from benchmarks.tables.build import cell_stats, comparisons
from benchmarks.tables.render import _dash, fmt_diff, fmt_p, tex_escape
from benchmarks.tune.summary import read_study_record


def _studies(recs: list[dict]) -> dict[str, dict]:
    """The study records the tuned runs name (those still readable)."""
    out = {}
    for name in sorted({r["tuning"]["study"] for r in recs}):
        try:
            rec = read_study_record(name)
        except Exception:  # noqa: BLE001  a damaged study record: the table says what it can without it
            rec = None
        if rec is not None:
            out[name] = rec
    return out


def build_tuning(tuned: list[dict], paper: list[dict], test: str = "corrected_t") -> dict:
    """{dataset: {method: {"paper", "tuned": accuracy stats, "diff": comparison, "chosen": per fold}}}."""
    by_cell: dict[tuple, dict[str, list]] = defaultdict(lambda: {"paper": [], "tuned": []})
    for r in tuned:
        by_cell[(r["dataset"], r["method"])]["tuned"].append(r)
    for r in paper:
        if (r["dataset"], r["method"]) in by_cell:
            by_cell[(r["dataset"], r["method"])]["paper"].append(r)
    studies = _studies(tuned)
    out: dict[str, dict] = defaultdict(dict)
    for (ds, m), cell in sorted(by_cell.items()):
        entry = {"tuned": cell_stats(cell["tuned"], n_boot=0)["metrics"].get("accuracy"),
                 "paper": cell_stats(cell["paper"], n_boot=0)["metrics"].get("accuracy") if cell["paper"] else None,
                 "diff": None, "chosen": {}}
        if cell["paper"]:
            entry["diff"] = comparisons({"paper": cell["paper"], "tuned": cell["tuned"]}, "paper", test).get("tuned", {}).get("accuracy")
        for r in sorted(cell["tuned"], key=lambda r: (r["fold"], r["seed"])):
            t = r["tuning"]
            s = studies.get(t["study"])
            entry["chosen"][str(r["fold"])] = {"trial": t["trial"], "params": t["params"], "validation": t["value"], "budget": t["budget"],
                                               "study": t["study"],
                                               "trial_seconds": round(sum(x.get("seconds") or 0 for x in s["trials"]), 1) if s else None}
        out[ds][m] = entry
    return dict(out)


def costs(studies: dict[str, dict]) -> tuple[float, float]:
    """(hours the trials trained and validated, hours of set-up before them: loading the folds, the crop cache
    built once by a worker's first trial when there was none, building the models), summed over the studies."""
    train = sum(x.get("seconds") or 0 for s in studies.values() for x in s["trials"])
    setup = sum(x.get("setup_seconds") or 0 for s in studies.values() for x in s["trials"])
    return train / 3600, setup / 3600


def tuning_note(recs: list[dict]) -> str:
    """The tuned setting in one sentence for a caption ('' for untuned records)."""
    tuned = [r for r in recs if r.get("tuning")]
    if not tuned:
        return ""
    budgets = sorted({r["tuning"]["budget"] for r in tuned})
    objectives = sorted({r["tuning"]["objective"] for r in tuned})
    studies = _studies(tuned)
    s0 = next(iter(studies.values()), None)
    search = f"; sampler {s0['setting']['sampler']}; pruner {s0['setting']['pruner']}" if s0 and s0.get("setting") else ""
    train, setup = costs(studies)
    return (f"Tuned: each test fold's configuration chosen by its own study of {'/'.join(map(str, budgets))} trials "
            f"(the paper's defaults first{search}; ties on the objective broken by the lower validation log loss) on a "
            f"patient-grouped inner validation split of the training folds, objective validation {'/'.join(objectives)}; "
            f"the test fold never chose; the studies' trials trained and validated for {train:.2f} h in all "
            f"(set-up before them {setup:.2f} h more: loading folds, building the crop cache once, building models). ")


def spaces(tuned: list[dict]) -> dict:
    """{method: {"space": its search space (JSON), "text": in words, "studies", "budget", "train_h", "setup_h"}} of the
    studies the tuned records name (a method whose studies differ in space lists each, joined by ' | ')."""
    studies = _studies(tuned)
    by: dict[str, list] = defaultdict(list)
    for s in studies.values():
        if s.get("setting"):
            by[s["setting"]["method"]].append(s)
    out = {}
    for m, ss in sorted(by.items()):
        texts = list(dict.fromkeys(describe_json(s["setting"].get("space") or {}) for s in ss))
        train, setup = costs({s["study"]: s for s in ss})
        out[m] = {"space": ss[0]["setting"].get("space"), "text": " | ".join(texts), "studies": len(ss),
                  "budget": "/".join(map(str, sorted({s["budget"] for s in ss}))), "train_h": round(train, 6), "setup_h": round(setup, 6)}  # hours; 6 places keep a smoke study's seconds
    return out


def render_spaces(data: dict, labels: dict, latex: bool = False) -> str:
    """The search space of each tuned method, its budget and what its studies cost, as a table."""
    head = ["Method", "Search space", "Studies × trials", "Trials' time (h)", "Set-up (h)"]
    if latex:
        rows = [" & ".join([tex_escape(display(m, labels.get(m))), tex_escape(e["text"]), f"{e['studies']} $\\times$ {e['budget']}",
                            f"{e['train_h']:.2f}", f"{e['setup_h']:.2f}"]) + " \\\\" for m, e in data.items()]
        return "\n".join(["\\begin{tabular}{lp{0.55\\linewidth}rrr}", "\\toprule", " & ".join(["Method", "Search space", "Studies $\\times$ trials", "Trials' time (h)", "Set-up (h)"]) + " \\\\", "\\midrule", *rows,
                          "\\bottomrule", "\\end{tabular}"])
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += [f"| {display(m, labels.get(m))} | {e['text']} | {e['studies']} × {e['budget']} | {e['train_h']:.2f} | {e['setup_h']:.2f} |"
           for m, e in data.items()]
    return "\n".join(md) + "\n"


def _fmt_acc(e, latex: bool) -> str:
    if not e:
        return _dash(latex)
    pm = "$\\pm$" if latex else "±"
    std = "" if e["std"] != e["std"] else f" {pm} {e['std']:.1f}"  # one fold: no spread
    return f"{e['mean']:.1f}{std}"


def _fmt_chosen(chosen: dict, latex: bool) -> str:
    parts = []
    for fold, c in chosen.items():
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(c["params"].items()))
        parts.append(f"{fold}: trial {c['trial']} ({params})")
    text = "; ".join(parts)
    return tex_escape(text) if latex else text


def render_tuning(data: dict, caption: str, labels: dict) -> tuple[str, str]:
    """(LaTeX, Markdown) of the paper-vs-tuned table."""
    head = ["Dataset", "Method", "Paper config.", "Tuned", "Δ (tuned − paper)", "p", "Chosen per fold"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tex = ["\\begin{table}[t]", "\\centering", f"\\caption{{{tex_escape(caption)}}}", "\\resizebox{\\linewidth}{!}{%",
           "\\begin{tabular}{llccccl}", "\\toprule",
           " & ".join(tex_escape(h) for h in head) + " \\\\", "\\midrule"]
    for ds, cells in data.items():
        for m, e in cells.items():
            name = display(m, labels.get(m))
            d = e["diff"]
            diff_md, diff_tex = fmt_diff(d, False), fmt_diff(d, True)
            md.append(f"| {ds} | {name} | {_fmt_acc(e['paper'], False)} | {_fmt_acc(e['tuned'], False)} | {diff_md} | {fmt_p(d, False)} | "
                      f"{_fmt_chosen(e['chosen'], False)} |")
            tex.append(" & ".join([ds, tex_escape(name), _fmt_acc(e["paper"], True), _fmt_acc(e["tuned"], True), diff_tex, fmt_p(d, True),
                                   _fmt_chosen(e["chosen"], True)]) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}}", "\\end{table}", ""]
    return "\n".join(tex), "\n".join(md) + "\n"


def write_tuning(tuned: list[dict], paper: list[dict], out_dir, tag: str, labels: dict, test: str = "corrected_t") -> list:
    """``tuning_<tag>.{tex,md,json}``: the paper-vs-tuned table of ``tuned`` records beside ``paper`` ones."""
    import json  # noqa: PLC0415

    from benchmarks.io import atomic_write_text  # noqa: PLC0415

    data = build_tuning(tuned, paper, test)
    cap = ("Each method at the paper's configuration and tuned alike (accuracy mean ± s.d. over folds, in %). " + tuning_note(tuned)
           + "Δ: tuned minus paper configuration, paired over the same test folds (seeds averaged within a fold), mean [95% interval of the corrected resampled t-test "
           "(Nadeau & Bengio 2003)]; p: that test; chosen: each fold's trial and its parameters; — no runs of the paper's "
           "configuration in this setting.")
    tex, md = render_tuning(data, cap, labels)
    sp = spaces(tuned)
    space_cap = ("Search space of each method (every method also over the shared learning rate and weight decay), the studies and "
                 "trials per study, and what they cost: the trials' training and validation, and the set-up before them.")
    tex = tex.replace("\\end{table}", f"\\par\\medskip\\footnotesize {tex_escape(space_cap)}\\par\n{render_spaces(sp, labels, True)}\n\\end{{table}}", 1)
    md = f"{md}\n#### Search spaces\n\n{space_cap}\n\n{render_spaces(sp, labels)}"
    paths = []
    for suffix, text in ((".tex", tex), (".md", f"### Tuned vs paper configuration\n\n{cap}\n\n{md}"),
                         (".json", json.dumps({"caption": cap, "tuning": data, "spaces": sp}, indent=1, default=str))):
        path = out_dir / f"tuning_{tag}{suffix}"
        atomic_write_text(path, text)
        paths.append(path)
    return paths
