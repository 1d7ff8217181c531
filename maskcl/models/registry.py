"""One registry of models: ``create_model(name, ...)`` builds any of them, ``list_models()`` names them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from maskcl.errors import MaskclError
from maskcl.models.base import TaskModel

_REGISTRY: dict[str, Callable[..., TaskModel]] = {}
Builder = TypeVar("Builder", bound=Callable[..., TaskModel])


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Class or function decorator that makes a model available to :func:`create_model` as ``name``."""

    def add(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> TaskModel:
    """Build a registered model: ``create_model("mlp", input_shape=(1, 28, 28), classes_per_task=[2] * 5)``.

    Every model takes ``input_shape``, ``classes_per_task`` and ``gates`` (``True``: HAT gates after every
    hidden layer; ``False``: the same network without gates), plus its own size arguments.
    """
    if name not in _REGISTRY:
        raise MaskclError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)
