"""IDX files (the MNIST format): a reader and a loader for a folder of the four standard files.

An IDX file starts with two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the data (big-endian). Files may be raw or gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import pathlib
import zlib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ticketlab.data.cache import decoded
from ticketlab.data.download import fetch, gunzip_md5
from ticketlab.errors import DataError

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_DIMS = 8  # more than any IDX data set uses; numpy refuses arrays of over 64

# The four files of MNIST-style data sets, by role.
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _read_bytes(path: pathlib.Path) -> bytes:
    try:
        data = path.read_bytes()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}; replace the file with an intact copy") from None
    return data


def read_idx(path) -> torch.Tensor:
    """Read one IDX file (raw or ``.gz``) into a tensor of its stored type and shape."""
    path = pathlib.Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES or data[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}); "
                        "replace it with the original IDX file")
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim > MAX_DIMS:
        raise DataError(f"{path} claims {ndim} dimensions (IDX data sets have 1 to 4); the header is corrupt, "
                        "replace the file with the original IDX file")
    if len(data) < header:
        raise DataError(f"{path} is truncated (header incomplete); replace it with an intact copy")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # exact: numpy's int64 product wraps for a corrupt header
    if len(data) - header != expected:
        raise DataError(f"{path} holds {len(data) - header} data bytes but its header {shape} needs "
                        f"{expected}; the file is truncated or corrupt, replace it with an intact copy")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def find_idx_files(folder: pathlib.Path) -> Tuple[Dict[str, pathlib.Path], Sequence[str]]:
    """Map each role to its file in ``folder`` (raw preferred over ``.gz``); also list missing names."""
    found, missing = {}, []
    for role, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def load_idx_folder(name: str, folder: Optional[pathlib.Path], download: bool,
                    mirrors: Sequence[str], md5: Dict[str, str]) -> Dict[str, torch.Tensor]:
    """Read the four IDX files of data set ``name`` from ``folder``, downloading them if asked.

    ``md5`` holds the checksum of each file's *decompressed* content, so a re-compressed copy still
    verifies. Returns images as (N, 1, H, W) uint8 and labels as int64.
    """
    if folder is None:
        raise DataError(f"no folder given for {name}; pass --data.root FOLDER or set TICKETLAB_DATA")
    found, missing = find_idx_files(folder)
    if missing and download:
        for file in missing:
            _download(file, folder, mirrors, md5[file])
        found, missing = find_idx_files(folder)
    if missing:
        raise DataError(f"{name} files missing in {folder}: {', '.join(f + '[.gz]' for f in missing)}; "
                        "put the IDX files there, pass --data.root FOLDER, or add --data.download")
    t = decoded(name, list(found.values()), lambda: {role: read_idx(path) for role, path in found.items()})
    for split in ("train", "test"):
        x, y = t[f"{split}_x"], t[f"{split}_y"]
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DataError(f"{name} {split} files in {folder} do not match: images {tuple(x.shape)}, "
                            f"labels {tuple(y.shape)}; replace them with the original IDX files")
        t[f"{split}_x"] = x.unsqueeze(1)
        t[f"{split}_y"] = y.long()
    return t


def _download(file: str, folder: pathlib.Path, mirrors: Sequence[str], md5: str) -> None:
    """Fetch ``file``.gz from the first mirror that answers; keep it only if its checksum matches."""
    fetch([f"{mirror}{file}.gz" for mirror in mirrors], folder / f"{file}.gz", md5, digest=gunzip_md5,
          fix=f"put the IDX files in {folder} by hand")
