"""Decoded data sets kept as tensor files, so a data set's files are parsed once, not on every run.

``$TICKETLAB_DATA`` (default ``~/.cache/ticketlab/data``) is the parent of one folder per data set; the
decoded copies go to its ``.decoded/`` folder (the data folder itself may be read-only), one file per
set of source files, named by a hash of their absolute paths, sizes, modification times and first and
last MiB (file times are only as fine as a clock tick): a replaced or touched file makes a new entry, and
the older entries of that data set are removed. A cache that
cannot be read is decoded again; one that cannot be written only costs the next run the decoding.
Writers take the folder's lock (``.decoded/.lock``) one at a time; whoever next finds it free removes
the temporary files of writes that were killed. `read_or_make` does the same for a cache kept elsewhere
(an image folder's, in its root).
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ticketlab import distributed, leftovers
from ticketlab.errors import CheckpointError
from ticketlab.io import DamagedFileError, load_torch, remove_file, save_torch
from ticketlab.status import note

CACHE_VERSION = 1
LOCK = ".lock"  # in the cache's folder, held while writing
SAMPLE = 1 << 20  # bytes read from each end of every source file for the key
Tensors = Dict[str, torch.Tensor]


def data_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TICKETLAB_DATA") or "~/.cache/ticketlab/data").expanduser()


def cache_folder() -> pathlib.Path:
    return data_home() / ".decoded"


def _lock(path: pathlib.Path, timeout: float):
    import filelock

    return filelock.FileLock(str(path), timeout=timeout)


def clean_cache(folder: Optional[pathlib.Path] = None, pattern: str = leftovers.TMP_GLOB,
                lock: str = LOCK) -> List[Tuple[pathlib.Path, int]]:
    """Remove the temporary files (``pattern``) of killed cache writes in ``folder`` (default: the decoded
    copies' folder), unless a write is under way there (it holds ``folder/lock``; then: nothing); returns
    what was removed, with sizes."""
    import filelock

    folder = cache_folder() if folder is None else pathlib.Path(folder)
    if not leftovers.temporary_files(folder, pattern):
        return []
    try:
        with _lock(folder / lock, timeout=0):
            return leftovers.remove(leftovers.temporary_files(folder, pattern))
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
    return read_or_make(cache_folder() / f"{name}-{digest.hexdigest()[:20]}.pt", name, decode, older=f"{name}-*.pt")


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(torch.is_tensor(v) for v in value.values())


def read_or_make(path: pathlib.Path, what: str, make: Callable[[], Dict[str, Any]], *, older: str,
                 lock: str = LOCK, valid: Callable[[Any], bool] = _tensors) -> Dict[str, Any]:
    """The cache entry ``path`` when it holds a ``valid`` one, else ``make()`` (the decoding of ``what``),
    written to ``path`` in place of the other entries that the glob ``older`` names in its folder, under the
    folder's ``lock`` (first, unless a write holds it, the temporary files of killed writes of those
    entries go). A damaged entry is made again with a warning; one that cannot be read or written only
    costs the next run the making."""
    folder = path.parent
    if distributed.is_writer():
        clean_cache(folder, f".{older}.*.tmp", lock)
    try:
        if path.is_file():
            value = load_torch(path)
            if valid(value):
                return value
    except DamagedFileError as exc:  # its checksum does not match, or not a tensor file: make it instead
        warnings.warn(f"{exc.path} is damaged; decoding {what} again", stacklevel=3)
    except (CheckpointError, OSError):  # vanished or unreadable: make it instead
        pass
    note(f"decoding {what} (once: later runs read the decoded copy in {folder})")
    value = make()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _lock(folder / lock, timeout=-1) if distributed.is_writer() else contextlib.nullcontext():
            for old in folder.glob(older) if distributed.is_writer() else ():
                remove_file(old)
            save_torch(value, path)
    except OSError as exc:
        warnings.warn(f"could not write the decoded copy of {what} to {path} ({exc}); it will be decoded "
                      "again next time", stacklevel=3)
    return value
