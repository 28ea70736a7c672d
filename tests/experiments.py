"""Building a method's experiment by hand in tests (without the CLI or a run directory's checks)."""

import torch

from ticketlab.data import load_data
from ticketlab.methods.experiment import config_model_factory


def load_for(config):
    """The data ``config`` names (module-scoped fixtures load it once per test file)."""
    return load_data(config.data, noise_seed=config.noise_seed)


def make_experiment(cls, config, data, path):
    return cls(config, data, config_model_factory(config, data), path, torch.device("cpu"), progress=False)
