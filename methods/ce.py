"""Cross-entropy baseline ("CE Loss" in Tables 1-2 of the paper).

    p = softmax(W f(x) + b),  L_CE = -log p_y
with f the shared ResNet-18 encoder's pooled feature (B, 512).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from methods.encoder import FEATURE_DIM, ImageEncoder
from methods.registry import register


@register("ce")
class CrossEntropy(nn.Module):
    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(info.in_channels)
        self.head = nn.Linear(FEATURE_DIM, info.num_classes)

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, 512)
        return {"features": feat, "logits": self.head(feat)}  # logits (B, K)

    def loss(self, out: dict, batch: dict) -> dict:
        ce = F.cross_entropy(out["logits"], batch["label"])
        return {"loss": ce, "ce": ce}

    def predict(self, out: dict):
        return out["logits"].softmax(-1)
