"""The core below every method: task context and selection, task layers, exact protection, weight masks.

It imports nothing above it (no method, no experiment code):

- :mod:`~maskcl.core.context`: :class:`TaskContext`, :class:`TaskState`, :func:`set_task`;
- :mod:`~maskcl.core.layers` and :mod:`~maskcl.core.gate`: per-task heads, per-task BatchNorm, HAT's unit
  gate and the :class:`GateLink` s that tie a gate to the layer it gates;
- :mod:`~maskcl.core.protection`: the ownership walk :func:`owned_entries` and the :class:`Protector`
  that keeps owned entries bit-for-bit under any optimizer;
- :mod:`~maskcl.core.masking`: per-task masks over a network's weights (:class:`MaskedNet`);
- :mod:`~maskcl.core.convert`: any network made task-aware in place, and back;
- :mod:`~maskcl.core.capacity` and :mod:`~maskcl.core.compact`: how gated units are spent; one task
  exported as a small plain network.
"""

from maskcl.core.capacity import CapacitySummary, LayerCapacity, capacity, forget
from maskcl.core.compact import compact
from maskcl.core.context import TaskContext, TaskId, TaskState, check_task_id, set_task, task_state
from maskcl.core.convert import convert, load_plain_weights, to_plain
from maskcl.core.gate import GateLink, TaskGate
from maskcl.core.layers import TaskBatchNorm, TaskHeads
from maskcl.core.masking import MaskedNet, maskable_weights
from maskcl.core.protection import Protector, owned_entries

__all__ = [
    "CapacitySummary",
    "GateLink",
    "LayerCapacity",
    "MaskedNet",
    "Protector",
    "TaskBatchNorm",
    "TaskContext",
    "TaskGate",
    "TaskHeads",
    "TaskId",
    "TaskState",
    "capacity",
    "check_task_id",
    "compact",
    "convert",
    "forget",
    "load_plain_weights",
    "maskable_weights",
    "owned_entries",
    "set_task",
    "task_state",
    "to_plain",
]
