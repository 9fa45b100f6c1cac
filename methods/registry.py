"""The method registry: a plain dict from name to (module class, config).

A method is an ``nn.Module`` class with
  ``Config``                       a frozen dataclass, defaults = the paper's values
  ``__init__(cfg, info)``          ``info``: :class:`DataInfo` (K, class names, ...)
  ``forward(batch) -> dict``       always a dict; ``batch`` has "image" (B, 32, 32, 32),
                                   "label" (B,), "attributes" (B, 8)
  ``loss(outputs, batch) -> dict`` "loss" plus each named term (all logged)
  ``predict(outputs) -> (B, K)``   class probabilities, rows sum to 1
Optional class attributes, each with its default:
  ``version`` (int, 1)             the implementation version, raised whenever the maths
                                   changes so that records of the old maths are never
                                   reused (it enters every run key; tables leave older
                                   versions' records out, with a warning naming them)
  ``decision_rule`` ("argmax")     "argmax" or "median": how the metrics turn the
                                   probabilities into a class (benchmarks/metrics.py)
  ``label`` (None)                 the row label of tables and figures (None: the
                                   registered name); a method outside the paper's
                                   tables is shown as "<label> (not in the paper)"
The image encoder is ``methods.backbones.build_backbone(cfg.backbone)``
(a ``backbone`` field in the Config, default "resnet18_2d", makes every backbone
available). Register it with ``@register("name")``; a variant is another name over
the same class with another config: ``register("name_variant", Config(...))(Class)``.

Methods from outside the package come in as plugins (``benchmarks.plugins``): a
method registered while a plugin is imported carries that plugin's name and
version (or file hash) as its ``origin``, and :func:`check_interface` refuses
one that breaks the interface above.
"""
from __future__ import annotations

import dataclasses
import typing
from contextlib import contextmanager
from dataclasses import dataclass

from benchmarks.errors import UserError, unknown_method

_LOADING: list[dict] = []  # the plugin being imported (innermost last)


def current_plugin() -> dict | None:
    """{"plugin": name, "version" or "sha256": ...} of the plugin being imported, else None."""
    return dict(_LOADING[-1]) if _LOADING else None


@contextmanager
def loading_plugin(origin: dict):
    """Tag everything registered inside the block with ``origin``."""
    _LOADING.append(origin)
    try:
        yield
    finally:
        _LOADING.pop()


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
    origin: dict | None = None  # the plugin that registered it (None: built in)

    @property
    def version(self) -> int:
        """Implementation version of the class (1 unless it says otherwise)."""
        return int(getattr(self.cls, "version", 1))

    @property
    def label(self) -> str:
        """The row label of tables and figures: the class's ``label``, else the registered name."""
        label = getattr(self.cls, "label", None)
        return label if isinstance(label, str) and label.strip() else self.name

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
        REGISTRY[name] = Method(name, cls, cfg, current_plugin())
        return cls

    return deco


def check_interface(m: Method) -> str | None:
    """What is wrong with method ``m`` against the interface above, or None."""
    from torch import nn  # noqa: PLC0415

    from benchmarks.train import TrainConfig  # noqa: PLC0415

    if not (isinstance(m.cls, type) and issubclass(m.cls, nn.Module)):
        return "it is not a torch.nn.Module class"
    cfg_cls = getattr(m.cls, "Config", None)
    if not (isinstance(cfg_cls, type) and dataclasses.is_dataclass(cfg_cls)):
        return "its Config is not a dataclass"
    if not cfg_cls.__dataclass_params__.frozen:
        return "its Config dataclass is not frozen (@dataclass(frozen=True))"
    if m.cls.forward is nn.Module.forward:
        return "it has no forward() method"
    for fn in ("loss", "predict"):
        if not callable(getattr(m.cls, fn, None)):
            return f"it has no {fn}() method"
    try:
        typing.get_type_hints(cfg_cls)
    except Exception as e:  # noqa: BLE001  an annotation that cannot be resolved breaks --set
        return f"its Config's type annotations cannot be resolved ({e})"
    shadow = {f.name for f in dataclasses.fields(cfg_cls)} & {f.name for f in dataclasses.fields(TrainConfig)}
    if shadow:
        return f"its Config field(s) {', '.join(sorted(shadow))} shadow the training config's"
    return None


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise UserError(unknown_method(name, REGISTRY))
    return REGISTRY[name]


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def build(name: str, info: DataInfo, cfg=None):
    """Instantiate method ``name`` for data ``info`` (with its registered config unless given)."""
    m = get_method(name)
    return m.cls(m.config if cfg is None else cfg, info)
