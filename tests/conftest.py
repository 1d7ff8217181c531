import os

import numpy as np
import pytest
import torch

from maskcl.data import load_fashion_mnist
from maskcl.errors import MaskclError


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion_mnist() -> tuple[np.ndarray, ...]:
    """The real Fashion-MNIST arrays. `make test` installs them; without them a test is skipped, except
    under CI (CI=true), where missing data means a broken set-up and fails the test."""
    try:
        return load_fashion_mnist(download=False)
    except MaskclError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"real Fashion-MNIST is missing under CI: {exc}")
        pytest.skip(f"real Fashion-MNIST not installed (make data): {exc}")
