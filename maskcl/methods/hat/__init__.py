"""HAT, Hard Attention to the Task (Serrà et al., ICML 2018)."""

from maskcl.methods.hat.method import HAT, MASK_INITS, HATConfig, soft_gates
from maskcl.methods.hat.scale import SCALE_SCHEDULES, linear_scale

__all__ = ["HAT", "MASK_INITS", "SCALE_SCHEDULES", "HATConfig", "linear_scale", "soft_gates"]
