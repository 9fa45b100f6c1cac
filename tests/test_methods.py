"""Every registered method, tested the moment it is registered: the built-ins, and every plugin named in
$CLIPLUNG_PLUGINS or installed (an entry point), through the checks of ``python -m benchmarks.check``."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import methods
from benchmarks import check
from benchmarks.cli import static_method_names
from benchmarks.errors import UserError
from benchmarks.metrics import decide
from benchmarks.plugins import load_plugins
from methods import REGISTRY, DataInfo
from methods.backbones import BACKBONES, build_backbone
from methods.corf import routing
from methods.registry import register


def _every_method() -> list[str]:
    """The built-ins and what the plugins register, named for collection without importing the plugins
    (read from their sources: loading them here would add their methods to every later test module's
    collection); loaded when their sources cannot be read so."""
    names = static_method_names()
    if names is None:
        load_plugins()
        names = set(REGISTRY)
    return sorted(names | set(REGISTRY))


EVERY_METHOD = _every_method()


@pytest.fixture
def registered():
    """The method of a name, with the plugins (entry points, $CLIPLUNG_PLUGINS) loaded."""

    def get(name):
        load_plugins()
        if name not in REGISTRY:
            pytest.skip(f"{name!r} appears in a register() call of a method or plugin source, but nothing registers it")
        return REGISTRY[name]

    return get


ATTRS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture")


def info(k):
    names = ("benign", "unsure", "malignant") if k == 3 else ("benign", "malignant")
    return DataInfo(k, names, ATTRS, tuple([10, 20, 5][:k]) if k == 3 else (12, 7))


def build(name, k):
    """The registered method, its text encoder (if any) swapped for the tiny random one."""
    import dataclasses

    m = REGISTRY[name]
    cfg = m.config
    if hasattr(cfg, "text_encoder"):
        cfg = dataclasses.replace(cfg, text_encoder="tiny-random")
    return m.cls(cfg, info(k))


def batch(k, n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 32, size, size, generator=g),
        "label": torch.arange(n) % k,
        "attributes": 1 + 4 * torch.rand(n, 8, generator=g),
    }


def test_encoder_is_torchvision_resnet18_with_32_channel_stem():
    enc = build_backbone("resnet18_2d")
    assert enc.net.conv1.in_channels == 32 and enc.net.conv1.kernel_size == (3, 3) and enc.net.conv1.stride == (1, 1)
    assert isinstance(enc.net.maxpool, torch.nn.Identity)
    assert [len(getattr(enc.net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert enc.feature_map(torch.zeros(2, 32, 32, 32)).shape == (2, 512, 4, 4)
    assert enc(torch.zeros(2, 32, 32, 32)).shape == (2, 512)


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register("ce")(REGISTRY["ce"].cls)
    with pytest.raises(UserError, match="known methods: .*ce"):
        methods.get_method("resnet-magic")


def test_every_method_module_is_imported_and_registers():
    here = Path(methods.__file__).parent
    modules = {p.stem for p in here.glob("*.py")} - {"__init__", "registry", "backbones", "text_guided"}
    registered = {m.cls.__module__.split(".")[-1] for m in REGISTRY.values()}
    assert modules <= registered, f"method files not registered: {modules - registered}"
    assert {"ce", "poisson", "nsb", "udm", "corf", "clip", "cocoop", "clip_lung"} <= set(REGISTRY)


_CASES: dict[str, object] = {}  # method -> its benchmarks.check case: one model per K, shared by its checks


@pytest.mark.parametrize("check_name", list(check.CHECKS))
@pytest.mark.parametrize("name", EVERY_METHOD)
def test_method_contract(name, check_name, registered):
    """The contract of methods/registry.py, as ``python -m benchmarks.check NAME`` checks it."""
    registered(name)
    if name not in _CASES:
        _CASES.clear()  # one method's models at a time
        _CASES[name] = check.case_of(name)
    result = check.run_check(_CASES[name], check_name)
    assert result.ok, f"{name}: {check_name}: {result.detail}"


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_overfits_a_tiny_fixed_batch(name, registered):
    registered(name)
    torch.manual_seed(0)
    model = build(name, 3)
    b = batch(3, n=6, size=16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    names = info(3).class_names

    def decided():  # decided as the metrics decide: by the method's own rule (the median for CORF and CORAL)
        with torch.no_grad():
            probs = model.predict(model(b)).numpy()
        return decide(probs, names, names, getattr(model, "decision_rule", "argmax"))

    first = None
    # At most 100 steps; looked at every 10th, ending once both asks hold (most methods hold them within 30-50).
    for step in range(1, 101):
        terms = model.loss(model(b), b)
        first = float(terms["loss"].detach()) if first is None else first
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        # Soft-target terms (CLIP-Lung's L_IA, L_CA) have a floor above 0: ask for a clear drop only.
        if step % 10 == 0 and float(terms["loss"].detach()) < 0.8 * first and (decided() == b["label"].numpy()).all():
            break
    pred = decided()
    assert (pred == b["label"].numpy()).all(), (name, pred)
    assert float(terms["loss"].detach()) < 0.8 * first


def _model_out(name, k=3, seed=0):
    torch.manual_seed(seed)
    model = methods.build(name, info(k)).eval()
    b = batch(k)
    with torch.no_grad():
        out = model(b)
        p = model.predict(out)
    return model, b, out, p.double().numpy()


def test_ce_probabilities():
    _, _, out, p = _model_out("ce")
    z = out["logits"].double().numpy()
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-5)


def test_poisson_probabilities_match_the_pmf():
    from scipy.stats import poisson

    model, _, out, p = _model_out("poisson")
    lam = out["lambda"].double().numpy()
    tau = float(model.tau().detach())
    # Classes counted 1..K by default (the authors' code); first_class=0 is the other option.
    pmf = np.stack([poisson.pmf(k, lam) for k in (1, 2, 3)], 1) ** (1 / tau)
    np.testing.assert_allclose(p, pmf / pmf.sum(1, keepdims=True), rtol=1e-4)
    # Unimodal: the probabilities rise then fall.
    for row in p:
        peak = row.argmax()
        assert all(row[i] <= row[i + 1] + 1e-9 for i in range(peak)) and all(row[i] >= row[i + 1] - 1e-9 for i in range(peak, 2))


def test_nsb_probabilities_match_the_stick_breaking_products():
    model, _, out, p = _model_out("nsb")
    with torch.no_grad():
        s = torch.sigmoid(model.head(out["features"])).double().numpy()  # (B, K-1)
    want = np.stack([s[:, 0], s[:, 1] * (1 - s[:, 0]), (1 - s[:, 0]) * (1 - s[:, 1])], 1)
    np.testing.assert_allclose(p, want, rtol=1e-5)


def test_udm_probabilities_and_margins():
    model, b, out, p = _model_out("udm")
    t = model.thresholds().detach().double().numpy()
    assert np.all(np.diff(t) > 0)
    s = out["score"].double().numpy()
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    cdf = np.stack([sig(t[0] - s), sig(t[1] - s)], 1)
    want = np.stack([cdf[:, 0], cdf[:, 1] - cdf[:, 0], 1 - cdf[:, 1]], 1)
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-7)
    # Margins narrow the training intervals of non-benign classes: the training NLL
    # exceeds the test-time NLL of the same model; benign samples are unaffected.
    y = b["label"].numpy()
    with torch.no_grad():
        nll_test = -np.log(want[np.arange(6), y])
        assert float(model.loss(out, b)["nll"]) > nll_test.mean()
        benign = {k: v[y == 0] for k, v in b.items()}
        out_b = {k: v[torch.from_numpy(y == 0)] for k, v in out.items()}
        assert float(model.loss(out_b, benign)["nll"]) == pytest.approx(nll_test[y == 0].mean(), rel=1e-5)
    # Without margins or class balancing the loss is the mean NLL of predict().
    import dataclasses

    torch.manual_seed(0)
    plain = model.__class__(dataclasses.replace(model.cfg, conservative_margin=0.0, aggressive_margin=0.0, class_balanced=False), info(3))
    with torch.no_grad():
        po = plain(b)
        pp = plain.predict(po).double().numpy()
        assert float(plain.loss(po, b)["loss"]) == pytest.approx(-np.log(pp[np.arange(6), y]).mean(), rel=1e-5)


def test_corf_routing_and_probabilities_match_brute_force():
    torch.manual_seed(0)
    depth = 3
    d = torch.rand(2, 4, 2**depth - 1)
    mu = routing(d, depth)
    for b in range(2):
        for t in range(4):
            for leaf in range(2**depth):
                node, prob = 0, 1.0
                for bit in format(leaf, f"0{depth}b"):
                    prob *= float(d[b, t, node]) if bit == "0" else 1 - float(d[b, t, node])
                    node = 2 * node + 1 + int(bit)
                assert float(mu[b, t, leaf]) == pytest.approx(prob, rel=1e-5)
    torch.testing.assert_close(mu.sum(-1), torch.ones(2, 4))
    model, _, out, p = _model_out("corf")
    c = out["cumulative"].double().numpy()  # forest mean of P(y > k)
    assert np.all(np.diff(c, axis=1) <= 1e-9)
    want = np.stack([1 - c[:, 0], c[:, 0] - c[:, 1], c[:, 1]], 1)
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-7)
    assert math.isclose(float(out["tree_cumulative"].mean(1).sub(out["cumulative"]).abs().max().detach()), 0.0, abs_tol=1e-7)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_backbones_give_their_map_and_pooled_feature(backbone):
    torch.manual_seed(0)
    enc = build_backbone(backbone)
    x = torch.rand(2, 32, 32, 32)
    fmap = enc.feature_map(x)
    assert fmap.shape == (2, enc.dim, *enc.map_hw)
    torch.testing.assert_close(enc(x), fmap.mean((2, 3)))


def test_multi_view_backbone_is_one_trunk_over_three_orientations():
    # A second derivation: the shared trunk run by hand on the axial stack, and on the cube turned
    # so that rows, then columns, are the channels; the map is their mean.
    from methods.backbones import _trunk_map

    torch.manual_seed(0)
    enc = build_backbone("mv3_resnet18").eval()
    x = torch.rand(2, 32, 32, 32)
    with torch.no_grad():
        views = [x, x.transpose(1, 2), x.permute(0, 3, 1, 2)]  # (B, C, H, W) with C = slices, rows, cols
        want = torch.stack([_trunk_map(enc.net, v.contiguous()) for v in views]).mean(0)
        torch.testing.assert_close(enc.feature_map(x), want, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(want, _trunk_map(enc.net, x), atol=1e-3)  # the other views matter


@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - {"resnet18_2d"}))
@pytest.mark.parametrize("name", EVERY_METHOD)
def test_every_method_trains_on_every_backbone(name, backbone, registered):
    import dataclasses

    torch.manual_seed(0)
    m = registered(name)
    cfg = dataclasses.replace(m.config, backbone=backbone, **({"text_encoder": "tiny-random"} if hasattr(m.config, "text_encoder") else {}))
    model = m.cls(cfg, info(3))
    b = batch(3, n=2)
    terms = model.loss(model(b), b)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        p = model.predict(model(b))
    torch.testing.assert_close(p.sum(1), torch.ones(2), atol=1e-5, rtol=0)
