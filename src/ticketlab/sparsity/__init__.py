"""Sparsity: masks, pruning scores, per-layer counts and exact selection, and enforcement in training.

Scoring (`scores`), per-layer densities (`distributions`), counting and selection
(`allocation`) and enforcement (`enforce`) are separate pieces; `prune` joins the first three.
This package never imports `ticketlab.train`.
"""

from ticketlab.sparsity.allocation import keep_counts, round_half_up, select_topk
from ticketlab.sparsity.distributions import DISTRIBUTIONS, densities_from_globs, layer_densities
from ticketlab.sparsity.enforce import MaskedOptimizer, MaskEnforcer
from ticketlab.sparsity.mask import (Mask, UnprunableWeightsWarning, opt_in_modules, output_layer_name,
                                     prunable_parameters, unprunable_parameters)
from ticketlab.sparsity.prune import PRUNE_SCOPES, prune, prune_remaining
from ticketlab.sparsity.scores import SCORERS, register_scorer

__all__ = [
    "Mask", "prunable_parameters", "unprunable_parameters", "opt_in_modules", "UnprunableWeightsWarning", "output_layer_name", "SCORERS", "register_scorer",
    "keep_counts", "round_half_up", "select_topk", "prune", "prune_remaining", "PRUNE_SCOPES", "MaskEnforcer", "MaskedOptimizer",
    "DISTRIBUTIONS", "layer_densities", "densities_from_globs",
]
