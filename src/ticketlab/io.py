"""Atomic file writes and checked reads.

Every file ticketlab writes goes to a temporary file in the same folder first and is moved into place
with `os.replace`, so a killed process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

from ticketlab.errors import CheckpointError

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``path`` atomically; under torchrun only rank 0 writes (`ticketlab.distributed`)."""
    from ticketlab import distributed

    if not distributed.is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600; a shared cache or run folder must be readable
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode() -> int:
    """0666 less the process umask: the mode `open` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; the run directory is incomplete, remove it to start again") from None
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt (not JSON); delete it or the run directory to start again") from None


def save_torch(obj: Any, path: PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: PathLike, map_location: Any = "cpu") -> Any:
    """Load a tensor file saved by ticketlab (``weights_only=True``); corrupt -> CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; check the run directory or start the run again") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path} is corrupt or not a ticketlab file ({type(exc).__name__}); delete it to start that phase again"
        ) from None
