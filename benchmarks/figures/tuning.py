"""figures tuning: did every method converge within the budget? Best-so-far validation curves per study.

A panel per dataset; per method, the best completed validation value after each
finished trial (the budget's slots in the order they finished; a pruned trial
keeps the best so far), a thin line per outer fold and a thick line for their
mean. A curve still climbing at the last trial says the budget was too small
for that method; a flat one, that more trials would not have helped on this
validation split. Read from the study records (``benchmarks.tune.summary``).
"""
from __future__ import annotations

import json
from collections import defaultdict

from benchmarks.errors import UserError
from benchmarks.figures.common import name, plt_, save_figure
from benchmarks.io import atomic_write_text
from benchmarks.lifecycle import sets_for
from benchmarks.tune.summary import best_so_far, finished, read_study_records


def pick_studies(args) -> list[dict]:
    """The finished studies of one setting (profile, source, label rule, objective, tag), as tables pick records."""
    recs = [r for r in read_study_records() if isinstance(r.get("setting"), dict)]
    s = lambda r, k: r["setting"].get(k)  # noqa: E731
    want = {"objective": args.objective or "accuracy"}
    for k in ("profile", "source", "min_readers"):
        if getattr(args, k, None) is not None:
            want[k] = getattr(args, k)
    recs = [r for r in recs if all(s(r, k) == v for k, v in want.items())]
    recs = [r for r in recs if (r["study"].endswith(f".{args.tag}") if args.tag else True)]
    # The studies of these --set overrides only (none by default), each method's own as tune run kept them.
    sets = getattr(args, "set", None) or []
    recs = [r for r in recs if list(s(r, "sets") or []) == (list(sets_for(s(r, "method"), sets)) if sets else [])]
    if getattr(args, "methods_tuned", None):
        recs = [r for r in recs if s(r, "method") in args.methods_tuned]
    if args.datasets:
        recs = [r for r in recs if s(r, "dataset") in args.datasets]
    if not recs:
        raise UserError("no tuning studies of this setting; run `python -m benchmarks.tune run` first (or pick one with --profile, --source, --set)")
    for k, flag in (("profile", "--profile"), ("source", "--source"), ("min_readers", "--min-readers")):
        found = sorted({str(s(r, k)) for r in recs})
        if len(found) > 1:
            raise UserError(f"the studies mix {k}s ({', '.join(found)}); pick one with {flag}")
    return [r for r in recs if finished(r) > 0]


def draw(studies: list[dict]):
    """(figure, curves as JSON): the best-so-far curves of ``studies``."""
    curves: dict[str, dict[str, dict[int, list]]] = defaultdict(lambda: defaultdict(dict))  # dataset -> method -> fold -> curve
    for r in studies:
        curves[r["setting"]["dataset"]][r["setting"]["method"]][r["setting"]["fold"]] = best_so_far(r)
    plt = plt_()
    datasets = sorted(curves)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers, dashes = "osD^vP*X", ["-", "--", "-.", ":"]
    out = {}
    for ax, ds in zip(axes[0], datasets):
        k = len(curves[ds])
        for i, (m, folds) in enumerate(sorted(curves[ds].items())):
            c = colours[i % len(colours)]
            n = max(len(v) for v in folds.values())
            # Each method shifted a little along x, with its own marker and dashes: identical curves (methods whose
            # studies all chose the defaults, say) would otherwise hide one another.
            dx = 0.08 * (i - (k - 1) / 2)
            for v in folds.values():
                ax.plot([j + 1 + dx for j in range(len(v))], [x if x is not None else float("nan") for x in v], color=c, lw=0.7, alpha=0.35,
                        ls=dashes[i % len(dashes)])
            mean = []
            for j in range(n):
                vals = [v[j] for v in folds.values() if j < len(v) and v[j] is not None]
                mean.append(sum(vals) / len(vals) if vals else float("nan"))
            ax.plot([j + 1 + dx for j in range(n)], mean, color=c, lw=2, marker=markers[i % len(markers)], ms=4, ls=dashes[i % len(dashes)],
                    label=f"{name(m)} ({len(folds)} folds)")
            out.setdefault(ds, {})[m] = {"folds": {str(f): v for f, v in sorted(folds.items())}, "mean": [None if x != x else x for x in mean]}
        ax.set_title(ds)
        ax.set_xlabel("trials finished")
        ax.set_ylabel(f"best validation {studies[0]['setting']['objective']}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="lower right")
    s0 = studies[0]["setting"]
    fig.suptitle(f"Tuning: best so far per trial (budget {studies[0]['budget']}; profile {s0['profile']}, source {s0['source']})", fontsize=9)
    return fig, out


def cmd_tuning(args) -> list:
    studies = pick_studies(args)
    fig, out = draw(studies)
    s0 = studies[0]["setting"]
    stem = f"tuning_{s0['objective']}_{s0['profile']}_{s0['source']}" + (f"_{'+'.join(sorted(args.datasets))}" if args.datasets else "") \
        + (f"_{args.tag}" if args.tag else "")
    paths = save_figure(fig, args.out, stem)
    j = args.out / f"{stem}.json"
    atomic_write_text(j, json.dumps({"setting": {k: s0[k] for k in ("profile", "source", "min_readers", "objective", "sampler", "pruner")},
                                     "budget": studies[0]["budget"], "curves": out}, indent=1, allow_nan=False))
    return [*paths, j]
