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
Writes ``calibration.json`` (every count, rate and interval, the arguments and the wall time) and ``calibration.md``
(the table of docs/statistics.md) into ``$CLIPLUNG_RESULTS/calibration`` (``--out`` for another folder).
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
# (method, reference) roles of simulate.ROLES; a scenario named null* counts every rejection as a false positive
SCENARIOS = {"null (seed)": ("A2", "A"), "null (data)": ("N2", "N1"), "power": ("B", "A")}
NULLS = tuple(s for s in SCENARIOS if s.startswith("null"))


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


def family(test: str) -> str:
    """``"units t (R=3)"`` -> ``"units t"``."""
    return test.split(" (")[0]


def qualifies(result: dict, test: str, alpha: float = ALPHA) -> bool:
    """The test's false-positive rate is at most alpha within its Monte Carlo interval (the interval's lower end is
    not above alpha) in every null scenario and dataset."""
    return all(per[test]["low"] <= alpha for scen in NULLS for per in result["rates"][scen].values())


def markdown(result: dict, alpha: float = ALPHA) -> str:
    """The table of docs/statistics.md: per test, its rejection rate in each scenario and dataset with the Monte Carlo
    interval, and whether its false-positive rate is at most alpha within that interval everywhere."""
    r = result["rates"]
    datasets = list(r["power"])
    tests = list(r["power"][datasets[0]]) if datasets else []
    head = ["Test"] + [f"{scen}: {ds}" for scen in SCENARIOS for ds in datasets] + [f"false positives ≤ {alpha:g}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tests:
        row = [t + (" **default**" if family(t) == DEFAULT_TEST else "")]
        row += [f"{c['rate']:.3f} [{c['low']:.3f}, {c['high']:.3f}]" for scen in SCENARIOS for c in (r[scen][ds][t] for ds in datasets)]
        lines.append("| " + " | ".join(row + ["yes" if qualifies(result, t, alpha) else "**no**"]) + " |")
    a = result["args"]
    lines += ["", f"{a['sims']} simulated benchmarks, each of {max(a['repeats'])} partitions (drawn from repeats 0-{a['pool'] - 1}) x 5 folds x "
              f"{a['seeds']} seeds per learner; rejection rates at alpha = {alpha:g} with 95% Wilson intervals; wall time "
              f"{result['wall_s']:.0f} s ({result['machine']}).",
              "Mean accuracy (%) of the learners: " + "; ".join(f"{ds} " + ", ".join(f"{k} {v:.1f}" for k, v in m.items())
                                                              for ds, m in result["mean_accuracy"].items()) + "."]
    return "\n".join(lines) + "\n"


def calibrate(sims: int = 1000, seeds: int = 2, repeats=(1, 2, 3, 5), pool: int = 10, datasets=None, min_readers: int = 2,
              seed: int = 0, alpha: float = ALPHA, n_boot: int = N_BOOT) -> dict:
    """Simulate and test; the whole result as a JSON-ready dict (see the module docstring)."""
    import os  # noqa: PLC0415
    import platform  # noqa: PLC0415

    from benchmarks.stats.simulate import DATASETS, ROLES, simulate  # noqa: PLC0415

    t0 = time.perf_counter()
    repeats = sorted(set(repeats))
    sim = simulate(sims, seeds, max(repeats), pool, datasets or DATASETS, min_readers, seed)
    t_sim = time.perf_counter() - t0
    out = {"rates": rates(sim, repeats, alpha, n_boot), "default_test": DEFAULT_TEST, "alpha": alpha,
           "args": {"sims": sims, "seeds": seeds, "repeats": repeats, "pool": pool, "datasets": list(sim.datasets),
                    "min_readers": min_readers, "seed": seed, "n_boot": n_boot, "learner": vars(sim.learner)},
           "mean_accuracy": {ds: {role: float(np.nanmean(sim.acc[:, j, i])) for j, role in enumerate(ROLES)}
                             for i, ds in enumerate(sim.datasets)},
           "simulate_s": t_sim, "wall_s": time.perf_counter() - t0,
           "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, {time.strftime('%Y-%m-%d', time.gmtime())}"}
    return out


def check_default(result: dict, alpha: float = ALPHA) -> list[str]:
    """The datasets and R where the default test rejected more null benchmarks than ``null_bound`` allows (the CI
    check: empty when the default test keeps its level)."""
    bad = []
    for scen in NULLS:
        for ds, per in result["rates"][scen].items():
            for t, c in per.items():
                if family(t) == DEFAULT_TEST and c["k"] > null_bound(c["n"], alpha):
                    bad.append(f"{scen}, {ds}, {t}: {c['k']} of {c['n']} null benchmarks rejected (bound {null_bound(c['n'], alpha)})")
    return bad


@cli_main
def main(argv=None) -> None:
    from benchmarks.data.partitions import MAX_REPEATS  # noqa: PLC0415

    ap = ArgumentParser(prog="python -m benchmarks.stats.calibrate", description=__doc__)
    ap.add_argument("--sims", type=int_in(1), default=1000, help="simulated benchmarks")
    ap.add_argument("--seeds", type=int_in(2), default=2, help="seeds per learner, partition and fold")
    ap.add_argument("--repeats", type=int_in(1, MAX_REPEATS), nargs="+", default=[1, 2, 3, 5], help="numbers of partitions to test with")
    ap.add_argument("--pool", type=int_in(1, MAX_REPEATS), default=MAX_REPEATS, help="partitions a benchmark draws from (repeats 0..pool-1)")
    ap.add_argument("--datasets", nargs="+", default=None, help="LIDC-A, LIDC-B, LIDC-C (default: all)")
    ap.add_argument("--min-readers", type=int_in(1, 4), default=2, help="label rule: nodules read by at least this many radiologists")
    ap.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="seed of the whole calibration")
    ap.add_argument("--boot", type=int_in(100), default=N_BOOT, help="bootstrap draws of the P(A>B) interval")
    ap.add_argument("--out", default=None, help="output folder (default $CLIPLUNG_RESULTS/calibration)")
    ap.add_argument("--check", action="store_true", help="exit 1 when the default test rejects more null benchmarks than its level allows")
    args = ap.parse_args(argv)
    if max(args.repeats) > args.pool:
        raise UserError(f"--repeats {max(args.repeats)} needs --pool of at least {max(args.repeats)} partitions (got {args.pool})")
    datasets = check_datasets(args.datasets)
    out = output_folder(args.out, "calibration", "calibration")
    result = calibrate(args.sims, args.seeds, args.repeats, args.pool, datasets, args.min_readers, args.seed, ALPHA, args.boot)
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
