"""Search spaces: which config fields a tuner may change, and over which range.

A method declares its own beside its defaults, as a class attribute of its
``Config`` (the way ``RANGES`` and ``CHOICES`` are declared)::

    @dataclass(frozen=True)
    class Config:
        SEARCH = {"alpha": Float(0.1, 10.0, log=True), "n_ctx": Choice((2, 4, 8))}
        alpha: float = 1.0
        ...

Every method is also tuned over :data:`SHARED`, the training config's learning
rate and weight decay, so a method that declares nothing is tuned over those
alone, and every method of a table gets at least the same knobs. A method's own
entry for a shared key replaces the shared one.

The space is checked before any trial: each key names a field of the training
config or of the method's config, each range has low < high (log ranges above 0),
and the paper's default of each field lies inside its range, since the defaults
are always a study's first trial (so a tuned configuration is never worse than
the default on the validation split).

This module is plain data (no Optuna): ``benchmarks.tune`` turns it into Optuna
distributions, and a method's file can import it without paying for anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from benchmarks.errors import UserError


@dataclasses.dataclass(frozen=True)
class Float:
    """A real value in [low, high], sampled uniformly, or uniformly in log(value) with ``log``."""

    low: float
    high: float
    log: bool = False

    def check(self, where: str) -> None:
        _check_range(self.low, self.high, self.log, where)

    def contains(self, v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and self.low <= v <= self.high

    def describe(self) -> str:
        return f"{self.low:g} to {self.high:g}" + (" (log)" if self.log else "")


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in [low, high] (both included), uniform or log-uniform."""

    low: int
    high: int
    log: bool = False

    def check(self, where: str) -> None:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (self.low, self.high)):
            raise UserError(f"{where}: Int range bounds must be integers, got {self.low!r}, {self.high!r}")
        _check_range(self.low, self.high, self.log, where)

    def contains(self, v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high

    def describe(self) -> str:
        return f"{self.low} to {self.high}" + (" (log)" if self.log else "") + ", integers"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few values (numbers, words or booleans)."""

    options: tuple

    def check(self, where: str) -> None:
        if not isinstance(self.options, tuple) or len(self.options) < 2:
            raise UserError(f"{where}: a Choice needs a tuple of at least two options, got {self.options!r}")
        if len(set(map(repr, self.options))) != len(self.options):
            raise UserError(f"{where}: a Choice lists an option twice: {self.options!r}")

    def contains(self, v) -> bool:
        return any(v == o and type(v) is type(o) for o in self.options)

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))


def _check_range(low, high, log: bool, where: str) -> None:
    for x in (low, high):
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
            raise UserError(f"{where}: range bounds must be finite numbers, got {low!r} to {high!r}")
    if not low < high:
        raise UserError(f"{where}: the range's low ({low:g}) must be below its high ({high:g})")
    if log and low <= 0:
        raise UserError(f"{where}: a log range must lie above 0, got {low:g} to {high:g}")


# The training knobs every method is tuned over: SGD's learning rate and weight decay, two
# decades either side of the paper's 1e-3 and 5e-5 (the defaults, the first trial, inside).
SHARED = {"lr": Float(1e-4, 1e-1, log=True), "weight_decay": Float(1e-6, 1e-3, log=True)}


def parse_range(item: str):
    """``--range key=low:high[:log]`` or ``--range key=a,b,c`` (a choice) -> (key, distribution)."""
    import ast  # noqa: PLC0415

    if "=" not in item:
        raise UserError(f"--range expects key=low:high[:log] or key=a,b,c, got {item!r}")
    key, text = (s.strip() for s in item.split("=", 1))

    def value(s):
        try:
            return ast.literal_eval(s.strip())
        except (ValueError, SyntaxError):
            return s.strip()

    if "," in text:
        return key, Choice(tuple(value(s) for s in text.split(",")))
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
        raise UserError(f"--range {item}: expected key=low:high or key=low:high:log")
    lo, hi = value(parts[0]), value(parts[1])
    log = len(parts) == 3
    if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
        return key, Int(lo, hi, log)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)):
        raise UserError(f"--range {item}: low and high must be numbers")
    return key, Float(float(lo), float(hi), log)


def space_of(method, overrides: dict | None = None, defaults: dict | None = None) -> dict:
    """The search space of registered method ``method`` (a ``methods.registry.Method``):
    :data:`SHARED`, then its Config's ``SEARCH``, then ``overrides`` (``--range``), each
    checked. ``defaults``: {field: value} of the resolved configs (profile and ``--set``
    applied), each of which must lie inside its range. Returns {key: distribution}, sorted."""
    from benchmarks.config import TrainConfig, field_types  # noqa: PLC0415

    declared = getattr(method.cls.Config, "SEARCH", {}) or {}
    if not isinstance(declared, dict):
        raise UserError(f"{method.name}: Config.SEARCH must be a dict of field -> Float/Int/Choice, got {type(declared).__name__}")
    space = {**SHARED, **declared, **(overrides or {})}
    fields = set(field_types(TrainConfig())) | set(field_types(method.config))
    for key, dist in space.items():
        where = f"{method.name}: search space of {key!r}"
        if key not in fields:
            raise UserError(f"{where}: no such field in the training config or {method.name}'s config; known: {', '.join(sorted(fields))}")
        if not isinstance(dist, (Float, Int, Choice)):
            raise UserError(f"{where}: expected Float, Int or Choice (benchmarks.space), got {dist!r}")
        dist.check(where)
        if defaults is not None and key in defaults and not dist.contains(defaults[key]):
            raise UserError(f"{where}: the default {defaults[key]!r} lies outside {dist.describe()}; "
                            f"the defaults are always the first trial, so the range must hold them")
    return dict(sorted(space.items()))


def space_json(space: dict) -> dict:
    """A search space as plain JSON (for study settings, records and captions)."""
    return {k: {"type": type(d).__name__.lower(), **dataclasses.asdict(d)} for k, d in space.items()}


def space_hash(space: dict) -> str:
    return hashlib.sha256(json.dumps(space_json(space), sort_keys=True, default=list).encode()).hexdigest()
