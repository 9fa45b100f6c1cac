"""What a table's comparisons can say: the verdict marks it may print, and the smallest difference it could detect.

Marks. A * (the table's test) or an arrow (P(A > B)) is printed only where ``benchmarks.stats.verdicts`` allows it: the
rule kept its false-positive rate at most 0.05 in the calibration at the comparison's number of partitions. Each
comparison carries its ``verdict`` (and its P(A > B) its own); ``significant`` is the mark printed.

The smallest detectable difference (MDE, ``benchmarks.stats.power``): the true mean difference the default test (the
corrected resampled t on the table's (partition, fold) units, seeds averaged) would detect with 80% power at two-sided
0.05. Per comparison: from its own unit differences' s.d. (``sd``), its n and the correction n_test/n_train. Per
dataset of a table (the caption): the s.d. pooled over the table's comparisons with the reference on that dataset, each
weighted by its degrees of freedom n - 1, at the largest n among them (the table's folds x partitions).
"""
from __future__ import annotations

import logging
import statistics

from benchmarks.stats.power import ALPHA, POWER, detectable_difference, detectable_floor, pooled_sd
from benchmarks.stats.verdicts import verdict

log = logging.getLogger(__name__)

TEST_LABELS = {"corrected_t": "the corrected resampled t-test", "wilcoxon": "Wilcoxon's signed-rank test"}


def partitions_of(records: list[dict]) -> int:
    """The number of partitions (repeats) the records hold."""
    return len({r.get("repeat", 0) for r in records})


def warn_uncalibrated(test: str, records: list[dict]) -> None:
    """One warning when the table's test may not mark at the records' number of partitions (``--test wilcoxon`` at
    R >= 2): its p is printed, without the * mark, and the reason said."""
    v = verdict(test, partitions_of(records)) if records else None
    if v is not None and not v.allowed:
        log.warning("--test %s on %d partitions: %s; the tables print its p without the * mark (the default corrected_t keeps its level)",
                    test, v.repeats, v.reason)


def comparison_levels(test: str, units: list, diffs: list[float], n_train: float, n_test: float) -> dict:
    """The levels of one comparison: its test's ``verdict``, its P(A > B)'s ``prob_verdict``, the s.d. of its unit
    differences ``sd`` (ddof 1; None under 2 units) and its ``mde`` (None without an s.d.)."""
    reps = len({u[0] for u in units})
    sd = statistics.stdev(float(d) for d in diffs) if len(diffs) >= 2 else None
    return {"verdict": verdict(test, reps).as_dict(), "prob_verdict": verdict("prob_outperform", reps).as_dict(), "sd": sd,
            "mde": detectable_difference(sd, len(diffs), n_test / n_train) if sd is not None else None}


def detectable_entry(versus: dict, metric: str = "accuracy", reference: str = "clip_lung") -> dict | None:
    """The smallest detectable difference of one table and dataset (``versus``: method -> {metric: comparison}, as
    ``build.comparisons`` gives them); None when no comparison has two units."""
    comps = {m: v[metric] for m, v in versus.items() if v and (v.get(metric) or {}).get("sd") is not None}
    if not comps:
        return None
    sd, dof = pooled_sd([c["sd"] for c in comps.values()], [c["n"] for c in comps.values()])
    c0 = next(iter(comps.values()))
    n = max(c["n"] for c in comps.values())
    rho = c0["n_test"] / c0["n_train"]
    return {"metric": metric, "mde": detectable_difference(sd, n, rho), "power": POWER, "alpha": ALPHA, "test": "corrected_t",
            "n": n, "n_repeats": max(c["n_repeats"] for c in comps.values()), "correction": rho, "n_train": c0["n_train"], "n_test": c0["n_test"],
            "sd_pooled": sd, "df_pooled": dof, "reference": reference, "pooled_over": sorted(comps),
            "floor": detectable_floor(sd, rho), "how": "s.d. of the unit differences pooled over the comparisons with the reference, "
            "each weighted by n - 1; MDE at the largest n; floor: the MDE as the partitions grow without bound"}


def caption_note(data: dict, t: int, test: str, reference_label: str) -> str:
    """The caption's sentences on marks and on the smallest detectable difference of table ``t``."""
    entries = {ds: e for ds, e in (data.get("detectable", {}).get(t) or {}).items()}
    reps = max([e["n_repeats"] for e in entries.values() if e] or [1])
    text = ""
    vp, vt = verdict("prob_outperform", reps), verdict(test, reps)
    if t in (1, 2):
        text += ("P(>) is shown without a verdict: " + vp.reason + ". " if not vp.allowed
                 else "↑/↓: better/worse by Bouthillier et al.'s rule (the interval excludes 1/2 and P is above 0.75, below 0.25). ")
    if not vt.allowed:
        text += f"No * marks: {vt.reason}; the p of {TEST_LABELS[test]} is shown for information only. "
    shown = [(ds, e) for ds, e in entries.items() if e]
    if shown:
        text += (f"Smallest detectable difference (the accuracy difference that the corrected resampled t-test would detect with "
                 f"{POWER:.0%} power at two-sided {ALPHA:g}, with the unit s.d. pooled over the comparisons with {reference_label} on the "
                 "dataset, each weighted by n - 1): "
                 + "; ".join(f"{ds} {e['mde']:.1f} points (n = {e['n']} units, n_test/n_train = {e['correction']:.4f}, s.d. "
                             f"{e['sd_pooled']:.2f} from {len(e['pooled_over'])} comparison{'s' if len(e['pooled_over']) != 1 else ''}; "
                             f"never below {e['floor']:.1f} however many partitions)" for ds, e in shown)
                 + "; a smaller true difference is missed more than one time in five. ")
    missing = [ds for ds, e in entries.items() if not e]
    if missing:
        text += f"Smallest detectable difference: none on {', '.join(missing)} (no comparison with two units). "
    return " " + text.rstrip() + " " if text else ""
