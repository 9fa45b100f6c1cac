"""CORAL: rank-consistent ordinal regression (Cao, Mirjalili, Raschka, "Rank consistent
ordinal regression for neural networks with application to age estimation",
Pattern Recognition Letters 140, 2020), as a clip-lung-bench plugin.

K-1 binary tasks "is y above class k?" share one weight vector w and keep
their own biases b_k:

    g(x) = w . f(x)                          (B,)  one score, no bias of its own
    c_k(x) = sigma(g(x) + b_k),  k = 1..K-1  (B, K-1)  P(y > k)
    L = -(1/B) sum_i sum_k [ [y_i > k] log c_k + (1 - [y_i > k]) log(1 - c_k) ]

(the paper's task weights lambda_k are all 1, as in its reference code). The
prediction counts the tasks answered "above": y_hat = sum_k [c_k > 0.5]. The
paper shows that the minimiser has b_1 >= b_2 >= ..., so c is non-increasing
in k and class probabilities follow by differencing,

    p_1 = 1 - c_1,  p_k = c_{k-1} - c_k,  p_K = c_{K-1};

a crossing (possible before convergence) is clipped at 0 and the row
renormalised. For non-increasing c the counting rule is the median of p, so
the method declares ``decision_rule = "median"`` and the suite's metrics
decide exactly as CORAL does. Biases start at 0 (as in the paper's code).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods import register
from methods.backbones import DEFAULT_BACKBONE, build_backbone

__version__ = "0.1.0"


@register("coral")
class CORAL(nn.Module):
    decision_rule = "median"  # = count of c_k > 0.5 (see above)

    @dataclass(frozen=True)
    class Config:
        backbone: str = DEFAULT_BACKBONE  # any registered image encoder, like every method

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.score = nn.Linear(self.encoder.dim, 1, bias=False)  # w: shared by the K-1 tasks
        self.bias = nn.Parameter(torch.zeros(info.num_classes - 1))  # b_k: one per task

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        logits = self.score(feat) + self.bias  # (B, 1) + (K-1,) -> (B, K-1): g(x) + b_k
        return {"features": feat, "logits": logits}

    def loss(self, out: dict, batch: dict) -> dict:
        z = out["logits"].float()  # (B, K-1)
        k = torch.arange(z.shape[1], device=z.device)
        above = (batch["label"][:, None] > k[None, :]).float()  # (B, K-1): [y > k]
        # log sigma(z) and log(1 - sigma(z)) = log sigma(-z), stable for any z.
        nll = -(above * F.logsigmoid(z) + (1 - above) * F.logsigmoid(-z)).sum(1)  # (B,)
        loss = nll.mean()
        return {"loss": loss, "coral": loss}

    def predict(self, out: dict) -> torch.Tensor:
        c = torch.sigmoid(out["logits"])  # (B, K-1) P(y > k)
        ones, zeros = torch.ones_like(c[:, :1]), torch.zeros_like(c[:, :1])
        p = (torch.cat([ones, c], 1) - torch.cat([c, zeros], 1)).clamp_min(0)  # (B, K)
        return p / p.sum(1, keepdim=True)
