"""Image encoders (backbones): a registry with one small interface, a choice of every method.

A backbone turns a crop (B, 32, 32, 32), axes (slice, row, col), into
  ``feature_map(x) -> (B, C, h, w)``  a 2-D map (what CLIP-Lung's channel-wise
                                      prompts split into groups, Grad-CAM reads);
  ``forward(x) -> (B, C)``            the pooled feature every head reads;
and says ``dim`` (C) and ``map_hw`` ((h, w) of the map on a 32^3 crop).
Register one with ``@register_backbone("name")`` on a class taking
``in_channels`` (the crop's slices, 32); every method builds its encoder with
``build_backbone(cfg.backbone)``, so ``--set backbone=NAME`` works for all of
them, plugins' backbones included. Randomly initialised, as in the paper.

Built in:
  resnet18_2d   the paper's: torchvision ResNet-18 over the 32 axial slices as
                input channels, 3x3 stride-1 stem, no max-pool (as in the official
                CLIP-Lung release and [9, 11] of the paper); map (512, 4, 4).
  r3d_18        3-D: torchvision's video ResNet-18 (R3D-18, Tran et al., CVPR 2018)
                on the crop as one-channel volume, its own stem (3x7x7, stride
                1x2x2, no pooling); layer4 is (512, 4, 2, 2) on 32^3, averaged
                over depth to the 2-D map (512, 2, 2).
  mv3_resnet18  multi-view (2.5-D): one ResNet-18 as in resnet18_2d, shared by the
                three orthogonal views of the cube (the slices of each axis as
                channels: axial, coronal, sagittal), the views' maps averaged
                (view pooling, as in multi-view CNNs, Su et al., ICCV 2015);
                map (512, 4, 4), three times the cost of resnet18_2d.
Only resnet18_2d keeps the crop's (row, col) plane in its map, so Grad-CAM
figures need it.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.errors import UserError
from methods.registry import current_plugin

DEFAULT_BACKBONE = "resnet18_2d"  # the paper's image encoder: every method's default
BACKBONES: dict[str, type] = {}
ORIGIN: dict[str, dict | None] = {}  # name -> the plugin that registered it (None: built in)


def register_backbone(name: str):
    """Class decorator: register an image encoder under ``name`` (duplicate names raise)."""

    def deco(cls):
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = cls
        ORIGIN[name] = current_plugin()
        return cls

    return deco


def build_backbone(name: str, in_channels: int = 32) -> nn.Module:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](in_channels)


def _resnet18_trunk(in_channels: int) -> nn.Module:
    """torchvision ResNet-18 with a 3x3 stride-1 stem over ``in_channels`` and no max-pool or fc."""
    from torchvision.models import resnet18  # noqa: PLC0415  (0.9 s: only where a model is built, not for tables or status)

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _trunk_map(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C_in, H, W) -> layer4 output (B, 512, H/8, W/8)."""
    x = net.relu(net.bn1(net.conv1(x)))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class Backbone(nn.Module):
    """Shared by the built-ins: ``forward`` is the global average of ``feature_map``."""

    dim = 512
    map_hw = (4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.feature_map(x), 1), 1)  # (B, C)


@register_backbone("resnet18_2d")
class ResNet18Slices(Backbone):
    def __init__(self, in_channels: int = 32):
        super().__init__()
        self.net = _resnet18_trunk(in_channels)  # attribute name kept: saved weights say "encoder.net.*"

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return _trunk_map(self.net, x)  # (B, 32, 32, 32) -> (B, 512, 4, 4)


@register_backbone("r3d_18")
class ResNet18Volume(Backbone):
    map_hw = (2, 2)

    def __init__(self, in_channels: int = 32):
        super().__init__()
        from torchvision.models.video import r3d_18  # noqa: PLC0415  (as resnet18 above)

        net = r3d_18(weights=None)
        stem = net.stem[0]  # Conv3d(3, 64, (3, 7, 7), stride (1, 2, 2)): one grey channel instead of RGB
        net.stem[0] = nn.Conv3d(1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        nn.init.kaiming_normal_(net.stem[0].weight, mode="fan_out", nonlinearity="relu")
        net.fc = nn.Identity()
        self.net = net

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        v = n.layer4(n.layer3(n.layer2(n.layer1(n.stem(x[:, None])))))  # (B, 1, 32, 32, 32) -> (B, 512, 4, 2, 2)
        return v.mean(2)  # over depth: (B, 512, 2, 2)


@register_backbone("mv3_resnet18")
class ResNet18ThreeViews(Backbone):
    def __init__(self, in_channels: int = 32):
        super().__init__()
        self.net = _resnet18_trunk(in_channels)  # one trunk for the three views (the cube's sides are equal)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        # (3B, 32, 32, 32): axial (slices as channels), coronal (rows), sagittal (cols).
        views = torch.cat([x, x.permute(0, 2, 1, 3), x.permute(0, 3, 1, 2)]).contiguous()
        return _trunk_map(self.net, views).reshape(3, b, self.dim, *self.map_hw).mean(0)  # (B, 512, 4, 4)
