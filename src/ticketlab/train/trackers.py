"""Experiment trackers: every metric record a run logs, sent on to TensorBoard, Weights & Biases or one's own.

A tracker implements one method, ``log(record, phase=..., folder=...)``, called for each record as it is
appended to a phase's ``metrics.jsonl`` (the trainer's evaluations and whatever callbacks log with
``state.log``): ``record`` holds ``step``, ``epoch``, ``split`` and the values (``loss``,
``accuracy``, ``density``, ...); ``phase`` names the phase (``lottery_<hash>/level_2``); ``folder`` is
the phase's output folder (None for a trainer without one). ``close()`` ends it. Trackers are runtime
settings (``--log``, ``RunContext(trackers=...)``), never part of a run's hash. A resumed phase sends the
records after its checkpoint again, as ``metrics.jsonl`` has them after the resume::

    class PrintTracker(ticketlab.Tracker):
        def log(self, record, *, phase, folder):
            print(phase, record)
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ticketlab.errors import ConfigError

KEYS = ("step", "epoch", "split")  # what places a record; the rest are its values


class Tracker:
    """Base class of trackers (see the module docstring)."""

    def log(self, record: Mapping[str, Any], *, phase: str, folder: Optional[Path]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what the tracker holds."""


def scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """The numeric values of ``record`` as ``"<split>/<name>"``: ``{"test/accuracy": 0.91, ...}``."""
    split = record.get("split", "train")
    return {f"{split}/{k}": float(v) for k, v in record.items()
            if k not in KEYS and isinstance(v, numbers.Real) and not isinstance(v, bool)}


class TensorBoardTracker(Tracker):
    """Event files per phase: ``<phase folder>/tensorboard`` (or ``log_dir/<phase>``), scalars tagged
    ``<split>/<name>`` at the record's step, so ``tensorboard --logdir runs`` shows each level as a run."""

    def __init__(self, log_dir: Optional[str] = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'ticketlab[tensorboard]'"
                              ) from None
        self._writer_class, self.log_dir = SummaryWriter, log_dir
        self._writers: Dict[str, Any] = {}

    def directory(self, phase: str, folder: Optional[Path]) -> Path:
        if self.log_dir is not None:
            return Path(self.log_dir) / phase
        return Path(folder) / "tensorboard" if folder is not None else Path("tensorboard") / phase

    def log(self, record: Mapping[str, Any], *, phase: str, folder: Optional[Path]) -> None:
        writer = self._writers.get(phase)
        if writer is None:
            writer = self._writers[phase] = self._writer_class(log_dir=str(self.directory(phase, folder)))
        step = int(record.get("step", 0))
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, step)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class WandbTracker(Tracker):
    """One Weights & Biases run per phase (named after it, in the phase folder), values logged as
    ``<split>/<name>`` at the record's step. ``mode``: "online", "offline" (no network; ``wandb sync``
    later) or None (wandb's own setting, e.g. ``WANDB_MODE``)."""

    def __init__(self, project: str = "ticketlab", mode: Optional[str] = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError("--log wandb needs the wandb package: pip install 'ticketlab[wandb]'") from None
        self._wandb, self.project, self.mode = wandb, project, mode
        self._run, self._phase = None, None

    def log(self, record: Mapping[str, Any], *, phase: str, folder: Optional[Path]) -> None:
        if phase != self._phase:
            self.close()
            options = {"mode": self.mode} if self.mode else {}
            self._run = self._wandb.init(project=self.project, name=phase, group=phase.split("/")[0],
                                         dir=str(folder) if folder is not None else None, reinit=True, **options)
            self._phase = phase
        self._run.log(scalars(record), step=int(record.get("step", 0)))

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
        self._run, self._phase = None, None


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


def make_trackers(names: Sequence[str]) -> List[Tracker]:
    """Trackers from ``--log`` values (each a name or a comma-separated list); a missing package or an
    unknown name is a one-line `ConfigError`."""
    chosen = [n.strip() for value in names for n in value.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"--log {unknown[0]}: unknown tracker; choose from {', '.join(TRACKERS)} (a Tracker "
                          "subclass of your own goes in RunContext(trackers=...))")
    return [TRACKERS[n]() for n in dict.fromkeys(chosen)]


__all__ = ["Tracker", "TensorBoardTracker", "WandbTracker", "TRACKERS", "make_trackers", "scalars"]
