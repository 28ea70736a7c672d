"""SVHN (cropped digits) from the official ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5 files).

Each file holds ``X`` of shape (32, 32, 3, N) uint8 (height, width, channel, example) and ``y`` of shape
(N, 1) with labels 1..10, where 10 stands for the digit 0; ticketlab maps 10 to 0. The ``extra`` split is
not read.
"""

from __future__ import annotations

import pathlib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ticketlab.data.cache import decoded
from ticketlab.data.download import fetch
from ticketlab.data.sources import RawData, register_dataset
from ticketlab.errors import DataError
from ticketlab.extras import require

# Official files: name -> (urls, MD5). Tests swap in file:// URLs.
FILES: Dict[str, Tuple[Sequence[str], Optional[str]]] = {
    "train_32x32.mat": (("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                        "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": (("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                       "eb5a983be6a315427106f1b164d9cef3"),
}
MEAN, STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def read_mat(path: pathlib.Path) -> Tuple[torch.Tensor, torch.Tensor]:
    """One SVHN .mat file -> images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9."""
    loadmat = require("scipy.io", "the svhn data set (its .mat files)").loadmat
    try:
        mat = loadmat(str(path), variable_names=("X", "y"))
        x, y = mat["X"], mat["y"]
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... for foreign files
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); the file is corrupt or not an "
                        "SVHN .mat file, replace it with the official file") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or y.size != x.shape[3]:
        raise DataError(f"{path} holds X {x.dtype}{x.shape} and y {y.shape}; expected uint8 (H, W, 3, N) and "
                        "N labels, replace it with the official file")
    labels = y.reshape(-1).astype(np.int64)
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path} has labels outside 1..10; replace it with the official file")
    labels[labels == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return torch.from_numpy(images), torch.from_numpy(labels)


@register_dataset(folder="svhn")
def svhn(root: Optional[pathlib.Path], download: bool) -> RawData:
    """SVHN cropped digits (73257 train, 26032 test, 32x32 colour, 10 classes; no extra split)."""
    if root is None:
        raise DataError("no folder given for svhn; pass --data.root FOLDER or set TICKETLAB_DATA")
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing and download:
        for name in missing:
            urls, md5 = FILES[name]
            fetch(urls, root / name, md5, fix=f"download {name} yourself into {root}")
        missing = []
    if missing:
        raise DataError(f"svhn files missing in {root}: {', '.join(missing)}; put them there, "
                        "pass --data.root FOLDER, or add --data.download")

    def decode():
        (train_x, train_y), (test_x, test_y) = read_mat(root / "train_32x32.mat"), read_mat(root / "test_32x32.mat")
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

    t = decoded("svhn", [root / name for name in FILES], decode)
    return RawData(t["train_x"], t["train_y"], t["test_x"], t["test_y"], num_classes=10, mean=MEAN, std=STD,
                   scale=255.0)
