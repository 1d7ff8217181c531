"""maskcl: mask-based continual learning for PyTorch.

The public API is small: :func:`create_model` / :func:`list_models` (the model registry),
:class:`HAT` (Hard Attention to the Task around any gated model), :func:`maskcl.hat.convert` (any
network made a HAT network), :func:`set_task`, the scenarios in :mod:`maskcl.data`, the metrics in
:mod:`maskcl.metrics`, and :func:`maskcl.train.run` for a whole experiment.
"""

from maskcl.context import set_task
from maskcl.errors import MaskclError
from maskcl.hat import HAT
from maskcl.models import TaskModel, create_model, list_models

__version__ = "0.1.0"
__all__ = ["HAT", "MaskclError", "TaskModel", "__version__", "create_model", "list_models", "set_task"]
