"""ticketlab: find, train, combine and study sparse subnetworks ("lottery tickets") with PyTorch.

The public API is re-exported here. Importing ticketlab is light: each name below is imported (with torch)
when first used, so that `ticketlab --help` and `--version` answer without torch; importing a name has no
side effects beyond registering the built-in models, data sets and methods.
"""

import importlib
import importlib.util

from ticketlab.version import __version__

_API = {  # public name -> the module that defines it
    **dict.fromkeys(("DataConfig", "ModelConfig", "PruneConfig", "RunConfig", "Section", "TrainConfig", "option",
                     "run_config"), "ticketlab.config"),
    **dict.fromkeys(("DATASETS", "DataBundle", "load_data", "register_dataset"), "ticketlab.data"),
    **dict.fromkeys(("CheckpointError", "ConfigError", "DataError", "TicketlabError"), "ticketlab.errors"),
    **dict.fromkeys(("Flag", "Method", "register_method"), "ticketlab.method"),
    **dict.fromkeys(("Experiment", "RunContext", "lottery", "run_lottery", "run_rst", "run_train"),
                    "ticketlab.methods"),
    **dict.fromkeys(("LotteryConfig", "LotteryRunConfig"), "ticketlab.methods.lottery"),
    **dict.fromkeys(("LotteryResult", "Ticket"), "ticketlab.methods.tickets"),
    **dict.fromkeys(("MODELS", "build_model", "register_model"), "ticketlab.models"),
    **dict.fromkeys(("get_preset", "list_presets", "register_preset"), "ticketlab.presets"),
    **dict.fromkeys(("Mask", "MaskedOptimizer", "MaskEnforcer", "prune"), "ticketlab.sparsity"),
    "Steps": "ticketlab.steps",
    **dict.fromkeys(("Callback", "Trainer", "evaluate", "Tracker", "TensorBoardTracker", "WandbTracker"),
                    "ticketlab.train"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """A public name on first use; a subpackage (``ticketlab.sparsity``) as an attribute of the package."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
