"""CLIP baseline [16]: fixed, hand-written class prompts through the frozen text encoder.

    C_k = g("a nodule image of {class_k}.")            (K, d), encoded once per run
    z   = W_p f(x)                                      (B, d), pooled layer4 -> text width
    L   = L_CE(head(f(x)), y) + L_IC(z, C, y),   L_IC = CE( cos(z, C_k) / tau , y )

with tau learnable, initialised at 0.07. On LIDC-C the prompts are benign and
malignant only. Prediction (and so every reported metric) uses the linear
head, as for CLIP-Lung: inference costs what CE costs and never runs the text
encoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from benchmarks.config import Checked
from benchmarks.space import Float
from clip_lung.losses import image_class_loss
from clip_lung.text import ENCODERS
from methods.backbones import DEFAULT_BACKBONE
from methods.registry import register
from methods.text_guided import TextGuided


@register("clip")
class CLIPBaseline(TextGuided):
    @dataclass(frozen=True)
    class Config(Checked):
        RANGES = {"init_temperature": "[0.01, inf)"}
        CHOICES = {"text_encoder": ENCODERS}
        # Tuned (benchmarks.tune): the initial temperature; plus lr, weight decay.
        SEARCH = {"init_temperature": Float(0.01, 0.2, log=True)}

        text_encoder: str = "clip-vit-b16"
        text_weights: str = "openai"
        init_temperature: float = 0.07
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

    def __init__(self, cfg: Config, info):
        super().__init__(cfg, info)
        self.class_texts = tuple(f"a nodule image of {c}." for c in info.class_names)
        self.proj = nn.Linear(self.encoder.dim, self.text.encoder.dim)

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        out = {"features": feat, "logits": self.head(feat)}
        if self.training:
            out["image_text"] = self.proj(feat)[:, None, :]  # (B, 1, d)
        return out

    def loss(self, out: dict, batch: dict) -> dict:
        ce = F.cross_entropy(out["logits"], batch["label"])
        classes = self.text.fixed(self.class_texts, out["image_text"].device)  # (K, d)
        ic = image_class_loss(out["image_text"], classes, batch["label"], self.temperature())
        return {"loss": ce + ic, "ce": ce, "ic": ic}
