"""The network families every method's exact protection is tested on (timm's, torchvision's, a user's own
networks); needs timm and torchvision."""

import timm
import torch.nn.functional as F
import torchvision
from torch import nn


class ResidualCNN(nn.Module):
    """A user's own network with a non-sequential forward: a residual block, BN, pooling, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = h + self.conv_b(F.relu(self.conv_a(h)))
        return self.fc(h.mean((2, 3)))


def paper_alexnet() -> nn.Module:
    """The HAT paper's AlexNet-like network written as a plain nn.Sequential (64/128/256, 2048-2048)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256 * 2 * 2, 2048), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(2048, 2048), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2048, 10),
    )  # fmt: skip


FAMILIES = {
    "timm_resnet18": lambda: timm.create_model("resnet18", num_classes=10),
    "timm_resnet50": lambda: timm.create_model("resnet50", num_classes=10),
    "timm_vit_tiny": lambda: timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10
    ),
    "timm_convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=10),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=10),
    "timm_mobilenetv3_small_100": lambda: timm.create_model("mobilenetv3_small_100", num_classes=10),
    "torchvision_resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 10)),
    "residual_cnn": ResidualCNN,
    "paper_alexnet": paper_alexnet,
}
