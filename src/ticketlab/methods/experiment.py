"""What every multi-phase method shares: a config, data, a model factory and a run directory, the
initial weights saved once in ``init.pt``, and one way to train a phase under an optional mask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from ticketlab.config import RunConfig, TrainConfig
from ticketlab.data import DataBundle
from ticketlab.io import load_torch, read_json, save_torch
from ticketlab.sparsity import Mask, MaskEnforcer
from ticketlab.train import SUMMARY, Callback, Trainer

ModelFactory = Callable[[int], torch.nn.Module]  # seed -> a freshly initialised model (CPU)
Weights = Dict[str, torch.Tensor]


@dataclass
class Experiment:
    config: RunConfig
    data: DataBundle
    make_model: ModelFactory
    path: Path
    device: torch.device
    progress: Optional[bool] = None

    def fresh_initial_weights(self) -> Weights:
        return self.make_model(self.config.init_seed).state_dict()

    def initial_weights(self) -> Weights:
        """The initialisation, drawn once and kept in ``init.pt`` so every phase starts from the same."""
        path = self.path / "init.pt"
        if not path.exists():
            save_torch(self.fresh_initial_weights(), path)
        return load_torch(path)

    def model_with(self, weights: Weights) -> torch.nn.Module:
        model = self.make_model(self.config.init_seed)
        model.load_state_dict(weights)
        return model.to(self.device)

    def train_phase(self, out: Path, weights: Weights, mask: Optional[Mask], cfg: TrainConfig, *, order_seed: int,
                    extra: Dict[str, Any], callbacks: Sequence[Callback] = (), start_step: int = 0,
                    stop_at: Optional[int] = None) -> Dict[str, Any]:
        """Train ``weights`` into ``out`` under ``mask`` (None or all-kept: dense); a finished ``out``
        returns its summary without building anything, a checkpointed one resumes."""
        if (out / SUMMARY).exists():
            return read_json(out / SUMMARY)
        model = self.model_with(weights)
        sparse = mask is not None and mask.num_kept() < mask.num_total()
        enforcer = MaskEnforcer(model, mask.to(self.device)) if sparse else None
        return Trainer(model, self.data, cfg, order_seed=order_seed, out_dir=out, enforcer=enforcer,
                       callbacks=callbacks, start_step=start_step, progress=self.progress,
                       label=f"{self.path.name}/{out.relative_to(self.path)}", summary_extra=extra,
                       stop_at=stop_at).fit()
