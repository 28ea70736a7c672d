"""Sparsity: masks, pruning scores, per-layer counts and exact selection, and enforcement in training.

Scoring (`scores`), counting and selection (`allocation`) and enforcement (`enforce`) are separate
pieces; `prune` joins the first two. This package never imports `ticketlab.train`.
"""

from ticketlab.sparsity.allocation import keep_counts, round_half_up, select_topk
from ticketlab.sparsity.enforce import MaskedOptimizer, MaskEnforcer
from ticketlab.sparsity.mask import Mask, output_layer_name, prunable_parameters
from ticketlab.sparsity.prune import prune
from ticketlab.sparsity.scores import SCORERS, register_scorer

__all__ = [
    "Mask", "prunable_parameters", "output_layer_name", "SCORERS", "register_scorer",
    "keep_counts", "round_half_up", "select_topk", "prune", "MaskEnforcer", "MaskedOptimizer",
]
