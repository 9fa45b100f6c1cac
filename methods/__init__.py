"""The method registry: every built-in method module is imported here, explicitly.

Adding a method: write ``methods/<name>.py`` with a class registered by
``@register("<name>")`` (see ``methods/registry.py`` for the interface) and
import it below; the tests parametrized over ``REGISTRY`` pick it up. A method
from outside the package comes in as a plugin instead (``benchmarks/plugins.py``:
an entry point of an installed package, ``--plugin``, or ``CLIPLUNG_PLUGINS``);
installed entry points and ``CLIPLUNG_PLUGINS`` load here, after the built-ins.
"""
from methods import backbones, ce, clip, clip_lung, cocoop, corf, nsb, poisson, udm  # noqa: F401  (registration)
from methods.registry import REGISTRY, DataInfo, build, get_method, register

__all__ = ["REGISTRY", "DataInfo", "build", "get_method", "register"]


def _load_plugins() -> None:
    from benchmarks.plugins import load_all, load_entry_points  # noqa: PLC0415

    load_entry_points()
    load_all()


_load_plugins()
