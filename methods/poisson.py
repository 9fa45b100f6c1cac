"""Unimodal Poisson output layer (Beckham & Pal, "Unimodal probability
distributions for deep ordinal classification", ICML 2017) [2].

One scalar per image, lambda = softplus(f(x)) > 0; for the K classes, counted
c = 1..K, the log-probabilities of a Poisson(lambda),

    logit_c = c log(lambda) - lambda - log(c!),

are divided by a temperature tau and normalised,

    p = softmax(logit / tau),  L = -log p_y.

Class counting (``first_class``): 1 (default) as in the authors' reference code
(github.com/christopher-beckham/msc, experiments/earth_mover/architectures/
resnet.py, ``c = i+1``); 0 counts from the start of the Poisson support, this
suite's choice before implementation version 2. The two are not the same model:
the shift changes logit_c by log c, which is not a constant. tau is one
learnable scalar, tau = softplus(t) + 1e-3, initialised at 1 (the authors' code
also offers a fixed tau and a tau that is a function of x); lambda gets 1e-4
added so that log(lambda) is finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.config import Checked
from benchmarks.space import Float
from methods.backbones import DEFAULT_BACKBONE, build_backbone
from methods.registry import register


@register("poisson")
class Poisson(nn.Module):
    version = 2  # 2: classes counted from 1 by default (the authors' code); 1: from 0

    @dataclass(frozen=True)
    class Config(Checked):
        RANGES = {"init_temperature": "(0.001, inf)"}  # tau = softplus(t) + 1e-3
        # Tuned (benchmarks.tune): the initial temperature, a decade either side of 1; plus lr, weight decay.
        SEARCH = {"init_temperature": Float(0.1, 10.0, log=True)}
        CHOICES = {"first_class": (0, 1)}

        init_temperature: float = 1.0
        first_class: int = 1  # the count of the first class: 1 (authors' code) or 0
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.head = nn.Linear(self.encoder.dim, 1)
        k = torch.arange(info.num_classes, dtype=torch.float32) + cfg.first_class
        self.register_buffer("k", k)  # (K,) the class counts c
        self.register_buffer("log_k_factorial", torch.lgamma(k + 1))  # (K,)
        # softplus^-1(init - 1e-3) so that tau starts at init_temperature.
        t0 = cfg.init_temperature - 1e-3
        self.raw_tau = nn.Parameter(torch.tensor(math.log(math.expm1(t0))))

    def tau(self) -> torch.Tensor:
        return F.softplus(self.raw_tau) + 1e-3

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        lam = F.softplus(self.head(feat)) + 1e-4  # (B, 1)
        logits = self.k * torch.log(lam) - lam - self.log_k_factorial  # (B, K)
        return {"features": feat, "lambda": lam.squeeze(1), "logits": logits / self.tau()}

    def loss(self, out: dict, batch: dict) -> dict:
        ce = F.cross_entropy(out["logits"], batch["label"])
        return {"loss": ce, "ce": ce}

    def predict(self, out: dict):
        return out["logits"].softmax(-1)
