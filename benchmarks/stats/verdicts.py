"""Which verdict marks a table may print: only those of a rule that kept its level when it was calibrated.

A verdict mark says "these two methods differ": the * after a difference (a Holm-adjusted p below 0.05 of the table's
test) and the arrows of P(A > B) (Bouthillier et al.'s rule). A mark promises a false-positive rate of at most 0.05,
so ``verdict(rule, R)`` allows it only where the calibration (``python -m benchmarks.stats.calibrate``,
docs/statistics.md, "Calibration") measured the rule's false-positive rate at the comparison's number of partitions R
at most 0.05 in both null scenarios, on every dataset and with both random and fixed partitions (its highest rate, the
rules table). A rule not measured at R gives no mark there. P(A > B) is printed as a description, without a verdict,
at every R (``DESCRIPTIVE``): its rule exceeds 0.05 at R = 1-9 and comes under it only at R = 10, by less than the
Monte Carlo error. This is the one place that decides; ``tests/test_tables.py`` holds the rendered tables to it and
checks ``MEASURED`` against the rules table of docs/statistics.md.

``MEASURED`` copies that table: measured on 2026-12-06 with ``nice -n 10 python -m benchmarks.stats.calibrate`` (its
defaults: 1,000 simulated benchmarks per partition mode, R = 1-10, 2 seeds, 2 readers).
"""
from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.05
# rule (the tables' name) -> its name in the calibration
CALIBRATION_NAMES = {"corrected_t": "units t", "wilcoxon": "Wilcoxon", "prob_outperform": "P(A>B)"}
MARKS = {"corrected_t": "*", "wilcoxon": "*", "prob_outperform": "↑/↓"}
# rule -> {R: (its highest false-positive rate in the calibration, the upper end of that rate's 95% Wilson interval)}
MEASURED: dict[str, dict[int, tuple[float, float]]] = {
    "corrected_t": {1: (0.026, 0.038), 2: (0.024, 0.035), 3: (0.027, 0.039), 4: (0.030, 0.043), 5: (0.029, 0.041),
                    6: (0.032, 0.045), 7: (0.030, 0.043), 8: (0.032, 0.045), 9: (0.032, 0.045), 10: (0.032, 0.045)},
    "wilcoxon": {1: (0.000, 0.004), 2: (0.104, 0.124), 3: (0.152, 0.176), 4: (0.210, 0.236), 5: (0.249, 0.277),
                 6: (0.295, 0.324), 7: (0.320, 0.350), 8: (0.338, 0.368), 9: (0.361, 0.391), 10: (0.382, 0.413)},
    "prob_outperform": {1: (0.126, 0.148), 2: (0.083, 0.102), 3: (0.103, 0.123), 4: (0.075, 0.093), 5: (0.079, 0.097),
                        6: (0.060, 0.076), 7: (0.066, 0.083), 8: (0.052, 0.068), 9: (0.056, 0.072), 10: (0.044, 0.059)},
}
# Rules the tables print as a description only, at every R: P(A > B)'s rule exceeds 0.05 at R = 1-9 and comes under it
# only at R = 10, by less than its Monte Carlo error (0.044, interval up to 0.059): one R at the edge makes no rule.
DESCRIPTIVE = ("prob_outperform",)


def _spans(rs: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    out: list[list[int]] = []
    for r in rs:
        if out and r == out[-1][-1] + 1:
            out[-1].append(r)
        else:
            out.append([r])
    return ", ".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in out)


@dataclass(frozen=True)
class Verdict:
    """Whether a mark of ``rule`` may be printed at ``repeats`` partitions, and why not when it may not."""

    rule: str
    repeats: int
    allowed: bool
    rate: float | None  # the highest measured false-positive rate at this R; None: not measured
    high: float | None  # the upper end of its 95% Monte Carlo interval
    reason: str | None  # None when allowed

    def as_dict(self) -> dict:
        return {"rule": self.rule, "repeats": self.repeats, "mark_allowed": self.allowed, "measured_false_positive_rate": self.rate,
                "upper_end": self.high, "why_not": self.reason}


def verdict(rule: str, repeats: int, alpha: float = ALPHA) -> Verdict:
    """May a verdict of ``rule`` ("corrected_t", "wilcoxon" or "prob_outperform") on ``repeats`` partitions be printed?"""
    if rule not in MEASURED:
        raise ValueError(f"unknown rule {rule!r}; one of {', '.join(MEASURED)}")
    rate, high = MEASURED[rule].get(int(repeats), (None, None))
    name = CALIBRATION_NAMES[rule]
    if rule in DESCRIPTIVE:
        over = [k for k, (v, _) in sorted(MEASURED[rule].items()) if v > alpha]
        at = f"{rate:.3f} (95% interval up to {high:.3f})" if rate is not None else "an unmeasured share"
        why = (f"in the calibration Bouthillier et al.'s rule rejected up to {at} of null benchmarks at R = {repeats}, and "
               f"more than {alpha:g} at R = {_spans(over)} (docs/statistics.md, Calibration)")
    elif rate is None:
        why = f"{name} was not calibrated at R = {repeats} partitions"
    elif rate > alpha:
        why = (f"{name} rejected up to {rate:.3f} of null benchmarks at R = {repeats} in the calibration (> {alpha:g}; "
               "docs/statistics.md, Calibration)")
    else:
        why = None
    return Verdict(rule, int(repeats), why is None, rate, high, why)
