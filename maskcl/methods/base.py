"""The method protocol: one lifecycle for every continual-learning method, and the method registry.

A method is a :class:`Method` subclass registered under a name, with its options in a
:class:`MethodConfig` dataclass (their names, types, defaults and help are the ``maskcl run`` flags, the
config-file keys and what a run folder's ``config.json`` stores)::

    @dataclass(frozen=True)
    class MyConfig(MethodConfig):
        strength: float = field(default=1.0, metadata={"help": "how hard earlier tasks are kept"})

        def validate(self) -> None:
            if self.strength < 0:
                raise MaskclError(f"strength must be >= 0, got {self.strength}")

    @register_method("mine")
    class Mine(Method):
        config_class = MyConfig
        def regularizer(self): ...

    method = create_method("mine", model, strength=2.0)

The lifecycle, the same for every method and any training loop::

    method = create_method(name, model, **options)   # method.model is what to train and evaluate
    for task in range(num_tasks):
        method.start_task(task, optimizer, steps_per_epoch)
        for epoch in range(epochs):
            for x, y in loader:   # the data of method.training_tasks(task)
                loss = F.cross_entropy(method.model(x), y) + method.regularizer()
                optimizer.zero_grad(); loss.backward(); optimizer.step()   # after_step() runs itself
            method.end_epoch(epoch + 1, epochs)
        method.end_task()

From ``start_task`` to ``end_task``, after every ``optimizer.step()`` (a step post-hook) the method's
:meth:`Method.after_step` runs, then every entry that :meth:`Method.protected` names for the learned tasks
is written back to its exact bits (:class:`~maskcl.core.protection.Protector`), whatever the optimizer
did. Methods found in installed packages' ``maskcl.methods`` entry points, or in modules imported with
:func:`load_plugins` (``maskcl run --plugin MODULE``), register themselves the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from maskcl.core.context import check_task_id, task_state
from maskcl.core.protection import Protector
from maskcl.errors import MaskclError, one_line
from maskcl.registry import Registry

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

ENTRY_POINT_GROUP = "maskcl.methods"
"""Installed packages list their method modules in this entry-point group; they are imported on the first
lookup of a method that is not registered yet."""


@dataclass(frozen=True)
class MethodConfig:
    """The options of a method: subclass it as a frozen dataclass, one field per option.

    Each field's type (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``, or one of them ``| None``),
    default and ``metadata`` (``help``; ``choices`` for a string) make its ``--flag``, its config-file key and
    its entry in a run's saved config. :meth:`validate` runs on construction, so a config that exists is
    valid.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a one-line :class:`~maskcl.MaskclError` naming the first option whose value cannot work."""
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices is not None and value not in choices:
                raise MaskclError(f"unknown {field.name} {value!r}; known: {', '.join(map(str, choices))}")

    def require(self, checks: list[tuple[str, bool, str]]) -> None:
        """For :meth:`validate`: a one-line error for the first ``(option, holds, rule)`` that does not hold,
        e.g. ``("density", 0 < self.density < 1, "in (0, 1)")``."""
        for name, ok, rule in checks:
            if not ok:
                raise MaskclError(f"{name} must be {rule}, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Method:
    """A continual-learning method around a task-aware model; the base trains each task in turn (finetune).

    Subclasses set ``config_class`` (their options; ``self.config`` holds the validated values), ``gates``
    (the model is built with HAT's unit gates), ``exact`` (learned tasks' outputs are kept bit-for-bit)
    and override the hooks they need, calling ``super()``:

    - :meth:`prepare`: the network to train from the one given (e.g. wrapped to mask its weights);
    - :meth:`training_tasks`: whose data trains ``task`` (``joint``: every task so far);
    - :meth:`check_epochs`: refuse a number of epochs a task the method cannot work with;
    - :meth:`start_task`, :meth:`regularizer`, :meth:`after_step`, :meth:`end_epoch`, :meth:`end_task`;
    - :meth:`protected`: the entries that learned tasks own, kept bit-for-bit while later tasks train;
    - :meth:`state_dict` / :meth:`load_state_dict`: the method's state inside a task (for checkpoints);
    - :meth:`summary`: what the results should say about the method (capacity and the like);
    - :meth:`extra_memory`: bytes the method keeps beyond the model's, for the memory check.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    gates: ClassVar[bool] = False
    exact: ClassVar[bool] = False
    """True for a method that promises learned tasks' outputs bit-for-bit unchanged (BWT exactly 0)."""

    def __init__(self, model: nn.Module, **options: Any) -> None:
        self.config = make_config(self.config_class, options, self.name or type(self).__name__)
        self.model = self.prepare(model)
        self.state = task_state(self.model)
        self.task: int | None = None
        self._protector: Protector | None = None
        self._hooks: list = []

    def prepare(self, model: nn.Module) -> nn.Module:
        """The network this method trains and evaluates, made from ``model`` (by default ``model``)."""
        return model

    def training_tasks(self, task: int) -> list[int]:
        """The tasks whose training data are used while learning ``task``."""
        return [task]

    def check_epochs(self, epochs: int) -> None:
        """A one-line error, before any training, when the method cannot train ``epochs`` epochs a task
        (e.g. PackNet's retraining epochs must leave some to train before pruning)."""

    def protected(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(tensor, mask)`` pairs of the entries ``tasks`` own, frozen while a later task trains (e.g.
        :func:`~maskcl.core.protection.owned_entries`); none by default."""
        return []

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1) -> None:
        """Begin training ``task`` with ``optimizer`` (the one that updates ``self.model``'s parameters),
        whose epochs have ``steps_per_epoch`` steps; the learned tasks' :meth:`protected` entries are
        kept from now on."""
        task = check_task_id(task, self.state.num_tasks)
        if self.task is not None:
            raise MaskclError(
                f"task {self.task} is still training: call end_task() before starting task {task}"
            )
        if self.state.learned[task]:
            raise MaskclError(f"task {task} is already learned; its entries are kept and cannot be retrained")
        if steps_per_epoch < 1:
            raise MaskclError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.task, self.steps_per_epoch = task, steps_per_epoch
        self.state.context.select(task)
        self._protector = Protector(self.protected(self.state.learned_tasks()))
        self._hooks = [optimizer.register_step_post_hook(lambda *_: self._after_step())]

    def regularizer(self) -> torch.Tensor | float:
        """The method's term added to the task's loss at every step (after a training forward pass)."""
        return 0.0

    def after_step(self) -> None:
        """Runs after every optimizer step of the task, before the protected entries are written back."""

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Called after epoch ``epoch`` (1-based) of the task's ``epochs`` (e.g. PackNet prunes here)."""

    def end_task(self) -> None:
        """Finish the task in training: it becomes learned (its entries protected from now on)."""
        if self.task is None:
            raise MaskclError("end_task() without a task in training")
        self.remove_hooks()
        self._protector.restore()
        self.state.learned[self.task] = True
        self.task, self._protector = None, None

    def add_hook(self, handle: Any) -> None:
        """Keep a hook handle (an optimizer's or a module's) to remove when the task ends."""
        self._hooks.append(handle)

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def state_dict(self) -> dict:
        """The method's own state inside a task, beyond the model's and the optimizer's (for checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` after ``start_task`` of the same task (resuming a checkpoint)."""

    def summary(self) -> dict:
        """Entries for a run's results (JSON values), e.g. ``capacity``; none by default."""
        return {}

    def extra_memory(self) -> int:
        """Bytes the method keeps over the run beyond the model's parameters and buffers, at least (what
        the memory check adds before allocating; the model may be on the meta device)."""
        return 0

    def _after_step(self) -> None:
        self.after_step()
        self._protector.restore()


def make_config(config_class: type[MethodConfig], options: dict[str, Any], method: str) -> MethodConfig:
    """``config_class(**options)``, with a one-line error for an option the method does not take."""
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = [key for key in options if key not in names]
    if unknown:
        takes = f"its options: {', '.join(names)}" if names else "it takes no options"
        raise MaskclError(f"method {method} has no option {unknown[0]!r} ({takes})")
    return config_class(**options)


def _check_config(name: str, cls: type) -> None:
    config = cls.config_class
    if not (dataclasses.is_dataclass(config) and issubclass(config, MethodConfig)):
        raise MaskclError(f"method {name}: config_class must be a MethodConfig dataclass")


M = TypeVar("M", bound=type[Method])
_METHODS: Registry = Registry("method", Method, check=_check_config, discover=lambda: _load_entry_points())


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`Method` subclass under ``name`` (its config class checked)."""
    return _METHODS.register(name, "register_method")


def list_methods() -> list[str]:
    """The names of every registered method (installed plug-ins included), sorted."""
    return _METHODS.names()


def method_class(name: str) -> type[Method]:
    """The method registered as ``name``, or a one-line error listing the known ones."""
    return _METHODS.get(name)


def create_method(name: str, model: nn.Module, **options: Any) -> Method:
    """The method ``name`` around ``model`` with ``options`` (see its config class); ``.model`` is what it
    trains and evaluates."""
    return method_class(name)(model, **options)


def load_plugins(modules: Iterable[str]) -> None:
    """Import each module (``package.module``), whose methods register themselves; a one-line error
    naming the module when one cannot be imported."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # an import runs the module's code: any error is the plug-in's
            raise MaskclError(f"cannot import plug-in module {module!r}: {one_line(err)}") from None


_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:
            raise MaskclError(
                f"cannot load the maskcl method plug-in {entry.value!r}: {one_line(err)}"
            ) from None
