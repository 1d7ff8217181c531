"""HAT, Hard Attention to the Task (Serrà et al., ICML 2018)."""

from maskcl.hat.gate import GateLink, TaskGate
from maskcl.hat.method import HAT, linear_scale, owned_entries

__all__ = ["HAT", "GateLink", "TaskGate", "linear_scale", "owned_entries"]
