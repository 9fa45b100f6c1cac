"""Prompt learners and fixed prompts over a frozen text encoder.

The frozen encoder is kept out of the method's registered submodules: it is
not in the state dict (checkpoints and saved weights stay small), not in the
optimiser, and never switched to train mode. :class:`TextBranch` moves it to
the device of the first input it sees.
"""
from __future__ import annotations

import torch
from torch import nn

from clip_lung.text import Prompts, TextEncoder, load_text_encoder

# The paper's eight attributes as words (Sec. 2.2); malignancy is the label, not an attribute.
ATTRIBUTE_WORDS = ("subtlety", "internal structure", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture")


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """One hidden layer with ReLU (CoCoOp's meta-net, CLIP-Lung's context network h)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(inplace=True), nn.Linear(d_hidden, d_out))


class TextBranch:
    """Holds the frozen encoder (unregistered) and caches features of fixed texts per device."""

    def __init__(self, name: str, weights: str = "openai"):
        self.encoder: TextEncoder = load_text_encoder(name, weights)
        self.label = f"{name}:{weights}" if name == "clip-vit-b16" else name
        self._fixed: dict[tuple, torch.Tensor] = {}

    def on(self, device: torch.device) -> TextEncoder:
        if self.encoder.device != device:
            self.encoder.to(device)
        return self.encoder

    def fixed(self, texts: tuple[str, ...], device: torch.device) -> torch.Tensor:
        """Features (P, dim) of fixed texts, encoded once per run and device."""
        key = (texts, str(device))
        if key not in self._fixed:
            with torch.autocast(device_type=device.type, enabled=False):
                self._fixed[key] = self.on(device).encode_text(list(texts)).float()
        return self._fixed[key]


class ClassPrompts(nn.Module):
    """Learnable context + class name: ``[SOS] ctx_1 .. ctx_T {class} . [EOT]``.

    ``features(bias)`` adds a per-sample bias to the context vectors (CoCoOp's
    meta-net output (B, 1, width), or CLIP-Lung's h(F_t) (B, T, width)) and
    encodes the B x K prompts: (B, K, dim).
    """

    def __init__(self, text: TextBranch, class_names: tuple[str, ...], n_ctx: int, init_std: float = 0.02):
        super().__init__()
        self.text = text
        enc = text.encoder
        self.prompts: Prompts = enc.tokenize([f"{c}." for c in class_names], n_ctx)
        with torch.no_grad():
            emb = enc.embed(self.prompts).float().cpu()  # (K, L, width)
        self.register_buffer("prefix", emb[:, :1].clone(), persistent=False)  # (K, 1, width) [SOS]
        self.register_buffer("suffix", emb[:, 1 + n_ctx :].clone(), persistent=False)  # (K, L-1-T, width)
        self.ctx = nn.Parameter(init_std * torch.randn(n_ctx, enc.width))  # (T, width) l_t
        self.n_ctx = n_ctx

    def features(self, bias: torch.Tensor) -> torch.Tensor:
        """bias (B, T or 1, width) -> class features (B, K, dim)."""
        b = bias.shape[0]
        k = self.prefix.shape[0]
        ctx = (self.ctx[None] + bias).to(self.prefix.dtype)  # (B, T, width)
        enc = self.text.on(bias.device)
        # Causal encoder: [SOS] + context computed once per sample. It saves compute, so it
        # pays on the CPU (0.89 -> 0.69 s a batch, ViT-B/16); on a GPU, where these small
        # steps are launch-bound, the extra per-layer launches cost more (14 -> 30 ms, H100).
        if enc.shares_prefix and bias.device.type == "cpu":
            head = torch.cat([self.prefix[:1].expand(b, -1, -1), ctx], 1)  # (B, 1+T, width)
            return enc.encode_shared(head, self.suffix[None].expand(b, -1, -1, -1), self.prompts)
        x = torch.cat(
            [
                self.prefix[None].expand(b, -1, -1, -1),
                ctx[:, None].expand(-1, k, -1, -1).to(self.prefix.dtype),
                self.suffix[None].expand(b, -1, -1, -1),
            ],
            dim=2,
        )  # (B, K, L, width)
        feats = enc.encode(x.reshape(b * k, *x.shape[2:]), self.prompts)  # (B*K, dim)
        return feats.reshape(b, k, -1)
