"""The task-predictor protocol: which learned task an input belongs to when its id is not given.

A mask method is exact once the task id is known; the class-incremental setting also has to find it. A
predictor scores every learned task for each input from that task's own network (the model with task
``t`` selected: its logits, and its features, the input of the per-task heads), keeps only statistics of
each task's own training data (fitted in :meth:`TaskPredictor.fit_task` when the task ends, no sample
stored), and predicts ``(task, class)``: the best-scoring task, and the class its head predicts::

    predictor = create_predictor("gaussian")
    for task in range(num_tasks):
        ...                                             # train task with the method
        predictor.fit_task(model, task, train_data)     # statistics of the task's own data
    task, label = predictor.predict(model, x)           # among the learned tasks

A predictor is a :class:`TaskPredictor` subclass registered with :func:`register_predictor`; its
options are its constructor's keyword arguments (checked there, one-line errors), and its fitted state
is :meth:`TaskPredictor.state_dict` (tensors, for checkpoints).

A predictor may also change training (``trains``): :meth:`TaskPredictor.prepare` adds what it trains to
the model before the optimizer is built, and every training step uses the batch
:meth:`TaskPredictor.training_batch` makes of the data's batch::

    predictor.prepare(model, input_shape)               # before the optimizer
    x, y, ids = predictor.training_batch(model, x, y)   # in each step, before the forward pass
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from maskcl.core.context import set_task, task_state
from maskcl.core.layers import TaskHeads
from maskcl.errors import MaskclError
from maskcl.registry import Registry

__all__ = [
    "RECOMMENDED",
    "TaskOutputs",
    "TaskPredictor",
    "create_predictor",
    "features_width",
    "list_predictors",
    "predictor_class",
    "register_predictor",
    "task_heads",
    "task_outputs",
]

RECOMMENDED = "gaussian"
"""The predictor ``maskcl run --task-inference`` uses without a name (see ``docs/task_inference.md``)."""


def create_predictor(name: str, **options: Any) -> TaskPredictor:
    """The predictor ``name`` with ``options`` (its constructor's keyword arguments)."""
    return predictor_class(name)(**options)


class TaskOutputs:
    """What every learned task's network gives for a batch: ``logits[i]`` ``[N, k_t]`` and, when asked,
    ``features[i]`` ``[N, D]`` (the per-task heads' input) of task ``tasks[i]``, and ``rejects[i]``
    ``[N]``, its "not this task" logit, where the heads have one (:meth:`TaskHeads.add_reject`)."""

    def __init__(
        self,
        tasks: list[int],
        logits: list[torch.Tensor],
        features: list[torch.Tensor],
        rejects: list[torch.Tensor] | None = None,
    ) -> None:
        self.tasks, self.logits, self.features = tasks, logits, features
        self.rejects = rejects or []


def task_heads(model: nn.Module) -> TaskHeads:
    """The model's one :class:`~maskcl.core.layers.TaskHeads`, whose input the features are."""
    heads = [m for m in model.modules() if isinstance(m, TaskHeads)]
    if len(heads) != 1:
        raise MaskclError(f"this model has {len(heads)} per-task head modules: features need exactly one")
    return heads[0]


def features_width(model: nn.Module) -> int:
    """``D``: the width of the features :func:`task_outputs` captures (the per-task heads' input)."""
    return task_heads(model).weight.shape[1]


@torch.no_grad()
def task_outputs(
    model: nn.Module, x: torch.Tensor, tasks: Sequence[int], features: bool = False
) -> TaskOutputs:
    """Run ``x`` through each task of ``tasks`` in evaluation mode (the model's mode and selected task
    are restored); with ``features``, also the input of its :class:`~maskcl.core.layers.TaskHeads`."""
    state = task_state(model)
    heads = task_heads(model) if features else None
    captured: list[torch.Tensor] = []
    hook = heads.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) if features else None
    previous, training = state.context.task, model.training
    model.eval()
    logits, feats, rejects = [], [], []
    try:
        for task in tasks:
            captured.clear()
            logits.append(set_task(model, task)(x))
            if features:
                feats.append(captured[-1].flatten(1))
                if heads.reject_weight is not None:
                    rejects.append(heads.reject(captured[-1], task))
    finally:
        if hook is not None:
            hook.remove()
        state.context.select(previous)
        model.train(training)
    return TaskOutputs(list(tasks), logits, feats, rejects)


class TaskPredictor:
    """Scores the learned tasks for each input; subclasses implement :meth:`score` and, when they keep
    statistics, :meth:`fit_task`, :meth:`state_dict` and :meth:`load_state_dict`.

    ``features``: whether :meth:`score` needs the heads' inputs. ``fitted``: whether a task must be
    fitted before it can be predicted.
    """

    name: ClassVar[str] = ""
    features: ClassVar[bool] = False
    fitted: ClassVar[bool] = False
    trains: ClassVar[bool] = False

    def check_model(self, model: nn.Module) -> None:
        """A one-line error when this predictor cannot serve ``model`` (it must be task-aware)."""
        task_state(model)

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        """Add to ``model`` what this predictor trains with it (inputs of ``input_shape``), before the
        optimizer is built; a one-line error for inputs it cannot train on. Nothing by default."""

    def training_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch a training step of the selected task (or of the tasks ``ids``, one per sample) uses
        instead of ``(x, y, ids)``: unchanged by default."""
        return x, y, ids

    @torch.no_grad()
    def fit_task(self, model: nn.Module, task: int, data, batch_size: int = 1000) -> None:
        """Keep the statistics of ``task`` from its own training ``data`` (a
        :class:`~maskcl.data.TaskData`), once the task is learned. Nothing by default."""

    def score(self, outputs: TaskOutputs, x: torch.Tensor) -> torch.Tensor:
        """``[len(tasks), N]``: how much each input looks like each task's (higher: more)."""
        raise NotImplementedError

    def learned(self, model: nn.Module) -> list[int]:
        """The tasks this predictor can choose among: the learned ones (and fitted, where it fits)."""
        tasks = task_state(model).learned_tasks()
        if not tasks:
            raise MaskclError("task inference needs at least one learned task")
        return tasks

    @torch.no_grad()
    def predict(
        self, model: nn.Module, x: torch.Tensor, tasks: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(task, class)`` per input: the best-scoring task among ``tasks`` (default: the learned ones)
        and the class its head predicts (an index into that task's classes)."""
        tasks = self.learned(model) if tasks is None else list(tasks)
        if not tasks:
            raise MaskclError("task inference needs at least one learned task")
        outputs = task_outputs(model, x, tasks, self.features)
        best = self.score(outputs, x).argmax(0)
        classes = [logits.argmax(1) for logits in outputs.logits]
        label = torch.stack(classes).gather(0, best.unsqueeze(0)).squeeze(0)
        return torch.tensor(tasks, device=x.device)[best], label

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fitted statistics (tensors only): what a checkpoint keeps."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue with :meth:`state_dict`'s statistics."""
        if state:
            raise MaskclError(f"the {self.name} predictor keeps no state, but {sorted(state)[:3]} was given")

    def memory_needed(
        self, model: nn.Module, input_shape: Sequence[int], classes_per_task: Sequence[int]
    ) -> int:
        """Bytes this predictor needs at least over a run of ``classes_per_task`` (the statistics of every
        task, and the most fitting one task takes besides) for ``model`` (sizes only: it may be on the meta
        device) and inputs of ``input_shape``; checked before a run starts. Nothing by default."""
        return 0

    def memory_bytes(self) -> int:
        """Bytes of the statistics kept (all fitted tasks)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())


P = TypeVar("P", bound="type[TaskPredictor]")
_PREDICTORS: Registry = Registry("task predictor", TaskPredictor)


def register_predictor(name: str) -> Callable[[P], P]:
    """Class decorator: register a :class:`TaskPredictor` subclass as ``name``."""
    return _PREDICTORS.register(name, "register_predictor")


def list_predictors() -> list[str]:
    """The registered predictors' names, sorted."""
    return _PREDICTORS.names()


def predictor_class(name: str) -> type[TaskPredictor]:
    """The predictor registered as ``name``, or a one-line error listing the known ones."""
    return _PREDICTORS.get(name)
