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
from typing import Any, Callable, Dict, List, Literal, Optional

import torch

from ticketlab import runlock
from ticketlab.config import (DataConfig, ModelConfig, PruneConfig, RunConfig, Section, TrainConfig, adopt,
                              option, run_config)
from ticketlab.data import DataBundle, iters_per_epoch
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch
from ticketlab.method import Flag, Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.experiment import (SCORING_STEP, Experiment, ModelFactory, masked, prune_options, save_mask,
                                          scoring_batch)
from ticketlab.methods.tickets import LotteryResult, level_tickets
from ticketlab.runs import START, SUMMARY, ensure
from ticketlab.sparsity import Mask, opt_in_modules, prune, prune_remaining
from ticketlab.steps import Steps
from ticketlab.train import Callback


@dataclass(frozen=True)
class LotteryConfig(Section):
    retrain: Literal["rewind", "lr-rewind", "finetune", "scratch"] = option(
        "rewind", "how each level k >= 1 retrains after pruning")
    rewind: Steps = option(Steps(), "rewind point: weights (rewind) or schedule (lr-rewind) restart at this step")
    finetune_lr: float = option(0.0, "finetune: constant learning rate of levels k >= 1 (0: train.lr)",
                                within="[0, inf)")
    finetune_steps: Steps = option(Steps(), "finetune: training length of levels k >= 1 (0: train.steps)")


LotteryRunConfig = run_config("lottery", lottery=LotteryConfig)


@dataclass
class Lottery(Experiment):
    """One lottery experiment: its config, data, model factory and run directory."""

    init_state: Optional[Dict[str, torch.Tensor]] = None  # a user module's own initial weights
    levels: Optional[int] = None  # the last level this opening asks for (None: not known; see `is_finished`)

    # -- derived settings -------------------------------------------------------------------------
    @property
    def rewind_step(self) -> int:
        return self.config.lottery.rewind.to_iters(self.ipe)

    @property
    def ipe(self) -> int:
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
        return self.phases("level", range(levels + 1), self.level_dir, self.train_level)

    def is_finished(self) -> bool:
        """Levels 0..`levels` all finished (a lottery run writes no summary of its own)."""
        return self.levels is not None and all((self.level_dir(k) / SUMMARY).exists() for k in range(self.levels + 1))

    def initial_model(self) -> torch.nn.Module:
        model = super().initial_model()
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
        return model

    def rewind_weights(self) -> Dict[str, torch.Tensor]:
        """The weights at the rewind step: the initialisation, or the end of the pre-phase."""
        if self.rewind_step == 0 or self.config.lottery.retrain != "rewind":
            return self.initial_weights()
        pre = self.path / "pretrain"
        self.fit(pre, self.initial_weights(), None, self.config.train, 0, {"phase": "pretrain"},
                 stop_at=self.rewind_step)
        return load_torch(pre / "final.pt")

    def level_mask(self, level: int) -> Mask:
        def make() -> Mask:
            if level == 0:
                return Mask.ones(self.make_model(0), include_output=True)
            return self.prune_to(level, self.final_weights(level - 1), self.level_mask(level - 1))

        return ensure(self.level_dir(level) / "mask.pt", make, save=save_mask, load=Mask.load)

    def prune_to(self, level: int, weights: Dict[str, torch.Tensor], mask: Optional[Mask]) -> Mask:
        """Prune ``weights`` to the density of ``level`` (nested in ``mask`` when given)."""
        return self.prune_model(level, self.model_with(weights), mask)

    def prune_model(self, level: int, model: torch.nn.Module, mask: Optional[Mask]) -> Mask:
        """`prune_to` on a model with the weights, on the experiment's device."""
        p = self.config.prune
        if p.rule != "exact" and mask is not None:  # another tool's counting, relative to the last level's mask
            return prune_remaining(model, mask, p.fraction, p.rule, include_output=p.output_rate > 0)
        generator = torch.Generator().manual_seed(self.prune_seed(f"prune{level}"))
        batch = scoring_batch(self.data, self.prune_seed(f"score{level}"), self.config.train.batch_size,
                              SCORING_STEP + level) if p.criterion == "gradient" else None
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

    def level_start(self, level: int) -> Dict[str, torch.Tensor]:
        """A level's start weights under its mask: its ``start.pt``, or where a level trained with
        ``--train.keep-weights final`` dropped that, the same weights made again from the run's files."""
        path = self.level_dir(level) / START
        return load_torch(path) if path.exists() else masked(self.start_weights(level), self.level_mask(level))

    def _train_start(self, level: int) -> Callable[[], Dict[str, torch.Tensor]]:
        """What a level's training starts from, written as its ``start.pt`` first (a restart rebuilds nothing)."""
        return lambda: ensure(self.level_dir(level) / START, lambda: self.level_start(level))

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
        mask = self.level_mask(level)
        cfg, start_step = self.level_schedule(level)
        extra = self.phase_extra(level, mask)
        return self.fit(out, self._train_start(level), mask, cfg, start_step, extra)

    @property
    def mode(self) -> str:
        """What the report calls this experiment's levels (the retrain mode)."""
        return self.config.lottery.retrain

    def phase_extra(self, level: int, mask: Mask, branch: Optional[str] = None,
                    branch_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """What a level's (or a branch's) summary carries besides the trainer's figures, its report row included."""
        mode, density = self.mode, mask.density()
        extra = {"level": level, "mode": mode, "target_density": self.density(level), "ticket_density": density}
        if branch is not None:
            extra["branch"] = branch
        extra["row"] = self.row(variant=mode, level=level, density=density, branch=branch or "trunk",
                                branch_options=branch_options)
        return extra

    def fit(self, out: Path, weights, mask: Optional[Mask], cfg: TrainConfig, start_step: int,
            extra: Dict[str, Any], callbacks: List[Callback] = (), stop_at: Optional[int] = None,
            order_seed: Optional[int] = None) -> Dict[str, Any]:
        """A phase on the run's data order (every level replays the same batches) unless ``order_seed``."""
        order = self.config.order_seed if order_seed is None else order_seed
        return self.train_phase(out, weights, mask, cfg, order_seed=order, extra=extra,
                                callbacks=callbacks, start_step=start_step, stop_at=stop_at)

    def validate(self) -> torch.nn.Module:
        config = self.config
        if config.prune.layer_density:
            raise ConfigError("prune.layer_density fixes one density per layer and cannot drive iterative levels; "
                              "drop it and use --prune.scope / --prune.fraction")
        if config.lottery.rewind.to_iters(self.ipe) > config.train.steps.to_iters(self.ipe):
            raise ConfigError(f"lottery.rewind ({config.lottery.rewind}) lies after the end of training "
                              f"({config.train.steps}); choose a rewind step within --train.steps")
        model = super().validate()
        if not (self.level_dir(1) / "mask.pt").exists():  # the first pruning on the initialisation: bad prune
            self.prune_model(1, model.to(self.device), None)  # settings fail now, not after level 0 trains
        return model


def lottery_config(config: RunConfig) -> RunConfig:
    """``config`` as a lottery run's: a core config (a preset such as ``mnist_lenet_300_100``) gains the
    default ``lottery`` section and ``method="lottery"``; another command's own sections are refused."""
    return adopt(config, LotteryRunConfig)


def open_lottery(config: RunConfig, ctx, levels: Optional[int] = None) -> Lottery:
    """Load the data, check the settings (unless levels 0..``levels`` are finished), open (or create) the
    run directory and return the experiment."""
    return Lottery.open(lottery_config(config), ctx, levels=levels)


@runlock.session()
def run_lottery(config: RunConfig, levels: int, ctx) -> tuple:
    """Train levels 0..``levels`` of ``config`` (a lottery config, or a core one: see `lottery_config`);
    returns ``(path, tickets)``, a `LotteryResult` (one `Ticket` per level: its summary, mask and weights)."""
    if levels < 0:
        raise ConfigError(f"--levels must be 0 or more, got {levels}")
    lottery = open_lottery(config, ctx, levels)
    return level_tickets(lottery.path, lottery.run(levels))


def finetune_config(train: TrainConfig, lottery) -> TrainConfig:
    return replace(train, lr=lottery.finetune_lr or train.lr,
                   steps=train.steps if lottery.finetune_steps.is_zero else lottery.finetune_steps,
                   schedule="constant", milestones=(), warmup=Steps())


def module_factory(model: torch.nn.Module, prune_modules=()) -> ModelFactory:
    """Fresh initialisations of a user's module: a copy whose layers are reset under a seeded RNG
    (``prune_modules``: the `opt_in_modules` kinds its masks cover)."""
    template = opt_in_modules(copy.deepcopy(model).cpu(), prune_modules)

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


def data_signature(data: DataBundle) -> str:
    labels = hashlib.md5(data.train.y.cpu().numpy().tobytes()).hexdigest()
    return hashlib.md5(repr((len(data.train), tuple(data.input_shape), labels,
                             float(data.train.x.double().sum()))).encode()).hexdigest()[:6]


def qualified_name(model: torch.nn.Module) -> str:
    """``module.Class`` of a user's module (what its run's config names as ``model.name``)."""
    cls = type(model)
    return cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"


def user_module_record(model: torch.nn.Module, data: DataBundle) -> Dict[str, Any]:
    """What a run on a user's module and data records in its manifest (the config names both too)."""
    return {"model": {"class": qualified_name(model), "parameters": sum(p.numel() for p in model.parameters())},
            "data": {"name": data.name or USER_DATA, **data.shapes}}


USER_DATA = "user data"  # the name of a bundle that has none


@runlock.session()
def lottery(model: torch.nn.Module, data: DataBundle, *, levels: int, train, prune=None, lottery=None, seed: int = 0,
            runs_dir="runs", device=None, progress: Optional[bool] = False, trackers=()) -> LotteryResult:
    """Run the lottery workflow on a user's own module and `DataBundle` (e.g. `DataBundle.from_tensors`);
    returns ``(path, tickets)`` (a `LotteryResult`): the run directory and one `Ticket` per level (its
    summary, with its ``mask``, ``weights``, ``density`` and accuracies).

    The run's config names the module's class (``model.name``) and the data's name (``data.dataset``);
    its manifest adds their sizes and shapes and the precision. The directory is named by the config hash
    plus signatures of the module and the data, so the same call twice resumes or returns at once; it
    holds what `ticketlab runs` and `ticketlab report` read. ``model``'s current weights are the
    initialisation; scratch levels and ``reinit`` branches reset its layers (``reset_parameters``) under a
    seeded RNG. ``trackers``: `ticketlab.train.trackers.Tracker` objects that get every metric record.
    """
    prune = prune or PruneConfig()
    config = LotteryRunConfig(method="lottery", seed=seed, data=DataConfig(dataset=data.name or USER_DATA),
                              model=ModelConfig(name=qualified_name(model)), train=train, prune=prune,
                              lottery=lottery or LotteryConfig())
    device = torch.device(device) if device is not None else data.train.x.device
    signature = f"{module_signature(model)}{data_signature(data)}"
    path = Path(runs_dir) / f"{config.run_name}_{signature}"
    run = Lottery(config, data, module_factory(model, prune.modules), path, device, progress,
                  dataset_name=data.name or USER_DATA, model_name=type(model).__name__, signature=signature,
                  trackers=tuple(trackers), init_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                  levels=levels)
    run.open_dir(**user_module_record(model, data))
    return level_tickets(path, run.run(levels))


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_lottery(config, options["levels"], ctx)[0]


# short forms of the trunk's settings, shared with `ticketlab branch` (which names the same trunk)
TRUNK_FLAGS = (Flag("--retrain", "how levels k >= 1 retrain (same as --lottery.retrain)",
                    field="lottery.retrain", metavar="MODE"),
               Flag("--rewind", "rewind step, e.g. 1000it or 2ep (same as --lottery.rewind)", field="lottery.rewind",
                    metavar="STEPS"))

register_method(Method(
    name="lottery", config=LotteryRunConfig, run=_cli_run,
    help=METHOD_HELP["lottery"],
    flags=(Flag("--levels", "train levels 0..N (N prunings); raising it later trains only the new levels",
                default=1, type=int, metavar="N"), *TRUNK_FLAGS)))
