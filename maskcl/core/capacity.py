"""How a HAT network's units are spent: per gated layer and per learned task, used, free and shared units;
and forgetting a task on purpose, which returns the units only it used to the free pool.

    summary = capacity(model)
    print(summary)                   # a table: one row per gated layer
    summary.plot("capacity.png")     # needs matplotlib (pip install maskcl[plot])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO

import torch
from torch import nn

from maskcl.core.context import check_task_id, task_state
from maskcl.core.gate import TaskGate
from maskcl.errors import MaskclError
from maskcl.plotting import pyplot

__all__ = ["CapacitySummary", "LayerCapacity", "capacity", "forget"]


@dataclass
class LayerCapacity:
    """The units of one gated layer, as fractions of ``units``.

    ``used[t]``: units task ``t`` uses (``e_t > 0``), for each learned task; ``free``: units no learned task
    uses; ``shared``: units two or more learned tasks use.
    """

    name: str
    units: int
    used: dict[int, float]
    free: float
    shared: float


@dataclass
class CapacitySummary:
    """Per gated layer :class:`LayerCapacity` of one model; ``str()`` gives a table, :meth:`plot` a figure."""

    tasks: list[int]
    layers: list[LayerCapacity]

    def __str__(self) -> str:
        head = ["layer", "units", *[f"task {t}" for t in self.tasks], "free", "shared"]
        rows = [
            [
                layer.name,
                str(layer.units),
                *[f"{v:.3f}" for v in [*layer.used.values(), layer.free, layer.shared]],
            ]
            for layer in self.layers
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [head, *rows]]
        return "\n".join(lines)

    def plot(self, path: str | BinaryIO) -> None:
        """Save :meth:`figure` to ``path`` (a file name, whose suffix gives the format, or a binary file:
        PNG)."""
        fig = self.figure()
        fig.savefig(path)
        pyplot().close(fig)

    def figure(self) -> Any:
        """A matplotlib figure: a bar chart of the used fraction per layer and task, with the free
        fraction."""
        plt = pyplot()
        names = [layer.name for layer in self.layers]
        series = {f"task {t}": [layer.used[t] for layer in self.layers] for t in self.tasks}
        series["free"] = [layer.free for layer in self.layers]
        width = 0.8 / len(series)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) * len(series) * width * 4), 4))
        for i, (label, values) in enumerate(series.items()):
            ax.bar([x + i * width for x in range(len(names))], values, width, label=label)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=60, ha="right")
        ax.set_ylabel("fraction of the layer's units")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
        fig.tight_layout()
        return fig


def capacity(model: nn.Module) -> CapacitySummary:
    """Units used per learned task, free and shared, for every gated layer of ``model``."""
    tasks = task_state(model).learned_tasks()
    layers = []
    for name, gate in _named_gates(model):
        masks = gate.hard_mask(tasks) if tasks else torch.zeros(0, gate.num_units, dtype=torch.bool)
        users = masks.sum(0)
        layers.append(
            LayerCapacity(
                name=name,
                units=gate.num_units,
                used={t: float(masks[i].float().mean()) for i, t in enumerate(tasks)},
                free=float((users == 0).float().mean()),
                shared=float((users >= 2).float().mean()),
            )
        )
    return CapacitySummary(tasks, layers)


@torch.no_grad()
def forget(model: nn.Module, task: int) -> None:
    """Forget a learned task: it is no longer protected, and the units only it used become free.

    Every other learned task keeps all its entries, so its outputs stay bit-for-bit the same. The task's
    gate embeddings are drawn again (N(0, 1), as new), so it can be learned anew with ``start_task``.
    """
    state = task_state(model)
    task = check_task_id(task, state.num_tasks)
    if not state.learned[task]:
        raise MaskclError(f"task {task} is not learned, so there is nothing to forget")
    state.learned[task] = False
    for _, gate in _named_gates(model):
        gate.embedding[task] = torch.randn_like(gate.embedding[task])


def _named_gates(model: nn.Module) -> list[tuple[str, TaskGate]]:
    """Each gate under the name of the module it gates (its parent), or its own name."""
    named = model.named_modules()
    return [(name.removesuffix(".hat_gate"), m) for name, m in named if isinstance(m, TaskGate)]
