"""The image encoder every method shares: a 2-D ResNet-18 over the 32 axial slices.

torchvision's ``resnet18`` (BasicBlock, [2, 2, 2, 2]) with the stem swapped for
a 3x3 convolution, stride 1, taking the 32 slices of the 32^3 crop as input
channels, and no max-pool (as in the official CLIP-Lung release and [9, 11] of
the paper). Randomly initialised. On a (B, 32, 32, 32) crop, layer4 gives
(B, 512, 4, 4).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

FEATURE_DIM = 512


class ImageEncoder(nn.Module):
    def __init__(self, in_channels: int = 32):
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 32, H, W) -> layer4 output (B, 512, H/8, W/8)."""
        n = self.net
        x = n.relu(n.bn1(n.conv1(x)))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 32, H, W) -> pooled features (B, 512)."""
        return torch.flatten(self.net.avgpool(self.feature_map(x)), 1)
