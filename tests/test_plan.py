"""The power of the default test and the smallest detectable difference (benchmarks.stats.power), each formula against a
second derivation, and ``python -m benchmarks.stats.plan``. Every test name holds "detectable" (pytest -k detectable)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as ss

from benchmarks.stats import power as P
from benchmarks.stats.plan import main as plan_main
from tests.records_synth import record, write

CASES = [(0.7, 1.0, 5, 0.25), (1.3, 1.2, 5, 0.1125), (1.0, 0.8, 10, 0.1125), (2.5, 2.0, 15, 0.25), (0.4, 1.0, 50, 0.0)]


@pytest.mark.parametrize("effect,sd,n,rho", CASES)
def test_detectable_power_by_the_noncentral_t_equals_an_integral_over_the_chi_square(effect, sd, n, rho):
    """T' = (Z + lambda) / sqrt(U / df), U ~ chi2_df: power = int P(|Z + lambda| > t_c sqrt(u / df)) f(u) du."""
    df = n - 1
    lam = effect / (sd * math.sqrt(1 / n + rho))
    tc = ss.t.ppf(0.975, df)

    def given_u(u):
        c = tc * math.sqrt(u / df)
        return (ss.norm.sf(c - lam) + ss.norm.cdf(-c - lam)) * ss.chi2.pdf(u, df)

    want, err = integrate.quad(given_u, 0, np.inf, limit=200, epsabs=1e-12)
    assert err < 1e-8
    assert P.corrected_t_power(effect, sd, n, rho) == pytest.approx(want, abs=1e-8)
    assert P.corrected_t_power(-effect, sd, n, rho) == P.corrected_t_power(effect, sd, n, rho)  # two-sided: symmetric


def test_detectable_power_against_a_monte_carlo_of_the_model():
    """Draw the mean difference N(delta, (1/n + rho) sigma^2) and s^2 = sigma^2 chi2_{n-1} / (n - 1) independently and
    apply the test: the rejection rate is the formula's power (400,000 draws: within 4 standard errors)."""
    rng = np.random.default_rng(11)
    m = 400_000
    for effect, sd, n, rho in CASES[:3]:
        c = 1 / n + rho
        dbar = effect + sd * math.sqrt(c) * rng.standard_normal(m)
        s = sd * np.sqrt(rng.chisquare(n - 1, m) / (n - 1))
        rate = float(np.mean(np.abs(dbar) / (math.sqrt(c) * s) > ss.t.ppf(0.975, n - 1)))
        want = P.corrected_t_power(effect, sd, n, rho)
        assert abs(rate - want) < 4 * math.sqrt(want * (1 - want) / m), (effect, n, rate, want)


def test_detectable_power_where_the_noncentral_t_of_scipy_fails():
    """scipy's noncentral t gives NaN at some noncentralities above about 8: there the power comes from the integral
    over the chi-square. Over a grid of noncentralities the power is finite and increasing, and where scipy failed it
    matches a Monte Carlo of the model (with 2 units, 1 degree of freedom: a table of 2 folds); the MDE of 2 or 3
    units is found."""
    rng = np.random.default_rng(8)
    m = 200_000
    for n in (2, 3, 5):
        c, tc = 1 / n + 0.25, ss.t.ppf(0.975, n - 1)
        lams = np.linspace(0.0, 30.0, 61)
        powers = [P.corrected_t_power(lam * math.sqrt(c), 1.0, n, 0.25) for lam in lams]
        assert all(np.isfinite(powers)) and all(b >= a - 1e-9 for a, b in zip(powers, powers[1:]))
        failed = [lam for lam in lams if not np.isfinite(ss.nct.sf(tc, n - 1, lam) + ss.nct.cdf(-tc, n - 1, lam))]
        assert failed, n  # the fallback is exercised
        for lam in failed[:2]:
            want = P.corrected_t_power(lam * math.sqrt(c), 1.0, n, 0.25)
            dbar = lam + rng.standard_normal(m)  # in units of sigma sqrt(c)
            s = np.sqrt(rng.chisquare(n - 1, m) / (n - 1))
            rate = float(np.mean(np.abs(dbar) / s > tc))
            assert abs(rate - want) < 4 * math.sqrt(want * (1 - want) / m) + 1e-6, (n, lam, rate, want)
    for n in (2, 3):
        assert P.corrected_t_power(P.detectable_difference(1.0, n, 0.25), 1.0, n, 0.25) == pytest.approx(0.8, abs=1e-9)


def test_detectable_difference_by_root_finding_against_the_approximations():
    """The MDE solves power = 0.8 exactly; it lies above the normal approximation (z_0.975 + z_0.8) sigma sqrt(1/n + rho),
    within 2% of the t approximation (t_0.975 + t_0.8) sigma sqrt(...) from 5 units on, and both meet as n grows."""
    z = ss.norm.ppf(0.975) + ss.norm.ppf(0.8)
    for n in (5, 10, 15, 50, 400):
        for rho in (0.0, 0.1125, 0.25):
            for sd in (0.7, 1.0, 2.3):
                mde = P.detectable_difference(sd, n, rho)
                c = math.sqrt(1 / n + rho)
                assert P.corrected_t_power(mde, sd, n, rho) == pytest.approx(0.8, abs=1e-9)
                assert mde > z * sd * c
                t_approx = (ss.t.ppf(0.975, n - 1) + ss.t.ppf(0.8, n - 1)) * sd * c
                assert mde == pytest.approx(t_approx, rel=0.02)
    assert P.detectable_difference(1.0, 400, 0.0) == pytest.approx(z / math.sqrt(400), rel=0.005)
    assert P.detectable_difference(0.0, 5, 0.25) == 0.0
    assert P.detectable_difference(2.0, 10, 0.25) == pytest.approx(2 * P.detectable_difference(1.0, 10, 0.25), rel=1e-12)  # linear in sd


def test_detectable_floor_is_the_limit_in_the_number_of_partitions():
    """The correction does not shrink with n: the MDE falls to (z_0.975 + z_0.8) sigma sqrt(rho), never below."""
    z = ss.norm.ppf(0.975) + ss.norm.ppf(0.8)
    for rho, sd in ((0.25, 1.0), (0.1125, 1.7)):
        floor = P.detectable_floor(sd, rho)
        assert floor == pytest.approx(z * sd * math.sqrt(rho), rel=1e-5)  # the lower tail adds ~1e-6
        mdes = [P.detectable_difference(sd, 5 * r, rho) for r in (1, 2, 5, 10, 100, 10_000)]
        assert all(a > b > floor for a, b in zip(mdes, mdes[1:]))
        assert mdes[-1] == pytest.approx(floor, rel=1e-3)
        assert P.limit_power(floor, sd, rho) == pytest.approx(0.8, abs=1e-9)


def test_detectable_difference_holds_in_a_simulation_of_correlated_units():
    """Units that share a training set, as the corrected t models them: d_u = delta + a + e_u, a ~ N(0, rho sigma^2) shared
    by a benchmark's units, e_u ~ N(0, sigma^2). The tables' ``corrected_t`` (n_test/n_train = rho) rejects 5% of the
    benchmarks at delta = 0 and 80% at delta = MDE (2,000 benchmarks: within 4 standard errors)."""
    from benchmarks.stats import corrected_t

    rng = np.random.default_rng(5)
    sims, sd, n_train, n_test = 2000, 1.4, 1504.0, 169.2
    rho = n_test / n_train
    for r in (1, 3):
        n = 5 * r
        mde = P.detectable_difference(sd, n, rho)
        for delta, want in ((0.0, 0.05), (mde, 0.8)):
            d = delta + sd * math.sqrt(rho) * rng.standard_normal((sims, 1)) + sd * rng.standard_normal((sims, n))
            rate = np.mean([(t := corrected_t(row, n_train, n_test)).p < 0.05 and (delta == 0 or t.mean > 0) for row in d])
            assert abs(rate - want) < 4 * math.sqrt(want * (1 - want) / sims), (r, delta, rate)


def test_detectable_pooled_sd_is_the_sd_of_the_centred_samples_together():
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=k) for k in (5, 10, 10, 1)]
    sd, dof = P.pooled_sd([float(np.std(x, ddof=1)) if x.size > 1 else None for x in xs], [x.size for x in xs])
    centred = np.concatenate([x - x.mean() for x in xs if x.size > 1])
    assert dof == 22 and sd == pytest.approx(math.sqrt(np.sum(centred**2) / dof), rel=1e-12)
    assert P.pooled_sd([None], [1]) == (None, 0)


def test_detectable_plan_finds_the_smallest_number_of_partitions():
    need, rows = P.plan_partitions(1.0, 0.5, 0.2203, max_repeats=10)
    assert [r.n for r in rows] == [5 * r for r in range(1, 11)]
    assert need == next(r.repeats for r in rows if r.power >= 0.8) and rows[need - 2].power < 0.8 <= rows[need - 1].power
    assert all(r.power == pytest.approx(P.corrected_t_power(1.0, 0.5, r.n, 0.2203)) for r in rows)
    need, rows = P.plan_partitions(1.0, 1.3, 0.1125)
    assert need is None and rows[-1].power < P.limit_power(1.0, 1.3, 0.1125) < 0.8  # a ceiling below the target


def test_detectable_plan_cli_with_an_sd_says_when_no_r_suffices(capsys):
    plan_main(["--effect", "1.0", "--dataset", "LIDC-B", "--sd", "1.3"])
    out = capsys.readouterr().out
    floor = P.detectable_floor(1.3, 169.2 / 1504.0)
    assert "n_test/n_train = 0.1125" in out and "no R up to 10 reaches power 0.8" in out
    assert f"never falls below {floor:.3g} points" in out
    plan_main(["--effect", "1.0", "--dataset", "LIDC-B", "--sd", "0.5", "--profile", "quick"])
    out = capsys.readouterr().out
    assert "profile quick's 768" in out and "run and tabulate with --repeats 2" in out


def test_detectable_plan_cli_without_records_or_sd_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPLUNG_RESULTS", str(tmp_path))
    monkeypatch.delenv("CLIPLUNG_RUNS", raising=False)  # another test's session may have set it
    for argv, why in ((["--effect", "1.0", "--dataset", "LIDC-B"], "give the unit s.d. with --sd"),
                      (["--effect", "0", "--dataset", "LIDC-B", "--sd", "1"], "not a number above 0"),
                      (["--effect", "1", "--dataset", "LIDC-Z", "--sd", "1"], "unknown dataset")):
        with pytest.raises(SystemExit) as e:
            plan_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and why in err[0], err
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as e:
        plan_main(["--effect", "1.0", "--dataset", "LIDC-B"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "no run records of LIDC-B" in err[0] and "--sd" in err[0]


def test_detectable_plan_cli_takes_the_unit_sd_from_the_records(tmp_path, capsys):
    """From records: the s.d. of every method's unit differences to CLIP-Lung, pooled with weights n - 1, and the
    records' own n_test/n_train, the numbers the tables' JSON states."""
    from benchmarks.records import read_records
    from benchmarks.tables import build, select
    from tests.records_synth import accuracy_of

    rs = [record(m, "LIDC-B", f, a + 0.012 * ((f * k) % 3)) for m, a, k in (("ce", 0.80, 1), ("nsb", 0.82, 2), ("clip_lung", 0.84, 0))
          for f in range(5)]
    runs = write(tmp_path / "runs", rs)
    plan_main(["--effect", "2.0", "--dataset", "LIDC-B", "--runs", str(runs)])
    out = capsys.readouterr().out
    acc = {(r["method"], r["fold"]): 100 * accuracy_of(r) for r in rs}
    d = {m: np.array([acc[(m, f)] - acc[("clip_lung", f)] for f in range(5)]) for m in ("ce", "nsb")}
    sd = math.sqrt(sum(np.sum((x - x.mean()) ** 2) for x in d.values()) / 8)
    rho = np.mean([r["data"]["n_test"] for r in rs]) / np.mean([r["data"]["n_train_used"] for r in rs])
    assert f"unit s.d. {sd:.3g} points" in out and f"n_test/n_train = {rho:.4f}" in out and "pooled over 2 comparison(s)" in out
    data = build(select(read_records(runs), [2]), [2], n_boot=0)
    e = data["detectable"][2]["LIDC-B"]
    assert e["sd_pooled"] == pytest.approx(sd, rel=1e-9) and e["df_pooled"] == 8 and e["correction"] == pytest.approx(rho)
    assert e["mde"] == pytest.approx(P.detectable_difference(sd, 5, rho), rel=1e-9)
    assert f"{P.detectable_difference(sd, 5, rho):.2f}" in out.splitlines()[3]  # R = 1: the table's own MDE
