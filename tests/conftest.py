import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskcl.core.context import set_task
from maskcl.data import load_fashion_mnist
from maskcl.errors import MaskclError

OPTIONAL_EXTRAS = (
    "timm",
    "torchvision",
    "matplotlib",
    "yaml",
    "omegaconf",
    "tqdm",
    "tensorboard",
    "lightning",
    "mlflow",
    "wandb",
)
"""Tests of the optional extras skip where the extra is not installed (``pytest.importorskip``)."""


def pytest_sessionstart(session):
    """Under CI (CI=true) the extras are part of the set-up, so a missing one fails the run instead of
    letting its tests skip unseen."""
    if os.environ.get("CI"):
        for name in OPTIONAL_EXTRAS:
            try:
                __import__(name)
            except ImportError as exc:
                raise pytest.UsageError(f"optional extra {name!r} is missing under CI: {exc}") from exc


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


def _train_hat_task(model, hat, optimizer, task, batches) -> None:
    """Learn ``task`` under ``hat``: one optimizer step per ``(x, y)`` of ``batches``, one epoch in all."""
    model.train()
    hat.start_task(task, optimizer, steps_per_epoch=len(batches))
    for x, y in batches:
        loss = F.cross_entropy(set_task(model, task)(x), y) + hat.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hat.end_task()


@pytest.fixture
def train_hat():
    """``train_hat(model, hat, optimizer, task, batches)``: a HAT task learned on the given batches."""
    return _train_hat_task


SMALL_RUN = ["--epochs", "3", "--batch-size", "16", "--hidden", "32,32", "--num-tasks", "2"]
"""A run of a few seconds: 2 tasks, 3 epochs, MLP 32-32 on :func:`data`."""


def maskcl_command(*args: str) -> list[str]:
    """``maskcl ARGS`` as a new process of this Python."""
    return [sys.executable, "-m", "maskcl", *args]


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> str:
    """A small .npz of 4 classes of 6x6 images (1,600 samples)."""
    from test_cli import write_npz

    return str(write_npz(tmp_path_factory.mktemp("data") / "d.npz", n=1600))


@pytest.fixture(scope="session")
def reference(tmp_path_factory, data):
    """:data:`SMALL_RUN` on :func:`data`, never stopped, in its own process like the stopped ones."""
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(
        maskcl_command("run", "--data", data, *SMALL_RUN, "--quiet", "--out", str(out)), check=True
    )
    return out


def blobs(task: int, n: int, generator: torch.Generator, centre: float = 6.0, shared: bool = False):
    """``(x, y)``: ``n`` 6-number inputs of ``task``, around its own centre (coordinate ``2 task`` at
    ``centre``), the class in the sign of the next coordinate; or (``shared``) the same inputs for every
    task, each task reading its class from its own coordinate, so that nothing tells the tasks apart."""
    if shared:
        x = torch.randn(n, 6, generator=generator) * 2
        return x, (x[:, task] > 0).long()
    middle = torch.zeros(6)
    middle[2 * task] = centre
    y = torch.randint(0, 2, (n,), generator=generator)
    x = middle + torch.randn(n, 6, generator=generator) * 0.5
    x[:, 2 * task + 1] += torch.where(y == 1, 2.0, -2.0)
    return x, y


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A data reader finds nothing of its own: HOME (hence ``~/.cache/maskcl``) is an empty folder and
    MASKCL_DATA is unset. Returns the home folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MASKCL_DATA", raising=False)
    return home
