"""`ticketlab dst`: sparse training from a sparse (or, for GMP, dense) initialisation whose mask changes.

The variant is the run's ``method`` (``--variant rigl|set|granet|gmp|static``). One phase, in the run
directory itself (as `ticketlab train`):

    mask_init.pt      the initial mask: ``dst.init_density`` by ``prune.scope`` (erk, er, uniform, layer,
                      global) at random positions, exact per-layer counts (``dst.bernoulli``: a Bernoulli
                      draw per weight, as the reference); all ones for gmp
    masks/            the mask after every update (packed bits), for masks up to SAVE_LIMIT weights
    metrics.jsonl     evaluations, and a "mask" record at the start and after every update
    summary.json      final and best-validation accuracy, final density, topology updates, explored fraction

The managed layers are the prunable ones less those kept dense by design (the first with
``--prune.include_first false``, the output layer with ``--prune.output_rate 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from ticketlab import runlock, seeds
from ticketlab.config import RunConfig, adopt
from ticketlab.data import iters_per_epoch
from ticketlab.errors import ConfigError
from ticketlab.methods.dst.callback import CALLBACKS, DynamicSparse
from ticketlab.methods.dst.config import GRADUAL, GROWING, VARIANTS, DSTRunConfig
from ticketlab.methods.dst.schedules import DeathRate, GradualDensity, UpdateSteps
from ticketlab.methods.experiment import Experiment, prune_options, save_mask
from ticketlab.runs import ensure
from ticketlab.sparsity import Mask, output_layer_name, prunable_parameters, prune

INIT_MASK = "mask_init.pt"


@dataclass
class DSTRun(Experiment):
    # -- settings ---------------------------------------------------------------------------------------
    @property
    def dst(self):
        return self.config.dst

    @property
    def variant(self) -> str:
        """The DST variant (rigl, set, granet, gmp, static): the run's method here."""
        return self.config.method
    @property
    def ipe(self) -> int:
        return iters_per_epoch(len(self.data.train), self.config.train.batch_size)

    @property
    def total(self) -> int:
        return self.config.train.steps.to_iters(self.ipe)

    @property
    def target_density(self) -> float:
        """The density the run ends at: ``final_density`` (granet, gmp) or ``init_density``."""
        return self.dst.final_density or self.dst.init_density

    def managed(self, model: torch.nn.Module) -> List[str]:
        params = list(prunable_parameters(model))
        aside = set()
        if not self.config.prune.include_first and params:
            aside.add(params[0])
        if self.config.prune.output_rate == 0.0:
            aside.add(f"{output_layer_name(model)}.weight")
        return [k for k in params if k not in aside]

    def validate(self) -> None:
        config, dst, variant = self.config, self.dst, self.variant
        if variant not in VARIANTS:
            raise ConfigError(f"unknown dst variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        p = config.prune
        if p.density != 1.0:
            raise ConfigError("ticketlab dst sets its density with --dst.init_density (and --dst.final_density); "
                              "drop --prune.density")
        if p.criterion != "magnitude":
            raise ConfigError("ticketlab dst draws its initial mask at random; --prune.criterion does not apply")
        if variant in GRADUAL:
            start = 1.0 if variant == "gmp" else dst.init_density
            if not self.target_density < start:
                raise ConfigError(f"--variant {variant} prunes gradually from {start:g}: set --dst.final_density "
                                  "below it, e.g. 0.05")
            self.gradual()  # checks the window
        elif dst.final_density not in (0.0, dst.init_density):
            raise ConfigError(f"dst.final_density applies to granet and gmp, not {variant}; drop it or pick "
                              "--variant granet")
        if variant in GROWING:
            every = dst.update_every.to_iters(self.ipe)
            stops = [s for s in (dst.stop.to_iters(self.ipe),) if s]
            if not UpdateSteps(every, self.total, min(stops) if stops else 0).count():
                raise ConfigError(f"--variant {variant} would never update its mask: no step of every {every} lies "
                                  f"inside the {self.total} steps of training (and --dst.stop); lower "
                                  "--dst.update_every")
        super().validate()
        self.initial_mask()

    def gradual(self) -> Optional[GradualDensity]:
        if self.variant not in GRADUAL:
            return None
        dst, ipe = self.dst, self.ipe
        every = dst.update_every.to_iters(ipe)
        start = dst.prune_start.to_iters(ipe)
        end = dst.prune_end.to_iters(ipe) if not dst.prune_end.is_zero else (3 * self.total) // 4
        schedule = GradualDensity(1.0 if self.variant == "gmp" else dst.init_density, self.target_density, every,
                                  start, end, reference=dst.gradual_schedule == "reference")
        first, last = schedule.window
        if end > self.total or last < first or last * every >= self.total:
            raise ConfigError(f"gradual pruning from step {start} to {end} holds no update step of every {every} "
                              f"before the end of training ({self.total} steps); check --dst.prune_start, "
                              "--dst.prune_end and --dst.update_every")
        return schedule

    # -- the initial mask -------------------------------------------------------------------------------
    def initial_mask(self) -> Mask:
        model = self.make_model(self.config.init_seed)
        if self.variant == "gmp":
            return Mask.ones(model)
        p = self.config.prune
        generator = seeds.generator(self.config.prune_seed, "dst-init")
        options = {k: v for k, v in prune_options(p, model).items() if k != "criterion"}
        if not self.dst.bernoulli:
            return prune(model, self.dst.init_density, criterion="random", generator=generator, **options)
        exact = prune(model, self.dst.init_density, criterion="magnitude", **options)  # for the layer densities
        return Mask({k: torch.rand(keep.shape, generator=generator) < int(keep.sum()) / keep.numel()
                     for k, keep in exact.items()})

    # -- the run ----------------------------------------------------------------------------------------
    def callback(self, model: Optional[torch.nn.Module] = None, stop: int = 0,
                 explore: Optional[Dict[int, float]] = None) -> DynamicSparse:
        """The variant's callback; ``stop``: a last update step besides ``dst.stop`` (the earlier counts);
        ``explore``: extra drop-and-grow steps (`DynamicSparse`)."""
        dst, ipe = self.dst, self.ipe
        model = model or self.make_model(0)
        stops = [s for s in (dst.stop.to_iters(ipe), stop) if s]
        updates = UpdateSteps(dst.update_every.to_iters(ipe), self.total, min(stops) if stops else 0)
        death = DeathRate(dst.death_rate, self.total, dst.death_schedule, dst.death_floor)
        output, gradual = f"{output_layer_name(model)}.weight", self.gradual()
        grow_from = gradual.start if gradual is not None else 0  # GraNet drops and grows from prune_start on
        return CALLBACKS[self.variant](self.managed(model), updates=updates, death=death, gradual=gradual,
                                       gradual_scope=dst.gradual_scope, output_layer=output,
                                       seed=self.config.prune_seed, masks_dir=self.path / "masks", explore=explore,
                                       grow_from=grow_from)

    def run(self) -> Dict[str, Any]:
        mask = ensure(self.path / INIT_MASK, self.initial_mask, save=save_mask, load=Mask.load)
        extra = {"row": self.row(variant=self.variant, level=0, density=None), "init_density": mask.density()}
        return self.train_phase(self.path, self.fresh_initial_weights, mask, self.config.train,
                                order_seed=self.config.order_seed, extra=extra, callbacks=[self.callback()])


@runlock.session()
def run_dst(config: RunConfig, ctx) -> tuple:
    """Run one `ticketlab dst` experiment; returns (run path, summary)."""
    run = DSTRun.open(adopt(config, DSTRunConfig), ctx)
    return run.path, run.run()


__all__ = ["DSTRun", "run_dst", "INIT_MASK"]
