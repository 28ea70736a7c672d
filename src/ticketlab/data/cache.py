"""Decoded data sets kept as tensor files, so a data set's files are parsed once, not on every run.

``$TICKETLAB_DATA`` (default ``~/.cache/ticketlab/data``) is the parent of one folder per data set; the
decoded copies go to its ``.decoded/`` folder (the data folder itself may be read-only), one file per
set of source files, named by a hash of their absolute paths, sizes, modification times and first and
last MiB (file times are only as fine as a clock tick): a replaced or touched file makes a new entry, and
the older entries of that data set are removed. A cache that
cannot be read is decoded again; one that cannot be written only costs the next run the decoding.
Writers take the folder's lock (``.decoded/.lock``) one at a time; whoever next finds it free removes
the temporary files of writes that were killed.
Not caught: a file replaced by one of the same size and modification time that differs only between
its first and last MiB (``rm -r $TICKETLAB_DATA/.decoded`` clears the cache), and a change to a reader
without a new ``CACHE_VERSION``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ticketlab import distributed, leftovers
from ticketlab.errors import CheckpointError
from ticketlab.io import DamagedFileError, load_torch, remove_file, save_torch
from ticketlab.status import note

CACHE_VERSION = 1
SAMPLE = 1 << 20  # bytes read from each end of every source file for the key
Tensors = Dict[str, torch.Tensor]


def data_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TICKETLAB_DATA") or "~/.cache/ticketlab/data").expanduser()


def cache_folder() -> pathlib.Path:
    return data_home() / ".decoded"


def _lock(folder: pathlib.Path, timeout: float):
    import filelock

    return filelock.FileLock(str(folder / ".lock"), timeout=timeout)


def clean_cache() -> List[Tuple[pathlib.Path, int]]:
    """Remove the temporary files of killed cache writes, unless a write is under way (then: nothing);
    returns what was removed, with sizes."""
    import filelock

    folder = cache_folder()
    if not leftovers.temporary_files(folder):
        return []
    try:
        with _lock(folder, timeout=0):
            return leftovers.remove(leftovers.temporary_files(folder))
    except (filelock.Timeout, OSError):
        return []


def decoded(name: str, files: Sequence[pathlib.Path], decode: Callable[[], Tensors]) -> Tensors:
    """``decode()`` (a dict of tensors made from ``files``), read from the cache when it holds them."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}\n{name}\n".encode())
    for file in sorted(pathlib.Path(f).resolve() for f in files):
        stat = file.stat()
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        with open(file, "rb") as f:
            digest.update(f.read(SAMPLE))
            if stat.st_size > 2 * SAMPLE:
                f.seek(-SAMPLE, os.SEEK_END)
            digest.update(f.read(SAMPLE))
    folder = cache_folder()
    if distributed.is_writer():
        clean_cache()
    path = folder / f"{name}-{digest.hexdigest()[:20]}.pt"
    try:
        if path.is_file():
            tensors = load_torch(path)
            if isinstance(tensors, dict) and all(torch.is_tensor(v) for v in tensors.values()):
                return tensors
    except DamagedFileError as exc:  # its checksum does not match, or not a tensor file: decode instead
        warnings.warn(f"{exc.path} is damaged; decoding {name} again", stacklevel=2)
    except (CheckpointError, OSError):  # vanished or unreadable: decode instead
        pass
    note(f"decoding {name} (once: later runs read the decoded copy in {folder})")
    tensors = decode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _lock(folder, timeout=-1) if distributed.is_writer() else contextlib.nullcontext():
            for old in folder.glob(f"{name}-*.pt") if distributed.is_writer() else ():
                remove_file(old)
            save_torch(tensors, path)
    except OSError as exc:
        warnings.warn(f"could not write the decoded copy of {name} to {path} ({exc}); it will be decoded "
                      "again next time", stacklevel=2)
    return tensors
