"""Attribute weighting (Eq. 1) and the three alignment losses of CLIP-Lung (Eqs. 2-4).

Notation: F (B, T, d) image features (T channel groups; T = 1 for one pooled
feature), C (B, K, d) or (K, d) class text features, A (M, d) attribute text
features, w (B, M) attribute weights, y (B,) labels, cos the cosine
similarity, tau a learnable temperature (``scale`` = 1 / tau).

Reading of Eqs. 3-4: cosine similarity is scale-invariant, so the weight
inside sigma(F_t, w_m A_m) as printed changes nothing; the weights enter as the
target distribution of the softmax over attributes instead. The sums over the
T groups (Eqs. 2-3) and over the K classes (Eq. 4) are kept as printed; the
expectation of Eq. 5 is the mean over the batch.
"""
from __future__ import annotations

import math

import torch
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


def _reduce_groups(per_group: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, T) per-sample, per-group losses -> scalar: sum over t (Eqs. 2-3 as printed) or
    mean over t, then the expectation over the batch (Eq. 5)."""
    if reduction == "sum":
        return per_group.sum(1).mean()
    if reduction == "mean":
        return per_group.mean()
    raise ValueError(f"group reduction must be 'sum' or 'mean', got {reduction!r}")


def image_class_loss(feats: torch.Tensor, classes: torch.Tensor, y: torch.Tensor, scale: torch.Tensor,
                     reduction: str = "sum") -> torch.Tensor:
    """L_IC (Eq. 2): -sum_t log softmax_k( cos(F_t, C_k) / tau )_y, averaged over the batch.

    feats (B, T, d); classes (B, K, d) per-sample or (K, d) shared; y (B,).
    ``reduction="mean"`` divides by T (the mean over the groups instead of the sum).
    """
    logits = cosine_logits(feats, classes, scale).float()  # (B, T, K)
    logp = torch.log_softmax(logits, dim=-1)
    per_group = -logp.gather(-1, y[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(-1)  # (B, T)
    return _reduce_groups(per_group, reduction)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_m target_m log softmax_m(logits), over the last dim: logits (..., M), target broadcastable -> (...)."""
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1)


def image_attribute_loss(feats: torch.Tensor, attrs: torch.Tensor, w: torch.Tensor, scale: torch.Tensor,
                         reduction: str = "sum") -> torch.Tensor:
    """L_IA (Eq. 3): -sum_t sum_m w_m log softmax_m( cos(F_t, A_m) / tau ), averaged over the batch.

    feats (B, T, d); attrs (M, d); w (B, M). ``reduction="mean"``: mean over t.
    """
    logits = cosine_logits(feats, attrs, scale)  # (B, T, M)
    return _reduce_groups(_soft_ce(logits, w[:, None, :]), reduction)


def class_attribute_loss(class_feats: torch.Tensor, attrs: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_CA (Eq. 4): -sum_k sum_m w_m log softmax_m( cos(C_k, A_m) / tau ), averaged over the batch.

    class_feats (B, K, d) sums over the K class features as printed; (B, d) takes one
    class feature per sample (the ``ca_classes="own"`` option: C_y). attrs (M, d); w (B, M).
    """
    logits = cosine_logits(class_feats, attrs, scale)  # (B, K, M) or (B, M)
    if class_feats.dim() == 3:
        return _soft_ce(logits, w[:, None, :]).sum(1).mean()
    return _soft_ce(logits, w).mean()
