"""Ready-made HAT models in timm's registry (needs the ``timm`` extra: ``pip install maskcl[timm]``).

Importing this module registers them; then, like any timm model::

    import maskcl.methods.hat.timm_models  # noqa: F401
    model = timm.create_model("hat_resnet18", classes_per_task=[2] * 5)  # or num_tasks=5, classes_per_task=2
    model = timm.create_model("hat_vit_tiny_patch16_224", num_tasks=10, classes_per_task=10,
                              img_size=32, patch_size=4)

Each is timm's model (with ``pretrained=True``, its pretrained weights) converted by
:func:`maskcl.core.convert`. The ``_cifar`` variants replace ResNet's stem for small images (32x32): a 3x3
stride-1 first convolution and no max-pooling, as usual for CIFAR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import timm
from timm.models import register_model
from torch import nn

from maskcl.core.convert import convert
from maskcl.errors import MaskclError


def _classes(classes_per_task: Sequence[int] | int | None, num_tasks: int | None) -> list[int]:
    if isinstance(classes_per_task, int):
        if num_tasks is None:
            raise MaskclError("classes_per_task given as one number needs num_tasks too")
        return [classes_per_task] * num_tasks
    if classes_per_task is None:
        raise MaskclError("a HAT model needs classes_per_task (a list, or a number with num_tasks)")
    if num_tasks is not None and num_tasks != len(classes_per_task):
        raise MaskclError(f"num_tasks={num_tasks} but classes_per_task lists {len(classes_per_task)} tasks")
    return list(classes_per_task)


def _small_image_stem(model: nn.Module) -> None:
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def _register(name: str, base: str, small_images: bool = False) -> Callable[..., nn.Module]:
    def build(
        pretrained: bool = False,
        *,
        classes_per_task: Sequence[int] | int | None = None,
        num_tasks: int | None = None,
        **kwargs,
    ) -> nn.Module:
        classes = _classes(classes_per_task, num_tasks)
        kwargs.pop("pretrained_cfg", None)  # timm's configuration for this name, not for the base model
        kwargs.pop("pretrained_cfg_overlay", None)
        model = timm.create_model(base, pretrained=pretrained, num_classes=max(classes), **kwargs)
        if small_images:
            _small_image_stem(model)
        return convert(model, classes)

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    stem = ", with a small-image stem" if small_images else ""
    build.__doc__ = f"timm's ``{base}``{stem}, converted to HAT with one head per task."
    return register_model(build)


for _depth in (18, 34, 50):
    _register(f"hat_resnet{_depth}", f"resnet{_depth}")
    _register(f"hat_resnet{_depth}_cifar", f"resnet{_depth}", small_images=True)
_register("hat_vit_tiny_patch16_224", "vit_tiny_patch16_224")

HAT_MODELS = sorted(m for m in timm.list_models("hat_*") if m.startswith("hat_"))
"""The names this module registers in timm."""
