"""The method registry: every built-in method module is imported here, explicitly.

Adding a method: write ``methods/<name>.py`` with a class registered by
``@register("<name>")`` (see ``methods/registry.py`` for the interface) and
import it below; the tests parametrized over ``REGISTRY`` pick it up. A method
from outside the package comes in as a plugin instead (``benchmarks/plugins.py``:
an entry point of an installed package, ``--plugin``, or ``CLIPLUNG_PLUGINS``),
loaded by the commands (``benchmarks.plugins.load_plugins``), never as a side
effect of ``import methods``: importing the registry gives the built-ins only.
"""
from methods import backbones, ce, clip, clip_lung, cocoop, corf, nsb, poisson, udm  # noqa: F401  (registration)
from methods.registry import REGISTRY, DataInfo, build, get_method, register

__all__ = ["REGISTRY", "DataInfo", "build", "get_method", "register"]

