"""The ``suptickets`` section of `ticketlab suptickets`, its run-config class and the phase lengths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Tuple

from ticketlab.config import Section, option, run_config
from ticketlab.methods.dst.config import VARIANTS as BASES
from ticketlab.methods.dst.config import DSTConfig


@dataclass(frozen=True)
class SupTicketsConfig(Section):
    """Superposing many tickets into one (Yin et al., UAI 2022); the reference's option names in brackets."""

    base: Literal[BASES] = option("rigl", "the sparse training of the pre-train phase: a `ticketlab dst` variant "
                                          "[method]")
    superposition: Literal["caa", "cima"] = option(
        "caa", "caa: running uniform average; cima: a fixed factor on each new ticket [superposing_method]")
    cima_factor: float = option(0.5, "cima: the weight of the new ticket [CIMA_factor]", within="(0, 1]")
    cycle: int = option(8, "epochs per cycle; each ends with a cheap ticket", within="[1, inf)")
    cycle_rate: float = option(0.2, "fraction of the epochs for the cyclic phase (rounded down to whole cycles)",
                               within="[0, 1)")
    lr_1: float = option(0.05, "learning rate at each cycle's start and end, where the ticket is taken",
                         within="[0, inf)")
    lr_2: float = option(0.0001, "learning rate in the middle of each cycle", within="[0, inf)")
    cyclic_lr: bool = option(True, "the triangular rate in the cyclic phase (false: the last pre-train rate) "
                                   "[cyc_lr]")
    re_explore: bool = option(True, "one drop-and-grow at large_death_rate at each cycle start [re_explore]")
    large_death_rate: float = option(0.8, "the death rate of each re-exploration", within="[0, 1]")
    cyclic_updates: bool = option(False, "keep the base's topology updates in the cyclic phase (false: "
                                         "--no_maskupdates)")
    update_bn: bool = option(True, "recompute BatchNorm statistics of each superposed model [update_bn]")


SupTicketsRunConfig = run_config("suptickets", dst=DSTConfig, suptickets=SupTicketsConfig)


def phase_epochs(epochs: int, cycle: int, cycle_rate: float) -> Tuple[int, int, int]:
    """(pre-train epochs, cyclic epochs, cheap tickets), in the reference's floating-point arithmetic
    (``epochs_calculation``): the cyclic share ``epochs * rate`` is cut to whole cycles with ``%`` on the
    float, so 100 epochs at rate 0.57 with cycle 3 give 54 cyclic epochs (56.99999... - 2.99999...), not
    57; a share shorter than one cycle leaves no cyclic phase."""
    cyclic = epochs * cycle_rate
    if cyclic < cycle:
        return epochs, 0, 0
    cyclic = int(cyclic - cyclic % cycle)
    return epochs - cyclic, cyclic, cyclic // cycle
