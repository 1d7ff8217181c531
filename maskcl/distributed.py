"""Data-parallel runs under ``torchrun``: the process group, each rank's shard of a batch, reductions.

``torchrun --nproc_per_node N -m maskcl run ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous in their environment; :func:`world` joins them into one process group
(gloo on the CPU, NCCL on GPUs, each rank on GPU ``LOCAL_RANK``). Every rank draws the same seeded order
of every epoch and takes its shard of each global batch (:meth:`World.shard`: samples ``rank``,
``rank + N``, ...), so ``--batch-size`` stays the global batch and a config means the same experiment on
any number of ranks. The model is wrapped in PyTorch's ``DistributedDataParallel``, which averages the
gradients over the ranks during the backward pass; each rank's loss is its samples' summed loss over the
global batch size, times ``N``, so the average is the global batch's mean loss gradient. The methods'
gradient handling and exact protection run in the optimizer's hooks, after that reduction, identically on
every rank. Only rank 0 writes the run folder.
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from maskcl.errors import MaskclError, one_line

__all__ = ["SINGLE", "World", "launched_rank", "world"]


@dataclass(frozen=True)
class World:
    """The ranks of a run: ``rank`` of ``size`` (1: a single process, nothing to reduce)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this rank writes the run folder and prints (rank 0)."""
        return self.rank == 0

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's part of a global batch: rows ``rank, rank + size, ...`` of each tensor."""
        if self.size == 1:
            return tensors
        return tuple(t[self.rank :: self.size] for t in tensors)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (a new tensor; the same on every rank)."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, values: torch.Tensor) -> torch.Tensor:
        """The largest of the ranks' ``values``, entry by entry."""
        return self._reduce(values, dist.ReduceOp.MAX)

    def _reduce(self, values: torch.Tensor, op) -> torch.Tensor:
        values = values.clone()
        if self.size > 1:
            dist.all_reduce(values, op=op)
        return values

    def share(self, value: object) -> object:
        """Rank 0's ``value`` on every rank (any picklable object; what the other ranks pass is ignored)."""
        if self.size == 1:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (running BatchNorm statistics drift apart on local batches)."""
        if self.size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def parallel(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` as the ranks train it: itself for one rank, else in ``DistributedDataParallel`` (its
        unused parameters found each step: other tasks' heads and gates take no part in a task's pass)."""
        if self.size == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


SINGLE = World()  # one process


def launched_rank() -> int:
    """This process's rank as ``torchrun`` set it (``RANK``; 0 without ``torchrun``), before any group."""
    return int(os.environ.get("RANK", "0"))


def world(device: str) -> tuple[World, str]:
    """Join the process group ``torchrun`` set up in the environment (``WORLD_SIZE`` > 1), once per
    process; returns the world and the device this rank uses (``cuda`` and ``auto`` with CUDA become
    ``cuda:LOCAL_RANK``). Without ``torchrun``: :data:`SINGLE` and ``device`` unchanged."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise MaskclError(f"device {device!r} asked for, but CUDA is not available here")
        if device not in ("cuda", "auto"):
            raise MaskclError(
                f"under torchrun each rank uses GPU LOCAL_RANK: give --device cuda, not {device!r}"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if cuda else "gloo")
        except (ValueError, RuntimeError) as err:  # e.g. WORLD_SIZE set without torchrun's rendezvous
            raise MaskclError(
                f"the {size} processes could not form a group (start them with torchrun): {one_line(err)}"
            ) from None
        atexit.register(_leave_group)
    if dist.get_world_size() != size:
        raise MaskclError(f"WORLD_SIZE is {size} but the process group has {dist.get_world_size()} ranks")
    return World(dist.get_rank(), size), device


def _leave_group() -> None:
    """Destroy the process group while the interpreter is whole: a group left to the interpreter's
    teardown can abort the process (gloo's threads still hold tensors then) after the run succeeded.
    Garbage is collected first: a network kept alive by a reference cycle keeps the gradient hooks of
    its ``DistributedDataParallel`` wrapper, and with them the group, past ``destroy_process_group``."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
