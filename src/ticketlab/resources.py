"""What the machine offers, checked before a run asks for it: CPU threads and memory.

A thread count above the machine's CPUs (``--threads 100000``) can crash torch's thread pool, and a model
or batch that cannot fit fails deep inside an allocation; both are refused here in one line instead.
"""

from __future__ import annotations

import os
from typing import Optional

from ticketlab.errors import ConfigError

GIB = 1 << 30
TRAINING_COPIES = 4  # weights, gradients, an optimizer buffer and a saved copy: what training holds per weight


def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: Optional[int], flag: str = "--threads") -> None:
    """``threads`` (None: torch's default) must lie in [1, the CPUs of this machine]."""
    if threads is None:
        return
    limit = cpu_count()
    if not 1 <= threads <= limit:
        raise ConfigError(f"{flag}={threads} is out of range: this machine has {limit} CPUs; give 1 to {limit} "
                          f"(or leave {flag} out for torch's default)")


def available_memory() -> Optional[int]:
    """Bytes of memory free for a new allocation (Linux: MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(nbytes: int, what: str, fix: str) -> None:
    """Refuse ``what`` when its ``nbytes`` exceed the memory available now."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise ConfigError(f"{what} needs about {nbytes / GIB:.1f} GiB but {free / GIB:.1f} GiB of memory are "
                          f"available; {fix}")


def check_model_size(parameters: int, bytes_per_value: int = 4) -> None:
    """A model of ``parameters`` values, with what training holds per weight, must fit in memory."""
    check_fits(parameters * bytes_per_value * TRAINING_COPIES, f"a model of {parameters:,} parameters (trained)",
               "choose a smaller model (--model.hidden, --model.width, --model.depth)")


__all__ = ["cpu_count", "check_threads", "available_memory", "check_fits", "check_model_size"]
