import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("TICKETLAB_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))
FASHION_DIR = Path(os.environ.get("TICKETLAB_TEST_FASHION_MNIST", REPO.parent / "shared" / "data" / "fashion-mnist"))
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _has_mnist(folder: Path) -> bool:
    return all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in MNIST_FILES)


@pytest.fixture
def mnist_root() -> Path:
    """The real MNIST (../shared/data/mnist beside the repository); skips when absent."""
    if not _has_mnist(MNIST_DIR):
        pytest.skip(f"real MNIST not found in {MNIST_DIR} (set TICKETLAB_TEST_MNIST to its folder)")
    return MNIST_DIR


@pytest.fixture
def fashion_mnist_root() -> Path:
    """The real Fashion-MNIST (../shared/data/fashion-mnist beside the repository, same file names as
    MNIST); skips when absent."""
    if not _has_mnist(FASHION_DIR):
        pytest.skip(f"Fashion-MNIST not found in {FASHION_DIR} (set TICKETLAB_TEST_FASHION_MNIST to its folder)")
    return FASHION_DIR


@pytest.fixture(autouse=True)
def _isolated_data_home(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's $TICKETLAB_DATA."""
    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path_factory.getbasetemp() / "data-home"))


try:  # property tests draw the same examples on every run, so CI never flakes on a new draw
    from hypothesis import settings

    settings.register_profile("ticketlab", derandomize=True, deadline=None)
    settings.load_profile("ticketlab")
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass
