"""The power of the tables' default test and the smallest difference it can detect.

The default test is the corrected resampled t of ``paired.corrected_t`` (Nadeau & Bengio 2003; Bouckaert & Frank
2004) on n unit differences d_u (a unit: a test fold of a partition, seeds averaged; n = folds x partitions), with the
correction ``rho = n_test / n_train``: ``t = dbar / sqrt((1/n + rho) s^2)``, ``n - 1`` degrees of freedom.

Power. Under the test's own model -- the mean difference ``dbar ~ N(delta, (1/n + rho) sigma^2)``, independent of
``s^2 ~ sigma^2 chi2_{n-1} / (n - 1)`` -- the statistic is noncentral t with ``df = n - 1`` and noncentrality
``lambda = delta / (sigma sqrt(1/n + rho))``, and the two-sided test at alpha rejects with probability
``power = P(T' > t_c) + P(T' < -t_c)``, ``t_c = t_{1 - alpha/2, n - 1}`` (the power of a t-test by the noncentral t:
J. Cohen, Statistical Power Analysis for the Behavioral Sciences, 2nd ed., 1988, ch. 2; the same computation for the
corrected variance). ``sigma`` is treated as known (the plug-in of a measured standard deviation).

The smallest detectable difference (MDE) at power ``1 - beta`` is the ``delta > 0`` that solves
``power(delta) = 1 - beta``, found by Brent's root-finding; close to the textbook approximation
``(t_{1 - alpha/2, df} + t_{1 - beta, df}) sigma sqrt(1/n + rho)``.

The floor. ``1/n`` shrinks as partitions are added, ``rho`` does not (every partition re-uses the same nodules: more
partitions do not make a larger data set). As n grows, t_c -> z_{1 - alpha/2} and the noncentral t -> N(lambda, 1), so
the MDE falls towards ``floor = delta solving Phi(lambda - z) + Phi(-lambda - z) = 1 - beta`` with
``lambda = delta / (sigma sqrt(rho))``, about ``(z_{1 - alpha/2} + z_{1 - beta}) sigma sqrt(rho)``: a difference below it
stays undetectable at that power whatever the number of partitions.

Pure functions of plain numbers; checked in ``tests/test_plan.py`` against a Monte Carlo of the model, a numerical
integration over the chi-square, and a simulation of correlated units through ``corrected_t`` itself.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05
POWER = 0.8  # the power at which the tables state their smallest detectable difference


def _check(sd: float, n: int, correction: float) -> None:
    if not (sd >= 0 and math.isfinite(sd)):
        raise ValueError(f"the standard deviation must be finite and >= 0, not {sd}")
    if correction < 0 or not math.isfinite(correction):
        raise ValueError(f"the correction n_test/n_train must be finite and >= 0, not {correction}")
    if n < 2:
        raise ValueError(f"the corrected t needs at least 2 units, not {n}")


def corrected_t_power(effect: float, sd: float, n: int, correction: float, alpha: float = ALPHA) -> float:
    """Two-sided power of the corrected resampled t at a true mean difference ``effect`` (see the module docstring)."""
    from scipy import stats  # noqa: PLC0415  (scipy: deferred for the commands' --help speed)

    _check(sd, n, correction)
    df = n - 1
    tc = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    if sd == 0:
        return 1.0 if effect != 0 else alpha
    lam = abs(effect) / (sd * math.sqrt(1.0 / n + correction))
    p = float(stats.nct.sf(tc, df, lam) + stats.nct.cdf(-tc, df, lam))
    return p if math.isfinite(p) else _power_by_integral(lam, df, tc)


def _power_by_integral(lam: float, df: int, tc: float) -> float:
    """The same power as an integral over the chi-square, ``int P(|Z + lambda| > t_c sqrt(u/df)) f_df(u) du``: scipy's
    noncentral t gives NaN for a large noncentrality (lambda above about 8), where this stays exact."""
    from scipy import integrate, stats  # noqa: PLC0415

    def given(u: float) -> float:
        c = tc * math.sqrt(u / df)
        return float((stats.norm.sf(c - lam) + stats.norm.cdf(-c - lam)) * stats.chi2.pdf(u, df))

    return min(1.0, float(integrate.quad(given, 0.0, math.inf, limit=200, epsabs=1e-12)[0]))


def limit_power(effect: float, sd: float, correction: float, alpha: float = ALPHA) -> float:
    """The power as n -> infinity (infinitely many partitions): ``Phi(lambda - z) + Phi(-lambda - z)``,
    ``lambda = effect / (sd sqrt(correction))``."""
    from scipy.stats import norm  # noqa: PLC0415

    if sd == 0 or correction == 0:
        return 1.0 if effect != 0 else alpha
    z = float(norm.ppf(1.0 - alpha / 2.0))
    lam = abs(effect) / (sd * math.sqrt(correction))
    return float(norm.cdf(lam - z) + norm.cdf(-lam - z))


def _solve(f, scale: float, target: float) -> float:
    """The delta >= 0 with f(delta) = target, f increasing from below target at 0; ``scale`` a first guess."""
    from scipy.optimize import brentq  # noqa: PLC0415

    hi = max(scale, 1e-12)
    while f(hi) < target:
        hi *= 2.0
        if hi > 1e12 * max(scale, 1e-12):
            raise ValueError("no difference reaches this power")
    return float(brentq(lambda x: f(x) - target, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12, maxiter=500))


def detectable_difference(sd: float, n: int, correction: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference the corrected t detects with probability ``power`` (two-sided ``alpha``),
    in the units of ``sd``; 0 when ``sd`` is 0."""
    _check(sd, n, correction)
    if not alpha < power < 1:
        raise ValueError(f"the power must lie in (alpha, 1), not {power}")
    # The power depends on effect / sd only, so the MDE is sd times the MDE at sd = 1: one root per (n, correction).
    return sd * _unit_mde(int(n), float(correction), float(alpha), float(power))


@functools.lru_cache(maxsize=4096)
def _unit_mde(n: int, correction: float, alpha: float, power: float) -> float:
    from scipy.stats import norm  # noqa: PLC0415

    guess = (float(norm.ppf(1 - alpha / 2)) + float(norm.ppf(power))) * math.sqrt(1.0 / n + correction)
    return _solve(lambda x: corrected_t_power(x, 1.0, n, correction, alpha), guess, power)


def detectable_floor(sd: float, correction: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The limit of ``detectable_difference`` as the number of units grows without bound (``limit_power``)."""
    from scipy.stats import norm  # noqa: PLC0415

    if sd == 0 or correction == 0:
        return 0.0
    guess = (float(norm.ppf(1 - alpha / 2)) + float(norm.ppf(power))) * sd * math.sqrt(correction)
    return _solve(lambda x: limit_power(x, sd, correction, alpha), guess, power)


def pooled_sd(sds: Sequence[float | None], ns: Sequence[int]) -> tuple[float | None, int]:
    """(pooled standard deviation, its degrees of freedom) of several samples' standard deviations ``sds`` of sizes
    ``ns``: ``sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))`` over the samples with ``n_i >= 2`` and a defined ``s_i``;
    (None, 0) when there is none."""
    num, dof = 0.0, 0
    for s, n in zip(sds, ns):
        if s is None or n < 2 or not math.isfinite(s):
            continue
        num += (n - 1) * s * s
        dof += n - 1
    return (math.sqrt(num / dof), dof) if dof else (None, 0)


@dataclass(frozen=True)
class PlanRow:
    """One number of partitions R: its units, the power at the planned effect, and the MDE."""

    repeats: int
    n: int
    power: float
    mde: float


def plan_partitions(effect: float, sd: float, correction: float, folds: int = 5, max_repeats: int = 10, alpha: float = ALPHA,
                    power: float = POWER) -> tuple[int | None, list[PlanRow]]:
    """(the smallest R in 1..max_repeats whose power at ``effect`` reaches ``power``, or None; a row per R).

    n = folds x R units; ``correction`` the n_test/n_train of the dataset (taken as the same for every partition)."""
    rows = [PlanRow(r, folds * r, corrected_t_power(effect, sd, folds * r, correction, alpha),
                    detectable_difference(sd, folds * r, correction, alpha, power)) for r in range(1, max_repeats + 1)]
    return next((row.repeats for row in rows if row.power >= power), None), rows
