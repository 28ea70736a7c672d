"""What an export starts from: a finished phase of a run, its weights, its mask and its model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ticketlab.config import ModelConfig, merge, to_jsonable
from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.io import load_torch
from ticketlab.runs import TRUNK, load_config, phase_rows
from ticketlab.sparsity import Mask, prunable_parameters
from ticketlab.train.trainer import weights_path


@dataclass
class Ticket:
    """A model with its weights and mask, and what rebuilds it elsewhere (``spec``)."""

    model: nn.Module  # the masked model, eval mode, CPU
    mask: Mask
    spec: Dict[str, Any]  # {"model": ModelConfig fields, "input_shape", "num_classes", "source"}


def find_phase(run: Path, level: Optional[int] = None) -> Tuple[Path, Dict[str, Any]]:
    """The folder and summary of a run's trunk result at ``level`` (default: its last)."""
    trunk = [(folder, s) for folder, s in phase_rows(run) if s["row"].get("branch") == TRUNK]
    if not trunk:
        raise CheckpointError(f"{run} has no finished result to export; finish the run first")
    levels = sorted({int(s["row"]["level"]) for _, s in trunk})
    if level is None:
        level = levels[-1]
    chosen = [(f, s) for f, s in trunk if int(s["row"]["level"]) == level]
    if not chosen:
        raise ConfigError(f"{run} has no finished level {level}; its levels are {', '.join(map(str, levels))}")
    return chosen[0]


def phase_mask(folder: Path, model: nn.Module, weights: Dict[str, torch.Tensor]) -> Mask:
    """The phase's mask: its ``mask.pt``, else the last DST mask of ``masks/``, else the kept (nonzero)
    weights of the prunable layers."""
    if (folder / "mask.pt").is_file():
        return Mask.load(folder / "mask.pt")
    saved = sorted((folder / "masks").glob("step_*.pt")) if (folder / "masks").is_dir() else []
    if saved:
        return Mask.from_packed(load_torch(saved[-1]))
    return Mask({name: weights[name] != 0 for name in prunable_parameters(model)})


def run_data(run: Path):
    """``(config, data bundle)`` of a run directory, refused with one line when it is not one."""
    from ticketlab.data import load_data

    if not (Path(run) / "config.json").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.json); pass one that `ticketlab runs list` shows")
    config = load_config(Path(run))
    return config, load_data(config.data, noise_seed=config.noise_seed, device="cpu")


def load_ticket(run: Path, level: Optional[int] = None, checkpoint: str = "final", loaded=None) -> Ticket:
    """The masked model of a finished run's phase (``checkpoint``: ``final`` or ``best`` weights);
    ``loaded``: the run's `run_data` ``(config, data)`` when the caller has it already."""
    from ticketlab.models import build_model

    run = Path(run)
    config, data = run_data(run) if loaded is None else loaded
    folder, summary = find_phase(run, level)
    path = weights_path(folder, checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; export --checkpoint final, or finish the phase")
    model = build_model(config.model, data.input_shape, data.num_classes, seed=0)
    weights = load_torch(path)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(f"{path} does not fit the model of {run / 'config.json'}") from None
    mask = phase_mask(folder, model, weights)
    mask.apply_(model)
    spec = {"model": to_jsonable(config.model),
            "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "source": {"run": run.name, "phase": str(folder.relative_to(run)), "checkpoint": checkpoint,
                       "level": int(summary["row"]["level"]), "density": mask.density()}}
    return Ticket(model.eval(), mask, spec)


def build_from_spec(spec: Dict[str, Any]) -> nn.Module:
    """A fresh model of an export's ``spec`` (weights to be loaded)."""
    from ticketlab.models import build_model

    try:
        config = merge(ModelConfig(), spec["model"])
        return build_model(config, tuple(spec["input_shape"]), int(spec["num_classes"]), seed=0)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the export's model description is incomplete ({exc}); export the run again") from None


__all__ = ["Ticket", "find_phase", "phase_mask", "run_data", "load_ticket", "build_from_spec"]
