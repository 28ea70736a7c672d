"""Methods: one module per workflow, each built from data, models, sparsity and the one trainer, and each
declaring itself to the method registry (`ticketlab.method`) when imported. The command order of
`ticketlab --help` is the import order here."""

from ticketlab.methods import train as _train  # noqa: F401  (registers `train`)
from ticketlab.methods import lottery as _lottery  # noqa: F401  (registers `lottery`)
from ticketlab.methods import branches as _branches  # noqa: F401  (registers `branch`)
from ticketlab.methods import rst as _rst  # noqa: F401  (registers `rst`)
from ticketlab.methods import dst as _dst  # noqa: F401  (registers `dst`)
from ticketlab.methods import suptickets as _suptickets  # noqa: F401  (registers `suptickets`)
from ticketlab.methods import pools as _pools  # noqa: F401  (registers `pools`)
from ticketlab.methods import lmc as _lmc  # noqa: F401  (registers `lmc`)
from ticketlab.methods import prac as _prac  # noqa: F401  (registers `prac`)
from ticketlab.methods.context import RunContext, resolve_device
from ticketlab.methods.experiment import Experiment
from ticketlab.methods.lottery import lottery, run_lottery
from ticketlab.methods.rst import run_rst
from ticketlab.methods.train import run_train

__all__ = ["RunContext", "resolve_device", "Experiment", "run_train", "run_lottery", "lottery", "run_rst"]
