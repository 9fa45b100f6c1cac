"""Plugins: methods and backbones from outside the package, without a fork.

Three doors, one effect (the plugin's module is imported and registers what it
defines with ``methods.register`` / ``methods.backbones.register_backbone``):

  entry points   an installed package that declares, in its pyproject.toml,
                     [project.entry-points."clip_lung_bench.plugins"]
                     my_method = "my_package.my_module"
  --plugin X     on run, sweep, tune, tables, figures, report, speed and check (repeatable): X
                 is an importable module name, a path to a ``.py`` file, or a path
                 to a package folder (one holding ``__init__.py``);
  CLIPLUNG_PLUGINS  the same list, separated by the path separator (``:``),
                 for scripts.

Every command loads them (:func:`load_plugins`: entry points, then
``CLIPLUNG_PLUGINS``, then ``--plugin``) after parsing its flags; ``import
methods`` alone gives the built-in methods only.

Identity (:func:`plugin_id`): every method or backbone a plugin registers
carries it, and it enters each record and run key.
  - an installed package: "<distribution>@<version>" (its version, not its files);
  - a file or folder: "<file or folder name>#<sha256[:16]>", the hash of its source
    (a file's bytes; for a folder every ``.py`` file under it, by relative path).
    Moving or copying the file elsewhere keeps its identity (the same run key, its
    records reused); editing it, or renaming it, makes a new identity;
  - a module name on ``sys.path`` that no installed distribution owns: its name
    and the hash of its source, as a file.
Tables, figures and the report use the records of the identity loaded now and
leave out those of older identities with a warning naming them. Sweep tasks load
the plugins the submitting command had (recorded in the sweep folder).

A plugin that fails to import, registers a name that is taken, or defines a
method that breaks the interface (``methods.registry.check_interface``) ends
in one line naming the plugin and the problem.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.errors import UserError

ENTRY_POINT_GROUP = "clip_lung_bench.plugins"
PLUGINS_ENV = "CLIPLUNG_PLUGINS"
LOADED: dict[str, dict] = {}  # plugin spec as given -> its origin


def _source_hash(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path.parent if path.is_file() else path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _distribution_version(module_name: str) -> dict:
    top = module_name.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    if dists:
        return {"distribution": dists[0], "version": metadata.version(dists[0])}
    spec = importlib.util.find_spec(top)
    origin = Path(spec.origin) if spec and spec.origin else None
    if origin is not None:  # not installed: a module on sys.path, identified by its source
        return {"sha256": _source_hash(origin.parent if origin.name == "__init__.py" else origin)}
    return {}


def _import(spec: str):
    """Import the plugin ``spec``; returns (module name, origin fields)."""
    path = Path(spec).expanduser()
    if spec.endswith(".py") or os.sep in spec or path.exists():
        if not path.exists():
            raise UserError(f"plugin {spec}: no such file or folder")
        path = path.resolve()
        init = path / "__init__.py" if path.is_dir() else path
        if not init.is_file():
            raise UserError(f"plugin {spec}: a folder plugin needs an __init__.py")
        ident = _source_hash(path)
        name = f"cliplung_plugin_{path.stem if path.is_file() else path.name}_{ident[:12]}"
        if name not in sys.modules:
            mod_spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(path)] if path.is_dir() else None)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module  # dataclasses and pickling look classes up here
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        return name, {"path": str(path), "sha256": ident}
    importlib.import_module(spec)
    return spec, _distribution_version(spec)


def load(spec: str, label: str | None = None) -> dict:
    """Import one plugin (once per process) and check what it registered; returns its origin."""
    # The built-in registry first (a plugin's name must not take a built-in's); torch, so deferred
    # here: the commands import this module for their --help.
    import methods  # noqa: F401, PLC0415
    from methods import backbones, registry  # noqa: PLC0415

    if spec in LOADED:
        return LOADED[spec]
    before = set(registry.REGISTRY)
    origin = {"plugin": label or spec}
    try:
        with registry.loading_plugin(origin):
            module, fields = _import(spec)
    except UserError:
        raise
    except ValueError as e:
        if "already registered" in str(e):
            raise UserError(f"plugin {label or spec}: {e}") from None
        raise UserError(f"plugin {label or spec} failed to import: ValueError: {e}") from None
    except BaseException as e:  # noqa: BLE001  a plugin's import error is the user's to fix: one line
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserError(f"plugin {label or spec} failed to import: {type(e).__name__}: {e}") from None
    typed = origin["plugin"]
    origin.update(module=module, **fields)
    if "path" in fields and label is None:
        # A file or folder is named by its own name (its hash says which code): "x.py", "./x.py" and
        # "/abs/x.py" are one plugin, so a sweep task given the absolute path makes the same run key.
        origin["plugin"] = Path(fields["path"]).name
    # Fill in the identity (known only after the import) on what the plugin registered.
    for name in set(registry.REGISTRY) - before:
        m = registry.REGISTRY[name]
        m.origin.update(origin)
        problem = registry.check_interface(m)
        if problem:
            del registry.REGISTRY[name]
            raise UserError(f"plugin {label or spec}: method {name!r} breaks the method interface: {problem}")
    for name, o in backbones.ORIGIN.items():
        if o is not None and o.get("plugin") == typed:
            o.update(origin)
    LOADED[spec] = origin
    return origin


def plugin_specs(flags=()) -> list[str]:
    """The plugins a command names: ``$CLIPLUNG_PLUGINS``, then its ``--plugin`` flags."""
    return [s for s in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if s.strip()] + list(flags or [])


def load_plugins(specs=()) -> list[dict]:
    """Every plugin a command sees, each loaded once per process: the installed entry points,
    then ``$CLIPLUNG_PLUGINS``, then ``specs`` (``--plugin``)."""
    out = [load(ep.value, label=f"{ep.name} (entry point {ep.value})") for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return out + [load(s) for s in plugin_specs(specs)]


def plugin_id(origin: dict | None) -> str | None:
    """The identity of a plugin that enters the run key: "name@version" or "name#sha256[:16]"
    (None: built in)."""
    if not origin:
        return None
    name = origin.get("distribution") or origin["plugin"]
    return f"{name}@{origin['version']}" if origin.get("version") else f"{name}#{origin.get('sha256', '')[:16]}"
