"""Schedules of HAT's gate scale ``s`` over the B batches of an epoch (``progress = b / (B - 1)``).

The gates are ``a = sigmoid(s * e)``: a small ``s`` keeps them soft and trainable, a large one makes them
nearly binary. ``linear`` is the paper's (Serrà et al., ICML 2018); the others are the alternatives of
HAT-CL (Duan, 2023), written here from their definitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from maskcl.errors import MaskclError


def linear_scale(progress: float, s_max: float) -> float:
    """HAT's annealing: ``s = 1/s_max + (s_max - 1/s_max) * progress``, from ``1/s_max`` to ``s_max``."""
    return 1 / s_max + (s_max - 1 / s_max) * progress


def cosine_scale(progress: float, s_max: float) -> float:
    """``s = max(1, s_max/2 * cos(2 pi progress) + s_max/2)``: from ``s_max`` down to 1 mid-epoch and back."""
    return max(1.0, s_max / 2 * math.cos(2 * math.pi * progress) + s_max / 2)


def exponential_scale(progress: float, s_max: float) -> float:
    """``s = (1/s_max) * (s_max^2)^progress``: geometric from ``1/s_max`` to ``s_max``."""
    return s_max ** (2 * progress - 1)


def constant_scale(progress: float, s_max: float) -> float:
    """``s = s_max`` throughout."""
    return s_max


SCALE_SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "linear": linear_scale,
    "cosine": cosine_scale,
    "exponential": exponential_scale,
    "constant": constant_scale,
}


def scale_schedule(name: str) -> Callable[[float, float], float]:
    """The schedule called ``name``, or a one-line error naming the known ones."""
    if name not in SCALE_SCHEDULES:
        raise MaskclError(f"unknown scale schedule {name!r}; known: {', '.join(SCALE_SCHEDULES)}")
    return SCALE_SCHEDULES[name]
