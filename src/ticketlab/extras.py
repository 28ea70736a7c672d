"""Optional dependencies: each is installed by an extra of the package (``pip install ticketlab[io]``), and
a missing one is one line naming the extra, raised by `require` wherever the package is imported."""

from __future__ import annotations

import importlib
from types import ModuleType

from ticketlab.errors import MissingDependencyError

# importable name -> (the package pip installs, the extra that brings it)
OPTIONAL = {
    "safetensors": ("safetensors", "io"),
    "submitit": ("submitit", "slurm"),
    "sklearn": ("scikit-learn", "data"),
    "mnist1d": ("mnist1d", "data"),
    "PIL": ("pillow", "data"),
    "scipy": ("scipy", "data"),
}


def missing(name: str, purpose: str) -> MissingDependencyError:
    """The error for optional package ``name`` (its import name, e.g. ``"PIL"``) being absent."""
    package, extra = OPTIONAL[name]
    return MissingDependencyError(f"{purpose} needs the '{extra}' extra ({package}): pip install ticketlab[{extra}]"
                                  f" (or pip install {package})")


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"safetensors.torch"``) of an optional package; ``purpose`` says what needs
    it (``"writing a .safetensors mask"``) in the error when the package is not installed."""
    name = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != name:  # the package is there but broken
            raise
        raise missing(name, purpose) from None
