"""Search spaces: which config fields a tuner may change, and over which range.

A method declares its own beside its defaults, as a class attribute of its
``Config`` (the way ``RANGES`` and ``CHOICES`` are declared)::

    @dataclass(frozen=True)
    class Config:
        SEARCH = {"alpha": Float(0.1, 10.0, log=True), "n_ctx": Choice((2, 4, 8))}
        alpha: float = 1.0
        ...

A key may be searched only where a boolean field of the config is on: ``Float(0.1, 10.0,
log=True, when="use_ia")`` searches the weight of a loss term only in the variants that
train that term (an ablation that switches it off is not tuned over a knob that does
nothing: its budget goes to the knobs that act).

Every method is also tuned over :data:`SHARED`, the training config's learning
rate and weight decay, so a method that declares nothing is tuned over those
alone, and every method of a table gets at least the same knobs. A method's own
entry for a shared key replaces the shared one.

The space is checked before any trial (:func:`check_space`, which ``python -m
benchmarks.check`` runs too): each key names a field of the training config or
of the method's config, each range has low < high (log ranges above 0) and the
field's type (an integer field an Int or a Choice, a float field a Float), every
value it can take lies inside the field's ``RANGES`` and ``CHOICES`` (so that no
trial proposes a value its run refuses), and the paper's default of each field
lies inside its range, since the defaults are always a study's first trial (so a
tuned configuration is never worse than the default on the validation split).

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
    when: str | None = None  # a boolean config field: the key is searched only where it is on (a loss weight of an ablation)

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
    when: str | None = None  # a boolean config field: the key is searched only where it is on (a loss weight of an ablation)

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
    when: str | None = None

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


def _as_field(key: str, dist, annotation, overridden: bool):
    """``dist`` with the type of its field: a ``--range`` of whole numbers on a float field is a Float
    range (``sigma=1:2:log`` means 1.0 to 2.0, not the integers 1 and 2), its choices floats; a
    method's own ``SEARCH`` must say it itself. None when the type fits neither way."""
    floaty = annotation is float
    if isinstance(dist, Int) and floaty:
        return Float(float(dist.low), float(dist.high), dist.log) if overridden else None
    if isinstance(dist, Float) and annotation is int:
        return None
    if isinstance(dist, Choice) and floaty and overridden and all(isinstance(o, int) and not isinstance(o, bool) for o in dist.options):
        return Choice(tuple(float(o) for o in dist.options))
    return dist


def check_space(method, space: dict, defaults: dict | None = None, overridden=()) -> dict:
    """Check a search space of registered method ``method`` against its configs, the one check of
    ``benchmarks.check``, ``tune run`` (before any trial) and ``--range``: each key a field of the
    training config or of the method's config; each distribution a Float, Int or Choice with low
    below high (log ranges above 0) and of the field's type (a Float on an integer field, an Int
    on a float one, a choice the field's type refuses); every value it can take inside the
    field's ``RANGES`` interval and among its ``CHOICES``; and the default (``defaults``) inside
    it. ``overridden``: the keys given by ``--range`` (whole numbers on a float field become a
    Float range). Returns the space, each distribution typed as its field, sorted by key."""
    from benchmarks.config import TrainConfig, _check_type, field_types, in_interval  # noqa: PLC0415

    train, own = TrainConfig(), method.config
    types = {**field_types(train), **field_types(own)}
    ranges = {**getattr(train, "RANGES", {}), **getattr(own, "RANGES", {})}
    choices = {**getattr(train, "CHOICES", {}), **getattr(own, "CHOICES", {})}
    out = {}
    for key, dist in space.items():
        where = f"{method.name}: search space of {key!r}" + (" (--range)" if key in overridden else "")
        if key not in types:
            raise UserError(f"{where}: no such field in the training config or {method.name}'s config; known: {', '.join(sorted(types))}")
        if not isinstance(dist, (Float, Int, Choice)):
            raise UserError(f"{where}: expected Float, Int or Choice (benchmarks.space), got {dist!r}")
        dist.check(where)
        typed = _as_field(key, dist, types[key], key in overridden)
        name = getattr(types[key], "__name__", str(types[key]))
        if typed is None:
            want = "Float" if types[key] is float else "Int or Choice"
            raise UserError(f"{where}: {type(dist).__name__} on a field of type {name}; declare it as {want}")
        dist = typed
        values = dist.options if isinstance(dist, Choice) else (dist.low, dist.high)
        for v in values:
            try:
                _check_type(key, v, types[key])
            except UserError:
                raise UserError(f"{where}: {v!r} is not a value of the field's type {name}") from None
            if key in ranges and isinstance(v, (int, float)) and not isinstance(v, bool) and not in_interval(v, ranges[key]):
                raise UserError(f"{where}: {dist.describe()} leaves the field's valid range {ranges[key]} (its RANGES): {v!r} is outside")
            if key in choices and v not in choices[key]:
                raise UserError(f"{where}: {v!r} is not one of the field's CHOICES ({', '.join(map(repr, choices[key]))})")
        if defaults is not None and key in defaults and not dist.contains(defaults[key]):
            raise UserError(f"{where}: the default {defaults[key]!r} lies outside {dist.describe()}; "
                            f"the defaults are always the first trial, so the range must hold them")
        out[key] = dataclasses.replace(dist, when=None) if getattr(dist, "when", None) else dist
    return dict(sorted(out.items()))


def space_of(method, overrides: dict | None = None, defaults: dict | None = None) -> dict:
    """The search space of registered method ``method`` (a ``methods.registry.Method``):
    :data:`SHARED`, then its Config's ``SEARCH``, then ``overrides`` (``--range``), checked by
    :func:`check_space`. ``defaults``: {field: value} of the resolved configs (profile and ``--set``
    applied), each of which must lie inside its range. Returns {key: distribution}, sorted."""
    declared = getattr(method.cls.Config, "SEARCH", {}) or {}
    if not isinstance(declared, dict):
        raise UserError(f"{method.name}: Config.SEARCH must be a dict of field -> Float/Int/Choice, got {type(declared).__name__}")
    space = {**SHARED, **declared, **(overrides or {})}
    values = {**dataclasses.asdict(method.config), **(defaults or {})}
    for key, dist in list(space.items()):
        when = getattr(dist, "when", None)
        if when is None:
            continue
        if not isinstance(values.get(when), bool):
            raise UserError(f"{method.name}: search space of {key!r}: when={when!r} names no boolean field of {method.name}'s config")
        if not values[when]:
            del space[key]  # the term it weighs is off here: no trial spends itself on it
    return check_space(method, space, defaults, overridden=tuple(overrides or ()))


def space_json(space: dict) -> dict:
    """A search space as plain JSON (for study settings, records and captions). ``when`` is not in it:
    it decides which keys the space has, and the keys say that."""
    return {k: {"type": type(d).__name__.lower(), **{f: v for f, v in dataclasses.asdict(d).items() if f != "when"}} for k, d in space.items()}


def describe_json(space: dict) -> str:
    """A search space as JSON (:func:`space_json`, as study records keep it) in words: 'lr 0.0001 to 0.1 (log);
    n_ctx one of 2, 4, 8'."""
    out = []
    for k, d in sorted(space.items()):
        if d.get("type") == "choice":
            out.append(f"{k} {Choice(tuple(d['options'])).describe()}")
        elif d.get("type") == "int":
            out.append(f"{k} {Int(d['low'], d['high'], d.get('log', False)).describe()}")
        else:
            out.append(f"{k} {Float(d['low'], d['high'], d.get('log', False)).describe()}")
    return "; ".join(out)


def space_hash(space: dict) -> str:
    return hashlib.sha256(json.dumps(space_json(space), sort_keys=True, default=list).encode()).hexdigest()
