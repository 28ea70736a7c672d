"""``--model.weights PATH``: start a run from a state dict instead of a fresh initialisation.

The file is read weights-only (a torch file through ``torch.load(weights_only=True)``, or safetensors),
so it cannot execute code. Its sha256 is the config's ``model.weights_digest``, in the run hash: other
weights are another run, and a file that changed under a run is refused rather than silently used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.io import out_of_memory, sha256_file
from ticketlab.sparsity.mask import strip_wrapper_prefixes

_DIGESTS: Dict[Tuple[str, int, int], str] = {}  # (absolute path, size, mtime) -> digest: hash each file once


def file_digest(path: str) -> str:
    """The first 16 hex digits of the sha256 of ``path``'s bytes."""
    try:
        stat = os.stat(path)
    except OSError:
        raise ConfigError(f"model.weights: {path} does not exist; give the path of a state dict file "
                          "(torch.save(model.state_dict(), ...) or .safetensors)") from None
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as handle:
            _DIGESTS[key] = sha256_file(handle)[:16]
    return _DIGESTS[key]


def read_state_dict(path: str, digest: str) -> Dict[str, torch.Tensor]:
    """The tensors of ``path``, which must still have content ``digest``."""
    found = file_digest(path)
    if digest and found != digest:
        raise CheckpointError(f"model.weights: {path} changed since this run was configured (sha256 {found}, the run "
                              f"has {digest}); restore that file, or drop the run's config to start a new run")
    if Path(path).suffix == ".safetensors":
        from ticketlab.extras import require

        load = require("safetensors.torch", "model.weights: reading a .safetensors file").load_file
        foreign = "is not a safetensors file ({})"
    else:
        def load(file):
            return torch.load(file, map_location="cpu", weights_only=True)

        foreign = "is not a state dict readable weights-only ({}); save one with torch.save(model.state_dict(), path)"
    try:
        state = load(path)
    except Exception as exc:  # noqa: BLE001  (torch and safetensors raise several types for foreign files)
        if out_of_memory(exc):
            raise CheckpointError(f"model.weights: not enough memory to read {path}; free memory, or use a "
                                  "machine with more") from None
        raise CheckpointError(f"model.weights: {path} {foreign.format(type(exc).__name__)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and torch.is_tensor(v)
                                                      for k, v in state.items())):
        raise CheckpointError(f"model.weights: {path} holds no state dict (a mapping of names to tensors); save one "
                              "with torch.save(model.state_dict(), path)")
    return dict(zip(strip_wrapper_prefixes(list(state)), state.values()))  # saved from a DDP / compiled model


def load_pretrained(model: nn.Module, path: str, digest: str) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` (every tensor, matching shapes); returns ``model``."""
    state = read_state_dict(path, digest)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for what, names in
                    (("missing", missing), ("unexpected", unexpected), ("shape differs for", wrong)) if names]
        raise CheckpointError(f"model.weights: {path} does not fit the model ({'; '.join(problems)}); give weights "
                              "saved from the same architecture (--model.name and its fields)")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


__all__ = ["file_digest", "read_state_dict", "load_pretrained"]
