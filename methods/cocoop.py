"""CoCoOp baseline (Zhou et al., "Conditional prompt learning for vision-language
models", CVPR 2022) [20].

T = 4 learnable context vectors l_t; a meta-net m (d -> d/16 -> width, one
hidden layer) turns the image feature into one bias pi(x) added to every
context vector; per sample and class the prompt
``[SOS] (l_1 + pi) .. (l_T + pi) {class} . [EOT]`` goes through the frozen text
encoder:

    z    = W_p f(x)                        (B, d)
    C_k  = g([SOS], l + pi(z), class_k)     (B, K, d)
    L    = L_CE(head(f(x)), y) + CE( cos(z, C_k(x)) / tau , y )

Choices: the meta-net reads z (the image feature projected to the text width
d), so the same module serves 512-d CLIP and 384-d MiniLM; tau is learnable,
initialised at 0.07; context vectors start from N(0, 0.02^2) (CoOp's generic
initialisation). Prediction uses the linear head (see ``clip``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from benchmarks.config import Checked
from benchmarks.space import Choice, Float
from clip_lung.losses import image_class_loss
from clip_lung.prompts import ClassPrompts, mlp
from clip_lung.text import ENCODERS
from methods.backbones import DEFAULT_BACKBONE
from methods.registry import register
from methods.text_guided import TextGuided


@register("cocoop")
class CoCoOp(TextGuided):
    @dataclass(frozen=True)
    class Config(Checked):
        RANGES = {"n_ctx": "[1, 32]", "init_temperature": "[0.01, inf)"}
        CHOICES = {"text_encoder": ENCODERS}
        # Tuned (benchmarks.tune): context length and initial temperature; plus lr, weight decay.
        SEARCH = {"n_ctx": Choice((2, 4, 8)), "init_temperature": Float(0.01, 0.2, log=True)}

        text_encoder: str = "clip-vit-b16"
        text_weights: str = "openai"
        n_ctx: int = 4
        init_temperature: float = 0.07
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

    def __init__(self, cfg: Config, info):
        super().__init__(cfg, info)
        d, width = self.text.encoder.dim, self.text.encoder.width
        self.proj = nn.Linear(self.encoder.dim, d)
        self.meta_net = mlp(d, d // 16, width)
        self.prompts = ClassPrompts(self.text, info.class_names, cfg.n_ctx)

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        out = {"features": feat, "logits": self.head(feat)}
        if self.training:
            z = self.proj(feat)  # (B, d)
            out["image_text"] = z[:, None, :]  # (B, 1, d)
            out["class_text"] = self.prompts.features(self.meta_net(z)[:, None, :])  # (B, K, d)
        return out

    def loss(self, out: dict, batch: dict) -> dict:
        ce = F.cross_entropy(out["logits"], batch["label"])
        ic = image_class_loss(out["image_text"], out["class_text"], batch["label"], self.temperature())
        return {"loss": ce + ic, "ce": ce, "ic": ic}
