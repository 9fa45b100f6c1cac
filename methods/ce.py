"""Cross-entropy baseline ("CE Loss" in Tables 1-2 of the paper).

    p = softmax(W f(x) + b),  L_CE = -log p_y
with f the shared ResNet-18 encoder's pooled feature (B, 512).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from methods.backbones import DEFAULT_BACKBONE, build_backbone
from methods.registry import register


@register("ce")
class CrossEntropy(nn.Module):
    @dataclass(frozen=True)
    class Config:
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.head = nn.Linear(self.encoder.dim, info.num_classes)

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        return {"features": feat, "logits": self.head(feat)}  # logits (B, K)

    def loss(self, out: dict, batch: dict) -> dict:
        ce = F.cross_entropy(out["logits"], batch["label"])
        return {"loss": ce, "ce": ce}

    def predict(self, out: dict):
        return out["logits"].softmax(-1)
