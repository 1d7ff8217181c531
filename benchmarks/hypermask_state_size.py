"""HyperMask's per-task state, in memory and in a run folder's model files, against the earlier layout.

    python benchmarks/hypermask_state_size.py [--arch timm:resnet18] [--tasks 2 10] [--fixed-hypernetwork]

For a converted network and T tasks, the tasks are "learned" one by one without training (each task's
mask is cached from the hypernetwork and the target's weights move a little, as training would move them)
and, after each task, the model is saved as a run folder saves it (``RunFolder.save_task_model``). Side
by side, in the same process, the same states in the earlier layout: one ``[T, W]`` float32 buffer of
cached masks allocated for all T tasks from the start, and every model file holding the whole state.
Evaluation from the saved files is checked to be bit-identical to the live net. The hypernetwork is
HyperMask's default, sized to the target (``hyper_size`` 0.2 of its masked weights); with
``--fixed-hypernetwork`` it is the earlier fixed default (1024 chunks, hidden 100-100), with which the
figures of ``docs/benchmarks.md`` (2026-11) were measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import torch

from maskcl.checkpoint import save_checkpoint
from maskcl.core.convert import convert
from maskcl.methods.hypermask import HyperMask, HyperMaskNet
from maskcl.resources import format_bytes
from maskcl.runs import RunFolder, load_task_model

FIXED = {"chunks": 1024, "hyper_hidden": (100, 100)}
"""The earlier fixed default hypernetwork."""


def build(arch: str, tasks: int, fixed: bool) -> HyperMaskNet:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch.removeprefix("timm:"), in_chans=3, num_classes=2)
    return HyperMask(convert(model, [2] * tasks, gates=False), **(FIXED if fixed else {})).model


def buffer_bytes(net: HyperMaskNet) -> int:
    return sum(b.numel() * b.element_size() for b in net.cached_masks.buffers())


def old_layout(state: dict, net: HyperMaskNet) -> dict:
    """``state`` as the earlier layout held it: all tasks' masks in one [T, W] buffer, zeros if unlearned."""
    old = {k: v for k, v in state.items() if not k.startswith("cached_masks.")}
    masks = torch.zeros(net.state.num_tasks, sum(net.sizes))
    for key in (k for k in state if k.startswith("cached_masks.")):
        masks[int(key.rsplit(".", 1)[1])] = state[key]
    return {**old, "cached_masks": masks}


def measure(arch: str, tasks: int, scratch: Path, fixed: bool) -> None:
    net = build(arch, tasks, fixed)
    weights = sum(net.sizes)
    folder = RunFolder(scratch / f"{tasks}")
    folder.path.mkdir()
    new_files, old_files = [], []
    for task in range(tasks):
        with torch.no_grad():
            for _, p in net.masked:  # what training would do to the shared weights
                p.add_(torch.randn_like(p), alpha=1e-3)
        net.cache(task)
        net.state.learned[task] = True
        if task == 0:
            after_first = buffer_bytes(net)
        state = net.state_dict()
        folder.save_task_model(task, state)
        new_files.append((folder.path / "models" / f"task-{task}.safetensors").stat().st_size)
        save_checkpoint(scratch / "old.safetensors", {"model": old_layout(state, net)}, kind="model")
        old_files.append((scratch / "old.safetensors").stat().st_size)
    x = torch.randn(2, 3, 32, 32)
    reloaded = build(arch, tasks, fixed)
    reloaded.load_state_dict(load_task_model(folder.path, tasks - 1))
    for t in range(tasks):
        net.state.context.select(t)
        reloaded.state.context.select(t)
        assert torch.equal(net.eval()(x), reloaded.eval()(x)), "evaluation from the files differs"
    hyper = net.hypernetwork
    print(
        f"{arch}, {tasks} tasks, {weights:,} masked weights, hypernetwork "
        f"{sum(p.numel() for p in hyper.parameters()):,} parameters ({hyper.chunks} chunks, hidden "
        f"{'-'.join(map(str, hyper.hidden))}): cached masks in memory "
        f"{format_bytes(after_first)} after 1 task, {format_bytes(buffer_bytes(net))} after {tasks} "
        f"(earlier layout: {format_bytes(tasks * weights * 4)} from the start); models/ "
        f"{format_bytes(sum(new_files))} (earlier: {format_bytes(sum(old_files))}, "
        f"{sum(old_files) / sum(new_files):.1f}x); task-0 file {format_bytes(new_files[0])} "
        f"(earlier {format_bytes(old_files[0])}), task-{tasks - 1} file {format_bytes(new_files[-1])} "
        f"(earlier {format_bytes(old_files[-1])})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="timm:resnet18")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--fixed-hypernetwork", action="store_true", help="1024 chunks, hidden 100-100")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for tasks in args.tasks:
            measure(args.arch, tasks, Path(scratch), args.fixed_hypernetwork)
    threads, cpus = torch.get_num_threads(), os.cpu_count()
    print(f"(torch {torch.__version__}, {threads} threads, {cpus} cpus, {platform.machine()})")


if __name__ == "__main__":
    main()
