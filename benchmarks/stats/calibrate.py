r"""python -m benchmarks.stats.calibrate: how often the tables' tests fire when two methods are the same, and when one
is better, measured on LIDC's own protocol.

  python -m benchmarks.stats.calibrate                       # 1,000 simulated benchmarks (minutes on 2 cores)
  python -m benchmarks.stats.calibrate --sims 20 --pool 2 --repeats 1 2 --datasets LIDC-A   # seconds

A simulated benchmark (``benchmarks.stats.simulate``) runs a cheap learner (softmax regression by SGD on the readers'
attribute scores, no CT) through the protocol: R partitions x 5 test folds x S seeds, on LIDC-A, -B and -C. Then each
test of the list below compares two learners on it, exactly as the tables compare a method with the reference:
  null (seed)  A2 vs A: two copies of one learner that differ only in their seeds (a rejection is a false positive);
  null (data)  N2 vs N1: two learners equal in expectation that differ on every one data set (each sees its own
               noisy copy of an attribute, the noise redrawn per benchmark): a rejection is a false positive;
  power        B vs A: B sees one more informative attribute (a small real advantage; a rejection with B ahead counts).
Over ``--sims`` benchmarks each test's rejection rate at alpha comes with its 95% Monte Carlo interval (Wilson's score
interval of a binomial proportion; Wilson 1927).

Tests (two-sided, alpha 0.05, the statistics functions the tables use):
  pairs t (R=1)        corrected resampled t over the (fold, seed) pairs of one partition: the tables' old unit
  pairs t, uncorrected the plain paired t over the same pairs (what the correction changes)
  units t (R)          corrected resampled t over seed-averaged (partition, fold) units, n = 5 R (Nadeau & Bengio
                       2003; Bouckaert & Frank 2004)
  Wilcoxon (R)         Wilcoxon's signed-rank test on the same units (a test that cannot reach alpha never rejects)
  P(A>B) (R)           the probability that the method beats the reference on a random unit, with its bootstrap
                       interval, and Bouthillier et al.'s (2021) rule: interval above (below) 0.5 and P above 0.75
                       (below 0.25): a conclusion either way counts as a rejection
Partitions (``--partitions``): ``random``, each benchmark draws its R partitions from the pool (the average over
partitions); ``fixed``, every benchmark uses partitions 0..R-1, the very partitions the tables use with ``--repeats R``
(what varies is the seeds and the noise only). Both by default, each with every test.

Two readings of a false-positive rate (both in the tables): *measured <= alpha*, the rate itself is at most alpha in
every null scenario, dataset and partition mode (what the tables' marks require: ``benchmarks.stats.verdicts``); and
*shown <= alpha*, the upper end of its Monte Carlo interval is at most alpha everywhere (the simulation shows the level
kept, not merely "not shown to exceed").

The smallest detectable difference (``benchmarks.stats.power``) is checked on the same benchmarks: per dataset and R,
the unit s.d. of a null scenario (the root mean over benchmarks of each one's unit variance), its MDE at 80% power, and
the rate at which the default test rejects (method ahead) when every unit difference of that null is shifted by the MDE:
the power at the MDE, which the formula says is 0.8 when the test's variance model holds. For B vs A, the power the
formula predicts from B's mean advantage and unit s.d., beside the power measured.

Writes ``calibration.json`` (every count, rate and interval, the arguments and the wall time) and ``calibration.md``
(the tables of docs/statistics.md) into ``$CLIPLUNG_RESULTS/calibration`` (``--out`` for another folder).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.cli import ArgumentParser, check_datasets, int_in, output_folder
from benchmarks.errors import UserError, cli_main

ALPHA = 0.05
LEVEL = 0.95  # of the Monte Carlo intervals
N_BOOT = 2000  # bootstrap draws of the P(A > B) interval, as in the tables
DEFAULT_TEST = "units t"  # the tables' default: see docs/statistics.md, "Calibration"
# Every R a table can have (--repeats 1-10): a verdict mark needs its rule measured at the table's R (stats.verdicts).
DEFAULT_REPEATS = tuple(range(1, 11))
POWER = 0.8  # of the smallest detectable difference
# (method, reference) roles of simulate.ROLES; a scenario named null* counts every rejection as a false positive
SCENARIOS = {"null (seed)": ("A2", "A"), "null (data)": ("N2", "N1"), "power": ("B", "A")}
NULLS = tuple(s for s in SCENARIOS if s.startswith("null"))
MODES = ("random", "fixed")  # partitions drawn from the pool per benchmark, or 0..R-1 (the tables')


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion k/n (Wilson 1927); (nan, nan) for n = 0.

    ``centre = (k + z^2/2) / (n + z^2)``, ``half = z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)``, z the normal
    quantile of (1 + level) / 2.
    """
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import norm  # noqa: PLC0415

    z = float(norm.ppf(0.5 + level / 2.0))
    centre = (k + z * z / 2.0) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4.0) / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def null_bound(n: int, alpha: float = ALPHA, risk: float = 1e-3) -> int:
    """The most rejections in ``n`` null benchmarks a test of level ``alpha`` gives but with probability ``risk``:
    the binomial (n, alpha) upper quantile. The fast check of CI fails a test that rejects more often than this."""
    from scipy.stats import binom  # noqa: PLC0415

    return int(binom.ppf(1.0 - risk, n, alpha))


def signflip_p(nz: np.ndarray) -> float:
    """The two-sided p of Wilcoxon's signed-rank test by exhaustive sign flips, for non-zero differences ``nz`` with
    ties (n <= 13): what ``scipy.stats.wilcoxon`` computes there through ``permutation_test`` (the statistic T+, the
    sum of the average ranks of |d| over the positive d; ``p = min(1, 2 min(P(T >= t), P(T <= t)))`` over the 2^n
    equally likely sign vectors), in milliseconds instead of a second. ``tests/test_calibrate.py`` checks it against
    the tables' ``wilcoxon_signed_rank``.
    """
    from scipy.stats import rankdata  # noqa: PLC0415

    r = rankdata(np.abs(nz))  # (n,) average ranks
    t = float(r[nz > 0].sum())
    bits = (np.arange(2**nz.size)[:, None] >> np.arange(nz.size)[None, :]) & 1  # (2^n, n) every sign vector
    null = bits @ r  # (2^n,) T+ of each
    tol = abs(t) * np.finfo(np.float64).eps * 100  # scipy's tolerance for equal statistics
    return float(min(1.0, 2.0 * min(np.mean(null >= t - tol), np.mean(null <= t + tol))))


def wilcoxon_rejects(d: np.ndarray, alpha: float = ALPHA) -> bool:
    """The tables' rule on ``wilcoxon_signed_rank(d)``: reachable and p < alpha. Short cuts with the same answer:
    a test that cannot reach alpha (``min_reachable_p``) is not run; ties with n <= 13 go through ``signflip_p``."""
    from benchmarks.stats.paired import min_reachable_p, wilcoxon_signed_rank  # noqa: PLC0415

    nz = d[d != 0]
    if nz.size == 0 or min_reachable_p("wilcoxon", int(nz.size)) > alpha:
        return False
    if nz.size <= 13 and np.unique(np.abs(nz)).size < nz.size:
        return signflip_p(nz) < alpha
    w = wilcoxon_signed_rank(d, alpha)
    return bool(w.reachable and w.p < alpha)


def decide_all(x: np.ndarray, y: np.ndarray, repeats, n_train: np.ndarray, n_test: np.ndarray, alpha: float = ALPHA,
               n_boot: int = N_BOOT, boot_seed: int = 0) -> dict[str, tuple[bool, float]]:
    """Every test of the module's list on one simulated comparison: {test name: (rejected, mean difference)}.

    x, y: (R_max, folds, seeds) accuracy of the method and of the reference; n_train, n_test: (R_max,) the mean
    training and test sizes over each partition's folds. A test on R partitions uses the first R. The functions are
    the tables' (``benchmarks.stats``), with their rule: reject when the test can reach alpha and ``p < alpha``;
    P(A>B) "rejects" when Bouthillier et al.'s rule concludes (better or worse).
    """
    from scipy import stats as ss  # noqa: PLC0415

    from benchmarks.stats.paired import corrected_t  # noqa: PLC0415
    from benchmarks.stats.prob import prob_outperform  # noqa: PLC0415

    out: dict[str, tuple[bool, float]] = {}
    pairs = (x[0] - y[0]).ravel()  # (folds * seeds,) the old unit: a (fold, seed) pair
    t = corrected_t(pairs, n_train[0], n_test[0], alpha)
    out["pairs t (R=1)"] = (bool(t.reachable and t.p < alpha), t.mean)
    plain = ss.ttest_1samp(pairs, 0.0).pvalue if pairs.std() > 0 else 1.0
    out["pairs t, uncorrected (R=1)"] = (bool(plain < alpha), float(pairs.mean()))
    units = x.mean(-1) - y.mean(-1)  # (R_max, folds): seeds averaged within (partition, fold)
    d_of = {r: units[:r].ravel() for r in repeats}  # (5 R,) the units of the first R partitions
    for r, d in d_of.items():
        t = corrected_t(d, float(n_train[:r].mean()), float(n_test[:r].mean()), alpha)
        out[f"units t (R={r})"] = (bool(t.reachable and t.p < alpha), t.mean)
    for r, d in d_of.items():
        out[f"Wilcoxon (R={r})"] = (wilcoxon_rejects(d, alpha), float(d.mean()))
    for r, d in d_of.items():
        pr = prob_outperform(d, n_boot=n_boot, seed=boot_seed, alpha=alpha)
        out[f"P(A>B) (R={r})"] = (bool(pr.better or pr.worse), float(d.mean()))
    return out


def rates(sim, repeats, alpha: float = ALPHA, n_boot: int = N_BOOT, boot_seed: int = 0) -> dict:
    """{scenario: {dataset: {test: {"k", "n", "rate", "low", "high"}}}} over the benchmarks of ``sim``.

    A null scenario's k counts every rejection (false positives); power counts the rejections with the method ahead.
    """
    from benchmarks.stats.simulate import ROLES  # noqa: PLC0415

    out: dict = {}
    for scen, (m, ref) in SCENARIOS.items():
        out[scen] = {}
        for di, ds in enumerate(sim.datasets):
            counts: dict[str, int] = {}
            for i in range(sim.acc.shape[0]):
                parts = sim.partitions[i]
                n_tr = sim.n_train[parts, di].mean(-1)  # (R_max,)
                n_te = sim.n_test[parts, di].mean(-1)
                res = decide_all(sim.acc[i, ROLES.index(m), di], sim.acc[i, ROLES.index(ref), di], repeats, n_tr, n_te, alpha, n_boot,
                                 boot_seed)
                for name, (rej, mean) in res.items():
                    counts[name] = counts.get(name, 0) + int(rej and (scen in NULLS or mean > 0))
            n = sim.acc.shape[0]
            out[scen][ds] = {name: {"k": k, "n": n, "rate": k / n if n else math.nan, **dict(zip(("low", "high"), wilson(k, n)))}
                             for name, k in counts.items()}
    return out


def detectable(sim, repeats, alpha: float = ALPHA, power: float = POWER) -> dict:
    """{dataset: {R: {...}}}: the smallest detectable difference of the default test checked on ``sim``.

    Per dataset and R (n = 5 R units): ``correction``, the mean n_test/n_train; for each null scenario, ``sd``, the root
    mean over benchmarks of each one's unit variance (ddof 1), ``mde`` at ``power``, ``mde_own`` the median and 10-90%
    range of the MDE a table would state from each benchmark's own s.d., and the rate (with its Wilson interval) at which
    the tables' ``corrected_t`` rejects with the method ahead when every unit difference is shifted by ``mde``; for B vs
    A, its mean advantage ``effect``, ``sd`` and the power ``predicted`` by the formula (the measured one is the power
    scenario's ``units t (R)``).
    """
    from benchmarks.stats.paired import corrected_t  # noqa: PLC0415
    from benchmarks.stats.power import corrected_t_power, detectable_difference  # noqa: PLC0415
    from benchmarks.stats.simulate import ROLES  # noqa: PLC0415

    out: dict = {}
    n_sims, folds = sim.acc.shape[0], sim.acc.shape[4]
    for di, ds in enumerate(sim.datasets):
        out[ds] = {}
        for r in repeats:
            n = folds * r
            n_tr = sim.n_train[sim.partitions[:, :r], di].mean((1, 2))  # (n_sims,) as decide_all's corrected t sees them
            n_te = sim.n_test[sim.partitions[:, :r], di].mean((1, 2))
            rho = float(np.mean(n_te / n_tr))
            entry: dict = {"n": n, "correction": rho}
            for scen, (m, ref) in SCENARIOS.items():
                x, y = sim.acc[:, ROLES.index(m), di], sim.acc[:, ROLES.index(ref), di]
                d = (x.mean(-1) - y.mean(-1))[:, :r].reshape(n_sims, n)  # (n_sims, 5 R) seed-averaged units
                s_own = d.std(1, ddof=1)
                sd = float(np.sqrt(np.mean(s_own**2)))
                mde = detectable_difference(sd, n, rho, alpha, power)
                unit = detectable_difference(1.0, n, rho, alpha, power)
                c = {"sd": sd, "mde": mde, "mde_own": [float(q) for q in unit * np.quantile(s_own, [0.1, 0.5, 0.9])]}
                if scen in NULLS:
                    k = 0
                    for i in range(n_sims):
                        t = corrected_t(d[i] + mde, n_tr[i], n_te[i], alpha)
                        k += int(t.reachable and t.p < alpha and t.mean > 0)
                    c.update(k=k, n_sims=n_sims, rate=k / n_sims if n_sims else math.nan, **dict(zip(("low", "high"), wilson(k, n_sims))))
                else:
                    effect = float(d.mean())
                    c.update(effect=effect, predicted=corrected_t_power(effect, sd, n, rho, alpha))
                entry[scen] = c
            out[ds][str(r)] = entry
    return out


def family(test: str) -> str:
    """``"units t (R=3)"`` -> ``"units t"``."""
    return test.split(" (")[0]


FAMILIES = ("pairs t", "pairs t, uncorrected", "units t", "Wilcoxon", "P(A>B)")  # the order of the tables' rows


def _modes(result: dict) -> list[str]:
    """The partition modes of ``result`` in the order of ``MODES`` (a JSON read back has them sorted)."""
    return [m for m in MODES if m in result["modes"]]


def null_cells(result: dict, test: str):
    """((mode, scenario, dataset), cell) of ``test`` in every null scenario, dataset and partition mode of ``result``."""
    for mode in _modes(result):
        res = result["modes"][mode]
        for scen in NULLS:
            for ds, per in res["rates"][scen].items():
                yield (mode, scen, ds), per[test]


def worst(result: dict, test: str) -> tuple[tuple, dict]:
    """The null cell with the highest false-positive rate of ``test`` (ties: the highest upper end)."""
    return max(null_cells(result, test), key=lambda kc: (kc[1]["rate"], kc[1]["high"]))


def measured_ok(result: dict, test: str, alpha: float = ALPHA) -> bool:
    """The false-positive rate as measured is at most alpha in every null scenario, dataset and partition mode (the
    condition of a verdict mark in the tables, ``benchmarks.stats.verdicts``)."""
    return all(c["rate"] <= alpha for _, c in null_cells(result, test))


def shown_ok(result: dict, test: str, alpha: float = ALPHA) -> bool:
    """The upper end of the rate's 95% Monte Carlo interval is at most alpha everywhere: the simulation shows the level
    kept (a test can have ``measured_ok`` without this when its rate is near alpha)."""
    return all(c["high"] <= alpha for _, c in null_cells(result, test))


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _ci(c: dict) -> str:
    return f"{c['rate']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


def _tests(result: dict) -> list[str]:
    """The tests of ``result`` by family (``FAMILIES``), then R."""
    first = result["modes"][_modes(result)[0]]["rates"]["power"]
    tests = list(next(iter(first.values()))) if first else []
    return sorted(tests, key=lambda t: (FAMILIES.index(family(t)) if family(t) in FAMILIES else len(FAMILIES), int(t.split("R=")[1].rstrip(")"))))


def markdown_rules(result: dict, alpha: float = ALPHA) -> str:
    """Per test: its highest false-positive rate over both nulls, every dataset and every partition mode, where, and
    both readings of "at most alpha" (the table ``benchmarks.stats.verdicts`` copies)."""
    head = ["Test", "highest false-positive rate [95% interval]", "where", f"measured ≤ {alpha:g}", f"shown ≤ {alpha:g} (upper end)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in _tests(result):
        (mode, scen, ds), c = worst(result, t)
        lines.append(f"| {t}{' **default**' if family(t) == DEFAULT_TEST else ''} | {_ci(c)} | {scen}, {ds}, {mode} partitions | "
                     f"{_yes(measured_ok(result, t, alpha))} | {_yes(shown_ok(result, t, alpha))} |")
    return "\n".join(lines) + "\n"


def markdown_rates(result: dict, mode: str, alpha: float = ALPHA) -> str:
    """One partition mode's table: per test, its rejection rate in each scenario and dataset with the Monte Carlo
    interval, and the two readings of "false positives at most alpha" in this mode."""
    r = result["modes"][mode]["rates"]
    datasets = list(r["power"])
    head = ["Test"] + [f"{scen}: {ds}" for scen in SCENARIOS for ds in datasets] + [f"measured ≤ {alpha:g}", f"shown ≤ {alpha:g}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    one = {**result, "modes": {mode: result["modes"][mode]}}
    for t in _tests(result):
        row = [t + (" **default**" if family(t) == DEFAULT_TEST else "")]
        row += [_ci(r[scen][ds][t]) for scen in SCENARIOS for ds in datasets]
        lines.append("| " + " | ".join(row + [_yes(measured_ok(one, t, alpha)), _yes(shown_ok(one, t, alpha))]) + " |")
    return "\n".join(lines) + "\n"


def markdown_detectable(result: dict) -> str:
    """Per dataset and R: the MDE of the default test and the power at it in the simulation, per partition mode."""
    modes = _modes(result)
    head = ["Dataset", "R", "n_test/n_train"] + [f"{what} ({mode})" for mode in modes for what in
                                                 ("null (data): s.d., MDE → power", "null (seed): s.d., MDE → power",
                                                  "B vs A: effect, s.d., power predicted / measured")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = result["modes"][modes[0]]["detectable"]
    for ds in first:
        for r in sorted(first[ds], key=int):
            row = [ds, r, f"{first[ds][r]['correction']:.4f}"]  # the mean over partitions: the same in every mode here
            for mode in modes:
                e = result["modes"][mode]["detectable"][ds][r]
                meas = result["modes"][mode]["rates"]["power"][ds][f"{DEFAULT_TEST} (R={r})"]
                row += [f"{e[s]['sd']:.2f}, {e[s]['mde']:.2f} → {_ci(e[s])}" for s in NULLS[::-1]]
                b = e["power"]
                row += [f"{b['effect']:+.2f}, {b['sd']:.2f}, {b['predicted']:.3f} / {meas['rate']:.3f}"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def markdown(result: dict, alpha: float = ALPHA) -> str:
    """The tables of docs/statistics.md: the verdict rules, each partition mode's rates, the detectable differences."""
    a = result["args"]
    parts = ["#### The rules: highest false-positive rate over both nulls, every dataset and partition mode", "", markdown_rules(result, alpha)]
    for mode in _modes(result):
        how = (f"each benchmark draws {max(a['repeats'])} of repeats 0-{a['pool'] - 1} in a random order; a test on R takes the first R"
               if mode == "random" else f"every benchmark uses partitions 0-{max(a['repeats']) - 1}; a test on R takes 0..R-1, the tables' own")
        parts += [f"#### Rejection rates, {mode} partitions ({how})", "", markdown_rates(result, mode, alpha)]
    parts += ["#### The smallest detectable difference (80% power) and the power at it", "", markdown_detectable(result)]
    parts += [f"{a['sims']} simulated benchmarks per partition mode, each of {max(a['repeats'])} partitions x 5 folds x {a['seeds']} seeds per "
              f"learner; rates at alpha = {alpha:g} with 95% Wilson intervals; wall time {result['wall_s']:.0f} s ({result['machine']}).",
              "",
              "Mean accuracy (%) of the learners: " + "; ".join(
                  f"{ds} ({mode}) " + ", ".join(f"{k} {v:.1f}" for k, v in m.items())
                  for mode in _modes(result) for ds, m in result["modes"][mode]["mean_accuracy"].items()) + ".", ""]
    return "\n".join(parts)


def calibrate(sims: int = 1000, seeds: int = 2, repeats=DEFAULT_REPEATS, pool: int = 10, datasets=None, min_readers: int = 2,
              seed: int = 0, alpha: float = ALPHA, n_boot: int = N_BOOT, modes=MODES) -> dict:
    """Simulate and test, in each partition mode; the whole result as a JSON-ready dict (see the module docstring).
    Both modes use the same ``seed`` (the same noise of N1 and N2, other partitions)."""
    import os  # noqa: PLC0415
    import platform  # noqa: PLC0415

    from benchmarks.stats.simulate import DATASETS, ROLES, pool_tables, simulate  # noqa: PLC0415

    t0 = time.perf_counter()
    repeats = sorted(set(repeats))
    tables = pool_tables(min_readers, pool)
    out: dict = {"modes": {}, "default_test": DEFAULT_TEST, "alpha": alpha, "power": POWER}
    for mode in modes:
        t1 = time.perf_counter()
        sim = simulate(sims, seeds, max(repeats), pool, datasets or DATASETS, min_readers, seed, tables=tables, fixed=mode == "fixed")
        t_sim = time.perf_counter() - t1
        out["modes"][mode] = {
            "rates": rates(sim, repeats, alpha, n_boot), "detectable": detectable(sim, repeats, alpha),
            "mean_accuracy": {ds: {role: float(np.nanmean(sim.acc[:, j, i])) for j, role in enumerate(ROLES)} for i, ds in enumerate(sim.datasets)},
            "partitions_used": sorted({int(p) for p in np.unique(sim.partitions)}), "simulate_s": t_sim, "wall_s": time.perf_counter() - t1}
    out.update(args={"sims": sims, "seeds": seeds, "repeats": repeats, "pool": pool, "datasets": list(datasets or DATASETS),
                     "min_readers": min_readers, "seed": seed, "n_boot": n_boot, "modes": list(modes), "learner": vars(sim.learner)},
               wall_s=time.perf_counter() - t0,
               machine=f"{os.cpu_count()}-core {platform.machine()} CPU, {time.strftime('%Y-%m-%d', time.gmtime())}")
    return out


def check_default(result: dict, alpha: float = ALPHA) -> list[str]:
    """The partition modes, datasets and R where the default test rejected more null benchmarks than ``null_bound``
    allows (the CI check: empty when the default test keeps its level)."""
    bad = []
    for mode, res in result["modes"].items():
        for scen in NULLS:
            for ds, per in res["rates"][scen].items():
                for t, c in per.items():
                    if family(t) == DEFAULT_TEST and c["k"] > null_bound(c["n"], alpha):
                        bad.append(f"{mode} partitions, {scen}, {ds}, {t}: {c['k']} of {c['n']} null benchmarks rejected "
                                   f"(bound {null_bound(c['n'], alpha)})")
    return bad


@cli_main
def main(argv=None) -> None:
    from benchmarks.data.partitions import MAX_REPEATS  # noqa: PLC0415

    ap = ArgumentParser(prog="python -m benchmarks.stats.calibrate", description=__doc__)
    ap.add_argument("--sims", type=int_in(1), default=1000, help="simulated benchmarks")
    ap.add_argument("--seeds", type=int_in(2), default=2, help="seeds per learner, partition and fold")
    ap.add_argument("--repeats", type=int_in(1, MAX_REPEATS), nargs="+", default=list(DEFAULT_REPEATS), help="numbers of partitions to test with")
    ap.add_argument("--pool", type=int_in(1, MAX_REPEATS), default=MAX_REPEATS, help="partitions a benchmark draws from (repeats 0..pool-1)")
    ap.add_argument("--datasets", nargs="+", default=None, help="LIDC-A, LIDC-B, LIDC-C (default: all)")
    ap.add_argument("--min-readers", type=int_in(1, 4), default=2, help="label rule: nodules read by at least this many radiologists")
    ap.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="seed of the whole calibration")
    ap.add_argument("--boot", type=int_in(100), default=N_BOOT, help="bootstrap draws of the P(A>B) interval")
    ap.add_argument("--partitions", nargs="+", choices=MODES, default=list(MODES),
                    help="random: each benchmark draws its partitions from the pool; fixed: partitions 0..R-1, the tables'")
    ap.add_argument("--out", default=None, help="output folder (default $CLIPLUNG_RESULTS/calibration)")
    ap.add_argument("--check", action="store_true", help="exit 1 when the default test rejects more null benchmarks than its level allows")
    args = ap.parse_args(argv)
    if max(args.repeats) > args.pool:
        raise UserError(f"--repeats {max(args.repeats)} needs --pool of at least {max(args.repeats)} partitions (got {args.pool})")
    datasets = check_datasets(args.datasets)
    out = output_folder(args.out, "calibration", "calibration")
    modes = [m for m in MODES if m in args.partitions]
    result = calibrate(args.sims, args.seeds, args.repeats, args.pool, datasets, args.min_readers, args.seed, ALPHA, args.boot, modes)
    from benchmarks.io import atomic_write_text  # noqa: PLC0415

    atomic_write_text(Path(out) / "calibration.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
    text = markdown(result)
    atomic_write_text(Path(out) / "calibration.md", text)
    print(text, end="")
    print(f"wrote {Path(out) / 'calibration.json'} and calibration.md")
    bad = check_default(result)
    if args.check and bad:
        print("the default test rejects too many null benchmarks:\n  " + "\n  ".join(bad))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
