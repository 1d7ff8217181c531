"""maskcl's HAT models in timm's registry: each builds through timm.create_model and computes every task."""

import pytest
import torch

from maskcl import HAT, MaskclError, set_task
from maskcl.core import TaskGate
from maskcl.core.layers import TaskHeads

timm = pytest.importorskip("timm")
timm_models = pytest.importorskip("maskcl.methods.hat.timm_models")


def kwargs_for(name):
    return {"img_size": 32, "patch_size": 4} if "vit" in name else {}


def test_registry_lists_the_required_models():
    assert {"hat_resnet18", "hat_resnet34", "hat_resnet50", "hat_vit_tiny_patch16_224"} <= set(
        timm_models.HAT_MODELS
    )
    assert "hat_resnet18_cifar" in timm.list_models("hat_*")


@pytest.mark.parametrize("name", timm_models.HAT_MODELS)
def test_every_registered_model_computes_each_task(name):
    torch.manual_seed(0)
    model = timm.create_model(name, classes_per_task=[2, 3], **kwargs_for(name)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert set_task(model, 0)(x).shape == (2, 2)
    assert set_task(model, 1)(x).shape == (2, 3)
    assert any(isinstance(m, TaskHeads) for m in model.modules())
    assert len(HAT(model).gate_modules) == sum(isinstance(m, TaskGate) for m in model.modules()) > 0


def test_small_image_variant_keeps_32x32_resolution_in_the_stem():
    model = timm.create_model("hat_resnet18_cifar", num_tasks=2, classes_per_task=2)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4  # 32 / 8: no stem downsampling


def test_task_arguments_are_checked():
    with pytest.raises(MaskclError, match="needs num_tasks"):
        timm.create_model("hat_resnet18", classes_per_task=2)
    with pytest.raises(MaskclError, match="needs classes_per_task"):
        timm.create_model("hat_resnet18")
    with pytest.raises(MaskclError, match="num_tasks=3 but classes_per_task lists 2"):
        timm.create_model("hat_resnet18", num_tasks=3, classes_per_task=[2, 2])
