"""Data sources: functions ``fn(root, download) -> RawData``, kept in the `DATASETS` registry.

A source only reads or generates the raw train and test sets; splits, subsets, label noise and
normalisation are applied once, in `ticketlab.data.bundle.load_data`. Users add their own source with
``@register_dataset`` (optionally ``folder=`` for its default folder under ``$TICKETLAB_DATA``).
The image sources live in their own modules (`cifar`, `svhn`, `imagefolder`) and register themselves
when `ticketlab.data` is imported.
"""

from __future__ import annotations

import functools
import pathlib
import random
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ticketlab.data.cache import data_home
from ticketlab.data.idx import load_idx_folder
from ticketlab.extras import missing, require
from ticketlab.registry import Registry


@dataclass
class RawData:
    """What a source returns: the full train and test sets, before splits, noise and normalisation."""

    train_x: Tensor  # (N, C, H, W) images, (N, 1, L) signals; uint8 or float
    train_y: Tensor  # int64 (N,)
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: Tuple[float, ...]  # per channel, of x / scale
    std: Tuple[float, ...]
    scale: float = 255.0  # raw values are divided by this before (x - mean) / std
    class_map: Optional[Dict[int, int]] = None  # class -> class for `asymmetric` label noise
    # how `asymmetric` noise picks examples of a mapped class c: "exact" relabels exactly ceil(r * n_c)
    # (a seeded permutation; CIFAR-10 in the reference), "bernoulli" each one with probability r
    # (CIFAR-100 in the reference)
    class_map_draw: str = "exact"


Source = Callable[[Optional[pathlib.Path], bool], RawData]
DATASETS: Registry[Source] = Registry("dataset")
_FOLDERS: Dict[str, str] = {}  # dataset name -> folder name under $TICKETLAB_DATA


def register_dataset(fn: Optional[Source] = None, *, name: Optional[str] = None,
                     folder: Optional[str] = None, replace: bool = False):
    """Register a data source (decorator). ``folder``: its default folder under ``$TICKETLAB_DATA``."""

    def add(source: Source) -> Source:
        DATASETS.register(source, name=name, replace=replace)
        key = name or source.__name__
        if folder is not None:
            _FOLDERS[key] = folder
        else:
            _FOLDERS.pop(key, None)
        return source

    return add if fn is None else add(fn)


def resolve_root(dataset: str, root: Optional[str]) -> Optional[pathlib.Path]:
    """``root`` if given, else ``$TICKETLAB_DATA/<folder>``; None for sources that read no files."""
    if root is not None:
        return pathlib.Path(root).expanduser()
    folder = _FOLDERS.get(dataset)
    if folder is None:
        return None
    return data_home() / folder


def _stats(x: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std over (N, C, ...), in float64."""
    flat = x.astype(np.float64).swapaxes(0, 1).reshape(x.shape[1], -1)
    return tuple(float(m) for m in flat.mean(1)), tuple(float(s) for s in flat.std(1))


# -- offline sources -----------------------------------------------------------------------------

DIGITS_TEST_SIZE = 360  # fixed test split, chosen by a permutation with seed 0


def _digits_table() -> np.ndarray:
    """scikit-learn's ``digits.csv.gz`` (64 pixel columns and the label), read as ``load_digits`` reads it
    but without importing scikit-learn, whose import costs a second or two of every command."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise missing("sklearn", "the digits data set")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a layout this reader does not know: let scikit-learn read it
        bunch = require("sklearn.datasets", "the digits data set").load_digits()
        return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
    return np.loadtxt(path, delimiter=",")


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    table = _digits_table()
    x = table[:, :-1].reshape(-1, 8, 8).astype(np.uint8)[:, None]  # values 0..16
    y = table[:, -1].astype(np.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).numpy()
    test, train = np.sort(perm[:DIGITS_TEST_SIZE]), np.sort(perm[DIGITS_TEST_SIZE:])
    mean, std = _stats(x[train] / 16.0)
    return x[train], y[train], x[test], y[test], mean, std


@register_dataset
def digits(root: Optional[pathlib.Path], download: bool) -> RawData:
    """scikit-learn's 8x8 digits (1797 images, 10 classes): 1437 train, 360 test."""
    train_x, train_y, test_x, test_y, mean, std = _digits_arrays()
    return RawData(torch.tensor(train_x), torch.tensor(train_y), torch.tensor(test_x),
                   torch.tensor(test_y), num_classes=10, mean=mean, std=std, scale=16.0)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays():
    mnist1d_data = require("mnist1d.data", "the mnist1d data set")
    get_dataset_args, make_dataset = mnist1d_data.get_dataset_args, mnist1d_data.make_dataset
    # make_dataset reseeds the global NumPy and `random` generators; leave them as they were.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    train_x = data["x"].astype(np.float32)[:, None]
    test_x = data["x_test"].astype(np.float32)[:, None]
    mean, std = _stats(train_x)
    return train_x, data["y"].astype(np.int64), test_x, data["y_test"].astype(np.int64), mean, std


@register_dataset
def mnist1d(root: Optional[pathlib.Path], download: bool) -> RawData:
    """MNIST-1D, generated offline with the package defaults: 4000 train, 1000 test signals of length 40."""
    train_x, train_y, test_x, test_y, mean, std = _mnist1d_arrays()
    return RawData(torch.tensor(train_x), torch.tensor(train_y), torch.tensor(test_x),
                   torch.tensor(test_y), num_classes=10, mean=mean, std=std, scale=1.0)


# -- IDX sources -----------------------------------------------------------------------------------
# Checksums are MD5 of the decompressed files (independent of how the .gz was compressed).

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
              "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
              "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
              "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_FASHION_MD5 = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}


def _idx_raw(name, root, download, mirrors, md5, mean, std) -> RawData:
    t = load_idx_folder(name, root, download, mirrors, md5)
    return RawData(t["train_x"], t["train_y"], t["test_x"], t["test_y"], num_classes=10,
                   mean=(mean,), std=(std,), scale=255.0)


@register_dataset(folder="mnist")
def mnist(root: Optional[pathlib.Path], download: bool) -> RawData:
    """MNIST from its four IDX files (60000 train, 10000 test, 28x28 grey)."""
    return _idx_raw("mnist", root, download, _MNIST_MIRRORS, _MNIST_MD5, 0.1307, 0.3081)


@register_dataset(folder="fashion-mnist")
def fashion_mnist(root: Optional[pathlib.Path], download: bool) -> RawData:
    """Fashion-MNIST from its four IDX files (60000 train, 10000 test, 28x28 grey)."""
    return _idx_raw("fashion_mnist", root, download, _FASHION_MIRRORS, _FASHION_MD5, 0.2860, 0.3530)
