"""Continual-learning methods as plug-ins over :mod:`maskcl.core`, behind one protocol and registry.

    from maskcl.methods import create_method, list_methods
    list_methods()   # ['adahat', 'finetune', 'hat', 'hypermask', 'joint', 'packnet', 'wsn', ...]
    method = create_method("hat", model, s_max=400)

Each method is one module or package with its own config dataclass (:mod:`maskcl.methods.base` says how
to write one).
"""

from maskcl.methods import adahat, baselines, hat, hypermask, packnet, supsup, wsn  # noqa: F401  (registers the built-in methods)
from maskcl.methods.base import (
    ENTRY_POINT_GROUP,
    Method,
    MethodConfig,
    create_method,
    list_methods,
    load_plugins,
    method_class,
    register_method,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Method",
    "MethodConfig",
    "create_method",
    "list_methods",
    "load_plugins",
    "method_class",
    "register_method",
]
