"""Unsure data model (Wu et al., "Learning with unsure data for medical image
diagnosis", ICCV 2019) [18].

Ordinal regression over benign < unsure < malignant with one latent score
s(x) = w . f(x) and K-1 ordered thresholds (a cumulative-logit model):

    P(y <= k | x) = sigma(b_k - s(x)),  k = 1..K-1,   P(y <= K) = 1,
    p_k = P(y <= k) - P(y <= k-1),
    b_1 = theta,  b_{k+1} = b_k + softplus(delta_k) + 1e-3 (+ m_c for k = 1)   (ordered by construction).

Cost-sensitive (class-balanced) NLL: L = sum_i c_{y_i} (-log p_{y_i}) / sum_i c_{y_i}
with c_k = N / (K N_k) from the training split's class counts.

Conservative / aggressive strategy, our reading of the paper's two training
parameters, as margins on the lower bound of a training sample's own class
interval (lo_y, hi_y), the thresholds around class y (b_0 = -1e4, b_K = +1e4 standing for -inf, +inf):

    lo'_y = lo_y + m_c [lo_y = b_1] + m_a [y = K-1],    p'_y = sigma(hi_y - s) - sigma(lo'_y - s)

For K = 3 the conservative margin m_c moves only the unsure class's lower
bound b_1 (an unsure nodule must score m_c above the benign threshold: fewer
nodules called benign wrongly, benign precision) and the aggressive margin m_a
only the malignant class's lower bound b_2 (a malignant nodule must score m_a
above the last threshold: fewer malignant missed, malignant recall). On LIDC-C
(K = 2) the one threshold is both b_1 and the malignant class's lower bound, so
both margins add up there. The thresholds are kept at least m_c apart
(b_2 = b_1 + m_c + softplus + 1e-3), so every training interval stays
non-empty. At test time the plain intervals are used. Both margins default to
0.5 (logit units); 0 gives the plain cumulative-logit model.

Numerics: log p'_y is computed without subtracting two sigmoids, which cancel
to 0 in float32 once s lies ~17 logits outside its interval. With
a = hi - s > c = lo' - s,

    sigma(a) - sigma(c) = sigma(a) sigma(-c) (1 - exp(-(a - c))),
    log p' = logsigmoid(a) + logsigmoid(-c) + log(-expm1(-(hi - lo'))),

exact on both sides of the interval. Far
outside, the NLL grows like the distance to the interval with gradient -1 / +1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.config import Checked
from benchmarks.space import Float
from methods.backbones import DEFAULT_BACKBONE, build_backbone
from methods.registry import register


def cumulative_logit_probs(score: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """score (B,), ordered thresholds (K-1,) -> class probabilities (B, K)."""
    cdf = torch.sigmoid(thresholds[None, :] - score[:, None])  # (B, K-1) P(y <= k)
    ones = torch.ones_like(cdf[:, :1])
    zeros = torch.zeros_like(cdf[:, :1])
    return torch.cat([cdf, ones], 1) - torch.cat([zeros, cdf], 1)  # (B, K)


def interval_log_prob(s: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(sigma(hi - s) - sigma(lo - s)) for lo < hi, all (B,):

        logsigmoid(hi - s) + logsigmoid(s - lo) + log(1 - exp(-(hi - lo))),

    no difference of two numbers near 1. The open ends are +-1e4 (their terms are
    then 0 to float precision for any score a trained model reaches).
    """
    gap = (hi - lo).clamp_min(1e-6)  # > 0 by construction (margins >= 0, ordered thresholds)
    return F.logsigmoid(hi - s) + F.logsigmoid(s - lo) + torch.log(-torch.expm1(-gap))


@register("udm")
class UnsureDataModel(nn.Module):
    # 2: m_c only on the lower bound b_1, log p exact far outside the interval;
    # 1: m_c on every non-benign class, log p through a difference of sigmoids.
    version = 2

    @dataclass(frozen=True)
    class Config(Checked):
        RANGES = {"conservative_margin": "[0, inf)", "aggressive_margin": "[0, inf)"}
        # Tuned (benchmarks.tune): both margins of the unimodal intervals; plus lr, weight decay.
        SEARCH = {"conservative_margin": Float(0.0, 2.0), "aggressive_margin": Float(0.0, 2.0)}

        conservative_margin: float = 0.5
        aggressive_margin: float = 0.5
        class_balanced: bool = True
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        k = info.num_classes
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.score = nn.Linear(self.encoder.dim, 1)
        self.first_threshold = nn.Parameter(torch.tensor(-1.0 if k > 2 else 0.0))
        self.raw_gaps = nn.Parameter(torch.full((k - 2,), 0.5413))  # softplus -> 1.0 apart
        counts = torch.tensor(info.class_counts, dtype=torch.float32).clamp(min=1)
        self.register_buffer("class_weight", counts.sum() / (k * counts) if cfg.class_balanced else torch.ones(k))

    def thresholds(self) -> torch.Tensor:
        """(K-1,) strictly increasing; the first gap is at least the conservative margin."""
        gaps = F.softplus(self.raw_gaps) + 1e-3
        if gaps.numel():
            gaps = gaps + F.pad(gaps.new_tensor([self.cfg.conservative_margin]), (0, gaps.numel() - 1))
        return torch.cat([self.first_threshold[None], self.first_threshold + torch.cumsum(gaps, 0)])

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        return {"features": feat, "score": self.score(feat).squeeze(1)}  # score (B,)

    def loss(self, out: dict, batch: dict) -> dict:
        y = batch["label"]
        k = self.class_weight.numel()
        s = out["score"].float()  # (B,)
        b = self.thresholds().float()
        big = b.new_tensor([1e4])
        bounds = torch.cat([-big, b, big])  # (K+1,) class k lies in (bounds[k], bounds[k+1])
        # m_c where the lower bound is b_1 (y = 1), m_a on the malignant class (y = K-1).
        shift = self.cfg.conservative_margin * (y == 1).float() + self.cfg.aggressive_margin * (y == k - 1).float()
        nll = -interval_log_prob(s, bounds[y] + shift, bounds[y + 1])  # (B,)
        w = self.class_weight[y]
        loss = (w * nll).sum() / w.sum()
        return {"loss": loss, "nll": nll.mean()}

    def predict(self, out: dict):
        return cumulative_logit_probs(out["score"], self.thresholds())
