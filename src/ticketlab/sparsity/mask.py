"""`Mask`: parameter name -> boolean keep-tensor, and which parameters are prunable.

Prunable parameters are the weights of ``Linear`` and ``Conv1d/2d/3d`` modules (biases and norm
layers never), in ``named_parameters()`` order; `opt_in_modules` adds Embedding tables and
MultiheadAttention's input projections for one model (``--prune.modules``). Other weight matrices
(those, unless opted in; recurrent and transposed-conv weights; a module's own parameters) are never
pruned, and `warn_unprunable` says so once. A mask may cover any subset of a model's parameters;
a name missing from a mask counts as all-ones (dense).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from ticketlab.errors import CheckpointError
from ticketlab.extras import require
from ticketlab.io import atomic_write_bytes, load_torch, parsing, read_verified, unreadable

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# kinds of weights pruned only when asked for: kind -> (module types, their parameter names)
OPT_IN = {"embedding": ((nn.Embedding, nn.EmbeddingBag), ("weight",)),
          "attention": ((nn.MultiheadAttention,), ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"))}
_OPT_IN_ATTR = "ticketlab_prune_modules"
_WARNED = set()


class UnprunableWeightsWarning(UserWarning):
    """A model has weight matrices that pruning leaves dense."""


def opt_in_modules(model: nn.Module, kinds) -> nn.Module:
    """Make ``kinds`` (names of `OPT_IN`) prunable in ``model`` (kept on the module, so copies keep it)."""
    unknown = [k for k in kinds if k not in OPT_IN]
    if unknown:
        raise ValueError(f"unknown prunable module kinds {unknown}; choose from {sorted(OPT_IN)}")
    if kinds:
        setattr(model, _OPT_IN_ATTR, tuple(kinds))
    return model


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def strip_wrapper_prefixes(names: Sequence[str]) -> List[str]:
    """``names`` (in order) less the wrapper prefixes they all share, however nested: the names of
    ``torch.compile(DDP(model))``'s parameters (``_orig_mod.module.fc.weight``) give ``model``'s."""
    names = list(names)
    while names:
        prefix = next((p for p in WRAPPER_PREFIXES if all(n.startswith(p) for n in names)), None)
        if prefix is None:
            break
        names = [n[len(prefix):] for n in names]
    return names


def output_layer_name(model: nn.Module) -> str:
    """Module name of the classifier: ``model.output_layer`` (name or module) if set, else the last
    Linear/Conv module in ``named_modules()`` order."""
    declared = getattr(model, "output_layer", None)
    if isinstance(declared, str):
        return declared
    last = None
    for name, module in model.named_modules():
        if declared is not None and module is declared:
            return name
        if isinstance(module, PRUNABLE_MODULES):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer; set model.output_layer")
    return last


def prunable_parameters(model: nn.Module, include_output: bool = True) -> Dict[str, nn.Parameter]:
    """Weights of the Linear/Conv modules of ``model``, keyed by parameter name, in parameter order."""
    weights = {id(m.weight) for m in model.modules()
               if isinstance(m, PRUNABLE_MODULES) and isinstance(m.weight, nn.Parameter)}
    for kind in getattr(model, _OPT_IN_ATTR, ()):
        types, names = OPT_IN[kind]
        weights |= {id(getattr(m, n)) for m in model.modules() if isinstance(m, types) for n in names
                    if isinstance(getattr(m, n, None), nn.Parameter)}
    if not include_output and weights:
        out = model.get_submodule(output_layer_name(model))
        weights.discard(id(getattr(out, "weight", None)))
    return {name: p for name, p in model.named_parameters() if id(p) in weights}


def unprunable_parameters(model: nn.Module) -> Dict[str, str]:
    """Weight matrices (parameters of 2 or more dimensions) that pruning leaves dense: name -> the type of
    the module holding them."""
    prunable = {id(p) for p in prunable_parameters(model).values()}
    out = {}
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.dim() >= 2 and id(p) not in prunable:
                out[f"{module_name}.{name}" if module_name else name] = type(module).__name__
    return out


def warn_unprunable(model: nn.Module) -> None:
    """Warn, once per process and kind of model, about the weights `unprunable_parameters` lists."""
    found = unprunable_parameters(model)
    key = (type(model).__name__, tuple(found))
    if not found or key in _WARNED:
        return
    _WARNED.add(key)
    shown = ", ".join(f"{name} ({kind})" for name, kind in list(found.items())[:8])
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    kinds = {kind for kind in found.values()}
    hint = ""
    if kinds & {"Embedding", "EmbeddingBag", "MultiheadAttention"}:
        hint = ("; --prune.modules embedding,attention (ticketlab.sparsity.opt_in_modules in Python) prunes embedding tables and "
                "attention input projections too")
    warnings.warn(f"{type(model).__name__}: {len(found)} weight tensor(s) are not pruned and stay dense: {shown}{more}"
                  f"{hint}", UnprunableWeightsWarning, stacklevel=3)


def resolve_parameters(model: nn.Module, names) -> Dict[str, nn.Parameter]:
    """Map mask names to ``model``'s parameters, seeing through DDP / torch.compile wrappers."""
    params = dict(model.named_parameters())
    unwrapped = dict(zip(strip_wrapper_prefixes(list(params)), params.values()))
    found = {}
    for name in names:
        hit = params.get(name, unwrapped.get(name))
        if hit is None:
            raise CheckpointError(f"the mask has an entry {name!r} that the model lacks; "
                                  "use a mask made for this model")
        found[name] = hit
    return found


class Mask(Mapping):
    """Parameter name -> bool tensor of the parameter's shape (True = kept)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t: Dict[str, torch.Tensor] = {k: v.detach().to(torch.bool) for k, v in tensors.items()}

    @classmethod
    def ones(cls, model_or_params: Union[nn.Module, Mapping[str, torch.Tensor]],
             include_output: bool = True) -> "Mask":
        params = model_or_params
        if isinstance(model_or_params, nn.Module):
            params = prunable_parameters(model_or_params, include_output)
        return cls({k: torch.ones_like(p, dtype=torch.bool) for k, p in params.items()})

    # -- mapping ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __eq__(self, other: object) -> bool:
        """Same names and identical tensors (exact comparison, across devices)."""
        if not isinstance(other, Mapping) or set(self._t) != set(other.keys()):
            return False
        return all(torch.equal(t, other[k].to(t.device)) for k, t in self._t.items())

    __hash__ = None

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, {self.num_kept()}/{self.num_total()} kept)"

    # -- counts -------------------------------------------------------------------------------
    def num_kept(self) -> int:
        return sum(int(torch.count_nonzero(t)) for t in self._t.values())

    def num_total(self) -> int:
        return sum(t.numel() for t in self._t.values())

    def density(self) -> float:
        total = self.num_total()
        return self.num_kept() / total if total else 1.0

    def report(self) -> List[dict]:
        """One row per tensor ``{name, shape, kept, total, density}`` and a final ``total`` row."""
        rows = [{"name": k, "shape": tuple(t.shape), "kept": int(torch.count_nonzero(t)), "total": t.numel()}
                for k, t in self._t.items()]
        kept, total = sum(r["kept"] for r in rows), sum(r["total"] for r in rows)
        rows.append({"name": "total", "shape": None, "kept": kept, "total": total})
        for r in rows:
            r["density"] = r["kept"] / r["total"] if r["total"] else 1.0
        return rows

    # -- composition --------------------------------------------------------------------------
    def __and__(self, other: "Mask") -> "Mask":
        """Intersection; a name present on one side only is taken from that side."""
        out = dict(self._t)
        for k, t in other.items():
            out[k] = out[k] & t.to(out[k].device) if k in out else t
        return Mask(out)

    def issubset(self, other: "Mask") -> bool:
        """True if every weight kept here is kept in ``other`` (missing names are all-ones)."""
        for k in set(self._t) | set(other.keys()):
            if k not in other:
                continue
            mine = self._t.get(k)
            theirs = other[k]
            if mine is None:
                if not bool(theirs.all()):
                    return False
            elif bool((mine & ~theirs.to(mine.device)).any()):
                return False
        return True

    def to(self, device) -> "Mask":
        return Mask({k: t.to(device) for k, t in self._t.items()})

    def apply_(self, model: nn.Module) -> None:
        """Set the pruned weights of ``model`` to exactly zero, in place."""
        params = resolve_parameters(model, self._t)
        with torch.no_grad():
            for k, p in params.items():
                p.masked_fill_(~self._t[k].to(p.device), 0)

    # -- compact forms ---------------------------------------------------------------------------
    def packed(self) -> Dict[str, torch.Tensor]:
        """Eight entries a byte (numpy's ``packbits``, row-major), with each tensor's shape under
        ``"<name>:shape"``: a mask of LeNet-300-100 in 33 kB instead of 266 kB."""
        out = {}
        for k, t in self._t.items():
            out[k] = torch.from_numpy(np.packbits(t.detach().cpu().numpy().reshape(-1)))
            out[k + ":shape"] = torch.tensor(tuple(t.shape), dtype=torch.long)
        return out

    @classmethod
    def from_packed(cls, packed: Mapping[str, torch.Tensor]) -> "Mask":
        tensors = {}
        for key, bits in packed.items():
            if key.endswith(":shape"):
                continue
            shape = tuple(int(v) for v in packed[key + ":shape"])
            n = int(np.prod(shape)) if shape else 1
            flat = np.unpackbits(bits.numpy().astype(np.uint8), count=n).astype(bool)
            tensors[key] = torch.from_numpy(flat).view(shape)
        return cls(tensors)

    def digest(self) -> str:
        """SHA-1 of the names, shapes and packed entries: equal masks, equal digests."""
        h = hashlib.sha1()
        for key, value in self.packed().items():
            h.update(key.encode())
            h.update(value.numpy().tobytes())
        return h.hexdigest()

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, torch.Tensor]:
        return dict(self._t)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "Mask":
        return cls(state)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write atomically: safetensors if ``path`` ends in ``.safetensors``, else ``torch.save``."""
        path = Path(path)
        tensors = {k: t.cpu().contiguous() for k, t in self._t.items()}
        if path.suffix == ".safetensors":
            save = require("safetensors.torch", "writing a .safetensors mask").save
            data = save(tensors, metadata={"format": "ticketlab-mask"})
        else:
            buffer = io.BytesIO()
            torch.save(tensors, buffer)
            data = buffer.getvalue()
        atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Mask":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"mask file {path} does not exist; check the path or re-create the mask")
        fix = "delete it and re-create the mask (a run's own: run the command that made the run again)"
        if path.suffix == ".safetensors":
            load = require("safetensors.torch", "reading a .safetensors mask").load
            try:
                data, checked = read_verified(path, fix)  # the bytes parsed are the bytes checked
            except OSError as exc:
                raise unreadable(path, exc) from None
            with parsing(path, checked, "a safetensors file", fix):
                # names sorted, as load_file gives them; cloned: load's tensors are views of immutable bytes
                state = {k: v.clone() for k, v in sorted(load(data).items())}
        else:
            state = load_torch(path, fix=fix)
        bad = not isinstance(state, dict) or any(
            not isinstance(k, str) or not torch.is_tensor(v) or v.dtype != torch.bool for k, v in state.items())
        if bad:
            raise CheckpointError(f"{path} is not a mask file (expected name -> bool tensor); "
                                  "pass a file written by Mask.save")
        return cls(state)
