"""Configuration overrides from the command line: ``--set key=value``.

Values are parsed with ``ast.literal_eval`` (``lr=0.01``, ``augment=False``,
``text_encoder='minilm-l6'``; a bare word is taken as a string), checked
against the field's type, and applied with ``dataclasses.replace``. A key may
name a field of the training config or of the method's config; names are
unique across the two, and an unknown key is rejected with the known ones.
"""
from __future__ import annotations

import ast
import dataclasses
import typing

from benchmarks.errors import UserError


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
        configs[part] = dataclasses.replace(configs[part], **{key: value})
    return configs
