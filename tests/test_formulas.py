"""A second derivation of every head and loss.

Each formula in ``methods/`` and ``clip_lung/losses.py`` is compared with a
reference written differently from the module, in float64 or better:
scipy.stats for the Poisson pmf, explicit products for stick-breaking and
CORF's leaves, explicit root-to-leaf paths for CORF's routing, mpmath at high
precision for the unsure data model, explicit loops over i, t, k and m with
math.exp / math.log for CLIP-Lung's Eqs. 1-4, and an explicit loop for the
median decision rule. Inputs are random and extreme (logits of +-30 to +-100,
UDM scores 100 logits outside their interval, cosine logits at 1 / tau = 100).
No reference calls a helper of the module under test.

Heads are fed chosen features or logits (the image encoder is stubbed out
where it would only add noise), so the whole file runs in seconds on a CPU.
"""
from __future__ import annotations

import dataclasses
import math

import mpmath  # ships with torch (via sympy)
import numpy as np
import pytest
import torch
from scipy import special, stats

from benchmarks.metrics import decide
from clip_lung.losses import attribute_weights, class_attribute_loss, image_attribute_loss, image_class_loss
from clip_lung.prompts import ATTRIBUTE_WORDS
from methods import REGISTRY, DataInfo, ce, corf, nsb, poisson, udm
from methods.corf import routing
from methods.nsb import stick_breaking_log_probs
from methods.udm import cumulative_logit_probs

ATTRS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture")
COUNTS = {2: (12, 7), 3: (10, 20, 5), 4: (9, 4, 6, 3), 5: (5, 6, 7, 8, 9)}
EPS32 = float(np.finfo(np.float32).eps)


def info(k: int) -> DataInfo:
    names = {2: ("benign", "malignant"), 3: ("benign", "unsure", "malignant")}.get(k, tuple(f"class{i}" for i in range(k)))
    return DataInfo(k, names, ATTRS, COUNTS[k])


def build(name: str, k: int, **changes):
    """Method ``name`` with its registered config (``changes`` applied); text encoders swapped for
    the tiny random one so that nothing is downloaded."""
    m = REGISTRY[name]
    cfg = m.config
    if hasattr(cfg, "text_encoder"):
        changes = {"text_encoder": "tiny-random", **changes}
    return m.cls(dataclasses.replace(cfg, **changes), info(k))


def image_batch(k: int, n: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 32, 32, 32, generator=g),  # 32^3: layer4 is 4x4
        "label": torch.arange(n) % k,
        "attributes": 1 + 4 * torch.rand(n, 8, generator=g),
    }


class NoImageEncoder(torch.nn.Module):
    """Stands in for the ResNet-18 of the heads (CE, Poisson, NSB, UDM, CORF): their tests feed the
    head chosen features (``stub_encoder``), and building 11M parameters some 40 times would be
    most of this file's run time. The text-guided methods keep the real encoder."""

    dim = 512  # what the heads read

    def __init__(self, in_channels: int = 32):
        super().__init__()

    def forward(self, image):
        raise AssertionError("feed the head its features with stub_encoder()")


@pytest.fixture(autouse=True)
def no_image_encoder(monkeypatch):
    for module in (ce, corf, nsb, poisson, udm):
        monkeypatch.setattr(module, "build_backbone", lambda name, in_channels=32: NoImageEncoder(in_channels))


def stub_encoder(model, feats: torch.Tensor) -> dict:
    """Make the image encoder return ``feats`` (B, 512): the head is then fed chosen features.
    Returns a batch whose image is never looked at."""
    model.encoder.forward = lambda image: feats
    return {"image": torch.zeros(len(feats), 1)}


def to64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def num(t: torch.Tensor) -> float:
    return float(t.detach())


def mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def np_sigmoid(x):
    # Two branches so that exp never overflows; float64 throughout.
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# --------------------------------------------------------------------------- CE


@pytest.mark.parametrize("spread", [1.0, 30.0, 80.0, 1000.0])
def test_ce_softmax_and_loss_against_log_sum_exp(spread):
    rng = np.random.default_rng(1)
    z = rng.uniform(-spread, spread, size=(7, 3))
    z[0] = [spread, -spread, spread]  # an exact tie between two extreme logits
    y = rng.integers(0, 3, 7)
    # log p_k = z_k - log sum_j exp z_j, the sum shifted by the row max (written out, no scipy).
    lse = np.array([max(r) + math.log(sum(math.exp(v - max(r)) for v in r)) for r in z])
    logp = z - lse[:, None]
    model = build("ce", 3)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        out = {"logits": torch.tensor(z, dtype=dtype)}
        p = to64(model.predict(out))
        np.testing.assert_allclose(p, np.exp(logp), rtol=rtol, atol=1e-30 if dtype == torch.float64 else 1e-37)
        loss = num(model.loss(out, {"label": torch.tensor(y)})["loss"])
        assert loss == pytest.approx(-np.mean(logp[np.arange(7), y]), rel=rtol, abs=1e-12)


def test_ce_head_is_the_linear_map_of_the_pooled_feature():
    torch.manual_seed(0)
    model = build("ce", 3)
    feats = 3 * torch.randn(4, 512)
    out = model(stub_encoder(model, feats))
    w, b = to64(model.head.weight), to64(model.head.bias)
    want = np.array([[sum(w[k, j] * float(feats[i, j]) for j in range(512)) + b[k] for k in range(3)] for i in range(4)])
    np.testing.assert_allclose(to64(out["logits"]), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- Poisson


# The count of the first class: 1 (the default, as in the authors' code) or 0 (the support's start).
@pytest.mark.parametrize("first", [0, 1])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_poisson_head_against_scipy_logpmf(k, first):
    torch.manual_seed(0)
    model = build("poisson", k, first_class=first)
    # Head outputs before the softplus: lambda from 1e-4 (the floor) to ~1000.
    raw = np.array([-30.0, -5.0, -1.0, 0.0, 0.7, 2.0, 5.0, 30.0, 100.0, 1000.0])
    n = len(raw)
    feats = torch.zeros(n, 512)
    feats[:, 0] = torch.tensor(raw, dtype=torch.float32)
    with torch.no_grad():  # head reads feature 0 as is
        model.head.weight.zero_()
        model.head.weight[0, 0] = 1.0
        model.head.bias.zero_()
    y = torch.tensor(np.arange(n) % k)
    for tau in (1.0, 0.3, 2.5):
        with torch.no_grad():  # tau = softplus(t) + 1e-3, inverted by hand
            model.raw_tau.fill_(math.log(math.expm1(tau - 1e-3)))
        assert num(model.tau()) == pytest.approx(tau, rel=1e-6)
        out = model(stub_encoder(model, feats))
        lam = to64(out["lambda"])
        # softplus(x) = log(1 + e^x), written with logaddexp; lambda has 1e-4 added.
        np.testing.assert_allclose(lam, np.logaddexp(0.0, raw) + 1e-4, rtol=1e-6)
        # Class j is the count c = first + j: logit_j = log Poisson(c; lambda) / tau.
        counts = first + np.arange(k)
        ref_logits = stats.poisson.logpmf(counts[None, :], lam[:, None]) / tau  # (n, K)
        # float32 rounds lambda-sized terms: tolerance scaled by the largest term of each row.
        scale = (lam + counts[-1] * np.abs(np.log(lam)) + special.gammaln(counts[-1] + 1))[:, None] / tau
        err = np.abs(to64(out["logits"]) - ref_logits)
        assert (err <= 1e-6 + 8 * EPS32 * scale).all(), err.max()
        ref_logp = ref_logits - special.logsumexp(ref_logits, axis=1, keepdims=True)
        p = to64(model.predict(out))
        np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
        # Compared in log space (the relative error of p), where float32 can hold p at all.
        tol = 1e-5 + 16 * EPS32 * scale  # (n, 1)
        ok = ref_logp > -80
        err = np.abs(np.log(np.where(ok, p, 1)) - np.where(ok, ref_logp, 0))
        assert (err <= tol).all(), err.max()
        assert (p[~ok] < 1e-30).all()
        loss = num(model.loss(out, {"label": y})["loss"])
        assert loss == pytest.approx(-np.mean(ref_logp[np.arange(n), y.numpy()]), rel=1e-5, abs=tol.mean())


# -------------------------------------------------------------- stick-breaking


def mp_stick_breaking_log_probs(g_row) -> list[float]:
    """log p_k with p_k = s_k prod_{j<k} (1 - s_j), p_K = prod_j (1 - s_j), as literal products at
    150 digits (1 - sigma(100) ~ 4e-44 survives the subtraction)."""
    with mpmath.workdps(150):
        s = [mp_sigmoid(mpmath.mpf(float(x))) for x in g_row]
        probs = []
        for k in range(len(s) + 1):
            prod = mpmath.mpf(1)
            for j in range(k):
                prod *= 1 - s[j]
            probs.append(prod * s[k] if k < len(s) else prod)
        assert abs(mpmath.fsum(probs) - 1) < mpmath.mpf(10) ** -100
        return [float(mpmath.log(p)) for p in probs]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_nsb_stick_breaking_against_explicit_products(k):
    rng = np.random.default_rng(k)
    g = np.concatenate([
        3 * rng.normal(size=(6, k - 1)),  # random
        np.full((1, k - 1), 50.0), np.full((1, k - 1), -50.0),  # extreme: every stick broken at once / never
        rng.choice([-100.0, -80.0, -50.0, 50.0, 80.0, 100.0], size=(4, k - 1)),
    ])
    want = np.array([mp_stick_breaking_log_probs(r) for r in g])
    got = stick_breaking_log_probs(torch.tensor(g))
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(to64(got), want, rtol=1e-12, atol=1e-12)
    got32 = stick_breaking_log_probs(torch.tensor(g, dtype=torch.float32))
    assert torch.isfinite(got32).all()
    np.testing.assert_allclose(to64(got32), want, rtol=1e-6, atol=1e-6)
    # The module: head -> stick-breaking -> NLL, fed units g through an identity head.
    model = build("nsb", k)
    feats = torch.zeros(len(g), 512)
    feats[:, : k - 1] = torch.tensor(g, dtype=torch.float32)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[:, : k - 1] = torch.eye(k - 1)
        model.head.bias.zero_()
    out = model(stub_encoder(model, feats))
    np.testing.assert_allclose(to64(out["log_probs"]), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to64(model.predict(out)), np.exp(want), rtol=1e-5, atol=1e-7)
    y = np.arange(len(g)) % k
    loss = num(model.loss(out, {"label": torch.tensor(y)})["loss"])
    assert loss == pytest.approx(-np.mean(want[np.arange(len(g)), y]), rel=1e-6)


# ----------------------------------------------------------------------- UDM


def test_udm_cumulative_logit_probs_against_explicit_differences():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        b = np.sort(rng.normal(scale=2, size=k - 1))
        s = np.concatenate([rng.normal(scale=3, size=8), [-100.0, -30.0, 30.0, 100.0], b])
        got = to64(cumulative_logit_probs(torch.tensor(s), torch.tensor(b)))
        with mpmath.workdps(50):
            for i, si in enumerate(s):
                # P(y <= k) = sigma(b_k - s), with P(y <= 0) = 0 and P(y <= K) = 1.
                cdf = [mpmath.mpf(0)] + [mp_sigmoid(mpmath.mpf(bk) - mpmath.mpf(si)) for bk in b] + [mpmath.mpf(1)]
                want = [float(cdf[j + 1] - cdf[j]) for j in range(k)]
                np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_udm_thresholds_are_ordered_with_the_conservative_gap(k):
    torch.manual_seed(0)
    model = build("udm", k, conservative_margin=0.7)
    raw = np.random.default_rng(k).normal(size=k - 2)
    with torch.no_grad():
        model.first_threshold.fill_(-0.4)
        model.raw_gaps.copy_(torch.tensor(raw))
    # b_1 = theta, b_{k+1} = b_k + softplus(delta_k) + 1e-3 (+ m_c for the first gap).
    want = [-0.4]
    for j, r in enumerate(raw):
        want.append(want[-1] + math.log1p(math.exp(r)) + 1e-3 + (0.7 if j == 0 else 0.0))
    np.testing.assert_allclose(to64(model.thresholds()), want, rtol=1e-6, atol=1e-6)


# Which margins move the lower bound of class y's training interval (module docstring):
# K = 3: m_c the unsure class (lower bound b_1), m_a the malignant one (lower bound b_2);
# K = 2: the malignant class's lower bound is b_1, so it takes both.
MARGINS_OF_CLASS = {3: {0: (), 1: ("c",), 2: ("a",)}, 2: {0: (), 1: ("c", "a")}}


def udm_training_interval(y: int, k: int, b: np.ndarray, m_c: float, m_a: float) -> tuple[float, float]:
    """(lo'_y, hi_y) with b_0 = -inf and b_K = +inf."""
    lo = -math.inf if y == 0 else float(b[y - 1])
    hi = math.inf if y == k - 1 else float(b[y])
    lo += sum({"c": m_c, "a": m_a}[m] for m in MARGINS_OF_CLASS[k][y])
    return lo, hi


def udm_reference(s: float, lo: float, hi: float) -> tuple[float, float]:
    """-log(sigma(hi - s) - sigma(lo - s)) and its derivative in s, as the plain difference of
    two sigmoids at 80 digits (enough for the 1e-44 left after cancelling 100 logits out)."""
    with mpmath.workdps(80):
        s = mpmath.mpf(s)
        up = mpmath.mpf(1) if hi == math.inf else mp_sigmoid(mpmath.mpf(hi) - s)
        down = mpmath.mpf(0) if lo == -math.inf else mp_sigmoid(mpmath.mpf(lo) - s)
        p = up - down
        # d/ds sigma(x - s) = -sigma(x - s) (1 - sigma(x - s)), so d/ds (-log p) = (up' - down') / p.
        dp = -up * (1 - up) + down * (1 - down)
        return float(-mpmath.log(p)), float(-dp / p)


def old_udm_nll(model, s: torch.Tensor, y: torch.Tensor, k: int, m_c: float, m_a: float) -> torch.Tensor:
    """The implementation this test guards against: a difference of two sigmoids clamped at 1e-12,
    and m_c added to the lower bound of every class above benign (the malignant one too for K = 3)."""
    b = model.thresholds().detach().float()
    big = b.new_tensor([1e4])
    bounds = torch.cat([-big, b, big])
    shift = m_c * (y > 0).float() + m_a * (y == k - 1).float()
    p = torch.sigmoid(bounds[y + 1] - s) - torch.sigmoid(bounds[y] + shift - s)
    return -torch.log(p.clamp_min(1e-12))


# Scores from 100 below to 100 above each bound, in steps of 1, and close to it.
OFFSETS = np.unique(np.concatenate([np.arange(-100.0, 101.0, 1.0), [-0.5, -0.1, -1e-3, 1e-3, 0.1, 0.5]]))


@pytest.mark.parametrize("balanced", [True, False], ids=["balanced", "unweighted"])
@pytest.mark.parametrize("m_c, m_a", [(0.0, 0.0), (0.5, 0.5), (0.5, 0.0), (0.0, 0.5)])
@pytest.mark.parametrize("k", [2, 3])
def test_udm_loss_and_gradient_against_closed_form(k, m_c, m_a, balanced):
    torch.manual_seed(0)
    model = build("udm", k, conservative_margin=m_c, aggressive_margin=m_a, class_balanced=balanced)
    with torch.no_grad():  # thresholds away from their initial values
        model.first_threshold.fill_(0.3 if k == 2 else -0.7)
        model.raw_gaps.fill_(-0.4)
    b = to64(model.thresholds())

    # The grid: every class y, scores around each finite bound of its training interval.
    ys, ss, intervals = [], [], {}
    for y in range(k):
        lo, hi = intervals[y] = udm_training_interval(y, k, b, m_c, m_a)
        for bound in (lo, hi):
            if math.isfinite(bound):
                s32 = (bound + OFFSETS).astype(np.float32)  # the scores the module sees, exactly
                ss.append(s32.astype(np.float64))
                ys.append(np.full(len(s32), y))
    s_np, y_np = np.concatenate(ss), np.concatenate(ys)
    ref = np.array([udm_reference(s, *intervals[y]) for s, y in zip(s_np, y_np)])
    ref_nll, ref_grad = ref[:, 0], ref[:, 1]

    # Class weights c_k = N / (K N_k) of the training counts, or 1.
    counts = np.array(COUNTS[k], dtype=np.float64)
    c = counts.sum() / (k * counts) if balanced else np.ones(k)
    cw = c[y_np]
    ref_loss = (cw * ref_nll).sum() / cw.sum()

    s = torch.tensor(s_np, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(y_np)
    loss = model.loss({"score": s}, {"label": y})["loss"]
    loss.backward()
    assert num(loss) == pytest.approx(ref_loss, rel=1e-5)
    # d loss / d s_i = c_{y_i} / sum_j c_{y_j} * d nll_i / d s_i: undo the weight to compare per sample.
    grad = to64(s.grad) * cw.sum() / cw
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)
    # Per sample: a batch of one sample has loss = its NLL.
    with torch.no_grad():
        nll = np.array([float(model.loss({"score": s[i : i + 1]}, {"label": y[i : i + 1]})["loss"]) for i in range(len(s))])
    np.testing.assert_allclose(nll, ref_nll, rtol=1e-5, atol=1e-6)

    # Far outside the interval the NLL is the distance to it plus -log(1 - e^{-(hi - lo')}),
    # with slope -1 below and +1 above (the gradient does not vanish).
    lo_y = np.array([intervals[v][0] for v in y_np])
    hi_y = np.array([intervals[v][1] for v in y_np])
    below, above = s_np < lo_y - 30, s_np > hi_y + 30
    assert below.sum() > 50 and above.sum() > 50
    const = -np.log1p(-np.exp(-(hi_y - lo_y)))  # 0 for the open classes
    np.testing.assert_allclose(nll[below], (lo_y - s_np + const)[below], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(nll[above], (s_np - hi_y + const)[above], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(grad[below], -1, atol=1e-5)
    np.testing.assert_allclose(grad[above], 1, atol=1e-5)

    # The grid does catch the old formula: its clamped difference saturates at -log(1e-12) = 27.6
    # with a zero gradient far outside, and (K = 3) its m_c moved the malignant lower bound too.
    s_old = s.detach().clone().requires_grad_(True)
    old = old_udm_nll(model, s_old, y, k, m_c, m_a)
    old_loss = (torch.tensor(cw, dtype=torch.float32) * old).sum() / cw.sum()
    old_loss.backward()
    old_nll, old_grad = to64(old), to64(s_old.grad) * cw.sum() / cw
    assert num(old_loss) != pytest.approx(ref_loss, rel=1e-5)
    assert np.abs(old_nll - ref_nll).max() > 50
    assert np.abs(old_grad - ref_grad).max() > 0.9
    if k == 3 and m_c > 0:
        near = (y_np == 2) & (np.abs(s_np - intervals[2][0]) < 3)  # no cancellation here: only the shift
        assert np.abs(old_nll[near] - ref_nll[near]).max() > 0.1


# ---------------------------------------------------------------------- CORF


def explicit_routing(d_row: np.ndarray, depth: int) -> np.ndarray:
    """Leaf probabilities of one tree by walking every root-to-leaf path. Breadth-first nodes:
    node n has children 2n+1 (left, probability d_n) and 2n+2 (right, 1 - d_n); leaf l is node 2^D - 1 + l."""
    mu = np.zeros(2**depth)

    def walk(node, level, prob):
        if level == depth:
            mu[node - (2**depth - 1)] = prob
            return
        walk(2 * node + 1, level + 1, prob * d_row[node])
        walk(2 * node + 2, level + 1, prob * (1 - d_row[node]))

    walk(0, 0, 1.0)
    return mu


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_corf_routing_against_root_to_leaf_paths(depth):
    rng = np.random.default_rng(depth)
    d = rng.uniform(size=(2, 3, 2**depth - 1))
    d[1, 2] = rng.choice([0.0, 1.0, 1e-12, 1 - 1e-12], size=2**depth - 1)  # saturated splits
    mu = to64(routing(torch.tensor(d), depth))
    for b in range(2):
        for t in range(3):
            np.testing.assert_allclose(mu[b, t], explicit_routing(d[b, t], depth), rtol=1e-12, atol=1e-15)


def corf_reference(model, feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-tree and forest cumulative probabilities (B, T, K-1), (B, K-1) by explicit loops in float64."""
    f = to64(feats)
    u = f @ to64(model.split_units.weight).T + to64(model.split_units.bias)  # (B, U)
    subsets = model.subsets.numpy()
    a = to64(model.leaf_logits)  # (T, L, K-1)
    n_trees, n_leaves, km1 = a.shape
    depth = model.cfg.depth
    per_tree = np.zeros((len(f), n_trees, km1))
    for i in range(len(f)):
        for t in range(n_trees):
            d = np_sigmoid(u[i, subsets[t]])  # split node n of tree t reads unit subsets[t, n]
            mu = explicit_routing(d, depth)
            for l in range(n_leaves):
                pi = 1.0
                for j in range(km1):
                    pi *= float(np_sigmoid(a[t, l, j]))  # pi_{l,j} = prod_{j' <= j} sigma(a_{l,j'})
                    per_tree[i, t, j] += mu[l] * pi
    return per_tree, per_tree.mean(1)


def probs_from_cumulative(c: np.ndarray) -> np.ndarray:
    """p_1 = 1 - c_1, p_k = c_{k-1} - c_k, p_K = c_{K-1}."""
    km1 = c.shape[1]
    return np.stack([1 - c[:, 0]] + [c[:, j - 1] - c[:, j] for j in range(1, km1)] + [c[:, km1 - 1]], 1)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_corf_forest_probabilities_and_loss_against_loops(k):
    torch.manual_seed(k)
    model = build("corf", k, trees=3, depth=3, units=16)
    feats = torch.randn(5, 512)
    out = model(stub_encoder(model, feats))
    per_tree, c = corf_reference(model, feats)
    np.testing.assert_allclose(to64(out["tree_cumulative"]), per_tree, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to64(out["cumulative"]), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to64(model.predict(out)), probs_from_cumulative(c), rtol=1e-5, atol=1e-6)
    # L = mean over samples and trees of sum_k BCE(c_{t,k}, [y > k]), by hand.
    y = np.arange(5) % k
    total = 0.0
    for i in range(5):
        for t in range(per_tree.shape[1]):
            for j in range(k - 1):
                target = 1.0 if y[i] > j else 0.0
                ct = per_tree[i, t, j]
                total -= target * math.log(ct) + (1 - target) * math.log(1 - ct)
    want = total / (5 * per_tree.shape[1])
    assert num(model.loss(out, {"label": torch.tensor(y)})["loss"]) == pytest.approx(want, rel=1e-5)


def test_corf_extreme_leaf_logits_stay_finite():
    torch.manual_seed(0)
    model = build("corf", 3, trees=3, depth=3, units=16)
    with torch.no_grad():
        model.leaf_logits.copy_(30.0 * (2 * torch.randint(0, 2, model.leaf_logits.shape) - 1))  # +-30
    feats = 100 * torch.randn(6, 512)  # saturated routing as well
    out = model(stub_encoder(model, feats))
    _, c = corf_reference(model, feats)
    np.testing.assert_allclose(to64(out["cumulative"]), c, rtol=1e-5, atol=1e-6)
    p = model.predict(out)
    assert torch.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(to64(p.sum(1)), 1, atol=1e-6)
    loss = model.loss(out, {"label": torch.tensor([0, 1, 2, 0, 1, 2])})["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(q.grad).all() for q in (model.leaf_logits, model.split_units.weight))


@pytest.mark.parametrize("k", [3, 4])
def test_corf_decision_rules(k):
    torch.manual_seed(0)
    names = info(k).class_names
    count_model = build("corf", k, trees=3, depth=3, units=16, decision="count")
    argmax_model = build("corf", k, trees=3, depth=3, units=16, decision="argmax")
    rng = np.random.default_rng(k)
    # Random non-increasing cumulative probabilities, and those of the forest on random features.
    direct = -np.sort(-rng.uniform(size=(400, k - 1)), axis=1)
    forest = to64(count_model(stub_encoder(count_model, 4 * torch.randn(64, 512)))["cumulative"])
    for c in (direct, forest):
        c = c[(np.abs(c - 0.5) > 1e-3).all(1)]  # no ties at 1/2
        p = to64(count_model.predict({"cumulative": torch.tensor(c, dtype=torch.float32)}))
        count = np.array([sum(1 for cj in row if cj > 0.5) for row in c])
        mode = np.array([max(range(k), key=lambda j: row[j]) for row in p])
        np.testing.assert_array_equal(decide(p, names, names, count_model.decision_rule), count)
        np.testing.assert_array_equal(decide(p, names, names, argmax_model.decision_rule), mode)
    # On the random sample the two rules do differ, so the rule matters.
    pd = probs_from_cumulative(direct)
    assert (decide(pd, names, names, "median") != decide(pd, names, names, "argmax")).any()


# ----------------------------------------------------------------- CLIP-Lung


def cos(u, v) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def log_softmax_at(z: list[float], j: int) -> float:
    """log( exp(z_j) / sum_j' exp(z_j') ) as written; |z| <= 100 here, so exp cannot overflow."""
    return math.log(math.exp(z[j]) / sum(math.exp(v) for v in z))


def loop_ic(F, C, y, scale, reduction="sum") -> float:
    """Eq. 2: mean_i [ -sum_t log softmax_k(cos(F_it, C_k) / tau)_y ]; C (B, K, d) or shared (K, d)."""
    total = 0.0
    for i in range(len(F)):
        Ci = C[i] if np.ndim(C) == 3 else C
        per_sample = 0.0
        for t in range(len(F[i])):
            z = [scale * cos(F[i][t], Ci[k]) for k in range(len(Ci))]
            per_sample -= log_softmax_at(z, int(y[i]))
        total += per_sample / (len(F[i]) if reduction == "mean" else 1)
    return total / len(F)


def loop_ia(F, A, w, scale, reduction="sum") -> float:
    """Eq. 3: mean_i [ -sum_t sum_m w_im log softmax_m(cos(F_it, A_m) / tau) ]."""
    total = 0.0
    for i in range(len(F)):
        per_sample = 0.0
        for t in range(len(F[i])):
            z = [scale * cos(F[i][t], A[m]) for m in range(len(A))]
            per_sample -= sum(w[i][m] * log_softmax_at(z, m) for m in range(len(A)))
        total += per_sample / (len(F[i]) if reduction == "mean" else 1)
    return total / len(F)


def loop_ca(C, A, w, scale) -> float:
    """Eq. 4: mean_i [ -sum_k sum_m w_im log softmax_m(cos(C_ik, A_m) / tau) ]; C (B, d) is one class per sample."""
    total = 0.0
    for i in range(len(C)):
        feats = C[i] if np.ndim(C) == 3 else [C[i]]
        for ck in feats:
            z = [scale * cos(ck, A[m]) for m in range(len(A))]
            total -= sum(w[i][m] * log_softmax_at(z, m) for m in range(len(A)))
    return total / len(C)


def loop_attribute_weights(v) -> list[list[float]]:
    """Eq. 1: w_m = exp(v_m) / sum_m' exp(v_m')."""
    return [[math.exp(vm) / sum(math.exp(u) for u in row) for vm in row] for row in v]


@pytest.mark.parametrize("scale", [1 / 0.07, 100.0])
@pytest.mark.parametrize("regime", ["random", "aligned", "parallel"])
def test_alignment_losses_against_loops(regime, scale):
    rng = np.random.default_rng(7)
    B, T, K, M, d = 3, 4, 3, 8, 6
    C = rng.normal(size=(B, K, d))
    A = rng.normal(size=(M, d))
    F = rng.normal(size=(B, T, d))
    if regime == "aligned":  # every F_t next to one class and C_k next to one attribute: cosines ~1 vs the rest
        C = A[rng.integers(0, M, size=(B, K))] + 1e-3 * rng.normal(size=(B, K, d))
        F = C[np.arange(B)[:, None], rng.integers(0, K, size=(B, T))] + 1e-3 * rng.normal(size=(B, T, d))
    if regime == "parallel":  # everything nearly parallel: all logits ~ scale, tiny differences
        u = rng.normal(size=d)
        C, A, F = (u + 1e-3 * rng.normal(size=x.shape) for x in (C, A, F))
    w = rng.dirichlet(np.ones(M), size=B)
    y = np.array([0, 2, 1])
    s = torch.tensor(scale, dtype=torch.float64)
    t = torch.tensor
    # The module casts the logits to float32: up to ~scale * 2^-24 per logit.
    tol = dict(rel=1e-5, abs=2e-4)
    for red in ("sum", "mean"):
        assert float(image_class_loss(t(F), t(C), t(y), s, red)) == pytest.approx(loop_ic(F, C, y, scale, red), **tol)
        assert float(image_class_loss(t(F), t(C[0]), t(y), s, red)) == pytest.approx(loop_ic(F, C[0], y, scale, red), **tol)
        assert float(image_attribute_loss(t(F), t(A), t(w), s, red)) == pytest.approx(loop_ia(F, A, w, scale, red), **tol)
    assert float(class_attribute_loss(t(C), t(A), t(w), s)) == pytest.approx(loop_ca(C, A, w, scale), **tol)
    own = C[np.arange(B), y]  # (B, d): one class feature per sample
    assert float(class_attribute_loss(t(own), t(A), t(w), s)) == pytest.approx(loop_ca(own, A, w, scale), **tol)


def test_attribute_weights_against_loops():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.uniform(1, 5, size=(4, 8)), rng.uniform(-30, 30, size=(2, 8))])  # annotated means, and extremes
    got = to64(attribute_weights(torch.tensor(v)))
    np.testing.assert_allclose(got, loop_attribute_weights(v), rtol=1e-5, atol=0)


def test_clip_lung_model_terms_follow_eqs_2_to_5():
    torch.manual_seed(0)
    model = build("clip_lung", 3).train()
    batch = image_batch(3)
    out = model(batch)
    default = model.cfg
    y = batch["label"].numpy()
    F = to64(out["groups"])  # (B, T, d)
    C = to64(out["class_text"])  # (B, K, d)
    A = to64(model.text.fixed(ATTRIBUTE_WORDS, torch.device("cpu")))  # (8, d)
    w = loop_attribute_weights(to64(batch["attributes"]))
    scale = num(model.temperature())
    assert F.shape[1] == default.n_ctx == 4

    def terms(**changes):
        model.cfg = dataclasses.replace(default, **changes)
        try:
            with torch.no_grad():
                return {k: float(v) for k, v in model.loss(out, batch).items()}
        finally:
            model.cfg = default

    got = terms()
    tol = dict(rel=1e-5, abs=1e-5)
    assert got["ic"] == pytest.approx(loop_ic(F, C, y, scale), **tol)
    assert got["ia"] == pytest.approx(loop_ia(F, A, w, scale), **tol)
    assert got["ca"] == pytest.approx(loop_ca(C, A, w, scale), **tol)  # all K class features
    # (i) the printed sum over the T groups is T times the mean.
    mean = terms(group_reduction="mean")
    assert got["ic"] == pytest.approx(4 * mean["ic"], rel=1e-6)
    assert got["ia"] == pytest.approx(4 * mean["ia"], rel=1e-6)
    # (ii) ca_classes="own" keeps only C_y, which is not the same.
    own = terms(ca_classes="own")
    assert own["ca"] == pytest.approx(loop_ca(C[np.arange(3), y], A, w, scale), **tol)
    assert abs(own["ca"] - got["ca"]) > 1e-3
    # (iii) Eq. 5: L = L_CE + L_IC + alpha L_IA + beta L_CA, L_CE by log-sum-exp.
    z = to64(out["logits"])
    ce = np.mean([math.log(sum(math.exp(v) for v in z[i])) - z[i, y[i]] for i in range(3)])
    assert got["ce"] == pytest.approx(ce, rel=1e-5)
    for alpha, beta in ((1.0, 0.5), (0.3, 2.0)):
        g = terms(alpha=alpha, beta=beta)
        assert g["loss"] == pytest.approx(ce + got["ic"] + alpha * got["ia"] + beta * got["ca"], rel=1e-5)


def test_clip_and_cocoop_image_class_term_against_loops():
    y = np.array([0, 1, 2])
    for name in ("clip", "cocoop"):
        torch.manual_seed(0)
        model = build(name, 3).train()
        # Both read only the pooled image feature: feed one instead of running the encoder.
        batch = {**stub_encoder(model, torch.randn(3, 512)), "label": torch.tensor(y)}
        out = model(batch)
        with torch.no_grad():
            terms = {k: float(v) for k, v in model.loss(out, batch).items()}
        F = to64(out["image_text"])  # (B, 1, d): T = 1
        assert F.shape[1] == 1
        if name == "clip":  # fixed prompts, shared by the batch
            assert model.class_texts == ("a nodule image of benign.", "a nodule image of unsure.", "a nodule image of malignant.")
            C = to64(model.text.fixed(model.class_texts, torch.device("cpu")))  # (K, d)
        else:  # conditional prompts, per sample
            C = to64(out["class_text"])  # (B, K, d)
        scale = num(model.temperature())
        assert terms["ic"] == pytest.approx(loop_ic(F, C, y, scale), rel=1e-5, abs=1e-5)
        z = to64(out["logits"])
        ce = np.mean([math.log(sum(math.exp(v) for v in z[i])) - z[i, y[i]] for i in range(3)])
        assert terms["loss"] == pytest.approx(ce + terms["ic"], rel=1e-5)


# ------------------------------------------------------------------- decide()


def loop_median(p_row, class_names, test_names) -> int:
    """First test class (in the ordinal order of class_names) whose cumulative probability,
    renormalised over the test classes, reaches 1/2."""
    allowed = [i for i, c in enumerate(class_names) if c in test_names]
    total = sum(p_row[i] for i in allowed)
    acc = 0.0
    for i in allowed:
        acc += p_row[i]
        if acc / total >= 0.5:
            return i
    raise AssertionError("unreachable")


def test_decide_median_and_argmax_against_loops():
    c3 = ("benign", "unsure", "malignant")
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(3), size=500) * rng.uniform(0.2, 3, size=(500, 1))  # also unnormalised rows
    cdf = np.cumsum(p, 1) / p.sum(1, keepdims=True)
    p = p[(np.abs(cdf - 0.5) > 1e-9).all(1)]  # no ties at 1/2
    median = decide(p, c3, c3, "median")
    np.testing.assert_array_equal(median, [loop_median(r, c3, c3) for r in p])
    np.testing.assert_array_equal(decide(p, c3, c3, "argmax"), [max(range(3), key=lambda j: r[j]) for r in p])
    assert (median != decide(p, c3, c3, "argmax")).any()  # the rules differ on three classes
    # LIDC-B: trained on three classes, tested on benign and malignant: both rules are the
    # argmax over the two (the unsure probability never counts), in any order of the test names.
    p = p[np.abs(p[:, 0] - p[:, 2]) > 1e-12]
    want = [0 if r[0] > r[2] else 2 for r in p]
    for test in (("benign", "malignant"), ("malignant", "benign")):
        for rule in ("median", "argmax"):
            np.testing.assert_array_equal(decide(p, c3, test, rule), want)
        np.testing.assert_array_equal(decide(p, c3, test, "median"), [loop_median(r, c3, test) for r in p])
