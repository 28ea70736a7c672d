"""Atomic file writes and checked reads.

Every file ticketlab writes goes to a temporary file in the same folder first and is moved into place
with `os.replace`, so a killed process leaves either the old file or the new one, never half of one.

Every such file also gets a checksum beside it, ``<file>.sha256`` (SHA-256 of the bytes written, taken
from memory: 1.8 ms for a 2.2 MB ResNet-20 checkpoint, against about 12 ms to serialise and write it), and
every read through `read_checked`, `read_json` or `load_torch` verifies it: flipped or garbled bytes
raise `DamagedFileError` instead of loading a different result. A file without a checksum (written by
an older version) loads unchecked and gains one when it is next written. A file that matches its checksum
but does not load is intact, not damaged: that is a plain `CheckpointError` naming the cause (`parsing`).

The two files cannot be replaced in one step, so the record lists the digest it replaces too and is
written first: a kill between the two leaves the old file, which the new record still accepts. A file
written for the first time goes first instead (a kill then leaves a file without a record, loaded
unchecked once), so neither order can make an intact file look damaged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, List, Optional, Tuple, Union

import torch

from ticketlab.errors import CheckpointError

PathLike = Union[str, "os.PathLike[str]"]
CHECKSUM_SUFFIX = ".sha256"
KEEP_EARLIER = 2  # digests of replaced versions a record still accepts (a kill between its two writes)
REMAKE = "delete it and run the command that made the run again, which makes it again"


class DamagedFileError(CheckpointError):
    """A file's bytes do not match the checksum recorded when it was written (or, without a record, do
    not parse)."""

    def __init__(self, path: PathLike, message: str):
        super().__init__(message)
        self.path = Path(path)


def checksum_path(path: PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _replace_with(path: Path, data: bytes) -> None:
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_temporary(path: Path) -> Tuple[int, str]:
    """``(fd, name)`` of a new ``.<name>.<random>.tmp`` beside ``path``, made as `open` makes files: 0666 less
    the umask, which the kernel applies (a shared cache or run folder stays readable). `tempfile.mkstemp`
    makes 0600, and a chmod after it needs the umask, read only by setting it (racing other threads' new
    files), and a filesystem that allows chmod."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"))
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _recorded(path: Path) -> Optional[List[str]]:
    """The digests ``path``'s record accepts (its current one first); None without a readable record."""
    try:
        record = json.loads(checksum_path(path).read_text())
        digests = [record["sha256"], *record.get("earlier", [])]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return None
    return digests if all(isinstance(d, str) for d in digests) else None


def atomic_write_bytes(path: PathLike, data: bytes, *, checksum: bool = True) -> None:
    """Write ``path`` atomically with its checksum record (``checksum=False``: none, for files that are
    not read back); under torchrun only rank 0 writes (`ticketlab.distributed`)."""
    from ticketlab import distributed

    if not distributed.is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not checksum:
        _replace_with(path, data)
        return
    earlier = _recorded(path)
    record = {"sha256": hashlib.sha256(data).hexdigest(), "file": path.name}
    if earlier is None and path.exists():  # a file from before checksums: a kill between leaves it unchecked
        _replace_with(path, data)
        _replace_with(checksum_path(path), (json.dumps(record) + "\n").encode())
        return
    # the record first, so the file never exists without one: a kill between the two leaves the old file
    # (accepted as "earlier") or none
    record["earlier"] = [d for d in earlier or () if d != record["sha256"]][:KEEP_EARLIER]
    _replace_with(checksum_path(path), (json.dumps(record) + "\n").encode())
    _replace_with(path, data)


def remove_file(path: PathLike) -> None:
    """Delete ``path`` and its checksum record (either may be absent)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def move_file(source: PathLike, target: PathLike) -> None:
    """Rename ``source`` to ``target`` with its checksum record (``target``'s own is removed first, so a kill
    between the two renames leaves ``target`` without a record, read unchecked, never checked against
    another file's)."""
    source, target = Path(source), Path(target)
    checksum_path(target).unlink(missing_ok=True)
    os.replace(source, target)
    if checksum_path(source).exists():
        os.replace(checksum_path(source), checksum_path(target))


def verify(path: PathLike, handle: BinaryIO, fix: str = REMAKE) -> bool:
    """Check the open file ``handle`` of ``path`` against its record; leaves ``handle`` at its start. True when
    the record vouches for the bytes, False without a record (nothing to check); a mismatch raises
    `DamagedFileError` naming the file and ``fix``."""
    def digest() -> str:
        found = sha256_file(handle)
        handle.seek(0)
        return found

    return _check(Path(path), digest, fix)


def _check(path: Path, digest: Callable[[], str], fix: str) -> bool:
    """`verify` of the bytes whose sha256 ``digest()`` gives (taken only when ``path`` has a record)."""
    accepted = _recorded(path)
    if accepted is None:
        if checksum_path(path).exists():
            raise DamagedFileError(path, f"the checksum record {checksum_path(path)} is damaged; delete that record "
                                         f"to load {path.name} unchecked")
        return False
    if digest() not in accepted:
        raise DamagedFileError(path, damaged_message(path, "its bytes do not match its checksum", fix))
    return True


def sha256_file(handle: BinaryIO) -> str:
    """The hex sha256 of what ``handle`` reads from its position on (``hashlib.file_digest`` is Python 3.11+)."""
    if hasattr(hashlib, "file_digest"):
        return hashlib.file_digest(handle, "sha256").hexdigest()
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def damaged_message(path: Path, what: str, fix: str = REMAKE) -> str:
    return f"{path} is damaged ({what}); {fix}"


def read_checked(path: PathLike, fix: str = REMAKE) -> bytes:
    """The bytes of ``path``, verified against its checksum record."""
    return read_verified(path, fix)[0]


def read_verified(path: PathLike, fix: str = REMAKE) -> Tuple[bytes, bool]:
    """The bytes of ``path`` (read once, hashed in memory) and whether its checksum record vouched for them
    (False: it has none); a mismatch raises `DamagedFileError`."""
    path = Path(path)
    data = path.read_bytes()  # before the record: a replacement's record still accepts the bytes it replaces
    return data, _check(path, lambda: hashlib.sha256(data).hexdigest(), fix)


def write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: PathLike, fix: str = REMAKE) -> Any:
    """A JSON file ticketlab wrote, verified; missing or damaged -> `CheckpointError` (damaged: a
    `DamagedFileError` whose message ends with ``fix``)."""
    try:
        return json.loads(read_checked(path, fix))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; the run directory is incomplete, remove it to start again") from None
    except (ValueError, UnicodeDecodeError):
        raise DamagedFileError(path, damaged_message(Path(path), "not JSON", fix)) from None


def save_torch(obj: Any, path: PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: PathLike, map_location: Any = "cpu", fix: str = REMAKE) -> Any:
    """Load a tensor file saved by ticketlab (``weights_only=True``), verified. Damaged, truncated or foreign
    -> `DamagedFileError` (its message ends with ``fix``); see `parsing` for what is not damage."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; check the run directory or start the run again") from None
    except OSError as exc:
        raise unreadable(path, exc) from None
    with handle:
        try:
            checked = verify(path, handle, fix)
        except OSError as exc:
            raise unreadable(path, exc) from None
        with parsing(path, checked, "a readable tensor file", fix):  # torch raises several types for cut files
            return torch.load(handle, map_location=map_location, weights_only=True)


@contextlib.contextmanager
def parsing(path: PathLike, checked: bool, what: str, fix: str = REMAKE) -> Iterator[None]:
    """Parse the bytes of ``path`` as ``what`` in this block, raising what an error there means. Only bytes
    that may be bad make a `DamagedFileError` (which callers answer by falling back or advising deletion):
    bytes that matched their record (``checked``) are intact, so the cause is named instead (a
    `CheckpointError`), as is an error reading the file; memory running out (host or device) is raised as
    it is."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (parsers raise many types for bad bytes)
        failure = _parse_failure(Path(path), exc, checked, what, fix)
        if failure is None:
            raise
        raise failure from None


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is memory running out (host or device): a cause to report as it is, never a bad file."""
    return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _parse_failure(path: Path, exc: Exception, checked: bool, what: str, fix: str) -> Optional[CheckpointError]:
    if out_of_memory(exc):
        return None
    if checked:
        cause = (str(exc).strip().splitlines() or [""])[0]
        return CheckpointError(f"{path} is intact (it matches its checksum) but loading it failed: "
                               f"{type(exc).__name__}{': ' + cause if cause else ''}")
    if isinstance(exc, OSError) and exc.errno != errno.EINVAL:  # EINVAL: a seek before the start of a cut file
        return unreadable(path, exc)
    return DamagedFileError(path, damaged_message(path, f"not {what}: {type(exc).__name__}", fix))


def unreadable(path: PathLike, exc: OSError) -> CheckpointError:
    """An error reading ``path`` (permissions, a folder, the disk), not its content, in one line."""
    return CheckpointError(f"cannot read {path} ({exc.strerror or type(exc).__name__}); check that it is a readable file")
