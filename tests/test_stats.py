"""benchmarks.stats: every statistic against a second derivation, written another way."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as ss

from benchmarks import stats as S
from benchmarks.metrics import decide, evaluate

CLASSES = ["benign", "unsure", "malignant"]
TEST_CLASSES = ["benign", "malignant"]  # LIDC-B: trained on three classes, tested on two


# ------------------------------------------------------------------------------------------------ seeds
def test_seed_summary_over_folds_of_seed_means():
    v = {(0, 0): 0.80, (0, 1): 0.84, (1, 0): 0.70, (1, 1): 0.72, (2, 0): 0.90, (2, 1): 0.86}
    s = S.seed_summary(v)
    fold_means = [(0.80 + 0.84) / 2, (0.70 + 0.72) / 2, (0.90 + 0.86) / 2]
    assert s.fold_means == pytest.approx(dict(enumerate(fold_means)), abs=1e-15)
    mean = sum(fold_means) / 3
    assert s.mean == pytest.approx(mean, abs=1e-15)
    assert s.std == pytest.approx(math.sqrt(sum((m - mean) ** 2 for m in fold_means) / 2), abs=1e-15)
    # with two seeds a fold's variance (ddof=1) is (a - b)^2 / 2
    per_fold_var = [(0.80 - 0.84) ** 2 / 2, (0.70 - 0.72) ** 2 / 2, (0.90 - 0.86) ** 2 / 2]
    assert s.seed_std == pytest.approx(math.sqrt(sum(per_fold_var) / 3), abs=1e-15)
    assert (s.n_folds, s.n_seeds, s.balanced) == (3, 2, True)
    assert s.std != pytest.approx(float(np.std(list(v.values()), ddof=1)))  # not the spread over runs


def test_seed_summary_one_seed_and_unbalanced():
    one = S.seed_summary({(f, 0): x for f, x in enumerate([0.1, 0.2, 0.4])})
    assert one.seed_std is None and one.n_seeds == 1 and one.std == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
    # fold 0 has three seeds, fold 1 two, fold 2 one: pooled = sum of squares / sum of (n_f - 1)
    v = {(0, 0): 1.0, (0, 1): 2.0, (0, 2): 6.0, (1, 0): 4.0, (1, 1): 5.0, (2, 0): 9.0}
    s = S.seed_summary(v)
    ss0 = (1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2
    ss1 = (4 - 4.5) ** 2 + (5 - 4.5) ** 2
    assert s.seed_std == pytest.approx(math.sqrt((ss0 + ss1) / (2 + 1)), abs=1e-14)
    assert s.fold_means == {0: 3.0, 1: 4.5, 2: 9.0} and not s.balanced and s.n_seeds == 3
    single = S.seed_summary({(0, 0): 0.5})
    assert math.isnan(single.std) and single.seed_std is None


# ------------------------------------------------------------------------------------------------ corrected t
def _hand_corrected_t(d, n_train, n_test, alpha):
    n = len(d)
    total = 0.0
    for x in d:
        total += x
    mean = total / n
    sq = 0.0
    for x in d:
        sq += (x - mean) * (x - mean)
    var = sq / (n - 1)
    se = math.sqrt((1.0 / n + n_test / n_train) * var)
    t = mean / se
    p = 2.0 * (1.0 - ss.t.cdf(abs(t), n - 1))
    q = ss.t.ppf(1.0 - alpha / 2.0, n - 1)
    return mean, se, t, p, mean - q * se, mean + q * se


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_corrected_t_by_hand(alpha):
    rng = np.random.default_rng(3)
    d = [float(x) for x in rng.normal(1.2, 2.0, size=10)]  # 5 folds x 2 seeds, in points
    n_train, n_test = 1500.6, 375.4
    r = S.corrected_t(d, n_train, n_test, alpha)
    mean, se, t, p, low, high = _hand_corrected_t(d, n_train, n_test, alpha)
    assert r.n == 10 and r.df == 9 and r.test == "corrected_t"
    for got, want in [(r.mean, mean), (r.se, se), (r.statistic, t), (r.p, p), (r.low, low), (r.high, high)]:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14)
    assert r.reachable and r.reason is None and r.min_p == 0.0
    # the correction widens the plain paired interval: n_test/n_train = 1/4 > 0
    naive_se = float(np.std(d, ddof=1)) / math.sqrt(len(d))
    assert r.se > 1.4 * naive_se


def test_corrected_t_edge_cases():
    same = S.corrected_t([0.02] * 5, 300, 75)
    assert math.isnan(same.p) and not same.reachable and "zero variance" in same.reason
    assert same.low == same.high == pytest.approx(0.02) and same.statistic == math.inf
    zero = S.corrected_t([0.0] * 5, 300, 75)
    assert zero.p == 1.0 and zero.statistic == 0.0 and zero.reachable
    one = S.corrected_t([0.3], 300, 75)
    assert math.isnan(one.p) and not one.reachable and "needs at least 2" in one.reason
    assert S.describe_p(one) == one.reason
    assert S.min_reachable_p("corrected_t", 2) == 0.0 and math.isnan(S.min_reachable_p("corrected_t", 1))
    with pytest.raises(ValueError):
        S.corrected_t([0.1, float("nan")], 300, 75)


# ------------------------------------------------------------------------------------------------ Holm
def _holm_loop(p):
    """Holm by an explicit loop over the sorted p-values."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def test_holm_against_statsmodels_and_a_loop():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for p in [[0.01, 0.04, 0.03, 0.005], [0.2, 0.2, 0.01, 0.5, 0.04, 0.04], list(rng.uniform(0, 0.2, 12)), [0.9, 0.6], [0.03]]:
        got = S.holm(p)
        assert got == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-15)
        assert got == pytest.approx(_holm_loop(p), abs=1e-15)
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])  # by hand


def test_holm_passes_missing_values_through():
    got = S.holm([0.01, None, float("nan"), 0.04, 0.5])
    assert got[1] is None and math.isnan(got[2])
    assert [got[0], got[3], got[4]] == pytest.approx(_holm_loop([0.01, 0.04, 0.5]))  # m = 3, not 5
    assert S.holm([None, None]) == [None, None] and S.holm([]) == []
    with pytest.raises(ValueError):
        S.holm([0.5, 1.5])


# ------------------------------------------------------------------------------------------------ Wilcoxon
def test_wilcoxon_with_five_pairs_cannot_reach_005():
    r = S.wilcoxon_signed_rank([0.01, 0.02, 0.03, 0.04, 0.05])
    assert r.min_p == 0.0625 == S.min_reachable_p("wilcoxon", 5)
    assert r.p == pytest.approx(0.0625) and not r.reachable
    assert S.describe_p(r).startswith("cannot reach 0.05 with 5 pairs")
    # a zero difference is dropped: five non-zero pairs of six
    r6 = S.wilcoxon_signed_rank([0.0, -0.01, 0.02, 0.03, 0.04, 0.05])
    assert r6.n == 5 and not r6.reachable
    r10 = S.wilcoxon_signed_rank(np.arange(1, 11) * 0.01)
    assert r10.min_p == pytest.approx(2 / 1024) and r10.reachable and r10.p == pytest.approx(2 / 1024)
    assert S.describe_p(r10) == "p = 0.002"
    nothing = S.wilcoxon_signed_rank([0.0, 0.0, 0.0])
    assert nothing.n == 0 and math.isnan(nothing.p) and "all 3 differences are zero" in nothing.reason


def test_wilcoxon_exact_p_by_enumerating_signs():
    d = np.array([0.3, -1.1, 2.0, 0.7, -0.2, 1.5, 0.9, 2.4])  # distinct |d|: the exact test
    r = S.wilcoxon_signed_rank(d)
    rank = {x: i + 1 for i, x in enumerate(sorted(abs(d)))}
    t_plus = sum(rank[abs(x)] for x in d if x > 0)
    t_obs = min(t_plus, sum(rank.values()) - t_plus)
    n = len(d)
    as_extreme = 0
    for signs in itertools.product([0, 1], repeat=n):  # every sign pattern equally likely under H0
        tp = sum(i + 1 for i, s in enumerate(signs) if s)
        as_extreme += min(tp, n * (n + 1) // 2 - tp) <= t_obs
    assert r.statistic == t_obs and r.method == "exact"
    assert r.p == pytest.approx(as_extreme / 2**n, abs=1e-15)


# ------------------------------------------------------------------------------------------------ comparisons
def test_compare_to_reference_holm_across_methods():
    rng = np.random.default_rng(5)
    keys = [(f, s) for f in range(5) for s in range(2)]
    ref = {k: 0.85 + 0.01 * rng.normal() for k in keys}
    values = {"clip_lung": ref,
              "a": {k: ref[k] - 0.05 + 0.01 * rng.normal() for k in keys},
              "b": {k: ref[k] - 0.001 + 0.01 * rng.normal() for k in keys},
              "c": {k: ref[k] + 0.02 + 0.01 * rng.normal() for k in keys if k != (4, 1)}}  # one run missing
    out = S.compare_to_reference(values, n_train=1500, n_test=375)
    assert sorted(out) == ["a", "b", "c"]
    units = [(0, f) for f in range(5)]  # the unit is a test fold (of repeat 0): seeds are averaged within it
    assert out["a"].keys == units and out["a"].t.n == 5
    # c lacks seed 1 on fold 4: that unit is compared on seed 0 alone (the runs both have)
    assert out["c"].t.n == 5 and out["c"].diffs[4] == pytest.approx(values["c"][(4, 0)] - ref[(4, 0)])
    d = [(values["a"][(f, 0)] + values["a"][(f, 1)]) / 2 - (ref[(f, 0)] + ref[(f, 1)]) / 2 for f in range(5)]
    assert out["a"].t.p == pytest.approx(S.corrected_t(d, 1500, 375).p) and out["a"].diffs == pytest.approx(d)
    raw = [out[m].test.p for m in ("a", "b", "c")]
    assert [out[m].p_holm for m in ("a", "b", "c")] == pytest.approx(_holm_loop(raw))
    assert out["a"].p_holm < 0.05
    assert out["a"].prob.p == 0.0 and out["c"].prob.p == 1.0  # P(method > reference) over the five units
    w = S.compare_to_reference(values, n_train=1500, n_test=375, test="wilcoxon")
    assert w["a"].test.test == "wilcoxon" and w["a"].test.n == 5 and w["a"].t.test == "corrected_t"
    assert w["a"].test.reason.startswith("cannot reach 0.05 with 5 pairs")  # five units, whatever the seeds
    five = S.compare_to_reference({"clip_lung": {(f, 0): 0.8 for f in range(5)}, "x": {(f, 0): 0.7 + 0.001 * f for f in range(5)}},
                                  n_train=1500, n_test=375, test="wilcoxon")
    assert five["x"].text.startswith("cannot reach 0.05 with 5 pairs")


def _units_by_loop(values):
    """{(repeat, fold): mean over seeds} by plain loops (the second derivation of ``unit_means``)."""
    sums, counts = {}, {}
    for (r, f, s), x in values.items():
        sums[(r, f)] = sums.get((r, f), 0.0) + x
        counts[(r, f)] = counts.get((r, f), 0) + 1
    return {u: sums[u] / counts[u] for u in sums}


def test_repeated_cv_t_by_hand_with_n_folds_times_repeats():
    rng = np.random.default_rng(11)
    keys = [(r, f, s) for r in range(3) for f in range(5) for s in range(2)]
    ref = {k: 80 + rng.normal() for k in keys}
    a = {k: ref[k] + 1.0 + 2.0 * rng.normal() for k in keys}
    out = S.compare_to_reference({"ref": ref, "a": a}, "ref", n_train=1504.0, n_test=376.0)["a"]
    ua, ur = _units_by_loop(a), _units_by_loop(ref)
    d = [ua[u] - ur[u] for u in sorted(ua)]
    assert len(d) == 15 and out.keys == sorted(ua)
    mean, se, t, p, low, high = _hand_corrected_t(d, 1504.0, 376.0, 0.05)  # n = 5 folds x 3 repeats, float64 loops
    for got, want in [(out.t.mean, mean), (out.t.se, se), (out.t.statistic, t), (out.t.p, p), (out.t.low, low), (out.t.high, high)]:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14)
    assert out.t.df == 14
    # the Wilcoxon test on the same 15 units (no ties: the exact distribution)
    assert S.compare_to_reference({"ref": ref, "a": a}, "ref", n_train=1504.0, n_test=376.0, test="wilcoxon")["a"].test.p == \
        pytest.approx(ss.wilcoxon(d).pvalue)


def test_unit_summary_one_partition_is_seed_summary_and_repeats_add_their_spread():
    rng = np.random.default_rng(2)
    v = {(f, s): float(rng.normal()) for f in range(5) for s in range(3)}
    a, b = S.unit_summary(v), S.seed_summary(v)
    assert (a.mean, a.std, a.seed_std, a.n_folds, a.n_seeds, a.partition_std, a.n_repeats) == (b.mean, b.std, b.seed_std, 5, 3, None, 1)
    v3 = {(r, f, s): float(rng.normal(r, 1)) for r in range(2) for f in range(5) for s in range(2)}
    u = S.unit_summary(v3)
    means = [np.mean([v3[(r, f, s)] for f in range(5) for s in range(2)]) for r in range(2)]
    fold0 = [np.mean([v3[(0, f, s)] for s in range(2)]) for f in range(5)]
    assert u.mean == pytest.approx(np.mean(means), abs=1e-14) and u.std == pytest.approx(np.std(fold0, ddof=1), abs=1e-14)
    assert u.partition_std == pytest.approx(abs(means[0] - means[1]) / math.sqrt(2), abs=1e-14)
    assert (u.n_repeats, u.n_units, u.n_folds) == (2, 10, 5)


# ------------------------------------------------------------------------------------------------ P(A > B)
def test_prob_outperform_against_an_explicit_loop():
    d = [0.5, -0.2, 0.0, 1.3, 0.7, -0.1, 0.4, 0.9, 0.2, 0.3]
    r = S.prob_outperform(d, n_boot=500, seed=7)
    wins = 0.0
    for x in d:
        wins += 1.0 if x > 0 else (0.5 if x == 0 else 0.0)
    assert r.p == pytest.approx(wins / len(d), abs=1e-15) and r.n == 10
    draws = np.random.default_rng(7).integers(0, len(d), size=(500, len(d)))  # the documented draw order
    reps = []
    for b in range(500):
        tot = 0.0
        for j in range(len(d)):
            x = d[draws[b, j]]
            tot += 1.0 if x > 0 else (0.5 if x == 0 else 0.0)
        reps.append(tot / len(d))
    reps.sort()

    def quantile(q):  # numpy's default (linear) quantile, by hand
        h = (len(reps) - 1) * q
        lo = math.floor(h)
        return reps[lo] + (h - lo) * (reps[min(lo + 1, len(reps) - 1)] - reps[lo])

    assert (r.low, r.high) == (pytest.approx(quantile(0.025), abs=1e-15), pytest.approx(quantile(0.975), abs=1e-15))


def test_prob_outperform_decision_rule():
    better = S.prob_outperform([1.0] * 9 + [-1.0], n_boot=2000)  # 0.9, interval above 1/2
    assert better.p == 0.9 and better.low > 0.5 and better.significant and better.better and better.conclusion == "better"
    worse = S.prob_outperform([-1.0] * 10)
    assert worse.p == 0.0 and worse.worse and worse.conclusion == "worse"
    # significant but not meaningful: 0.7 > 1/2 with many units, yet not above gamma = 0.75
    mild = S.prob_outperform([1.0] * 70 + [-1.0] * 30, n_boot=2000)
    assert mild.significant and not mild.better and mild.conclusion == "no conclusion"
    coin = S.prob_outperform([1.0, -1.0] * 3)
    assert not coin.significant and coin.conclusion == "no conclusion"
    assert math.isnan(S.prob_outperform([]).p)
    assert S.describe_prob(better).endswith(", better")


# ------------------------------------------------------------------------------------------------ variance decomposition
def test_variance_components_against_statsmodels_anova():
    import pandas as pd
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(4)
    rows = []
    for r in range(4):
        a = rng.normal(0, 2.0)
        for f in range(5):
            b = rng.normal(0, 1.5)
            for s in range(3):
                rows.append((r, f, s, 80 + a + b + rng.normal(0, 1.0)))
    df = pd.DataFrame(rows, columns=["r", "f", "s", "x"])
    out = S.cell_components({(r, f, s): x for r, f, s, x in rows})
    # second derivation: the nested fixed-effects ANOVA table of statsmodels (sequential sums of squares)
    table = sm.stats.anova_lm(smf.ols("x ~ C(r) + C(r):C(f)", data=df).fit(), typ=1)
    ms_r, ms_f, ms_e = (table.loc[k, "sum_sq"] / table.loc[k, "df"] for k in ("C(r)", "C(r):C(f)", "Residual"))
    assert out["mean_squares"]["partition"] == pytest.approx(ms_r, rel=1e-10)
    assert out["mean_squares"]["fold"] == pytest.approx(ms_f, rel=1e-10)
    assert out["mean_squares"]["seed"] == pytest.approx(ms_e, rel=1e-10)
    want = {"seed": ms_e, "fold": (ms_f - ms_e) / 3, "partition": (ms_r - ms_f) / 15}
    assert out["components"] == pytest.approx(want, rel=1e-10)
    total = sum(want.values())
    assert out["shares"] == pytest.approx({k: v / total for k, v in want.items()}, rel=1e-10)
    assert out["df"] == {"partition": 3, "fold": 16, "seed": 40} and out["hyperparameters"] is None


def test_variance_components_edges():
    # one partition: no partition component; one seed: no seed component
    one = S.cell_components({(f, 0): float(f) for f in range(5)})
    assert one["components"]["partition"] is None and one["components"]["seed"] is None
    assert one["components"]["fold"] == pytest.approx(np.var(range(5), ddof=1))
    # a negative moment estimate is set to 0 and reported
    v = {(r, f, s): float(s) for r in range(2) for f in range(2) for s in range(2)}  # all variance within folds
    out = S.cell_components(v)
    assert out["components"]["partition"] == 0.0 and out["shares"]["seed"] == pytest.approx(1.0)
    assert "fold" in out["truncated"] or out["components"]["fold"] == 0.0
    # an unbalanced cell is cut to its balanced part and says how much was left out
    v[(0, 0, 2)] = 9.0
    assert S.cell_components(v)["left_out"] == 1
    assert S.cell_components({(0, 0): 1.0}) is None


def test_split_sizes():
    recs = [{"fold": f, "seed": s, "data": {"n_train": 1500 + f, "n_test": 376 - f}} for f in range(5) for s in range(3)]
    assert S.split_sizes(recs) == (1502.0, 374.0)


def test_describe_p():
    r = S.corrected_t([0.1, 0.2, 0.3, 0.25, 0.15], 300, 75)
    assert S.describe_p(r) == f"p = {r.p:.3f}" and S.describe_p(r, 0.0004) == "p < 0.001"


# ------------------------------------------------------------------------------------------------ bootstrap
def _rows(n_folds=3, seeds=(0, 1), seed=11):
    """Rows of predictions: patients with 1-4 nodules each, labels benign (0) or malignant (2), three-class probs."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_folds):
        patients = [f"LIDC-IDRI-{f * 100 + i:04d}" for i in range(int(rng.integers(14, 20)))]
        nodules = [(p, k, int(rng.choice([0, 2], p=[0.6, 0.4]))) for p in patients for k in range(int(rng.integers(1, 5)))]
        for s in seeds:
            for p, k, lab in nodules:
                x = rng.dirichlet([1, 1, 1]) + (0.6 * np.eye(3)[lab] if rng.random() < 0.7 else 0)
                probs = np.round(x / x.sum(), 2)  # rounded: tied scores occur, as in records (6 decimals)
                rows.append({"fold": f, "seed": s, "id": f"{p}-s{k:04d}-n0", "label": lab, "probs": probs.tolist()})
    return rows


def _naive_bootstrap(rows, n_boot, seed):
    """Replicates of (accuracy, AUC) by plain loops: the same draws (one call per fold, sorted folds, patients sorted)."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    rng = np.random.default_rng(seed)
    folds = sorted({r["fold"] for r in rows})
    acc = [[0.0] * len(folds) for _ in range(n_boot)]
    auc = [[0.0] * len(folds) for _ in range(n_boot)]
    for fi, f in enumerate(folds):
        fold_rows = [r for r in rows if r["fold"] == f]
        patients = sorted({r["id"][:14] for r in fold_rows})
        idx = rng.integers(0, len(patients), size=(n_boot, len(patients)))
        seeds = sorted({r["seed"] for r in fold_rows})
        for b in range(n_boot):
            a_sum = u_sum = 0.0
            for s in seeds:
                labels, probs = [], []
                for j in idx[b]:
                    for r in fold_rows:
                        if r["seed"] == s and r["id"].startswith(patients[j]):
                            labels.append(r["label"])
                            probs.append(r["probs"])
                labels, probs = np.array(labels), np.array(probs)
                a_sum += accuracy_score(labels, decide(probs, CLASSES, TEST_CLASSES))
                pos = labels == 2
                u_sum += roc_auc_score(pos, probs[:, 2] - probs[:, 0]) if 0 < pos.sum() < len(pos) else float("nan")
            acc[b][fi] = a_sum / len(seeds)
            auc[b][fi] = u_sum / len(seeds)
    return [sum(v) / len(v) for v in acc], [sum(v) / len(v) for v in auc]


def _percentile(values, q):
    """Linear interpolation between order statistics (numpy's default), by hand."""
    v = sorted(x for x in values if not math.isnan(x))
    h = (len(v) - 1) * q
    lo = math.floor(h)
    return v[lo] + (h - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])


def test_patient_bootstrap_equals_a_naive_loop():
    rows = _rows()
    n_boot, seed = 60, 7
    acc = S.patient_bootstrap(rows, S.Accuracy(CLASSES, TEST_CLASSES), n_boot=n_boot, seed=seed)
    auc = S.patient_bootstrap(rows, S.AUC(CLASSES, TEST_CLASSES), n_boot=n_boot, seed=seed)
    naive_acc, naive_auc = _naive_bootstrap(rows, n_boot, seed)
    np.testing.assert_allclose(acc.replicates, naive_acc, rtol=1e-12, atol=0)
    np.testing.assert_allclose(auc.replicates, naive_auc, rtol=1e-12, atol=0)
    for res, naive in [(acc, naive_acc), (auc, naive_auc)]:
        assert res.low == pytest.approx(_percentile(naive, 0.025), rel=1e-12)
        assert res.high == pytest.approx(_percentile(naive, 0.975), rel=1e-12)
        assert res.n_valid == n_boot and res.low < res.estimate < res.high
    # the estimate is the table's number: mean over folds of the seed-mean of benchmarks.metrics.evaluate
    for res, key in [(acc, "accuracy"), (auc, "auc")]:
        per_fold = []
        for f in range(3):
            per_seed = []
            for s in (0, 1):
                sel = [r for r in rows if r["fold"] == f and r["seed"] == s]
                per_seed.append(evaluate([r["probs"] for r in sel], [r["label"] for r in sel], CLASSES, TEST_CLASSES)[key])
            per_fold.append(sum(per_seed) / 2)
        assert res.estimate == pytest.approx(sum(per_fold) / 3, rel=1e-12)


def test_generic_statistic_path_matches_the_vectorised_one():
    rows = _rows(n_folds=2, seeds=(0,))
    fast = S.patient_bootstrap(rows, S.AUC(CLASSES, TEST_CLASSES), n_boot=40, seed=3)
    auc = S.AUC(CLASSES, TEST_CLASSES)
    slow = S.patient_bootstrap(rows, lambda labels, probs: auc(labels, probs), n_boot=40, seed=3)
    np.testing.assert_allclose(fast.replicates, slow.replicates, rtol=1e-12)
    assert fast.estimate == pytest.approx(slow.estimate, rel=1e-12)


def test_patient_bootstrap_keeps_a_patients_nodules_together():
    # one fold: patient A has three nodules, all classified right; B and C one each, both wrong
    a, b, c = "LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"
    right, wrong = [0.9, 0.05, 0.05], [0.05, 0.05, 0.9]
    rows = [{"fold": 0, "seed": 0, "id": f"{a}-s{k:04d}-n0", "label": 0, "probs": right} for k in range(3)]
    rows += [{"fold": 0, "seed": 0, "id": f"{p}-s0000-n0", "label": 0, "probs": wrong} for p in (b, c)]
    res = S.patient_bootstrap(rows, S.Accuracy(CLASSES, TEST_CLASSES), n_boot=500, seed=0)
    # i draws of A (of 3): 3i correct of 3i + (3 - i) nodules
    allowed = {0.0, 3 / 5, 6 / 7, 1.0}
    assert all(any(abs(x - v) < 1e-12 for v in allowed) for x in res.replicates)
    assert {round(x, 12) for x in res.replicates} == {round(v, 12) for v in allowed}  # every case happens in 500
    assert res.estimate == pytest.approx(3 / 5)

    # a generic statistic sees whole patients: each of A's nodules appears as often as the others
    seen = []

    def size_if_whole(labels, probs):
        n_a = sum(1 for p in probs if p[0] == 0.9)
        assert n_a % 3 == 0
        seen.append(len(labels))
        return float(len(labels))

    S.patient_bootstrap(rows, size_if_whole, n_boot=50, seed=1)
    assert len(seen) == 51 and any(n != 5 for n in seen[1:])


def test_patient_bootstrap_resamples_within_folds():
    rows = _rows(n_folds=2, seeds=(0,))

    seen_ids = []

    def record_ids(labels, probs):
        seen_ids.append(set(np.round(probs[:, 0], 6)))
        return 0.0

    tagged = [dict(r, probs=[1000 * r["fold"] + i, 0.0, 0.0]) for i, r in enumerate(rows)]  # the fold travels in the probs
    S.patient_bootstrap(tagged, record_ids, n_boot=20, seed=2)
    for ids in seen_ids:  # every replicate of a fold holds that fold's rows only
        assert len({int(x) // 1000 for x in ids}) == 1
    assert len(seen_ids) == 2 * 21


def test_patient_bootstrap_is_seeded():
    rows = _rows(n_folds=2)
    st = S.Accuracy(CLASSES, TEST_CLASSES)
    one, two = S.patient_bootstrap(rows, st, 100, seed=4), S.patient_bootstrap(rows, st, 100, seed=4)
    assert np.array_equal(one.replicates, two.replicates) and (one.low, one.high) == (two.low, two.high)
    assert not np.array_equal(one.replicates, S.patient_bootstrap(rows, st, 100, seed=5).replicates)


def test_one_class_replicates_are_dropped_for_auc():
    # fold 0: a single malignant patient; a replicate without it (or with it alone) has no AUC and is dropped
    rows = [{"fold": 0, "seed": 0, "id": f"LIDC-IDRI-{i:04d}-s0000-n0", "label": 2 if i == 0 else 0,
             "probs": [0.2 + 0.1 * i, 0.0, 0.8 - 0.1 * i]} for i in range(4)]
    n_boot = 300
    res = S.patient_bootstrap(rows, S.AUC(CLASSES, TEST_CLASSES), n_boot=n_boot, seed=9)
    idx = np.random.default_rng(9).integers(0, 4, size=(n_boot, 4))
    both = sum(1 for b in range(n_boot) if 0 in idx[b] and set(idx[b]) != {0})  # both classes drawn
    assert res.n_valid == both < n_boot
    assert np.isnan(res.replicates).sum() == n_boot - both
    assert res.estimate == 1.0 and res.low == res.high == 1.0  # the malignant nodule scores highest


def test_cell_intervals_from_records():
    rows = _rows(n_folds=2)
    recs = []
    for (f, s) in sorted({(r["fold"], r["seed"]) for r in rows}):
        preds = [{"id": r["id"], "label": r["label"], "probs": r["probs"]} for r in rows if (r["fold"], r["seed"]) == (f, s)]
        recs.append({"fold": f, "seed": s, "predictions": preds, "decision_rule": "argmax",
                     "data": {"class_names": CLASSES, "test_class_names": TEST_CLASSES}})
    out = S.cell_intervals(recs, n_boot=50, seed=0)
    assert set(out) == {"accuracy", "auc"}
    direct = S.patient_bootstrap(rows, S.AUC(CLASSES, TEST_CLASSES), n_boot=50, seed=0)
    assert np.array_equal(out["auc"].replicates, direct.replicates)


# ------------------------------------------------------------------------------------------------ Friedman, CD
DEMSAR_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}  # Demsar 2006, Table 5(a)


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(2)
    k, n = 5, 15  # e.g. 3 datasets x 5 folds
    x = 0.80 + 0.03 * np.arange(k)[:, None] + 0.04 * rng.normal(size=(k, n))
    return np.round(x, 2)  # rounding makes ties within some blocks


def test_friedman_against_scipy(scores):
    r = S.friedman(scores, methods=list("ABCDE"))
    want = ss.friedmanchisquare(*scores)  # one argument per method, the blocks as samples
    assert r.statistic == pytest.approx(want.statistic, rel=1e-12) and r.p == pytest.approx(want.pvalue, rel=1e-10)
    k, n = scores.shape
    ranks = np.empty_like(scores)
    for j in range(n):  # rank 1 = best (highest) in each block
        ranks[:, j] = ss.rankdata(-scores[:, j])
    assert np.array_equal(r.ranks, ranks)
    assert list(r.average_ranks.values()) == pytest.approx(ranks.mean(1).tolist(), abs=1e-15)
    assert any(len(set(scores[:, j])) < k for j in range(n))  # the tie correction was exercised
    f = (n - 1) * want.statistic / (n * (k - 1) - want.statistic)
    assert r.iman_davenport == pytest.approx(f, rel=1e-12) and r.p_iman_davenport == pytest.approx(ss.f.sf(f, k - 1, (k - 1) * (n - 1)), rel=1e-9)
    low = S.friedman(-scores, methods=list("ABCDE"), higher_is_better=False)
    assert low.average_ranks == pytest.approx(r.average_ranks)


def test_critical_difference(scores):
    k, n = scores.shape
    r = S.friedman(scores, methods=list("ABCDE"))
    q = ss.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2)
    assert r.cd == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)), rel=1e-12)
    for kk, q_table in DEMSAR_Q05.items():
        assert S.friedman(np.arange(kk * 3, dtype=float).reshape(kk, 3)).q_alpha == pytest.approx(q_table, abs=1.5e-3)
    # the Nemenyi p-values (scikit-posthocs) fall below alpha exactly where the rank difference exceeds CD
    for a, b in itertools.combinations("ABCDE", 2):
        gap = abs(r.average_ranks[a] - r.average_ranks[b])
        assert (r.nemenyi_p.loc[a, b] < 0.05) == (gap > r.cd)
    assert (r.nemenyi_p.to_numpy() < 0.05).any() and (r.nemenyi_p.to_numpy() >= 0.05).any()


def test_block_table_averages_seeds_and_drops_incomplete_blocks():
    v = {}
    for m in ("a", "b"):
        for ds in ("LIDC-A", "LIDC-B"):
            for f in range(2):
                for s in range(2):
                    v[(m, ds, f, s)] = 0.5 + 0.1 * (m == "b") + 0.01 * f + 0.001 * s
    del v[("b", "LIDC-B", 1, 0)], v[("b", "LIDC-B", 1, 1)]
    t = S.block_table(v)
    assert list(t.index) == ["a", "b"] and list(t.columns) == [("LIDC-A", 0), ("LIDC-A", 1), ("LIDC-B", 0)]
    assert t.loc["b", ("LIDC-A", 1)] == pytest.approx(0.6 + 0.01 + 0.0005)
    r = S.friedman(t)
    assert r.methods == ["a", "b"] and r.average_ranks == {"a": 2.0, "b": 1.0}


def test_block_table_of_datasets_is_demsars_blocks():
    """--blocks datasets: one block per dataset, its value the mean over folds of the seed means (by hand)."""
    v = {(m, ds, f, s): 0.5 + 0.1 * (m == "b") * (ds != "LIDC-C") + 0.01 * f + 0.002 * s * (m == "a")
         for m in ("a", "b") for ds in ("LIDC-A", "LIDC-B", "LIDC-C") for f in range(3) for s in range(2)}
    v[("a", "LIDC-A", 2, 1)] = 0.9  # one seed of one fold: moves that fold's seed mean, then the dataset's
    t = S.block_table(v, blocks="datasets")
    assert list(t.columns) == ["LIDC-A", "LIDC-B", "LIDC-C"] and t.columns.name == "dataset"
    fold_means = [(v[("a", "LIDC-A", f, 0)] + v[("a", "LIDC-A", f, 1)]) / 2 for f in range(3)]
    assert t.loc["a", "LIDC-A"] == pytest.approx(sum(fold_means) / 3, abs=1e-15)
    r = S.friedman(t)
    assert len(r.blocks) == 3 and r.average_ranks["b"] < r.average_ranks["a"] + 1e-12
    with pytest.raises(ValueError, match="blocks must be one of"):
        S.block_table(v, blocks="seeds")


def test_cd_names_its_blocks(tmp_path):
    """The CD diagram's JSON says what its blocks are, and that (dataset, fold) blocks are exploratory."""
    from benchmarks.figures import cd

    recs = [{"method": m, "dataset": ds, "fold": f, "seed": 0, "metrics": {"accuracy": 0.5 + 0.1 * (m == "b") + 0.01 * f + 0.03 * (ds == "LIDC-C")}}
            for m in ("a", "b", "c") for ds in ("LIDC-B", "LIDC-C") for f in range(5)]
    folds = cd.summary(cd.rank_test(recs, [2], "accuracy", blocks="folds"))
    assert folds["block_kind"] == "folds" and folds["exploratory"] and "share training data" in folds["blocks_are"] and len(folds["blocks"]) == 10
    ds = cd.summary(cd.rank_test(recs, [2], "accuracy", blocks="datasets"))
    assert ds["block_kind"] == "datasets" and not ds["exploratory"] and ds["blocks"] == [["LIDC-B"], ["LIDC-C"]]


def test_draw_cd_writes_a_png(tmp_path, scores):
    r = S.friedman(scores, methods=["CLIP", "CoOp", "CoCoOp", "CORF", "CLIP-Lung"])
    path = S.draw_cd(r, tmp_path / "cd" / "cd_accuracy.png", title="accuracy")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert S.draw_cd(r, ax) is ax and len(ax.texts) >= len(r.methods)
    plt.close(fig)
