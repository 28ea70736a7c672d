"""The ``dst`` section of `ticketlab dst` and its run-config class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ticketlab.config import Section, option, run_config
from ticketlab.errors import ConfigError
from ticketlab.steps import Steps

VARIANTS = ("rigl", "set", "granet", "gmp", "static")  # `ticketlab dst --variant`; stored as `method`
GRADUAL = ("granet", "gmp")  # the variants that prune gradually
GROWING = ("rigl", "set", "granet")  # the variants that prune and regrow at every update


@dataclass(frozen=True)
class DSTConfig(Section):
    """Dynamic sparse training: the mask changes during training (Sup-tickets' `Masking`, RigL, GraNet)."""

    init_density: float = option(0.05, "density of the sparse initialisation (granet: where gradual pruning "
                                        "starts; gmp starts dense)", within="(0, 1]")
    final_density: float = option(0.0, "granet, gmp: density after gradual pruning (0: init_density)", within="[0, 1]")
    update_every: Steps = option(Steps(0, 100), "steps between topology updates [update_frequency]")
    death_rate: float = option(0.5, "fraction of each layer's active weights dropped and regrown per update "
                                    "[prune_rate]", within="[0, 1]")
    death_schedule: Literal["cosine", "constant"] = option(
        "cosine", "death rate over training: cosine from death_rate to death_floor, or constant [decay_schedule]")
    death_floor: float = option(0.005, "cosine: the death rate at the end of training", within="[0, 1]")
    stop: Steps = option(Steps(), "last step at which the topology changes (0: until the end; RigL: 75%)")
    prune_start: Steps = option(Steps(), "granet, gmp: when gradual pruning starts [init_prune_epoch]")
    prune_end: Steps = option(Steps(), "granet, gmp: when it reaches final_density (0: 3/4 of train.steps) "
                                       "[final_prune_epoch]")
    gradual_scope: Literal["global", "layer"] = option(
        "global", "granet, gmp: one magnitude threshold over all layers, or each layer alike (GraNet_uniform)")
    gradual_schedule: Literal["exact", "reference"] = option(
        "exact", "exact: final_density at prune_end; reference: GraNet's code (last pruning one update early, "
                 "one weight fewer)")
    bernoulli: bool = option(False, "draw the initial mask weight by weight with each layer's density (the "
                                    "reference) instead of exact per-layer counts")

    def validate(self) -> None:
        if self.update_every.is_zero:
            raise ConfigError("dst.update_every must be positive, e.g. --dst.update_every 100it")
        if self.death_schedule == "cosine" and self.death_floor > self.death_rate:
            raise ConfigError(f"dst.death_floor={self.death_floor} is above dst.death_rate={self.death_rate}; "
                              "the cosine schedule falls from the death rate to the floor")


DSTRunConfig = run_config("dst", variants=VARIANTS, dst=DSTConfig)
