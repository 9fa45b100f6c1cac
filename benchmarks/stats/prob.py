"""P(A > B): the probability that a method outperforms the reference on a random test fold of a partition.

Bouthillier et al. (MLSys 2021) recommend reporting, beside a mean difference, the probability
that A beats B when the sources of variation (data split, seed, ...) are redrawn, and deciding
with it. Here the draw is a unit, a (repeat, fold) with its seeds averaged, the same unit as the
paired tests'. With ``d_u = A_u - B_u`` over the n units both methods have:

  ``P(A > B) = (1/n) sum_u ( [d_u > 0] + 1/2 [d_u = 0] )``  (a tie counts as half a win);

its (1 - alpha) interval is the percentile bootstrap over units: replicate b draws n units with
replacement, ``rng = numpy.random.default_rng(seed)``, one call ``rng.integers(0, n, size=(n_boot, n))``
(row b = replicate b), ``P_b`` the same mean over the drawn units; the interval is the
``alpha/2`` and ``1 - alpha/2`` quantiles of the ``P_b`` (``numpy.quantile``, linear).

Decision rule (Bouthillier et al. 2021, Sec. 5): A is *better* when the result is significant,
the interval's lower end above 1/2, *and* meaningful, ``P(A > B) > gamma`` with gamma = 0.75;
*worse* when the interval's upper end is below 1/2 and ``P(A > B) < 1 - gamma``; otherwise no
conclusion (computed here; the tables print it as a description, without this verdict, because the rule exceeded 0.05
in the calibration: ``benchmarks.stats.verdicts``). Assumption: the units are exchangeable draws. Folds of one partition share
training data and partitions share patients, so the bootstrap interval is too narrow when units
are few and correlated; with five units of one partition it says little (P moves in steps of 1/5).

Reference. X. Bouthillier, P. Delaunay, M. Bronzi, A. Trofimov, B. Nichyporuk, J. Szeto,
N. Sepah, E. Raff, K. Madan, V. Voleti, S. Ebrahimi Kahou, V. Michalski, D. Serdyuk, T. Arbel,
C. Pal, G. Varoquaux, P. Vincent, Accounting for variance in machine learning benchmarks,
MLSys 2021.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NAN = float("nan")
GAMMA = 0.75  # Bouthillier et al.'s threshold of a meaningful P(A > B)


@dataclass(frozen=True)
class ProbResult:
    """P(A > B) over the units, its bootstrap interval and the decision rule's verdict."""

    p: float  # P(A > B), ties half; NaN without units
    low: float
    high: float
    n: int  # units
    n_boot: int
    seed: int
    alpha: float
    gamma: float
    significant: bool  # the interval excludes 1/2
    better: bool  # significant, and p > gamma
    worse: bool  # significant, and p < 1 - gamma

    @property
    def conclusion(self) -> str:
        if self.better:
            return "better"
        if self.worse:
            return "worse"
        return "no conclusion"

    def as_dict(self) -> dict:
        return {"p": self.p, "low": self.low, "high": self.high, "n": self.n, "n_boot": self.n_boot, "seed": self.seed,
                "alpha": self.alpha, "gamma": self.gamma, "significant": self.significant, "better": self.better,
                "worse": self.worse, "conclusion": self.conclusion}


def prob_outperform(diffs: Sequence[float], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05, gamma: float = GAMMA) -> ProbResult:
    """P(A > B) of the per-unit differences ``diffs`` (A minus B), with its bootstrap interval and the
    decision rule (see the module's docstring)."""
    d = np.asarray(diffs, dtype=np.float64).ravel()  # (n,)
    if np.isnan(d).any():
        raise ValueError("prob_outperform: a difference is NaN")
    if n_boot < 1:
        raise ValueError("prob_outperform: n_boot must be at least 1")
    n = int(d.size)
    if n == 0:
        return ProbResult(NAN, NAN, NAN, 0, n_boot, seed, alpha, gamma, False, False, False)
    win = (d > 0).astype(np.float64) + 0.5 * (d == 0)  # (n,) 1, 1/2 or 0 per unit
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n) drawn units
    reps = win[idx].mean(1)  # (n_boot,)
    low, high = (float(q) for q in np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0]))
    p = float(win.mean())
    sig_up, sig_down = low > 0.5, high < 0.5
    return ProbResult(p, low, high, n, n_boot, seed, alpha, gamma, sig_up or sig_down,
                      bool(sig_up and p > gamma), bool(sig_down and p < 1.0 - gamma))


def describe_prob(res: ProbResult | dict | None, digits: int = 2) -> str:
    """'P(>) = 0.80 [0.60, 1.00]' (+ ', better'/'worse' when the decision rule says so)."""
    if res is None:
        return "—"
    r = res if isinstance(res, dict) else res.as_dict()
    if r["p"] is None or (isinstance(r["p"], float) and math.isnan(r["p"])):
        return "—"
    text = f"{r['p']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]"
    return text + (f", {r['conclusion']}" if r["conclusion"] != "no conclusion" else "")
