"""``maskcl export DIR --task K``: one learned task of a run as a plain network, for use without maskcl.

Two files, side by side (``DIR/export/task-K.*`` by default):

- ``.safetensors``: the plain network's weights (:func:`maskcl.core.to_plain`: no gates, no task state,
  the task's masks folded into its weights; or with ``compact`` :func:`maskcl.core.compact`, only the
  units the task uses), with the run's arch, the task and maskcl's version in its metadata;
- ``.pt2``: the same network as a ``torch.export`` program (``torch.export.load(path).module()(x)``),
  traced on the task's test inputs for any batch size; left out, with a warning, where ``torch.export`` cannot
  trace the network.

Each file is written atomically: an export that fails leaves nothing half-written.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from maskcl.checkpoint import write_atomic
from maskcl.core import compact, to_plain
from maskcl.core.context import check_task_id, task_state
from maskcl.errors import MaskclError, MaskclWarning, one_line
from maskcl.runs import load_run_and_scenario, read_run_config
from maskcl.version import __version__

__all__ = ["export_task"]


def export_task(
    path: str | Path,
    task: int,
    out: str | Path | None = None,
    after_task: int | None = None,
    compact_units: bool = False,
) -> list[Path]:
    """Write task ``task`` of the run folder ``path`` (its model after ``after_task``, default the last
    finished task) as ``out`` (``.safetensors``, and ``.pt2`` beside it where ``torch.export`` traces);
    returns the files written. ``compact_units``: keep only the units the task uses (HAT-gated ``mlp`` and
    ``alexnet``)."""
    path = Path(path)
    model, scenario = load_run_and_scenario(path, after_task)
    learned = task_state(model).learned_tasks()
    task = check_task_id(task, scenario.num_tasks)
    if task not in learned:
        raise MaskclError(f"task {task} was never trained in this model (learned: {learned})")
    net = compact(model, task) if compact_units else to_plain(model, task)
    kind = "compact" if compact_units else "plain"
    out = (
        Path(out)
        if out is not None
        else path / "export" / f"task-{task}{'.compact' if compact_units else ''}"
    )
    out = out.with_suffix("") if out.suffix == ".safetensors" else out
    metadata = {
        "maskcl": __version__,
        "arch": read_run_config(path).arch,
        "task": str(task),
        "kind": kind,
        "input_shape": json.dumps(list(scenario[task].test.input_shape)),
    }
    weights = {name: t.detach().contiguous().clone() for name, t in net.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out.parent / f"{out.name}.safetensors"]
    write_atomic(written[0], save_safetensors(weights, metadata=metadata))
    test = scenario[task].test
    example = test.take(torch.arange(len(test))[:2])[0]
    try:  # any batch size
        program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as err:  # torch.export cannot trace every network (data-dependent control flow)
        warnings.warn(f"torch.export cannot trace this network ({one_line(err)}): no .pt2", MaskclWarning, 2)
        return written
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    written.append(out.parent / f"{out.name}.pt2")
    write_atomic(written[1], buffer.getvalue())
    return written
