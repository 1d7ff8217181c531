"""Loggers: where a run's metrics go besides its ``metrics.csv`` (``maskcl run --loggers NAME,...``).

    from maskcl.loggers import list_loggers
    list_loggers()   # ['mlflow', 'tensorboard', 'wandb']

Each logger is one module registered with :func:`register_logger` (:mod:`maskcl.loggers.base` says how
to write one); a run without ``--loggers`` uses TensorBoard when it is installed.
"""

from maskcl.loggers import mlflow, tensorboard, wandb  # noqa: F401  (registers the built-in loggers)
from maskcl.loggers.base import (
    DEFAULT_LOGGERS,
    Logger,
    Row,
    check_loggers,
    create_logger,
    installed,
    list_loggers,
    logger_class,
    register_logger,
    run_name,
    step_of,
    summary_of,
)

__all__ = [
    "DEFAULT_LOGGERS",
    "Logger",
    "Row",
    "check_loggers",
    "create_logger",
    "installed",
    "list_loggers",
    "logger_class",
    "register_logger",
    "run_name",
    "step_of",
    "summary_of",
]
