"""HAT, Hard Attention to the Task (Serrà et al., ICML 2018)."""

from maskcl.hat.convert import convert, load_plain_weights, to_plain
from maskcl.hat.gate import GateLink, TaskGate
from maskcl.hat.method import HAT, owned_entries
from maskcl.hat.scale import SCALE_SCHEDULES, linear_scale

__all__ = [
    "HAT",
    "SCALE_SCHEDULES",
    "GateLink",
    "TaskGate",
    "convert",
    "linear_scale",
    "load_plain_weights",
    "owned_entries",
    "to_plain",
]
