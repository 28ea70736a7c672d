"""The JSON files of a run directory read back with their shape checked.

A summary, manifest or phase record that is valid JSON of the wrong shape (a list, a string where a number
belongs, a trainer summary without its figures) is a one-line `CheckpointError` naming the file and the
fix, instead of a ``TypeError`` wherever it is first used.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ticketlab.errors import CheckpointError
from ticketlab.io import REMAKE, read_json

TRAINER_KEYS = ("steps", "density", "final", "final_test_accuracy")  # what every trainer summary holds
_NUMBERS = ("density", "final_test_accuracy", "test_accuracy_at_best_val", "train_seconds", "ticket_density",
            "target_density")  # a number or null where present
_INTEGERS = ("steps", "start_step", "iters_per_epoch", "level")
_TABLES = ("row", "final", "kept", "best_val")  # an object (or null) where present


def read_object(path: Path, what: str = "record", fix: Optional[str] = None) -> Dict[str, Any]:
    """``path`` as a JSON object; anything else is a `CheckpointError` (``fix``: the advice it gives)."""
    fix = fix or REMAKE  # the advice for damaged bytes too (it makes the file again)
    value = read_json(path, fix)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a {type(value).__name__}, not a {what} (a JSON object); {fix}")
    return value


def read_summary(path: Path, required: Sequence[str] = (), fix: Optional[str] = None) -> Dict[str, Any]:
    """A ``summary.json``: an object whose known figures have their types, holding the ``required`` keys."""
    path = Path(path)
    summary = read_object(path, "summary", fix)
    problem = summary_problem(summary, required)
    if problem:
        raise CheckpointError(f"{path} is not a summary ticketlab wrote ({problem}); {fix or REMAKE}")
    return summary


def summary_problem(summary: Dict[str, Any], required: Sequence[str] = ()) -> str:
    """What is wrong with the shape of ``summary`` ("" if nothing)."""
    missing = [k for k in required if k not in summary]
    if missing:
        return f"no {', '.join(missing)}"
    for key in _NUMBERS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            return f"{key} is {value!r}, not a number"
    for key in _INTEGERS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{key} is {value!r}, not an integer"
    for key in _TABLES:
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            return f"{key} is not an object"
    weights = summary.get("weights")  # the weights files a trained phase keeps
    if weights is not None and not (isinstance(weights, list) and all(isinstance(w, str) for w in weights)):
        return "weights is not a list of file names"
    return ""


REBUILD = "delete it and run the command again to rebuild it from the finished phases"

__all__ = ["TRAINER_KEYS", "REBUILD", "read_object", "read_summary", "summary_problem"]
