"""Task predictors: the task of an input when its id is not given (class-incremental evaluation).

    from maskcl.predictors import create_predictor, list_predictors
    list_predictors()   # ['energy', 'entropy', 'gaussian', 'max-logit', ...]
    predictor = create_predictor("gaussian")

Each predictor is one module registered with :func:`register_predictor` (:mod:`maskcl.predictors.base`
says how to write one); ``maskcl run --task-inference [NAME]`` uses one, :data:`RECOMMENDED` by default.
"""

from maskcl.predictors import gaussian, oneshot, oodhead, scores  # noqa: F401  (registers the built-in predictors)
from maskcl.predictors.base import (
    RECOMMENDED,
    TaskOutputs,
    TaskPredictor,
    create_predictor,
    list_predictors,
    predictor_class,
    register_predictor,
    task_outputs,
)

__all__ = [
    "RECOMMENDED",
    "TaskOutputs",
    "TaskPredictor",
    "create_predictor",
    "list_predictors",
    "predictor_class",
    "register_predictor",
    "task_outputs",
]
