"""Methods: one module per workflow, each built from data, models, sparsity and the one trainer."""

from ticketlab.methods.context import RunContext, resolve_device
from ticketlab.methods.lottery import lottery, run_lottery
from ticketlab.methods.rst import run_rst
from ticketlab.methods.train import run_train

__all__ = ["RunContext", "resolve_device", "run_train", "run_lottery", "lottery", "run_rst"]
