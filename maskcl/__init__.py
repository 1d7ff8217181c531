"""maskcl: mask-based continual learning for PyTorch.

The public API, in a few namespaces:

- ``maskcl``: the model registry (:func:`create_model`, :func:`list_models`), :func:`convert` (any network
  made task-aware), :func:`set_task`; the method registry (:func:`create_method`, :func:`list_methods`,
  :func:`register_method`, :class:`Method`, :class:`MethodConfig`) with :class:`HAT`; a whole experiment
  (:class:`RunConfig`, :func:`run`, :func:`run_seeds`, :func:`load_run`);
- :mod:`maskcl.core`: task context, task layers, exact protection and weight masking, for new methods;
- :mod:`maskcl.methods`: the methods, each with its config dataclass;
- :mod:`maskcl.predictors`: task predictors for the task id unknown at test time (:func:`create_predictor`,
  :func:`list_predictors`, :func:`register_predictor`);
- :mod:`maskcl.loggers`: where a run's metrics also go (:func:`list_loggers`, :func:`register_logger`);
- :mod:`maskcl.data` and :mod:`maskcl.metrics`: scenarios and benchmarks; ACC, BWT, forgetting.
"""

from maskcl.config import RunConfig
from maskcl.core import convert, set_task
from maskcl.errors import MaskclError
from maskcl.loggers import list_loggers, register_logger
from maskcl.methods import Method, MethodConfig, create_method, list_methods, register_method
from maskcl.methods.hat import HAT
from maskcl.models import TaskModel, create_model, list_models
from maskcl.predictors import create_predictor, list_predictors, register_predictor
from maskcl.runs import load_run
from maskcl.train import run, run_seeds
from maskcl.version import __version__

__all__ = [
    "HAT",
    "MaskclError",
    "Method",
    "MethodConfig",
    "RunConfig",
    "TaskModel",
    "__version__",
    "convert",
    "create_method",
    "create_model",
    "create_predictor",
    "list_loggers",
    "list_methods",
    "list_models",
    "list_predictors",
    "load_run",
    "register_logger",
    "register_method",
    "register_predictor",
    "run",
    "run_seeds",
    "set_task",
]
