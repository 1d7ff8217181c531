"""maskcl's networks, built through one registry: ``create_model(name, ...)``."""

from maskcl.models import alexnet, mlp, resnet  # noqa: F401  (registers the models)
from maskcl.models.base import TaskModel
from maskcl.models.registry import create_model, list_models, register_model

__all__ = ["TaskModel", "create_model", "list_models", "register_model"]
