"""The training config, overrides from the command line (``--set key=value``) and value checks.

Values are parsed with ``ast.literal_eval`` (``lr=0.01``, ``augment=False``,
``text_encoder='minilm-l6'``; a bare word is taken as a string), checked
against the field's type, and applied with ``dataclasses.replace``. A key may
name a field of the training config or of the method's config; names are
unique across the two, and an unknown key is rejected with the known ones.

Value checks (:class:`Checked`): a config class lists the valid interval of
its numeric fields in ``RANGES`` ("[1, inf)", "(0, 1)": brackets include the
end, parentheses exclude it) and the valid words of its string fields in
``CHOICES``; every float must be finite. The check runs when a config is
made (so a bad value stops a run before any work) and ends in one line naming
the field, its value and the valid range.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
import typing

from benchmarks.errors import UserError

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


def in_interval(value, interval: str) -> bool:
    """Whether ``value`` lies in ``interval`` ("[0, 1)", "(0, inf)", ...)."""
    m = _INTERVAL.match(interval)
    if not m:
        raise ValueError(f"bad interval {interval!r}")
    lo, hi = float(m.group(2)), float(m.group(3))
    above = value >= lo if m.group(1) == "[" else value > lo
    below = value <= hi if m.group(4) == "]" else value < hi
    return above and below


def check_config(cfg) -> None:
    """Every field of a config dataclass in its range (``RANGES``), among its words
    (``CHOICES``), and every float finite; one UserError line otherwise."""
    ranges = getattr(cfg, "RANGES", {})
    choices = getattr(cfg, "CHOICES", {})
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{f.name}={v!r} is not a finite number")
        if f.name in ranges and isinstance(v, (int, float)) and not isinstance(v, bool) and not in_interval(v, ranges[f.name]):
            raise UserError(f"{f.name}={v!r} is out of range: valid {ranges[f.name]}")
        if f.name in choices and v not in choices[f.name]:
            raise UserError(f"{f.name}={v!r} is not one of {', '.join(map(repr, choices[f.name]))}")


class Checked:
    """Base of config dataclasses: ``RANGES`` and ``CHOICES`` are checked when one is made.

    A subclass that needs a check across fields overrides ``__post_init__`` and
    calls ``super().__post_init__()`` first.
    """

    RANGES: typing.ClassVar[dict[str, str]] = {}
    CHOICES: typing.ClassVar[dict[str, tuple]] = {}

    def __post_init__(self):
        check_config(self)


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string


def _check_type(key: str, value, annotation):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            try:
                return _check_type(key, value, a)
            except UserError:
                continue
        raise UserError(f"--set {key}: {value!r} is not a {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise UserError(f"--set {key}: expected None")
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, (tuple, list)):
        return tuple(value)
    base = origin or annotation
    if isinstance(base, type) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise UserError(f"--set {key} expects {name}, got {value!r} ({type(value).__name__})")


def field_types(cfg) -> dict[str, object]:
    hints = typing.get_type_hints(type(cfg))
    return {f.name: hints[f.name] for f in dataclasses.fields(cfg)}


def apply_overrides(configs: dict[str, object], sets: list[str]) -> dict[str, object]:
    """``configs``: {"train": TrainConfig, "method": Method.Config}; returns them updated."""
    configs = dict(configs)
    owners: dict[str, str] = {}
    for part, cfg in configs.items():
        for name in field_types(cfg):
            owners.setdefault(name, part)
    for item in sets or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in owners:
            raise UserError(f"unknown --set key {key!r}; known keys: {', '.join(sorted(owners))}")
        part = owners[key]
        value = _check_type(key, _parse_value(text.strip()), field_types(configs[part])[key])
        try:
            configs[part] = dataclasses.replace(configs[part], **{key: value})
        except UserError as e:
            raise UserError(f"--set {e}") from None
    for cfg in configs.values():
        try:
            check_config(cfg)  # also configs whose class is not a Checked (a plugin's)
        except UserError as e:
            raise UserError(f"--set {e}") from None
    return configs


@dataclasses.dataclass(frozen=True)
class TrainConfig(Checked):
    RANGES = {"epochs": "[1, inf)", "batch_size": "[1, inf)", "lr": "(0, inf)", "momentum": "[0, 1)",
              "weight_decay": "[0, inf)", "ema_decay": "[0, 1)", "train_limit": "[0, inf)", "eval_every": "[0, inf)",
              "eval_batch_size": "[1, inf)"}

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-5
    augment: bool = True
    ema_decay: float = 0.0  # 0: off; the official release evaluated an EMA with 0.999
    train_limit: int = 0  # 0: every training nodule; n: a stratified subset of n (quick, smoke)
    eval_every: int = 0  # add test metrics to the history every n epochs (curves only)
    eval_batch_size: int = 128
    amp: bool = False  # bfloat16 autocast on CUDA (slower for these small models: benchmarks/train.py); ignored on the CPU
