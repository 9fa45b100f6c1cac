"""benchmarks.stats.calibrate and simulate: the learner, the intervals, and the CI check that the default test keeps
its level on the real protocol (a few seconds: few simulated benchmarks, one dataset, two partitions)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as ss

from benchmarks.stats import calibrate as C
from benchmarks.stats import simulate as S


def test_wilson_interval_against_scipy_and_its_formula():
    for k, n in ((0, 20), (1, 20), (7, 40), (50, 1000), (20, 20)):
        lo, hi = C.wilson(k, n)
        ci = ss.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert lo <= k / n <= hi
    # k = 0: the upper end solves p = z^2 / (n + z^2)
    z = 1.959963984540054
    assert C.wilson(0, 20)[1] == pytest.approx(z * z / (20 + z * z), abs=1e-12)
    assert all(math.isnan(v) for v in C.wilson(0, 0))


def test_null_bound_is_the_binomial_upper_quantile():
    b = C.null_bound(40)
    assert ss.binom.sf(b, 40, 0.05) <= 1e-3 < ss.binom.sf(b - 1, 40, 0.05)  # P(K > b) tiny, P(K > b - 1) not
    assert ss.binom.sf(b, 40, 0.3) > 0.9  # a test of level 0.3 fails the check nine times in ten: it can fail


def test_units_are_the_tables_units():
    """decide_all's seed-averaged units are ``paired_units`` of the records' (repeat, fold, seed) values."""
    from benchmarks.stats import corrected_t, paired_units

    rng = np.random.default_rng(2)
    x, y = rng.normal(80, 2, (3, 5, 2)), rng.normal(80, 2, (3, 5, 2))  # (R, folds, seeds)
    key = [(r, f, s) for r in range(3) for f in range(5) for s in range(2)]
    units, diffs = paired_units({k: x[k] for k in key}, {k: y[k] for k in key})
    assert units == [(r, f) for r in range(3) for f in range(5)]
    n_tr, n_te = np.array([1500.0, 1502.0, 1498.0]), np.array([376.0, 375.0, 377.0])
    res = C.decide_all(x, y, [3], n_tr, n_te)
    t = corrected_t(diffs, n_tr.mean(), n_te.mean())
    assert res["units t (R=3)"] == (bool(t.p < 0.05), pytest.approx(t.mean, abs=1e-12))
    assert res["pairs t (R=1)"][1] == pytest.approx(float((x[0] - y[0]).mean()), abs=1e-12)
    # a large shift on every unit: every test that can reach 0.05 rejects
    res = C.decide_all(x + 5.0, y, [1, 3], n_tr, n_te)
    assert res["units t (R=3)"][0] and res["Wilcoxon (R=3)"][0] and res["P(A>B) (R=3)"][0] and res["pairs t (R=1)"][0]
    assert not res["Wilcoxon (R=1)"][0]  # five units cannot reach 0.05


def test_signflip_p_is_the_tables_wilcoxon_with_ties():
    """Where scipy runs its permutation test (ties, n <= 13), the fast sign-flip p equals the tables' p."""
    from benchmarks.stats import wilcoxon_signed_rank

    rng = np.random.default_rng(4)
    for n in (6, 9, 12):
        for _ in range(2):
            d = rng.integers(-4, 5, n).astype(float) * 0.27  # a few levels: ties certain
            d[d == 0] = 0.54
            want = wilcoxon_signed_rank(d)
            assert want.method == "permutation"
            assert C.signflip_p(d) == pytest.approx(want.p, abs=1e-12), d
            assert C.wilcoxon_rejects(d) == bool(want.reachable and want.p < 0.05)
    d = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # all positive: p = 2 / 2^8
    assert C.signflip_p(d) == pytest.approx(2 / 256) and C.wilcoxon_rejects(d)


def test_sgd_learns_and_a_masked_attribute_is_never_used():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + 0.1 * rng.normal(size=400) > 0).astype(int)  # only attribute 0 matters
    mask = np.array([[True, True, True], [False, True, True]])
    W, b = S.sgd_softmax(X, y, 2, mask, np.random.default_rng(1), S.Learner(steps=200, lr=0.5))
    acc = ((X.astype(np.float32) @ W + b).argmax(-1) == y).mean(1)
    assert acc[0] > 0.9 and acc[1] < 0.7  # the model without attribute 0 cannot learn the rule
    assert np.all(W[1, 0] == 0)


def test_a_simulation_is_reproducible_and_seeds_matter():
    tables = S.pool_tables(2, 1)
    a = S.simulate(2, n_seeds=2, n_repeats=1, pool=1, datasets=("LIDC-C",), seed=5, tables=tables)
    b = S.simulate(2, n_seeds=2, n_repeats=1, pool=1, datasets=("LIDC-C",), seed=5, tables=tables)
    assert np.array_equal(a.acc, b.acc) and not np.isnan(a.acc).any()
    assert a.acc.shape == (2, len(S.ROLES), 1, 1, 5, 2) and S.ROLES == ("A", "A2", "B", "N1", "N2")
    assert np.ptp(a.acc[:, 0], axis=-1).max() > 0  # two seeds of one learner differ somewhere
    assert 80.0 < a.acc.mean() < 100.0  # benign vs malignant from the readers' attributes is easy
    assert a.n_test[0, 0].sum() == sum(len(S.fold_table("LIDC-C", f, 2, table=tables[0]).test) for f in range(5))


def test_the_default_test_keeps_its_level_on_the_protocol(tmp_path):
    """The CI calibration: 40 simulated benchmarks of LIDC-A on two partitions; the default test (seed-averaged units,
    corrected t) rejects at most ``null_bound`` of the null ones: a test of level 0.05 exceeds it with probability
    1e-3, a test of level 0.3 nine times in ten (fixed seed: the same numbers every run)."""
    C.main(["--sims", "40", "--pool", "2", "--repeats", "1", "2", "--datasets", "LIDC-A", "--out", str(tmp_path), "--check"])
    res = json.loads((tmp_path / "calibration.json").read_text())
    assert set(res["modes"]) == {"random", "fixed"}  # both by default
    for mode in res["modes"]:
        null = res["modes"][mode]["rates"]["null (seed)"]["LIDC-A"]
        assert {"units t (R=1)", "units t (R=2)", "pairs t (R=1)", "Wilcoxon (R=2)", "P(A>B) (R=1)"} <= set(null)
        for t in ("units t (R=1)", "units t (R=2)"):
            assert null[t]["n"] == 40 and null[t]["k"] <= C.null_bound(40)
        assert null["Wilcoxon (R=1)"]["k"] == 0  # five units: the exact test cannot reach 0.05
        assert set(res["modes"][mode]["rates"]) == {"null (seed)", "null (data)", "power"}
    assert C.check_default(res) == []
    # the check can fail: a table where the default test rejected 12 of 40 null benchmarks (a level of 0.3)
    bad = json.loads(json.dumps(res))
    bad["modes"]["fixed"]["rates"]["null (data)"]["LIDC-A"]["units t (R=1)"]["k"] = 12
    assert C.check_default(bad) == ["fixed partitions, null (data), LIDC-A, units t (R=1): 12 of 40 null benchmarks rejected (bound 7)"]
    md = (tmp_path / "calibration.md").read_text()
    assert "**default**" in md and "highest false-positive rate" in md and "random partitions" in md and "fixed partitions" in md


def test_bad_flags_end_in_one_line(capsys):
    for argv in (["--repeats", "5", "--pool", "2"], ["--datasets", "LIDC-Z"], ["--sims", "0"]):
        with pytest.raises(SystemExit) as e:
            C.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err


def test_check_exits_1_when_the_default_test_exceeds_its_bound(monkeypatch, tmp_path, capsys):
    """``--check``: status 1 and the offending line when the default test rejected too many null benchmarks."""
    def cell(k, n=40):
        lo, hi = C.wilson(k, n)
        return {"k": k, "n": n, "rate": k / n, "low": lo, "high": hi}

    tests = ["units t (R=1)", "Wilcoxon (R=1)"]
    rates = {scen: {"LIDC-A": {t: cell(12 if (scen == "null (data)" and t == "units t (R=1)") else 1) for t in tests}}
             for scen in C.SCENARIOS}
    null = {"sd": 1.0, "mde": 2.0, **cell(32)}
    det = {"LIDC-A": {"1": {"n": 5, "correction": 0.25, "null (seed)": null, "null (data)": null,
                            "power": {"sd": 1.0, "mde": 2.0, "effect": 0.8, "predicted": 0.2}}}}
    fake = {"modes": {"random": {"rates": rates, "detectable": det, "mean_accuracy": {"LIDC-A": {"A": 70.0}}}},
            "args": {"sims": 40, "repeats": [1], "pool": 1, "seeds": 2}, "wall_s": 1.0, "machine": "test"}
    monkeypatch.setattr(C, "calibrate", lambda *a, **k: fake)
    with pytest.raises(SystemExit) as e:
        C.main(["--sims", "40", "--pool", "1", "--repeats", "1", "--out", str(tmp_path), "--check"])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "random partitions, null (data), LIDC-A, units t (R=1): 12 of 40" in out
    # 12/40 fails both readings; Wilcoxon's 1/40 is at most 0.05 as measured, but its interval reaches above it
    assert "| units t (R=1) **default** | 0.300 [0.181, 0.454] | null (data), LIDC-A, random partitions | **no** | **no** |" in out
    assert "| Wilcoxon (R=1) | 0.025 [0.004, 0.129] | null (seed), LIDC-A, random partitions | yes | **no** |" in out
    C.main(["--sims", "40", "--pool", "1", "--repeats", "1", "--out", str(tmp_path)])  # without --check: status 0


def test_the_calibrated_default_is_the_tables_default():
    """The test the calibration calls the default is the one the tables use unless told otherwise."""
    import inspect

    from benchmarks.cli import ArgumentParser
    from benchmarks.tables.build import build
    from benchmarks.tables.cli import add_comparison_flags

    assert C.DEFAULT_TEST == "units t"  # the corrected t on seed-averaged (repeat, fold) units
    assert inspect.signature(build).parameters["test"].default == "corrected_t"
    ap = ArgumentParser()
    add_comparison_flags(ap)
    assert ap.get_default("test") == "corrected_t"


def test_fixed_partitions_are_the_tables_and_the_detectable_difference_is_checked():
    """``fixed``: every benchmark uses partitions 0..R-1 (the tables'); random draws from the pool. The MDE check: at the
    null's pooled unit s.d. the MDE is the formula's, and shifting every null unit difference by it makes the default
    test reject with the method ahead at the recorded rate (recounted here)."""
    from benchmarks.stats import corrected_t, detectable_difference

    tables = S.pool_tables(2, 3)
    fixed = S.simulate(6, n_seeds=2, n_repeats=2, pool=3, datasets=("LIDC-B",), seed=1, tables=tables, fixed=True)
    rand = S.simulate(6, n_seeds=2, n_repeats=2, pool=3, datasets=("LIDC-B",), seed=1, tables=tables)
    assert fixed.fixed and (fixed.partitions == [0, 1]).all() and not np.isnan(fixed.acc).any()
    assert not rand.fixed and len({tuple(p) for p in rand.partitions}) > 1
    det = C.detectable(fixed, [1, 2])["LIDC-B"]
    for r in (1, 2):
        e = det[str(r)]
        i, j = S.ROLES.index("N2"), S.ROLES.index("N1")
        d = (fixed.acc[:, i, 0].mean(-1) - fixed.acc[:, j, 0].mean(-1))[:, :r].reshape(6, -1)  # (benchmarks, 5 R)
        sd = math.sqrt(np.mean(d.var(1, ddof=1)))
        rho = fixed.n_test[:r, 0].mean() / fixed.n_train[:r, 0].mean()
        c = e["null (data)"]
        assert e["n"] == 5 * r and e["correction"] == pytest.approx(rho) and c["sd"] == pytest.approx(sd)
        assert c["mde"] == pytest.approx(detectable_difference(sd, 5 * r, rho))
        k = sum(int((t := corrected_t(x + c["mde"], fixed.n_train[:r, 0].mean(), fixed.n_test[:r, 0].mean())).p < 0.05 and t.mean > 0) for x in d)
        assert c["k"] == k and c["n_sims"] == 6
        b = e["power"]
        assert 0 < b["predicted"] < 1 and b["effect"] == pytest.approx(float(np.mean(
            fixed.acc[:, S.ROLES.index("B"), 0].mean(-1)[:, :r] - fixed.acc[:, S.ROLES.index("A"), 0].mean(-1)[:, :r])))
