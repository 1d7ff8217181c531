"""HAT, Hard Attention to the Task (Serrà et al., ICML 2018)."""

from maskcl.hat.convert import convert, load_plain_weights, to_plain
from maskcl.hat.gate import GateLink, TaskGate
from maskcl.hat.method import HAT, linear_scale, owned_entries

__all__ = [
    "HAT",
    "GateLink",
    "TaskGate",
    "convert",
    "linear_scale",
    "load_plain_weights",
    "owned_entries",
    "to_plain",
]
