"""Named profiles: plain functions returning the training config (and method overrides).

  paper   the paper's schedule: 100 epochs, batch 32, SGD lr 1e-3 cosine, every
          training nodule (GPU work: ~1.5 s a step on this 2-core CPU)
  quick   a CPU demo of a few minutes per fold: 6 epochs on a stratified subset
          of 768 training nodules (24 steps an epoch); the test fold is whole
  smoke   tests and CI: 2 epochs on 96 training nodules (3 steps an epoch);
          the test fold is whole

quick and smoke change only how long and on how much the model trains, and
the text-guided methods use the offline ``minilm-l6`` text encoder instead of
the paper's ``clip-vit-b16`` (whose weights come from a model hub); the
optimiser, learning rate, schedule, augmentation and image model are the
paper's. Their numbers are a check that everything runs, not results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.config import TrainConfig
from benchmarks.errors import UserError


@dataclass(frozen=True)
class Profile:
    name: str
    train: TrainConfig
    method_overrides: dict = field(default_factory=dict)  # method config fields set by the profile


def paper() -> Profile:
    return Profile("paper", TrainConfig())


# quick and smoke run offline: the bundled MiniLM instead of CLIP weights from a model hub.
OFFLINE_TEXT = {"text_encoder": "minilm-l6"}


def quick() -> Profile:
    return Profile("quick", TrainConfig(epochs=6, train_limit=768), OFFLINE_TEXT)


def smoke() -> Profile:
    return Profile("smoke", TrainConfig(epochs=2, train_limit=96), OFFLINE_TEXT)


PROFILES = {"paper": paper, "quick": quick, "smoke": smoke}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]()
