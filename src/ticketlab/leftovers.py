"""Files a killed process leaves behind, and their removal.

An atomic write (`ticketlab.io.atomic_write_bytes`) killed before its `os.replace` leaves its temporary
``.<name>.<random>.tmp``; a phase killed between writing its summary and deleting its ``checkpoint.pt``
(and ``checkpoint.prev.pt``) leaves checkpoints that nothing will read again; a `ticketlab runs rm` stopped half-way leaves a hidden
``.<run>.removing-<pid>`` folder. A run's own are removed when it next starts (under its lock, so no
writer is cut short), and `ticketlab runs clean` removes those of every run that is not in use.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path
from typing import Iterable, List, Tuple

TMP_GLOB = ".*.tmp"
REMOVING = ".removing-"
# a finished phase's checkpoints (the last and the one before it) and their checksum records
STALE_IN_FINISHED = tuple(f"{name}{suffix}" for name in ("checkpoint.pt", "checkpoint.prev.pt") for suffix in ("", ".sha256"))


def run_leftovers(run: Path) -> List[Path]:
    """Temporary files anywhere under ``run`` and checkpoints of its finished phases."""
    found = []
    for folder, _, files in os.walk(run):  # one walk of the tree
        finished = "summary.json" in files
        found += [Path(folder) / name for name in files
                  if fnmatch.fnmatchcase(name, TMP_GLOB) or (finished and name in STALE_IN_FINISHED)]
    return sorted(p for p in found if p.is_file())


def temporary_files(folder: Path, pattern: str = TMP_GLOB) -> List[Path]:
    """The temporary files of atomic writes directly in ``folder`` (a data cache), those of ``pattern``."""
    return sorted(p for p in Path(folder).glob(pattern) if p.is_file()) if Path(folder).is_dir() else []


def unfinished_removals(runs_dir: Path) -> List[Path]:
    return sorted(p for p in Path(runs_dir).glob(f".*{REMOVING}*") if p.is_dir()) if Path(runs_dir).is_dir() else []


def size_of(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def remove(paths: Iterable[Path]) -> List[Tuple[Path, int]]:
    """Delete ``paths`` (files or folders); returns ``(path, bytes freed)`` of each one removed (one that
    vanished meanwhile, or cannot be removed, is skipped)."""
    freed = []
    for path in paths:
        size = size_of(path)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:  # vanished meanwhile, or not ours to remove
            continue
        freed.append((path, size))
    return freed


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


__all__ = ["run_leftovers", "temporary_files", "unfinished_removals", "remove", "size_of", "megabytes"]
