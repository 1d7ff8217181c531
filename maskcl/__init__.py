"""maskcl: mask-based continual learning for PyTorch.

The public API is small: :func:`create_model` / :func:`list_models` (the model registry),
:class:`HAT` (Hard Attention to the Task around any gated model), :func:`maskcl.core.convert` (any
network made a HAT network), :func:`set_task`, the scenarios in :mod:`maskcl.data`, the metrics in
:mod:`maskcl.metrics`, and :func:`maskcl.train.run` for a whole experiment.
"""

from maskcl.core import convert, set_task
from maskcl.errors import MaskclError
from maskcl.methods import create_method, list_methods, register_method
from maskcl.methods.hat import HAT
from maskcl.models import TaskModel, create_model, list_models

__version__ = "0.1.0"
__all__ = [
    "HAT",
    "MaskclError",
    "TaskModel",
    "__version__",
    "convert",
    "create_method",
    "create_model",
    "list_methods",
    "list_models",
    "register_method",
    "set_task",
]
