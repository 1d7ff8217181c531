"""One call turns an existing network into a HAT network (:func:`convert`), and back (:func:`to_plain`).

The network's code is not touched: layers are gated through forward hooks and replaced in place, so the
converted model keeps its class, its ``forward`` signature and its tooling (timm's methods,
``torch.compile``). What the conversion does:

- the classifier (``head``) becomes :class:`~maskcl.core.layers.TaskHeads`, one head per task;
- every BatchNorm becomes a :class:`~maskcl.core.layers.TaskBatchNorm` (statistics and affine per task),
  starting from the original's values for every task;
- every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` gets a :class:`~maskcl.core.gate.TaskGate` on its output
  units, applied after the BatchNorm that directly follows it where there is one (a gate before a
  BatchNorm would be normalised away);
- everything else that learns (LayerNorm/GroupNorm affine, class tokens, position embeddings, layer
  scales, attention biases, layers inside ``nn.MultiheadAttention``) is shared by all tasks with no way of
  telling which entries a task uses, so HAT freezes it whole once the first task is learned.

A layer's weights and bias are protected by its own output units (row ``j`` belongs to the tasks that use
unit ``j``): exact for any wiring (residual connections, attention, normalisation between layers),
because a unit a task does not use is exactly zero in that task's forward pass. The first forward pass
checks the two assumptions this rests on, and raises naming the module when one fails: each gated
layer runs through its own module call, and a BatchNorm taken to follow a layer normalises exactly that
layer's output.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from maskcl.core.context import TaskState, check_task_id, task_state
from maskcl.core.gate import GateLink, TaskGate
from maskcl.core.layers import TaskBatchNorm, TaskHeads
from maskcl.core.masking import MaskedNet
from maskcl.errors import MaskclError

__all__ = ["UnitMask", "convert", "load_plain_weights", "to_plain"]

_GATED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert(
    model: nn.Module,
    classes_per_task: Sequence[int],
    *,
    head: str | None = None,
    skip: Iterable[str] = (),
    gates: bool = True,
) -> nn.Module:
    """Make ``model`` a HAT model in place, with one head per task, and return it.

    Args:
        model: any network whose classifier is an ``nn.Linear`` (yours, torchvision's, timm's).
        classes_per_task: number of classes of each task, e.g. ``[2] * 5``.
        head: name of the classifier module to replace by per-task heads; by default timm's
            ``pretrained_cfg["classifier"]``, else the last ``nn.Linear`` of the model.
        skip: names of modules (with everything inside them) to leave ungated; HAT freezes their
            parameters whole once the first task is learned.
        gates: False gives the same task-aware network without gates (per-task heads and BatchNorms
            only), for baselines such as fine-tuning.

    Select the task with :func:`maskcl.set_task`, then train with :class:`maskcl.methods.hat.HAT`::

        model = convert(timm.create_model("resnet18"), classes_per_task=[2] * 5)
        set_task(model, 0)(images)   # [batch, 2]: the logits of task 0
    """
    if any(isinstance(m, TaskState) for m in model.modules()):
        raise MaskclError(f"{type(model).__name__} is already task-aware; convert a plain model")
    if not classes_per_task or min(classes_per_task) < 1:
        raise MaskclError(f"classes_per_task must list at least one class per task, got {classes_per_task}")
    skip = tuple(skip)
    modules = dict(model.named_modules())
    for name in skip:
        if name not in modules:
            raise MaskclError(f"skip names {name!r}, which is not a module of {type(model).__name__}")
    head = _head_name(model) if head is None else head
    if not isinstance(modules.get(head), nn.Linear):
        found = type(modules[head]).__name__ if head in modules else "no such module"
        raise MaskclError(f"the classifier {head!r} must be an nn.Linear ({found}); name it with head=...")

    def skipped(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in skip)

    # Plan everything first, so that a model that cannot be converted is left untouched.
    norms = [(n, m) for n, m in modules.items() if isinstance(m, _BatchNorm) and not skipped(n)]
    for name, norm in norms:
        _check_batch_norm(name, norm)
    layers = _gated_layers(model, head, skipped) if gates else []
    if gates and not layers:
        raise MaskclError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv layer to gate besides its head"
        )

    state = TaskState(len(classes_per_task))
    context = state.context
    old_head = modules[head]
    heads = TaskHeads(old_head.in_features, classes_per_task, context)
    heads.task_state = state  # held by the heads: a new child of an nn.Sequential model would run as a layer
    _replace(model, head, heads.to(old_head.weight.device, old_head.weight.dtype))
    task_norms = {name: _task_batch_norm(norm, context) for name, norm in norms}
    for name, task_norm in task_norms.items():
        _replace(model, name, task_norm)

    verifier = _FirstForwardCheck()
    for name, layer, norm_name in layers:
        units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        if norm_name is not None:  # gated after the BatchNorm that follows it
            site, site_name, channel_dim = task_norms[norm_name], f"{name} -> {norm_name}", 1
            verifier.expect_pair(layer, name, site, norm_name)
        else:
            site, site_name, channel_dim = layer, name, -1 if isinstance(layer, nn.Linear) else 1
        site.hat_gate = TaskGate(units, context, channel_dim).to(layer.weight.device, layer.weight.dtype)
        site.register_forward_hook(_apply_gate)
        verifier.expect_call(site, site_name)
        state.links.append(GateLink(layer, site.hat_gate))
    verifier.install(model)
    return model


def to_plain(model: nn.Module, task: int) -> nn.Module:
    """A plain copy of a task-aware model (converted or maskcl's own, of any method) that computes
    ``task`` alone: no task state, nothing that reads the selected task.

    A :class:`~maskcl.core.masking.MaskedNet` (PackNet, WSN, SupSup, HyperMask) first becomes its target
    with the task's masked weights (:meth:`~maskcl.core.masking.MaskedNet.task_weights`) written in. A
    converted model's gate has its hard mask folded into its layer (``W[j] * a_t[j]``, ``b[j] * a_t[j]``;
    into the affine of a gated BatchNorm, whose activation must map 0 to 0); a model's own
    :class:`TaskGate` module (``mlp``, ``alexnet``) becomes the constant :class:`UnitMask`; each
    :class:`TaskBatchNorm` becomes the original norm with task ``t``'s row, the heads become the task's
    ``nn.Linear``. The copy's outputs equal the model's for ``task`` in evaluation mode.
    """
    state = task_state(model)
    task = check_task_id(task, state.num_tasks)
    if not state.learned[task]:
        raise MaskclError(f"task {task} is not learned yet; only a learned task can be exported")
    if isinstance(model, MaskedNet):
        with torch.no_grad():
            weights = {name: w.detach().clone() for name, w in model.task_weights(task).items()}
            target = copy.deepcopy(model.target)
            for name, weight in weights.items():
                target.get_parameter(name).copy_(weight)
        return to_plain(target, task)
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, TaskState):
            _replace(plain, name, None)
    with torch.no_grad():
        for name, module in list(plain.named_modules()):
            if hasattr(module, "hat_gate"):
                mask = module.hat_gate.hard_mask(task)
                for key in [k for k, hook in module._forward_hooks.items() if hook is _apply_gate]:
                    del module._forward_hooks[key]
                del module.hat_gate
                _fold_mask(name, module, mask.to(module.weight.dtype))
            if isinstance(module, TaskBatchNorm | TaskHeads):
                _replace(plain, name, module.plain(task))
            if isinstance(module, TaskGate) and name.rpartition(".")[2] != "hat_gate":  # a model's own gate
                _replace(plain, name, UnitMask(module.hard_mask(task), module.channel_dim))
    return plain.eval()


class UnitMask(nn.Module):
    """A learned task's hard gate as a constant: ``h * m`` with ``m`` the task's 0/1 units (the buffer
    ``mask``) on ``channel_dim``, what :func:`to_plain` leaves of a model's own :class:`TaskGate`."""

    def __init__(self, mask: torch.Tensor, channel_dim: int = 1) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.register_buffer("mask", mask.float())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = [1] * h.dim()
        shape[self.channel_dim] = self.mask.numel()
        return h * self.mask.to(h.dtype).view(shape)


def load_plain_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a plain network's weights (e.g. pretrained) into its converted model; returns the keys skipped.

    Task-indexed tensors (BatchNorm rows) take the plain value for every task; the plain classifier's
    weights are skipped (each task has its own head), and so are BatchNorm's ``num_batches_tracked``.
    Gates keep their values. A key the converted model lacks, or a shape that does not fit, is an error.
    """
    state = task_state(model)
    target = model.state_dict()
    heads = {name for name, m in model.named_modules() if isinstance(m, TaskHeads)}
    skipped = []
    for key, value in state_dict.items():
        owner = key.rpartition(".")[0]
        if owner in heads or key.endswith("num_batches_tracked"):
            skipped.append(key)
            continue
        if key not in target:
            raise MaskclError(
                f"the converted model has no entry {key!r}: these weights are not its network's"
            )
        shape = target[key].shape
        if value.shape == shape:
            target[key] = value
        elif shape == (state.num_tasks, *value.shape):
            target[key] = value.unsqueeze(0).expand(shape)
        else:
            raise MaskclError(f"{key!r} has shape {tuple(value.shape)}, the converted model {tuple(shape)}")
    model.load_state_dict(target)
    return skipped


# ------------------------------------------------------------------------------------------------ helpers
def _apply_gate(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return module.hat_gate(output, inplace=True)  # the layer's own new output: only autograd may need it


def _head_name(model: nn.Module) -> str:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(classifier, str):
        return classifier
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise MaskclError(f"{type(model).__name__} has no nn.Linear classifier; name the head with head=...")
    return linears[-1]


def _replace(model: nn.Module, name: str, module: nn.Module | None) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    if module is None:
        delattr(parent, child)
    else:
        setattr(parent, child, module)


def _gated_layers(model: nn.Module, head: str, skipped) -> list[tuple[str, nn.Module, str | None]]:
    """``(name, layer, name of the BatchNorm right after it or None)`` for every layer to gate."""
    layers = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.MultiheadAttention):
            continue  # it reads its projections' weights without calling them: they cannot be gated
        children = list(parent.named_children())
        for i, (child_name, layer) in enumerate(children):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not isinstance(layer, _GATED) or name == head or skipped(name):
                continue
            units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            after_name, after = children[i + 1] if i + 1 < len(children) else (None, None)
            followed = isinstance(after, _BatchNorm) and after.num_features == units
            norm_name = f"{parent_name}.{after_name}".lstrip(".") if followed else None
            layers.append((name, layer, None if norm_name is None or skipped(norm_name) else norm_name))
    return layers


def _fused_batch_norm(norm: _BatchNorm) -> bool:
    """timm's BatchNormAct2d: a BatchNorm followed by its own dropout and activation."""
    extra = [n for n, _ in norm.named_children() if n not in ("drop", "act")]
    return type(norm).__name__ == "BatchNormAct2d" and hasattr(norm, "act") and not extra


def _check_batch_norm(name: str, norm: _BatchNorm) -> None:
    if not (type(norm) in _PLAIN_BATCH_NORMS or _fused_batch_norm(norm)):
        raise MaskclError(
            f"{name} ({type(norm).__name__}): only BatchNorm1d/2d/3d and timm's BatchNormAct2d convert"
        )
    if not (norm.affine and norm.track_running_stats) or norm.momentum is None:
        raise MaskclError(
            f"{name}: only BatchNorms with affine parameters, running statistics and a momentum convert"
        )


def _task_batch_norm(norm: _BatchNorm, context) -> TaskBatchNorm:
    """The task-indexed version of a BatchNorm (plain, or timm's BatchNormAct2d with its activation)."""
    activation = nn.Sequential(norm.drop, norm.act) if _fused_batch_norm(norm) else None
    task_norm = TaskBatchNorm(norm.num_features, context, norm.eps, norm.momentum, activation)
    with torch.no_grad():
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(task_norm, key).copy_(getattr(norm, key).unsqueeze(0).expand_as(getattr(task_norm, key)))
    task_norm.plain_template = (norm,)  # a tuple: not a submodule, so not in the state dict
    return task_norm.to(norm.weight.device, norm.weight.dtype)


def _fold_mask(name: str, module: nn.Module, mask: torch.Tensor) -> None:
    """Multiply output unit ``j``'s parameters by ``mask[j]``: the gate becomes part of the layer."""
    if isinstance(module, TaskBatchNorm):
        if module.activation is not None:
            zero = module.activation(torch.zeros(1, 1, 1, 1, device=mask.device))
            if zero.abs().max() != 0:
                raise MaskclError(f"{name}: its activation does not map 0 to 0, so its gate cannot be folded")
        module.weight.mul_(mask)
        module.bias.mul_(mask)
        return
    shape = (-1,) + (1,) * (module.weight.dim() - 1)
    module.weight.mul_(mask.view(shape))
    if module.bias is not None:
        module.bias.mul_(mask)


class _FirstForwardCheck:
    """Checks, on the converted model's first forward pass, what the conversion assumed, then unhooks.

    Every gated module must run through its own ``__call__`` (else its gate would not act), and a
    BatchNorm gated in place of the layer before it must receive exactly that layer's output. The hooks
    are bound methods of this object, so a converted model deep-copies and pickles before that pass too.
    """

    def __init__(self) -> None:
        self.sites: dict[nn.Module, str] = {}
        self.pairs: dict[nn.Module, tuple[nn.Module, str, str]] = {}  # norm -> (layer, names)
        self.seen: set[nn.Module] = set()
        self.outputs: dict[nn.Module, torch.Tensor] = {}

    def expect_call(self, site: nn.Module, name: str) -> None:
        self.sites[site] = name
        site.register_forward_hook(self.called)

    def expect_pair(self, layer: nn.Module, layer_name: str, norm: nn.Module, norm_name: str) -> None:
        self.pairs[norm] = (layer, layer_name, norm_name)
        layer.register_forward_hook(self.record)
        norm.register_forward_pre_hook(self.check)

    def install(self, model: nn.Module) -> None:
        model.register_forward_hook(self.finish)

    def called(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.seen.add(module)

    def record(self, layer: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.outputs[layer] = output

    def check(self, norm: nn.Module, args: tuple) -> None:
        layer, layer_name, norm_name = self.pairs[norm]
        if args[0] is not self.outputs.get(layer):
            raise MaskclError(
                f"{norm_name} does not normalise the output of {layer_name}, which it follows in the module "
                f"order; pass skip=[{layer_name!r}] to leave that layer ungated"
            )

    def finish(self, model: nn.Module, args: tuple, output: torch.Tensor) -> None:
        missing = [name for site, name in self.sites.items() if site not in self.seen]
        if missing:
            raise MaskclError(
                f"{missing[0]} was not called in the forward pass, so its gate cannot act; "
                f"pass skip=[{missing[0].split(' -> ')[0]!r}] to leave it ungated"
            )
        for module in model.modules():
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for key in [k for k, hook in hooks.items() if getattr(hook, "__self__", None) is self]:
                    del hooks[key]
        self.outputs.clear()
