"""What the text-guided methods (CLIP, CoCoOp, CLIP-Lung) share.

A frozen text branch (kept out of the state dict, see ``clip_lung.prompts``),
the image encoder with the linear head that makes every prediction (inference
never runs the text encoder), and the learnable temperature of the alignment
losses. Subclasses add their projections and prompt learners after
``super().__init__`` and write ``forward`` and ``loss``; their Config needs
``text_encoder``, ``text_weights``, ``init_temperature`` and ``backbone``.
"""
from __future__ import annotations

from torch import nn

from clip_lung.losses import LearnableTemperature
from clip_lung.prompts import TextBranch
from methods.backbones import build_backbone


class TextGuided(nn.Module):
    def __init__(self, cfg, info):
        super().__init__()
        self.cfg = cfg
        self.text = TextBranch(cfg.text_encoder, cfg.text_weights)
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.head = nn.Linear(self.encoder.dim, info.num_classes)
        # No random draw: building it here keeps every subclass's initialisation as before.
        self.temperature = LearnableTemperature(cfg.init_temperature)

    @property
    def text_encoder_name(self) -> str:
        return self.text.label

    def predict(self, out: dict):
        return out["logits"].softmax(-1)
