"""The method registry: a plain dict from name to (module class, config).

A method is an ``nn.Module`` class with
  ``Config``                       a frozen dataclass, defaults = the paper's values
  ``__init__(cfg, info)``          ``info``: :class:`DataInfo` (K, class names, ...)
  ``forward(batch) -> dict``       always a dict; ``batch`` has "image" (B, 32, 32, 32),
                                   "label" (B,), "attributes" (B, 8)
  ``loss(outputs, batch) -> dict`` "loss" plus each named term (all logged)
  ``predict(outputs) -> (B, K)``   class probabilities, rows sum to 1
  ``decision_rule`` (optional)     "argmax" (default) or "median": how the metrics
                                   turn the probabilities into a class
Optionally ``version`` (int, default 1): the implementation version, raised whenever
the maths changes so that records of the old maths are never reused (it enters
every run key). Register it with ``@register("name")``; a variant is another name over the same
class with another config: ``register("name_variant", Config(...))(Class)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmarks.errors import UserError


@dataclass(frozen=True)
class DataInfo:
    num_classes: int
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]
    class_counts: tuple[int, ...]  # training examples per class (class-balanced losses)
    in_channels: int = 32


@dataclass(frozen=True)
class Method:
    name: str
    cls: type
    config: object  # an instance of cls.Config

    @property
    def version(self) -> int:
        """Implementation version of the class (1 unless it says otherwise)."""
        return int(getattr(self.cls, "version", 1))

    @property
    def variant_of(self) -> str | None:
        """The name of the method this is a variant of (None for a base method)."""
        base = self.cls.__dict__.get("_registered_as")
        return None if base == self.name else base


REGISTRY: dict[str, Method] = {}


def register(name: str, config=None):
    """Class decorator: register ``cls`` under ``name`` (with ``config`` or ``cls.Config()``)."""

    def deco(cls):
        if name in REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        cfg = cls.Config() if config is None else config
        if not isinstance(cfg, cls.Config):
            raise TypeError(f"config of {name!r} must be a {cls.__name__}.Config")
        if "_registered_as" not in cls.__dict__:
            cls._registered_as = name
        REGISTRY[name] = Method(name, cls, cfg)
        return cls

    return deco


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}; known methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def build(name: str, info: DataInfo, cfg=None):
    """Instantiate method ``name`` for data ``info`` (with its registered config unless given)."""
    m = get_method(name)
    return m.cls(m.config if cfg is None else cfg, info)
