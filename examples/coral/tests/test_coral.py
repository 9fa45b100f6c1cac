"""The CORAL plugin against a second derivation (explicit loops in float64) and the suite's interface."""
import math

import numpy as np
import torch

import methods
from benchmarks.metrics import decide
from methods import DataInfo

INFO = DataInfo(3, ("benign", "unsure", "malignant"), tuple("abcdefgh"), (10, 20, 5))


def model_and_out(seed=0, n=7):
    torch.manual_seed(seed)
    m = methods.build("coral", INFO)
    batch = {"image": torch.rand(n, 32, 32, 32), "label": torch.arange(n) % 3, "attributes": torch.rand(n, 8)}
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.8, -0.6]))  # ordered, as at CORAL's optimum
    return m, batch, m(batch)


def test_registered_through_the_entry_point():
    m = methods.get_method("coral")
    assert m.origin and m.origin["distribution"] == "cliplung-coral" and m.origin["version"] == "0.1.0"


def test_loss_against_explicit_loops():
    m, batch, out = model_and_out()
    z = out["logits"].detach().double().numpy()
    y = batch["label"].numpy()
    total = 0.0
    for i in range(len(y)):
        for k in range(2):
            c = 1 / (1 + math.exp(-z[i, k]))
            total -= math.log(c) if y[i] > k else math.log(1 - c)
    assert math.isclose(float(m.loss(out, batch)["loss"].detach()), total / len(y), rel_tol=1e-5)
    # One weight vector shared by the tasks: the two logits differ by the biases only.
    np.testing.assert_allclose(z[:, 0] - z[:, 1], 0.8 + 0.6, rtol=1e-5)


def test_prediction_counts_the_tasks_above_one_half():
    m, batch, out = model_and_out()
    c = torch.sigmoid(out["logits"]).detach().numpy()
    p = m.predict(out).detach().numpy()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    count = (c > 0.5).sum(1)
    assert (decide(p, INFO.class_names, INFO.class_names, m.decision_rule) == count).all()


def test_trains_a_step_with_finite_gradients():
    m, batch, out = model_and_out()
    m.loss(m(batch), batch)["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
