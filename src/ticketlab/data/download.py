"""Checksum-verified downloads and safe archive extraction (used only with ``--data.download``).

A download is streamed to a temporary file beside its destination and moved into place only when its
checksum matches, so a failed or tampered download never leaves a file that later loads would trust.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from typing import Callable, Optional, Sequence

from ticketlab.errors import DataError

_CHUNK = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}")


def file_md5(path: pathlib.Path) -> str:
    """MD5 of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def gunzip_md5(path: pathlib.Path) -> str:
    """MD5 of a gzip file's decompressed content (independent of how it was compressed)."""
    digest = hashlib.md5()
    with gzip.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(urls: Sequence[str], dest: pathlib.Path, md5: Optional[str], *, fix: str,
          digest: Callable[[pathlib.Path], str] = file_md5) -> None:
    """Download ``dest`` from the first of ``urls`` whose payload has ``digest(payload) == md5``.

    A missing or malformed ``md5`` refuses to download at all: an unverified file is never kept.
    ``fix`` ends the error message (what the user can do instead).
    """
    if md5 is None or not _MD5.fullmatch(md5):
        raise DataError(f"the checksum of {dest.name} is unknown, so ticketlab will not download it; {fix}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, handle, _CHUNK)
            got = digest(pathlib.Path(tmp))
            if got == md5:
                os.replace(tmp, dest)
                return
            errors.append(f"{url}: checksum {got} != {md5}")
        except (OSError, EOFError, zlib.error) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"could not download {dest.name} ({'; '.join(errors)}); {fix}")


def extract_tar(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """Extract regular files and folders of ``archive`` under ``dest``; refuse links, devices and any
    member whose path would leave ``dest``. Each file is written atomically."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member, dest)
            for member in members:
                target = dest / member.name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out, tar.extractfile(member) as src:
                        shutil.copyfileobj(src, out, _CHUNK)
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot extract {archive}: {exc}; delete it and download it again") from None


def _check_member(archive: pathlib.Path, member: tarfile.TarInfo, dest: pathlib.Path) -> None:
    parts = pathlib.PurePosixPath(member.name).parts
    inside = (dest / member.name).resolve()
    if (not (member.isfile() or member.isdir()) or member.name.startswith(("/", "\\")) or ".." in parts
            or not (inside == dest or dest in inside.parents)):
        raise DataError(f"{archive} holds an unsafe member {member.name!r} (a link, device or path outside "
                        "the folder); refusing to extract it, download the archive from the official source")
