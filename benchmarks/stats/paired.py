"""Seeds and paired comparisons: the seed aggregation of a cell, the corrected resampled t-test, Wilcoxon, Holm.

The unit of every test is a test fold of a partition, ``(repeat, fold)``: values are keyed
``(repeat, fold, seed)`` (a ``(fold, seed)`` key means repeat 0) and seeds are averaged within
their unit before any test (two seeds on one test fold share its test and training sets: they
are not two resamples).

See ``benchmarks/stats/__init__.py`` for the whole method and its references.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.stats.prob import prob_outperform

log = logging.getLogger(__name__)

NAN = float("nan")


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------------------------------------------ 1. seeds
@dataclass(frozen=True)
class SeedSummary:
    """A cell's values over folds and seeds (see ``seed_summary``)."""

    fold_means: dict[Any, float]  # fold -> mean over that fold's seeds
    mean: float  # mean over folds of the fold means
    std: float  # sample standard deviation (ddof=1) over folds of the fold means; nan with one fold
    seed_std: float | None  # pooled within-fold standard deviation over seeds; None without a fold of two seeds
    n_folds: int
    n_seeds: int  # distinct seeds over the cell
    balanced: bool  # every fold has the same seeds


def seed_summary(values: Mapping[tuple[Any, Any], float]) -> SeedSummary:
    """Summary of one cell's metric, ``values[(fold, seed)]``.

    fold mean ``xbar_f = mean_s x_fs``; ``mean = mean_f xbar_f``; ``std = sqrt(sum_f (xbar_f - mean)^2 / (F - 1))``
    (the paper's ``±``: over the test folds, not over runs, so that extra seeds do not shrink it);
    ``seed_std = sqrt(sum_f sum_s (x_fs - xbar_f)^2 / sum_f (n_f - 1))``, the pooled within-fold standard deviation
    (degrees-of-freedom weighted, so a fold with more seeds weighs more; with the same seeds in every fold it is
    ``sqrt(mean_f var_s(x_fs))``, ddof=1). A NaN value (an undefined AUC) makes its fold mean NaN, as in the tables.
    """
    if not values:
        raise ValueError("seed_summary needs at least one (fold, seed) value")
    by_fold: dict[Any, list[float]] = defaultdict(list)
    seeds_of: dict[Any, set] = defaultdict(set)
    for (fold, seed), v in values.items():
        by_fold[fold].append(float(v))
        seeds_of[fold].add(seed)
    folds = sorted(by_fold)
    fold_means = {f: float(np.mean(np.asarray(by_fold[f], dtype=np.float64))) for f in folds}
    means = np.array([fold_means[f] for f in folds], dtype=np.float64)
    ss = sum(float(np.sum((np.asarray(by_fold[f], dtype=np.float64) - fold_means[f]) ** 2)) for f in folds)
    dof = sum(len(by_fold[f]) - 1 for f in folds)
    return SeedSummary(
        fold_means=fold_means,
        mean=float(means.mean()),
        std=float(means.std(ddof=1)) if len(folds) > 1 else NAN,
        seed_std=math.sqrt(ss / dof) if dof > 0 else None,
        n_folds=len(folds),
        n_seeds=len({s for f in folds for s in seeds_of[f]}),
        balanced=len({frozenset(seeds_of[f]) for f in folds}) == 1,
    )


def unit_key(key) -> tuple:
    """``(repeat, fold, seed)`` of a value's key; a ``(fold, seed)`` key is of repeat 0."""
    key = tuple(key)
    if len(key) == 2:
        return (0, *key)
    if len(key) != 3:
        raise ValueError(f"a value's key is (fold, seed) or (repeat, fold, seed), not {key!r}")
    return key


def unit_means(values: Mapping[tuple, float]) -> dict[tuple, float]:
    """{(repeat, fold): mean over that unit's seeds} of ``values[(repeat, fold, seed)]`` (float64)."""
    by_unit: dict[tuple, list[float]] = defaultdict(list)
    for k, v in values.items():
        r, f, _ = unit_key(k)
        by_unit[(r, f)].append(float(v))
    return {u: float(np.mean(np.asarray(by_unit[u], dtype=np.float64))) for u in sorted(by_unit)}


def paired_units(a: Mapping[tuple, float], b: Mapping[tuple, float]) -> tuple[list[tuple], list[float]]:
    """(units, differences): the runs both have (same repeat, fold and seed), averaged over seeds within
    each (repeat, fold), then ``a - b`` per unit, in sorted unit order."""
    a3 = {unit_key(k): v for k, v in a.items()}
    b3 = {unit_key(k): v for k, v in b.items()}
    shared = sorted(set(a3) & set(b3))
    ma, mb = unit_means({k: a3[k] for k in shared}), unit_means({k: b3[k] for k in shared})
    units = sorted(ma)
    return units, [ma[u] - mb[u] for u in units]


@dataclass(frozen=True)
class UnitSummary:
    """A cell's values over partitions, folds and seeds (see ``unit_summary``)."""

    unit_means: dict[tuple, float]  # (repeat, fold) -> mean over that unit's seeds
    mean: float  # mean over partitions of each partition's mean over folds (one partition: over folds)
    std: float  # s.d. (ddof=1) over folds of the first partition's unit means (repeat 0: the paper's ±)
    seed_std: float | None  # pooled within-unit s.d. over seeds; None without a unit of two seeds
    partition_std: float | None  # s.d. (ddof=1) over partitions of their means over folds; None with one partition
    n_folds: int  # folds of the first partition
    n_repeats: int
    n_seeds: int
    n_units: int


def unit_summary(values: Mapping[tuple, float]) -> UnitSummary:
    """``seed_summary`` generalised to repeated partitions, ``values[(repeat, fold, seed)]``.

    With one partition every number is that of ``seed_summary`` (tested). With several: ``mean`` is the
    mean over partitions of ``mean_f xbar_rf``; ``std`` stays the spread over the folds of the first
    partition (repeat 0, the paper's ±: a number that does not shrink as partitions are added);
    ``partition_std`` is the spread of the partitions' means (how lucky one partition can be).
    """
    if not values:
        raise ValueError("unit_summary needs at least one value")
    v3 = {unit_key(k): float(v) for k, v in values.items()}
    repeats = sorted({k[0] for k in v3})
    first = seed_summary({(f, s): v for (r, f, s), v in v3.items() if r == repeats[0]})
    per_repeat = [seed_summary({(f, s): v for (r, f, s), v in v3.items() if r == rep}).mean for rep in repeats]
    means = unit_means(v3)
    ss, dof = 0.0, 0
    for (r, f), m in means.items():
        x = np.array([v for k, v in v3.items() if k[:2] == (r, f)], dtype=np.float64)
        ss += float(np.sum((x - m) ** 2))
        dof += x.size - 1
    return UnitSummary(
        unit_means=means, mean=float(np.mean(np.asarray(per_repeat, dtype=np.float64))), std=first.std,
        seed_std=math.sqrt(ss / dof) if dof > 0 else None,
        partition_std=float(np.std(np.asarray(per_repeat, dtype=np.float64), ddof=1)) if len(repeats) > 1 else None,
        n_folds=first.n_folds, n_repeats=len(repeats), n_seeds=len({k[2] for k in v3}), n_units=len(means),
    )


# ------------------------------------------------------------------------------------------------ 2. paired tests
@dataclass(frozen=True)
class TestResult:
    """One paired test of differences (method minus reference).

    ``p`` is the test's two-sided p-value (NaN where undefined); ``min_p`` the smallest two-sided p the test can
    give with these pairs; ``reachable`` whether ``min_p <= alpha`` and ``p`` is defined; ``reason`` the sentence to
    print instead of ``p`` when not (None otherwise). ``low``/``high``: the (1 - alpha) interval of the mean
    difference (the corrected t interval; NaN for the Wilcoxon test, which gives none).
    """

    __test__ = False  # not a pytest class

    test: str  # "corrected_t" or "wilcoxon"
    n: int  # pairs used (Wilcoxon: the non-zero differences)
    mean: float  # mean of all the differences
    statistic: float  # t, or Wilcoxon's min(T+, T-)
    p: float
    min_p: float
    reachable: bool
    reason: str | None
    alpha: float = 0.05
    low: float = NAN
    high: float = NAN
    se: float = NAN  # corrected standard error of the mean (t only)
    df: int | None = None  # n - 1 (t only)
    method: str = ""  # how the p was computed


def min_reachable_p(test: str, n: int) -> float:
    """The smallest two-sided p-value ``test`` can return with ``n`` pairs (Wilcoxon: ``n`` non-zero differences).

    Corrected t: 0 for n >= 2 (|t| is unbounded; with n - 1 >= 1 degrees of freedom any p in (0, 1] can occur), NaN
    for n < 2 (no variance, no test). Wilcoxon signed-rank, exact or by exhaustive permutation of the signs: the most
    extreme outcome (all n signs alike) has probability 2 * 2^-n two-sided, so ``min(1, 2 / 2^n)``; NaN for n = 0.
    With n = 5 that is 0.0625: five pairs can never reach 0.05.
    """
    if test == "corrected_t":
        return 0.0 if n >= 2 else NAN
    if test == "wilcoxon":
        return min(1.0, 2.0 / 2.0**n) if n >= 1 else NAN
    raise ValueError(f"unknown test {test!r}; one of ('corrected_t', 'wilcoxon')")


def _cannot_reach(test: str, n: int, alpha: float) -> str | None:
    """The sentence for a test that cannot give p <= alpha with n pairs, or None when it can."""
    m = min_reachable_p(test, n)
    if math.isnan(m):
        need = 2 if test == "corrected_t" else 1
        return f"cannot test with {n} pair{'s' if n != 1 else ''} (needs at least {need}{'' if test == 'corrected_t' else ' non-zero'})"
    if m > alpha:
        return f"cannot reach {alpha:g} with {n} pair{'s' if n != 1 else ''} (smallest p = {m:.4g})"
    return None


def corrected_t(diffs: Sequence[float], n_train: float, n_test: float, alpha: float = 0.05) -> TestResult:
    """The corrected resampled t-test [Nadeau & Bengio 2003; Bouckaert & Frank 2004] of paired differences.

    With ``n`` differences d_j (one per unit: a (repeat, fold), seeds averaged), ``dbar = mean d_j``, ``s^2 = sum (d_j - dbar)^2 / (n - 1)``:
    ``se = sqrt((1/n + n_test/n_train) s^2)``, ``t = dbar / se``, ``df = n - 1``, ``p = 2 P(T_df >= |t|)``, interval
    ``dbar ± t_{1 - alpha/2, df} se``. ``n_train``/``n_test`` are the average training/test set sizes of the folds;
    the ``n_test/n_train`` term accounts for the overlap of the training sets (5 folds on whole training splits: 1/4 on
    LIDC-A and -C, 0.1125 on LIDC-B, whose training split also holds the never-tested unsure nodules; it does not shrink
    with n). For the repeated k-fold design (r partitions) the Bouckaert-Frank form is the same with n = k r.

    Zero variance (every difference equal): with ``dbar = 0`` the methods agree on every pair, t = 0 and p = 1 (the
    limit of no evidence of a difference); with ``dbar != 0`` t is ``±inf`` but a p of 0 from identical differences
    would be a claim the data cannot carry, so p is NaN and ``reason`` says why. In both cases the interval is the
    single point ``dbar``. Fewer than 2 differences: no test (p, interval NaN).
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if np.isnan(d).any():
        raise ValueError("corrected_t: a difference is NaN")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"corrected_t: n_train and n_test must be positive, not {n_train}, {n_test}")
    from scipy import stats  # noqa: PLC0415

    n = int(d.size)
    mean = float(d.mean()) if n else NAN
    reason = _cannot_reach("corrected_t", n, alpha)
    if reason is not None:
        return TestResult("corrected_t", n, mean, NAN, NAN, min_reachable_p("corrected_t", n), False, reason, alpha, method="corrected resampled t")
    df = n - 1
    var = float(d.var(ddof=1))
    se = math.sqrt((1.0 / n + float(n_test) / float(n_train)) * var)
    common = dict(test="corrected_t", n=n, mean=mean, min_p=0.0, alpha=alpha, se=se, df=df, method="corrected resampled t")
    if se == 0.0:
        if mean == 0.0:
            return TestResult(statistic=0.0, p=1.0, reachable=True, reason=None, low=0.0, high=0.0, **common)
        why = f"all {n} differences are equal ({mean:g}): zero variance, the t statistic is undefined"
        return TestResult(statistic=math.copysign(math.inf, mean), p=NAN, reachable=False, reason=why, low=mean, high=mean, **common)
    t = mean / se
    half = float(stats.t.ppf(1.0 - alpha / 2.0, df)) * se
    p = float(2.0 * stats.t.sf(abs(t), df))
    return TestResult(statistic=t, p=min(1.0, p), reachable=True, reason=None, low=mean - half, high=mean + half, **common)


def wilcoxon_signed_rank(diffs: Sequence[float], alpha: float = 0.05) -> TestResult:
    """Wilcoxon's signed-rank test of paired differences (two-sided), by ``scipy.stats.wilcoxon``.

    Zero differences are dropped (Wilcoxon's convention, ``zero_method='wilcox'``); ``n`` counts the rest. scipy's
    ``method='auto'``: the exact null distribution when there are no ties and n <= 50, the exhaustive permutation
    of the signs with ties and n <= 13, else the normal approximation. ``min_p = min(1, 2/2^n)``
    (``min_reachable_p``): with n = 5, 0.0625, so ``reachable`` is False and ``reason`` says "cannot reach 0.05 with
    5 pairs". ``statistic`` is ``min(T+, T-)``, the smaller of the rank sums of the positive and negative differences.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if np.isnan(d).any():
        raise ValueError("wilcoxon_signed_rank: a difference is NaN")
    from scipy import stats  # noqa: PLC0415

    nz = d[d != 0.0]
    n = int(nz.size)
    mean = float(d.mean()) if d.size else NAN
    min_p = min_reachable_p("wilcoxon", n)
    if n == 0:
        why = f"cannot test: all {d.size} differences are zero" if d.size else "cannot test with 0 pairs"
        return TestResult("wilcoxon", 0, mean, NAN, NAN, min_p, False, why, alpha)
    ties = np.unique(np.abs(nz)).size < n
    method = "exact" if (not ties and n <= 50) else ("permutation" if n <= 13 else "normal approximation")
    res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided", method="auto")
    reason = _cannot_reach("wilcoxon", n, alpha)
    return TestResult("wilcoxon", n, mean, float(res.statistic), float(res.pvalue), min_p, reason is None, reason, alpha, method=method)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values [Holm 1979], in the input order; None and NaN entries pass through.

    With the m defined p-values sorted, p_(1) <= ... <= p_(m): ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``
    (monotone in i, capped at 1). Rejecting where ``adj <= alpha`` controls the family-wise error at alpha under any
    dependence. m counts only the defined entries (a comparison that could not be made is not a test).
    """
    out: list[float | None] = [None if v is None else float(v) for v in pvalues]
    idx = np.array([i for i, v in enumerate(out) if not _isnan(v)], dtype=np.int64)
    if idx.size == 0:
        return out
    p = np.array([out[i] for i in idx], dtype=np.float64)
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")  # ties keep their order; tied p's get the same adjusted value anyway
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    for j, k in enumerate(order):
        out[int(idx[k])] = float(adj[j])
    return out


def describe_p(result: TestResult, p: float | None = None, digits: int = 3) -> str:
    """How to print a test's p: "p = 0.012", "p < 0.001", or the result's ``reason`` when the p is undefined or
    could never have reached alpha (e.g. "cannot reach 0.05 with 5 pairs (smallest p = 0.0625)").
    ``p`` overrides ``result.p`` (for a Holm-adjusted p)."""
    if result.reason is not None:
        return result.reason
    value = result.p if p is None else p
    if _isnan(value):
        return "p undefined"
    floor = 10.0**-digits
    return f"p < {floor:.{digits}f}" if value < floor else f"p = {value:.{digits}f}"


@dataclass(frozen=True)
class Comparison:
    """A method against the reference on one dataset and metric (``compare_to_reference``)."""

    method: str
    reference: str
    keys: list  # the (repeat, fold) units compared, sorted
    diffs: list[float]  # method minus reference, per unit (seeds averaged within it)
    t: TestResult  # corrected t: mean difference, interval, p
    test: TestResult  # the test whose p is reported (``t`` itself, or the Wilcoxon test)
    p_holm: float | None  # ``test.p`` adjusted by Holm across the methods of the call
    prob: Any = None  # ``benchmarks.stats.prob.ProbResult``: P(method > reference) on a random unit

    @property
    def text(self) -> str:
        """The adjusted p as it should be printed (``describe_p``)."""
        return describe_p(self.test, self.p_holm)


def compare_to_reference(values: Mapping[str, Mapping[tuple, float]], reference: str = "clip_lung", *, n_train: float,
                         n_test: float, test: str = "corrected_t", alpha: float = 0.05, n_boot: int = 2000,
                         boot_seed: int = 0) -> dict[str, Comparison]:
    """Every method of ``values`` (method -> {(repeat, fold, seed) or (fold, seed): metric}) against ``reference``, over
    the runs both have, seeds averaged within each (repeat, fold) unit (``paired_units``): the corrected t mean
    difference and interval (n = units = folds x repeats), the p of ``test`` ("corrected_t" or "wilcoxon"), that p
    adjusted by Holm across the compared methods (call it once per table, dataset and metric: that is the family), and
    P(method > reference) on a random unit with its bootstrap interval (``prob_outperform``, ``n_boot`` resamples).
    A p that could never reach alpha stays in Holm's family (it is a valid, if weak, p); an undefined one does not.
    A method with no shared unit gets tests with n = 0. The reference itself is left out of the answer.
    """

    if test not in ("corrected_t", "wilcoxon"):
        raise ValueError(f"unknown test {test!r}; one of ('corrected_t', 'wilcoxon')")
    if reference not in values:
        raise KeyError(f"the reference method {reference!r} has no values")
    ref = values[reference]
    partial = {}
    for m in sorted(values):
        if m == reference:
            continue
        keys, d = paired_units(values[m], ref)
        if any(math.isnan(x) for x in d):
            log.warning("%s vs %s: %d undefined difference(s) left out", m, reference, sum(math.isnan(x) for x in d))
            keys = [k for k, x in zip(keys, d) if not math.isnan(x)]
            d = [x for x in d if not math.isnan(x)]
        t = corrected_t(d, n_train, n_test, alpha)
        partial[m] = (keys, d, t, t if test == "corrected_t" else wilcoxon_signed_rank(d, alpha))
    adjusted = holm([r[3].p for r in partial.values()])
    return {m: Comparison(m, reference, keys, d, t, tr, p, prob_outperform(d, n_boot, boot_seed, alpha) if n_boot and d else None)
            for (m, (keys, d, t, tr)), p in zip(partial.items(), adjusted)}


def split_sizes(records: Iterable[Mapping], train_key: str = "n_train") -> tuple[float, float]:
    """(average training set size, average test set size) over the distinct (repeat, fold) units of ``records``, from
    each record's ``data`` (``n_train`` or ``n_train_used``, and ``n_test``): the ``n_train``, ``n_test`` of ``corrected_t``."""
    by_fold: dict[Any, tuple[float, float]] = {}
    for r in records:
        by_fold.setdefault((r.get("repeat", 0), r["fold"]), (float(r["data"][train_key]), float(r["data"]["n_test"])))
    if not by_fold:
        raise ValueError("split_sizes: no records")
    return float(np.mean([v[0] for v in by_fold.values()])), float(np.mean([v[1] for v in by_fold.values()]))


