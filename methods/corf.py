"""Convolutional ordinal regression forest (Zhu et al., TNNLS 2021) [21].

A differentiable forest on the encoder's pooled feature f(x) (B, 512):

  split units   u = W f(x) + b, U units (``units``);
  split nodes   each tree t owns a fixed random subset of 2^D - 1 units
                (drawn once at construction), d_n(x) = sigma(u_{phi_t(n)});
  routing       mu_l(x) = prod over the path to leaf l of d_n or 1 - d_n;
  leaves        pi_l in [0, 1]^{K-1}, the cumulative probabilities P(y > k),
                made non-increasing in k by construction:
                pi_{l,1} = sigma(a_{l,1}),  pi_{l,k} = pi_{l,k-1} sigma(a_{l,k});
  tree          c_t(x) = sum_l mu_l(x) pi_l;  forest c(x) = mean_t c_t(x).

Loss: the cumulative binary cross-entropies of each tree, averaged over trees,
    L = mean_t sum_{k=1}^{K-1} BCE(c_{t,k}(x), [y > k]),
trained end to end with the network (the paper's alternative of updating the
leaves in closed form is not used: one optimiser for everything, as in every
other method here). Class probabilities from the forest's cumulative ones:
    p_1 = 1 - c_1,  p_k = c_{k-1} - c_k,  p_K = c_{K-1}
(non-negative because every pi_l, and so c, is non-increasing).

Decision (``decision``): "count" (default) predicts the number of forest
cumulative probabilities above 1/2, y_hat = sum_k [c_k(x) > 0.5], the rule of
ordinal regression by K-1 binary tasks (Niu et al., CVPR 2016; Cao et al.,
CORAL, 2020) that CORF's cumulative leaves come from; since c is
non-increasing it is the median of p. "argmax" predicts the mode of p, this
suite's rule before implementation version 2 (no source prints it for CORF).
The probabilities, and so AUC, are the same under both.
Defaults: 5 trees of depth 5 (31 split nodes, 32 leaves each) on U = 256
split units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.config import Checked
from benchmarks.errors import UserError
from benchmarks.space import Int
from methods.backbones import DEFAULT_BACKBONE, build_backbone
from methods.registry import register


def cumulative_to_probs(c: torch.Tensor) -> torch.Tensor:
    """(B, K-1) non-increasing P(y > k) -> (B, K) class probabilities."""
    ones = torch.ones_like(c[:, :1])
    zeros = torch.zeros_like(c[:, :1])
    return (torch.cat([ones, c], 1) - torch.cat([c, zeros], 1)).clamp_min(0)


def routing(d: torch.Tensor, depth: int) -> torch.Tensor:
    """Split probabilities (B, T, 2^D - 1), nodes in breadth-first order -> leaf probabilities (B, T, 2^D)."""
    b, t, _ = d.shape
    mu = d.new_ones(b, t, 1)
    for level in range(depth):
        first = 2**level - 1
        dl = d[:, :, first : first + 2**level]  # (B, T, 2^level)
        mu = torch.stack([mu * dl, mu * (1 - dl)], dim=-1).reshape(b, t, 2 ** (level + 1))
    return mu


DECISIONS = {"count": "median", "argmax": "argmax"}  # config word -> rule of benchmarks.metrics.decide


@register("corf")
class OrdinalRegressionForest(nn.Module):
    version = 2  # 2: counting decision by default; 1: argmax of p

    @dataclass(frozen=True)
    class Config(Checked):
        RANGES = {"trees": "[1, 1024]", "depth": "[1, 12]", "units": "[1, inf)"}
        CHOICES = {"decision": tuple(DECISIONS)}
        # Tuned (benchmarks.tune): the forest's size and depth; plus lr, weight decay.
        SEARCH = {"trees": Int(1, 10), "depth": Int(3, 7)}

        trees: int = 5
        depth: int = 5
        units: int = 256
        decision: str = "count"  # "count" of c_k > 0.5 (= median of p) or "argmax" of p
        backbone: str = DEFAULT_BACKBONE  # image encoder (methods/backbones.py)

        def __post_init__(self):
            super().__post_init__()
            if self.units < 2**self.depth - 1:
                raise UserError(f"units={self.units} is out of range: corf needs units >= 2^depth - 1 = {2**self.depth - 1}")

    def __init__(self, cfg: Config, info):
        super().__init__()
        self.cfg = cfg
        n_split = 2**cfg.depth - 1
        self.encoder = build_backbone(cfg.backbone, info.in_channels)
        self.split_units = nn.Linear(self.encoder.dim, cfg.units)
        # Each tree's fixed random subset of split units (drawn from the run's seeded RNG).
        subsets = torch.stack([torch.randperm(cfg.units)[:n_split] for _ in range(cfg.trees)])
        self.register_buffer("subsets", subsets)  # (T, 2^D - 1)
        # Leaves start spread out (N(0, 2^2) logits): identical leaves would give the routing nothing to choose between.
        self.leaf_logits = nn.Parameter(2.0 * torch.randn(cfg.trees, 2**cfg.depth, info.num_classes - 1))

    @property
    def decision_rule(self) -> str:
        return DECISIONS[self.cfg.decision]

    def leaf_cumulative(self) -> torch.Tensor:
        """(T, L, K-1) non-increasing in k."""
        return torch.exp(torch.cumsum(F.logsigmoid(self.leaf_logits), dim=-1))

    def forward(self, batch: dict) -> dict:
        feat = self.encoder(batch["image"])  # (B, C)
        u = self.split_units(feat)  # (B, U)
        d = torch.sigmoid(u[:, self.subsets])  # (B, T, 2^D - 1)
        mu = routing(d, self.cfg.depth)  # (B, T, L)
        per_tree = torch.einsum("btl,tlk->btk", mu, self.leaf_cumulative())  # (B, T, K-1)
        return {"features": feat, "tree_cumulative": per_tree, "cumulative": per_tree.mean(1)}

    def loss(self, out: dict, batch: dict) -> dict:
        # In float32 and written out: F.binary_cross_entropy refuses to run under autocast.
        c = out["tree_cumulative"].float().clamp(1e-6, 1 - 1e-6)  # (B, T, K-1)
        k = torch.arange(c.shape[-1], device=c.device)
        target = (batch["label"][:, None] > k[None, :]).float()[:, None, :]  # (B, 1, K-1)  [y > k]
        bce = -(target * torch.log(c) + (1 - target) * torch.log1p(-c))
        loss = bce.sum(-1).mean()  # sum over k, mean over trees and batch
        return {"loss": loss, "cumulative_bce": loss}

    def predict(self, out: dict):
        p = cumulative_to_probs(out["cumulative"])
        return p / p.sum(1, keepdim=True)
