"""Unimodal Poisson output layer (Beckham & Pal, "Unimodal probability
distributions for deep ordinal classification", ICML 2017) [2].

One scalar per image, lambda = softplus(f(x)) > 0; for classes k = 0..K-1 the
log-probabilities of a Poisson(lambda),

    logit_k = k log(lambda) - lambda - log(k!),

are divided by a temperature tau and normalised,

    p = softmax(logit / tau),  L = -log p_y.

Choices where the paper leaves room: classes are counted from 0 (the Poisson
support starts at 0; counting from 1 only shifts logit_k by log k, which is
not a constant); tau is one learnable scalar, tau = softplus(t) + 1e-3,
initialised at 1 (the paper also studies tau as a function of x); lambda gets
1e-4 added so that log(lambda) is finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.encoder import FEATURE_DIM, ImageEncoder
from methods.registry import register


@register("poisson")
class Poisson(nn.Module):
    @dataclass(frozen=True)
    class Config:
        init_temperature: float = 1.0

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(info.in_channels)
        self.head = nn.Linear(FEATURE_DIM, 1)
        k = torch.arange(info.num_classes, dtype=torch.float32)
        self.register_buffer("k", k)  # (K,)
        self.register_buffer("log_k_factorial", torch.lgamma(k + 1))  # (K,)
        # softplus^-1(init - 1e-3) so that tau starts at init_temperature.
        t0 = cfg.init_temperature - 1e-3
        self.raw_tau = nn.Parameter(torch.tensor(math.log(math.expm1(t0))))

    def tau(self) -> torch.Tensor:
        return F.softplus(self.raw_tau) + 1e-3

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, 512)
        lam = F.softplus(self.head(feat)) + 1e-4  # (B, 1)
        logits = self.k * torch.log(lam) - lam - self.log_k_factorial  # (B, K)
        return {"features": feat, "lambda": lam.squeeze(1), "logits": logits / self.tau()}

    def loss(self, out: dict, batch: dict) -> dict:
        ce = F.cross_entropy(out["logits"], batch["label"])
        return {"loss": ce, "ce": ce}

    def predict(self, out: dict):
        return out["logits"].softmax(-1)
