"""ticketlab: find, train, combine and study sparse subnetworks ("lottery tickets") with PyTorch.

The public API is re-exported here; importing ticketlab has no side effects beyond importing torch.
"""

from ticketlab.version import __version__

from ticketlab.config import (DataConfig, ModelConfig, PruneConfig, RunConfig, Section, TrainConfig,  # noqa: E402
                              option, run_config)
from ticketlab.data import DATASETS, DataBundle, load_data, register_dataset  # noqa: E402
from ticketlab.errors import CheckpointError, ConfigError, DataError, TicketlabError  # noqa: E402
from ticketlab.method import Flag, Method, register_method  # noqa: E402
from ticketlab.methods import Experiment, RunContext, lottery, run_lottery, run_rst, run_train  # noqa: E402
from ticketlab.methods.lottery import LotteryConfig, LotteryRunConfig  # noqa: E402
from ticketlab.methods.tickets import LotteryResult, Ticket  # noqa: E402
from ticketlab.models import MODELS, build_model, register_model  # noqa: E402
from ticketlab.presets import get_preset, list_presets, register_preset  # noqa: E402
from ticketlab.sparsity import Mask, MaskedOptimizer, MaskEnforcer, prune  # noqa: E402
from ticketlab.steps import Steps  # noqa: E402
from ticketlab.train import Callback, TensorBoardTracker, Tracker, Trainer, WandbTracker, evaluate  # noqa: E402

__all__ = [
    "__version__", "RunConfig", "DataConfig", "ModelConfig", "TrainConfig", "PruneConfig", "Steps",
    "Section", "option", "run_config", "Method", "Flag", "register_method", "Experiment", "LotteryConfig",
    "LotteryRunConfig", "LotteryResult", "Ticket", "Tracker", "TensorBoardTracker", "WandbTracker",
    "DATASETS", "DataBundle", "load_data", "register_dataset", "MODELS", "build_model", "register_model",
    "Mask", "MaskEnforcer", "MaskedOptimizer", "prune", "Trainer", "Callback", "evaluate",
    "get_preset", "list_presets", "register_preset", "run_train", "run_lottery", "lottery", "run_rst", "RunContext",
    "TicketlabError", "ConfigError", "DataError", "CheckpointError",
]
