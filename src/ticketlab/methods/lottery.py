"""`ticketlab lottery`: iterative magnitude pruning with rewinding, LR rewinding, fine-tuning or scratch.

Levels 0..N share one run directory. Level k >= 1 prunes the final weights of level k-1 (nested in its
mask) to density ``(1 - f)^k`` of the original count, then retrains with a fresh optimizer:

- ``rewind``: surviving weights reset to the rewind point (the initialisation, or the weights after a
  pre-phase of ``lottery.rewind`` steps trained once in ``pretrain/``); the schedule resumes there;
- ``lr-rewind``: level k-1's final weights; the schedule is replayed from ``lottery.rewind``;
- ``finetune``: level k-1's final weights at a constant ``finetune_lr`` for ``finetune_steps``;
- ``scratch``: a new initialisation (seeded per level) under the mask.

Each phase is idempotent: a level with a ``summary.json`` is skipped, a level with a checkpoint resumes,
and its mask and start weights are written before training starts, so a restart rebuilds nothing.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ticketlab.config import RunConfig, TrainConfig
from ticketlab.data import DataBundle
from ticketlab.io import load_torch, read_json, save_torch
from ticketlab.methods.experiment import Experiment, ModelFactory
from ticketlab.models import build_model
from ticketlab.sparsity import Mask, output_layer_name, prune
from ticketlab.steps import Steps
from ticketlab.train import Callback

SCORING_STEP = 10**9  # augmentation stream of the gradient-scoring batches, apart from training steps


@dataclass
class Lottery(Experiment):
    """One lottery experiment: its config, data, model factory and run directory."""

    init_state: Optional[Dict[str, torch.Tensor]] = None  # a user module's own initial weights

    # -- derived settings -------------------------------------------------------------------------
    @property
    def rewind_step(self) -> int:
        return self.config.lottery.rewind.to_iters(self.ipe)

    @property
    def ipe(self) -> int:
        from ticketlab.data import iters_per_epoch

        return iters_per_epoch(len(self.data.train), self.config.train.batch_size)

    def level_dir(self, level: int) -> Path:
        return self.path / f"level_{level}"

    def seed(self, purpose: str, base: Optional[int] = None) -> int:
        """A seed for one purpose, derived from ``base`` (default: the master seed)."""
        return self.config.derived_seed(purpose if base is None else f"{base}:{purpose}")

    def prune_seed(self, purpose: str) -> int:
        """Pruning randomness (random scores, the gradient-scoring batch): follows ``--prune.seed``."""
        return self.seed(purpose, self.config.prune_seed)

    def scratch_seed(self, level: int) -> int:
        return self.seed(f"scratch{level}", self.config.init_seed)

    def density(self, level: int) -> float:
        return (1.0 - self.config.prune.fraction) ** level

    # -- phases ----------------------------------------------------------------------------------
    def run(self, levels: int) -> List[Dict[str, Any]]:
        return [self.train_level(k) for k in range(levels + 1)]

    def fresh_initial_weights(self) -> Dict[str, torch.Tensor]:
        return self.init_state if self.init_state is not None else super().fresh_initial_weights()

    def rewind_weights(self) -> Dict[str, torch.Tensor]:
        """The weights at the rewind step: the initialisation, or the end of the pre-phase."""
        if self.rewind_step == 0 or self.config.lottery.retrain != "rewind":
            return self.initial_weights()
        pre = self.path / "pretrain"
        self.fit(pre, self.initial_weights(), None, self.config.train, 0, {"phase": "pretrain"},
                 stop_at=self.rewind_step)
        return load_torch(pre / "final.pt")

    def level_mask(self, level: int) -> Mask:
        path = self.level_dir(level) / "mask.pt"
        if not path.exists():
            if level == 0:
                mask = Mask.ones(self.make_model(0), include_output=True)
            else:
                mask = self.prune_to(level, self.final_weights(level - 1), self.level_mask(level - 1))
            mask.save(path)
        return Mask.load(path)

    def prune_to(self, level: int, weights: Dict[str, torch.Tensor], mask: Optional[Mask]) -> Mask:
        """Prune ``weights`` to the density of ``level`` (nested in ``mask`` when given)."""
        p = self.config.prune
        model = self.model_with(weights)
        generator = torch.Generator().manual_seed(self.prune_seed(f"prune{level}"))
        batch = None
        if p.criterion == "gradient":
            from ticketlab.data import epoch_permutation

            order = epoch_permutation(len(self.data.train), self.prune_seed(f"score{level}"), 0, self.device)
            index = order[: self.config.train.batch_size]
            x = self.data.train.x[index]
            augment = getattr(self.data, "augment", None)
            batch = (augment(x, SCORING_STEP + level) if augment is not None else x, self.data.train.y[index])
        from ticketlab.methods.train import prune_options

        density = self.density(level)
        options = prune_options(p, model) | {"output_rate": self.output_rate(level, density)}
        return prune(model, density, mask=mask, batch=batch, generator=generator, **options)

    def output_rate(self, level: int, density: float) -> float:
        """The one-shot output rate that gives the output layer density ``(1 - r f)^k`` at level k."""
        p = self.config.prune
        if p.output_rate in (0.0, 1.0) or density >= 1.0:
            return p.output_rate
        return (1.0 - (1.0 - p.output_rate * p.fraction) ** level) / (1.0 - density)

    def final_weights(self, level: int) -> Dict[str, torch.Tensor]:
        self.train_level(level)
        return load_torch(self.level_dir(level) / "final.pt")

    def start_weights(self, level: int) -> Dict[str, torch.Tensor]:
        mode = self.config.lottery.retrain
        if level == 0:
            return self.rewind_weights() if mode == "rewind" else self.initial_weights()
        if mode == "rewind":
            return self.rewind_weights()
        if mode == "scratch":
            return self.make_model(self.scratch_seed(level)).state_dict()
        return self.final_weights(level - 1)

    def level_schedule(self, level: int) -> tuple:
        """(train config, start step) of a level."""
        lottery, train = self.config.lottery, self.config.train
        if level >= 1 and lottery.retrain == "finetune":
            return finetune_config(train, lottery), 0
        if lottery.retrain == "rewind" or (level >= 1 and lottery.retrain == "lr-rewind"):
            return train, self.rewind_step
        return train, 0

    def train_level(self, level: int) -> Dict[str, Any]:
        out = self.level_dir(level)
        if (out / "summary.json").exists():
            return read_json(out / "summary.json")
        mask = self.level_mask(level)
        start = out / "start.pt"
        if not start.exists():
            weights = self.start_weights(level)
            save_torch(masked(weights, mask), start)
        cfg, start_step = self.level_schedule(level)
        extra = {"level": level, "mode": self.config.lottery.retrain, "target_density": self.density(level),
                 "ticket_density": mask.density()}
        return self.fit(out, load_torch(start), mask, cfg, start_step, extra)

    def fit(self, out: Path, weights, mask: Optional[Mask], cfg: TrainConfig, start_step: int,
            extra: Dict[str, Any], callbacks: List[Callback] = (), stop_at: Optional[int] = None) -> Dict[str, Any]:
        """A phase on the run's data order (every level replays the same batches)."""
        return self.train_phase(out, weights, mask, cfg, order_seed=self.config.order_seed, extra=extra,
                                callbacks=callbacks, start_step=start_step, stop_at=stop_at)


def open_lottery(config: RunConfig, ctx) -> Lottery:
    """Load the data, open (or create) the run directory and return the experiment."""
    from ticketlab.data import iters_per_epoch
    from ticketlab.errors import ConfigError
    from ticketlab.methods.train import open_run, prepare_data

    if config.prune.layer_density:
        raise ConfigError("prune.layer_density fixes one density per layer and cannot drive iterative levels; "
                          "drop it and use --prune.scope / --prune.fraction")
    data = prepare_data(config, ctx)
    ipe = iters_per_epoch(len(data.train), config.train.batch_size)
    if config.lottery.rewind.to_iters(ipe) > config.train.steps.to_iters(ipe):
        raise ConfigError(f"lottery.rewind ({config.lottery.rewind}) lies after the end of training "
                          f"({config.train.steps}); choose a rewind step within --train.steps")
    factory = config_model_factory(config, data)
    initial = factory(config.init_seed).state_dict()  # a bad model config fails before anything is written
    run = open_run(config, ctx, data)
    return Lottery(config, data, factory, run.path, ctx.torch_device, ctx.progress, init_state=initial)


def run_lottery(config: RunConfig, levels: int, ctx) -> tuple:
    """Train levels 0..``levels``; returns (run path, level summaries)."""
    if levels < 0:
        from ticketlab.errors import ConfigError

        raise ConfigError(f"--levels must be 0 or more, got {levels}")
    lottery = open_lottery(config, ctx)
    return lottery.path, lottery.run(levels)


def finetune_config(train: TrainConfig, lottery) -> TrainConfig:
    return replace(train, lr=lottery.finetune_lr or train.lr,
                   steps=train.steps if lottery.finetune_steps.is_zero else lottery.finetune_steps,
                   schedule="constant", milestones=(), warmup=Steps())


def masked(weights: Dict[str, torch.Tensor], mask: Mask) -> Dict[str, torch.Tensor]:
    """A copy of ``weights`` with the pruned entries set to exactly 0."""
    out = {k: v.clone() for k, v in weights.items()}
    for name, keep in mask.items():
        out[name] = out[name] * keep.to(out[name].device, out[name].dtype)
    return out


def config_model_factory(config: RunConfig, data: DataBundle) -> ModelFactory:
    return lambda seed: build_model(config.model, data.input_shape, data.num_classes, seed=seed)


def module_factory(model: torch.nn.Module) -> ModelFactory:
    """Fresh initialisations of a user's module: a copy whose layers are reset under a seeded RNG."""
    template = copy.deepcopy(model).cpu()

    def make(seed: int) -> torch.nn.Module:
        fresh = copy.deepcopy(template)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return fresh

    return make


def module_signature(model: torch.nn.Module) -> str:
    """Architecture and initial weights of a user's module, for naming its run directory."""
    digest = hashlib.md5((repr(model) + repr([(n, tuple(p.shape)) for n, p in model.named_parameters()])).encode())
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:8]


__all__ = ["Lottery", "open_lottery", "run_lottery", "finetune_config", "masked", "config_model_factory", "module_factory", "output_layer_name"]


def lottery(model: torch.nn.Module, data: DataBundle, *, levels: int, train, prune=None, lottery=None, seed: int = 0,
            runs_dir="runs", device=None, progress: Optional[bool] = False) -> tuple:
    """Run the lottery workflow on a user's own module and `DataBundle`; returns (run path, level summaries).

    The run directory is named by the config hash plus signatures of the module and the data, so the
    same call twice resumes or returns at once. ``model``'s current weights are the initialisation;
    scratch levels and ``reinit`` branches reset its layers (``reset_parameters``) under a seeded RNG.
    """
    from ticketlab.config import LotteryConfig, PruneConfig
    from ticketlab.io import write_json

    config = RunConfig(method="lottery", seed=seed, train=train, prune=prune or PruneConfig(),
                       lottery=lottery or LotteryConfig())
    device = torch.device(device) if device is not None else data.train.x.device
    data_sig = hashlib.md5(repr((len(data.train), tuple(data.input_shape), int(data.train.y.sum()),
                                 float(data.train.x.double().sum()))).encode()).hexdigest()[:6]
    path = Path(runs_dir) / f"lottery_{config.hash()}_{module_signature(model)}{data_sig}"
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "config.json").exists():
        write_json(path / "config.json", config.to_dict())
    run = Lottery(config, data, module_factory(model), path, device, progress,
                  init_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    return path, run.run(levels)
