"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Each batch is a pickled dict with ``b"data"`` (N, 3072) uint8 (channel-major: 1024 red, 1024 green, 1024
blue values of a 32x32 image) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).

Trust: pickle can run arbitrary code while loading, so the batches are read with a restricted unpickler
that resolves only the handful of globals a NumPy array needs (``numpy.ndarray``, ``numpy.dtype``, the
array reconstructor, ``_codecs.encode``). The files are expected to come from the official archive (its
MD5 is checked when ``--data.download`` fetches it); a file that asks for anything else is refused.
"""

from __future__ import annotations

import pathlib
import pickle
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ticketlab.data.cache import decoded
from ticketlab.data.download import extract_tar, fetch, file_md5
from ticketlab.data.sources import RawData, register_dataset
from ticketlab.errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    subdir: str  # folder inside the archive (the files may also sit directly in the data folder)
    train: Tuple[str, ...]
    test: Tuple[str, ...]
    label_key: bytes
    num_classes: int
    archive: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


# Mean/std of the training images (x / 255) as in the seed repositories. DLTH and OpenLTH normalise
# CIFAR-10 with the ImageNet statistics (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) instead; the
# difference is a fixed affine map of the inputs, absorbed by the first layer.
CIFAR10 = CifarSpec("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                    ("test_batch",), b"labels", 10, "cifar-10-python.tar.gz",
                    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100 = CifarSpec("cifar100", "cifar-100-python", ("train",), ("test",), b"fine_labels", 100,
                     "cifar-100-python.tar.gz", (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))

# Official archives: (urls, MD5 of the .tar.gz). Tests swap in file:// URLs.
ARCHIVES: Dict[str, Tuple[Sequence[str], Optional[str]]] = {
    "cifar10": (("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                "c58f30108f718f92721af3b95e74349a"),
    "cifar100": (("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                 "eb9058c3a382ffc7106e4002c42a8d85"),
}

# Asymmetric label noise (Sparse Double Descent). CIFAR-10: truck->automobile, bird->airplane, cat<->dog,
# deer->horse, exactly ceil(r * n_c) per class. CIFAR-100: 20 blocks of 5 consecutive class indices
# (not the real superclasses), i -> next class in its block (cyclic), each example with probability r.
CIFAR10_CLASS_MAP = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
CIFAR100_CLASS_MAP = {i: i - i % 5 + (i + 1) % 5 for i in range(100)}

_ALLOWED_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals that plain dicts of NumPy arrays, lists and strings need."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # NumPy 2 moved numpy.core
        return super().find_class(module, name)


def read_batch(path: pathlib.Path, label_key: bytes) -> Tuple[np.ndarray, np.ndarray]:
    """One pickle batch -> images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); the file is corrupt or not a "
                        "CIFAR python batch, replace it with the file from the official archive") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR python batch (needs keys b'data' and {label_key!r}); "
                        "replace it with the file from the official archive")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(f"{path} holds data {data.dtype}{data.shape} and labels {labels.shape}; expected uint8 "
                        "(N, 3072) and (N,), replace it with the file from the official archive")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def find_folder(spec: CifarSpec, root: pathlib.Path) -> Tuple[pathlib.Path, Sequence[str]]:
    """The folder holding the batches (``root/<subdir>`` or ``root``) and the names missing there."""
    names = spec.train + spec.test
    best, fewest = root / spec.subdir, list(names)
    for folder in (root / spec.subdir, root):
        missing = [n for n in names if not (folder / n).is_file()]
        if len(missing) < len(fewest):
            best, fewest = folder, missing
    return best, fewest


def _download(spec: CifarSpec, root: pathlib.Path) -> None:
    """Fetch (unless already there) and verify the official archive, extract it in ``root``, delete it."""
    urls, md5 = ARCHIVES[spec.name]
    archive = root / spec.archive
    fix = f"download {spec.archive} yourself and extract it in {root}"
    if archive.is_file() and md5 is not None and file_md5(archive) != md5:
        archive.unlink()  # a stale or partial copy: fetch it again
    if not archive.is_file():
        fetch(urls, archive, md5, fix=fix)
    extract_tar(archive, root)
    archive.unlink()


def load_cifar(spec: CifarSpec, root: Optional[pathlib.Path], download: bool) -> Dict[str, torch.Tensor]:
    """Read every batch of ``spec`` below ``root``; returns train/test images and labels as tensors."""
    if root is None:
        raise DataError(f"no folder given for {spec.name}; pass --data.root FOLDER or set TICKETLAB_DATA")
    folder, missing = find_folder(spec, root)
    if missing and download:
        _download(spec, root)
        folder, missing = find_folder(spec, root)
    if missing:
        raise DataError(f"{spec.name} files missing in {folder}: {', '.join(missing)}; extract "
                        f"{spec.archive} in {root}, pass --data.root FOLDER, or add --data.download")

    def decode() -> Dict[str, torch.Tensor]:
        out = {}
        for split, names in (("train", spec.train), ("test", spec.test)):
            parts = [read_batch(folder / name, spec.label_key) for name in names]
            x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
                raise DataError(f"{spec.name} {split} labels in {folder} lie outside 0..{spec.num_classes - 1}; "
                                "replace the files with those from the official archive")
            out[f"{split}_x"], out[f"{split}_y"] = torch.from_numpy(x), torch.from_numpy(y)
        return out

    return decoded(spec.name, [folder / name for name in (*spec.train, *spec.test)], decode)


def _raw(spec: CifarSpec, root, download, class_map, draw) -> RawData:
    t = load_cifar(spec, root, download)
    return RawData(t["train_x"], t["train_y"], t["test_x"], t["test_y"], num_classes=spec.num_classes,
                   mean=spec.mean, std=spec.std, scale=255.0, class_map=class_map, class_map_draw=draw)


@register_dataset(folder="cifar10")
def cifar10(root: Optional[pathlib.Path], download: bool) -> RawData:
    """CIFAR-10 from its python pickle batches (50000 train, 10000 test, 32x32 colour, 10 classes)."""
    return _raw(CIFAR10, root, download, CIFAR10_CLASS_MAP, "exact")


@register_dataset(folder="cifar100")
def cifar100(root: Optional[pathlib.Path], download: bool) -> RawData:
    """CIFAR-100 (fine labels) from its python pickles (50000 train, 10000 test, 32x32, 100 classes)."""
    return _raw(CIFAR100, root, download, CIFAR100_CLASS_MAP, "bernoulli")
