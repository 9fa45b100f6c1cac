"""Neuron stick-breaking (Liu et al., "Ordinal regression with neuron
stick-breaking for medical diagnosis", ECCV Workshops 2018) [13].

K-1 sigmoid units s_k = sigma(g_k(x)) break a unit stick:

    p_1 = s_1,  p_k = s_k prod_{j<k} (1 - s_j)  (1 < k < K),  p_K = prod_{j<K} (1 - s_j),

so the K probabilities sum to 1 by construction; L = -log p_y (NLL). Computed
in log space (log s = logsigmoid(g), log(1 - s) = logsigmoid(-g)) so that no
probability underflows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.backbones import DEFAULT_BACKBONE, build_backbone
from methods.registry import register


def stick_breaking_log_probs(g: torch.Tensor) -> torch.Tensor:
    """(B, K-1) unit logits -> (B, K) log-probabilities of the stick-breaking model."""
    log_s = F.logsigmoid(g)  # (B, K-1) log s_k
    log_rest = F.logsigmoid(-g)  # (B, K-1) log (1 - s_k)
    # prod_{j<k}(1 - s_j) for k = 1..K, as an exclusive cumulative sum in log space.
    before = torch.cat([torch.zeros_like(g[:, :1]), torch.cumsum(log_rest, dim=1)], dim=1)  # (B, K)
    return before + torch.cat([log_s, torch.zeros_like(g[:, :1])], dim=1)


@register("nsb")
class NeuronStickBreaking(nn.Module):
    @dataclass(frozen=True)
    class Config:
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.head = nn.Linear(self.encoder.dim, info.num_classes - 1)

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        return {"features": feat, "log_probs": stick_breaking_log_probs(self.head(feat))}  # (B, K)

    def loss(self, out: dict, batch: dict) -> dict:
        nll = F.nll_loss(out["log_probs"], batch["label"])
        return {"loss": nll, "nll": nll}

    def predict(self, out: dict):
        return out["log_probs"].exp()
