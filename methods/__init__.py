"""The method registry: every method module is imported here, explicitly.

Adding a method: write ``methods/<name>.py`` with a class registered by
``@register("<name>")`` (see ``methods/registry.py`` for the interface) and
import it below; the tests parametrized over ``REGISTRY`` pick it up.
"""
from methods import ce, clip, clip_lung, cocoop, corf, nsb, poisson, udm  # noqa: F401  (registration)
from methods.registry import REGISTRY, DataInfo, build, get_method, register

__all__ = ["REGISTRY", "DataInfo", "build", "get_method", "register"]
