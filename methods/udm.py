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
parameters, as margins on a training sample's own class interval:

    p'_y = sigma(hi_y - s) - sigma(lo_y + m_c [y > benign] [lo is b_1]
                                  + m_a [y = malignant] - s)

with (lo_y, hi_y) the thresholds around class y. A nodule that is not benign
must score m_c above the benign threshold (fewer nodules called benign
wrongly: benign precision, "conservative"); a malignant nodule must score m_a
above the last threshold (fewer malignant missed: malignant recall,
"aggressive"). On LIDC-C (K = 2) both margins apply to the one threshold. The
thresholds are kept at least m_c apart (b_2 = b_1 + m_c + softplus + 1e-3), so
every training interval stays non-empty. At test time the plain intervals are
used. Both margins default to 0.5 (logit units); 0 gives the plain
cumulative-logit model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.encoder import FEATURE_DIM, ImageEncoder
from methods.registry import register


def cumulative_logit_probs(score: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """score (B,), ordered thresholds (K-1,) -> class probabilities (B, K)."""
    cdf = torch.sigmoid(thresholds[None, :] - score[:, None])  # (B, K-1) P(y <= k)
    ones = torch.ones_like(cdf[:, :1])
    zeros = torch.zeros_like(cdf[:, :1])
    return torch.cat([cdf, ones], 1) - torch.cat([zeros, cdf], 1)  # (B, K)


@register("udm")
class UnsureDataModel(nn.Module):
    @dataclass(frozen=True)
    class Config:
        conservative_margin: float = 0.5
        aggressive_margin: float = 0.5
        class_balanced: bool = True

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        k = info.num_classes
        self.encoder = ImageEncoder(info.in_channels)
        self.score = nn.Linear(FEATURE_DIM, 1)
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
        feat = self.encoder(batch["image"])  # (B, 512)
        return {"features": feat, "score": self.score(feat).squeeze(1)}  # score (B,)

    def loss(self, out: dict, batch: dict) -> dict:
        y = batch["label"]
        k = self.class_weight.numel()
        s = out["score"].float()  # (B,)
        b = self.thresholds().float()
        big = b.new_tensor([1e4])
        bounds = torch.cat([-big, b, big])  # (K+1,) class k lies in (bounds[k], bounds[k+1])
        shift = self.cfg.conservative_margin * (y > 0).float() + self.cfg.aggressive_margin * (y == k - 1).float()
        lo = bounds[y] + shift  # (B,) margins only on the lower side of non-benign classes
        hi = bounds[y + 1]
        p = torch.sigmoid(hi - s) - torch.sigmoid(lo - s)  # (B,) training probability of the own class
        nll = -torch.log(p.clamp_min(1e-12))
        w = self.class_weight[y]
        loss = (w * nll).sum() / w.sum()
        return {"loss": loss, "nll": nll.mean()}

    def predict(self, out: dict):
        return cumulative_logit_probs(out["score"], self.thresholds())
