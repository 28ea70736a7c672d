"""What every method needs besides its config: where runs go, the device, threads and output mode.

None of these change results, so none of them is part of the config or its hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from ticketlab.errors import ConfigError
from ticketlab.resources import check_threads
from ticketlab.train.trackers import Tracker


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but CUDA is not available; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available; use --device cpu")
    return torch.device(name)


@dataclass
class RunContext:
    runs_dir: Path = Path("runs")
    device: str = "auto"
    threads: Optional[int] = None
    progress: Optional[Union[bool, str]] = None  # None: a bar on a terminal, lines otherwise; "lines"; False
    argv: Optional[List[str]] = field(default=None)
    trackers: Sequence[Tracker] = ()  # get every metric record of every phase (`ticketlab.train.trackers`)

    def __post_init__(self):
        self.runs_dir = Path(self.runs_dir)
        self.torch_device = resolve_device(self.device)
        if self.threads is not None:
            check_threads(self.threads)
            torch.set_num_threads(self.threads)
