"""Attribute weighting (Eq. 1) and the three alignment losses of CLIP-Lung (Eqs. 2-4).

Notation: F (B, T, d) image features (T channel groups; T = 1 for one pooled
feature), C (B, K, d) or (K, d) class text features, A (M, d) attribute text
features, w (B, M) attribute weights, y (B,) labels, cos the cosine
similarity, tau a learnable temperature (``scale`` = 1 / tau).

Reading of Eqs. 3-4: cosine similarity is scale-invariant, so the weight
inside sigma(F_t, w_m A_m) as printed changes nothing; the weights enter as the
target distribution of the softmax over attributes instead.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip_lung.text import cosine_logits

MAX_LOGIT_SCALE = 100.0  # as CLIP: 1 / tau never above 100


class LearnableTemperature(nn.Module):
    """tau, learnable, initialised at ``init``; stored as log(1 / tau) like CLIP's logit scale."""

    def __init__(self, init: float = 0.07):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))

    def forward(self) -> torch.Tensor:
        """1 / tau, clamped at 100."""
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def attribute_weights(values: torch.Tensor) -> torch.Tensor:
    """Eq. 1: w_m = exp(v_m) / sum_m' exp(v_m'), v (B, M) the mean annotated values -> (B, M)."""
    return torch.softmax(values.float(), dim=-1)


def image_class_loss(feats: torch.Tensor, classes: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_IC (Eq. 2): mean over t of CE( cos(F_t, C_k) / tau over k , y ).

    feats (B, T, d); classes (B, K, d) per-sample or (K, d) shared; y (B,).
    """
    logits = cosine_logits(feats, classes, scale)  # (B, T, K)
    b, t, k = logits.shape
    return F.cross_entropy(logits.reshape(b * t, k).float(), y.repeat_interleave(t))


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_m target_m log softmax_m(logits); logits (..., M), target broadcastable; mean over the rest."""
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def image_attribute_loss(feats: torch.Tensor, attrs: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_IA (Eq. 3): mean over t of CE( softmax_m cos(F_t, A_m) / tau , w ).

    feats (B, T, d); attrs (M, d); w (B, M).
    """
    logits = cosine_logits(feats, attrs, scale)  # (B, T, M)
    return _soft_ce(logits, w[:, None, :])


def class_attribute_loss(own_class: torch.Tensor, attrs: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_CA (Eq. 4): CE( softmax_m cos(C_y, A_m) / tau , w ) with C_y the sample's own class feature.

    own_class (B, d); attrs (M, d); w (B, M).
    """
    logits = cosine_logits(own_class, attrs, scale)  # (B, M)
    return _soft_ce(logits, w)
