"""The help lines of the built-in methods, in their registration order: each method's
`register_method(help=...)` reads its line here, and `ticketlab --help` lists them all from here without
importing the methods (and torch)."""

METHOD_HELP = {
    "train": "train one model (dense, or sparse with --prune.density < 1)",
    "lottery": "iterative magnitude pruning: train levels 0..N with rewinding, lr-rewinding, finetuning or scratch",
    "branch": "ablations on a finished lottery trunk: retrain, reinit, random-prune, oneshot, reorder",
    "rst": "Dual Lottery Ticket: RST / RST_Iter on a random sparse network, L1 / L1_Iter / IMP baselines "
           "(ratios are fractions PRUNED)",
    "dst": "dynamic sparse training: RigL, SET, GraNet, GMP and static sparse training from a sparse (GMP: dense) "
           "initialisation",
    "suptickets": "Sup-tickets: a dst run whose last epochs take cheap tickets in cycles and superpose them into one",
    "pools": "Lottery Pools: tickets of a finished lottery run improved by interpolating their neighbours "
             "(no training)",
    "lmc": "linear mode connectivity: error along the line between adjacent tickets, or a level and its reorder "
           "branch (instability)",
    "prac": "PrAC: lottery tickets found on a pruning-aware critical subset of the data, rounds stopped early",
}

__all__ = ["METHOD_HELP"]
