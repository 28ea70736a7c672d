"""The export formats. Every file is a safetensors file (tensors and a JSON string of metadata, nothing
that executes on load) whose ``ticketlab`` metadata entry holds the format, the model's description and,
per format, what rebuilds it:

- ``safetensors``: every parameter and buffer; a pruned weight as ``<name>.values`` (the kept entries in
  row-major order) and ``<name>.bitmap`` (its mask, eight entries a byte, numpy's ``packbits`` order),
  its shape in the metadata. Plain ``safetensors`` and ``torch`` rebuild it (see the README).
- ``sparse``: the Linear layers where torch's CSR matmul is faster than dense at the export's batch size
  (measured per layer) as ``<layer>.crow``, ``.col``, ``.values``; the rest dense.
- ``structured``: an MLP without its dead neurons (no kept weight in or out), a dense model of its own.
- ``torch-prune``: ``<layer>.weight_orig`` and ``<layer>.weight_mask`` of ``torch.nn.utils.prune``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import torch
from torch import nn

from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.export.source import Ticket, build_from_spec
from ticketlab.extras import require
from ticketlab.io import atomic_write_bytes
from ticketlab.sparsity import Mask

FORMATS = ("safetensors", "sparse", "structured", "torch-prune")


def write(path: Path, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    save = require("safetensors.torch", "exporting a ticket (safetensors files)").save
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata={"ticketlab": json.dumps(meta, sort_keys=True)})
    atomic_write_bytes(path, data)
    return Path(path)


def read(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The tensors and the ``ticketlab`` metadata of an export file."""
    safe_open = require("safetensors", "reading an export (safetensors files)").safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"no export at {path}; check the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["ticketlab"])
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # noqa: BLE001  (a foreign or damaged file: one line, never a traceback)
        raise CheckpointError(f"{path} is not a ticketlab export ({type(exc).__name__}); export the run again") from None
    return tensors, meta


# -- safetensors: kept values and a bitmap ---------------------------------------------------------------

def compressed_tensors(state: Mapping[str, torch.Tensor], mask: Mask) -> Tuple[Dict[str, torch.Tensor], Dict]:
    tensors, shapes = {}, {}
    for name, value in state.items():
        if name in mask:
            keep = mask[name].cpu()
            tensors[f"{name}.values"] = value[keep]
            tensors[f"{name}.bitmap"] = torch.from_numpy(np.packbits(keep.numpy().reshape(-1)))
            shapes[name] = list(value.shape)
        else:
            tensors[name] = value
    return tensors, shapes


def dense_state(tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, List[int]]) -> Dict[str, torch.Tensor]:
    """The full state dict of a ``safetensors`` export (plain torch and numpy, as anyone can)."""
    state = {k: v for k, v in tensors.items() if not k.endswith((".values", ".bitmap"))}
    for name, shape in shapes.items():
        count = math.prod(shape)
        keep = torch.from_numpy(np.unpackbits(tensors[f"{name}.bitmap"].numpy(), count=count).astype(bool))
        values = tensors[f"{name}.values"]
        full = torch.zeros(count, dtype=values.dtype)
        full[keep] = values
        state[name] = full.view(shape)
    return state


# -- sparse: CSR Linear layers where they pay ------------------------------------------------------------

class SparseLinear(nn.Module):
    """``y = x W^T + b`` with W in CSR: one sparse-dense matmul."""

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor = None):
        super().__init__()
        self.weight = weight_csr
        self.bias = bias
        self.in_features, self.out_features = weight_csr.shape[1], weight_csr.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = feature_major(x.reshape(-1, self.in_features))
        out = (torch.sparse.mm(self.weight, flat) if self.bias is None else
               torch.addmm(self.bias.reshape(-1, 1), self.weight, flat)).t()
        return out.reshape(*x.shape[:-1], self.out_features)


class SparseMLP(nn.Module):
    """An `MLP` whose activations stay transposed (features x batch) from the first layer to the last, so
    that every CSR layer is one ``W @ H`` on a contiguous operand: the input is transposed once, where a
    chain of `SparseLinear` layers would transpose at every layer (a 256 x 784 transpose costs about as
    much as the sparse product it feeds)."""

    def __init__(self, layers: List[Tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.weights = [w for w, _ in layers]
        self.biases = [b.reshape(-1, 1) for _, b in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = feature_major(x.flatten(1))
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.addmm(b, w, h)  # CSR or dense ``w``: one product with the bias, no second pass
            if i < last:
                h = torch.relu_(h)
        return h.t()


def feature_major(x: torch.Tensor) -> torch.Tensor:
    """``x.t().contiguous()`` of a (batch, features) matrix. On the CPU numpy's transposing copy is about
    three times faster than torch's strided one (0.12 against 0.36 ms for 256 x 784), and at 2% density
    the transpose costs more than the sparse product it feeds."""
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.ascontiguousarray(x.numpy().T))
    return x.t().contiguous()


def _median_time(fn, repeats: int = 15) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return sorted(times)[len(times) // 2]


def pays_off(layer: nn.Linear, batch: int, transposed: bool = False) -> bool:
    """Whether the CSR form of ``layer`` is faster than dense at ``batch`` (measured here, median of 15):
    as a `SparseLinear` (its transposes included), or, ``transposed``, inside a `SparseMLP` whose
    activations are already features x batch."""
    csr = layer.weight.detach().to_sparse_csr()
    bias = (layer.bias if layer.bias is not None else torch.zeros(layer.out_features)).detach().reshape(-1, 1)
    with torch.inference_mode():
        if transposed:
            h = torch.randn(layer.in_features, batch)
            dense = _median_time(lambda: torch.addmm(bias, layer.weight, h))
            sparse = _median_time(lambda: torch.addmm(bias, csr, h))
        else:
            x = torch.randn(batch, layer.in_features)
            dense = _median_time(lambda: layer(x))
            as_sparse = SparseLinear(csr, bias.flatten())
            sparse = _median_time(lambda: as_sparse(x))
    return sparse < 0.95 * dense


def sparse_tensors(model: nn.Module, batch: int, spec: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The tensors of a ``sparse`` export: CSR for each Linear layer that is faster so at ``batch``, and
    then only if the whole exported model is faster than the dense one there (else all dense)."""
    tensors, chosen = _sparse_choice(model, batch)
    if chosen:
        x = torch.randn(batch, *spec["input_shape"])
        exported = sparse_model(tensors, {"spec": spec, "sparse_layers": chosen})
        with torch.inference_mode():
            if _median_time(lambda: exported(x)) >= 0.95 * _median_time(lambda: model(x)):
                return dict(model.state_dict()), []
    return tensors, chosen


def _sparse_choice(model: nn.Module, batch: int) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    import warnings

    from ticketlab.models.mlp import MLP

    tensors, chosen = dict(model.state_dict()), []
    transposed = isinstance(model, MLP)  # exported as a SparseMLP (see sparse_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and pays_off(module, batch, transposed):
                csr = module.weight.detach().to_sparse_csr()
                del tensors[f"{name}.weight"]
                tensors[f"{name}.crow"], tensors[f"{name}.col"] = csr.crow_indices(), csr.col_indices()
                tensors[f"{name}.values"] = csr.values()
                chosen.append(name)
    return tensors, chosen


def sparse_model(tensors: Mapping[str, torch.Tensor], meta: Dict[str, Any]) -> nn.Module:
    import warnings

    model = build_from_spec(meta["spec"])
    state = {k: v for k, v in tensors.items() if not k.endswith((".crow", ".col", ".values"))}
    for name in meta["sparse_layers"]:
        state[f"{name}.weight"] = torch.zeros(model.get_submodule(name).weight.shape)
    model.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name in meta["sparse_layers"]:
            dense = model.get_submodule(name)
            csr = torch.sparse_csr_tensor(tensors[f"{name}.crow"], tensors[f"{name}.col"], tensors[f"{name}.values"],
                                          size=dense.weight.shape)
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf,
                    SparseLinear(csr, dense.bias.detach() if dense.bias is not None else None))
    from ticketlab.models.mlp import MLP

    if isinstance(model, MLP) and meta["sparse_layers"]:  # the whole chain in the transposed layout
        return SparseMLP([(m.weight, m.bias.detach()) if isinstance(m, SparseLinear) else
                          (m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, (nn.Linear, SparseLinear))])
    return model.eval()


# -- structured: an MLP without its dead neurons ---------------------------------------------------------

def structured_mlp(model: nn.Module) -> Tuple[Dict[str, torch.Tensor], List[int]]:
    """The weights and hidden widths of ``model`` (an `MLP`: Linear and ReLU layers) with every hidden
    neuron removed that no kept weight feeds (its constant output ReLU(bias) folded into the next layer's
    bias) or that feeds no kept weight; repeated until nothing changes."""
    from ticketlab.models.mlp import MLP

    if not isinstance(model, MLP):
        raise ConfigError(f"structured export handles MLP models (mlp, lenet_300_100) for now, not "
                          f"{type(model).__name__}; export --format sparse or safetensors instead")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    weights = [m.weight.detach().clone() for m in linears]
    biases = [m.bias.detach().clone() for m in linears]
    changed = True
    while changed:
        changed = False
        for layer in range(len(weights) - 1):  # hidden layer `layer`'s neurons: rows of W[layer]
            fed = weights[layer].ne(0).any(1)
            used = weights[layer + 1].ne(0).any(0)
            keep = fed & used
            if bool(keep.all()):
                continue
            constant = torch.relu(biases[layer]) * (~fed)  # a neuron nothing feeds outputs ReLU(b)
            biases[layer + 1] = biases[layer + 1] + weights[layer + 1] @ constant
            weights[layer], biases[layer] = weights[layer][keep], biases[layer][keep]
            weights[layer + 1] = weights[layer + 1][:, keep]
            changed = True
    if any(w.shape[0] == 0 for w in weights[:-1]):
        raise ConfigError("every neuron of a hidden layer is dead: the ticket computes a constant; nothing to export")
    state = {}
    for i, (w, b) in enumerate(zip(weights, biases), start=1):
        state[f"fc{i}.weight"], state[f"fc{i}.bias"] = w, b
    return state, [w.shape[0] for w in weights[:-1]]


# -- torch-prune: torch.nn.utils.prune's form --------------------------------------------------------------

def to_torch_prune(model: nn.Module, mask: Mask) -> nn.Module:
    """``model`` with ``torch.nn.utils.prune.custom_from_mask`` applied to every masked weight, in place:
    ``<layer>.weight_orig`` holds the weights, ``<layer>.weight_mask`` the mask."""
    from torch.nn.utils import prune

    for name, keep in mask.items():
        layer, _, param = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(layer) if layer else model, param, keep.to(torch.float32))
    return model


def mask_from_torch_prune(source) -> Mask:
    """The `Mask` of a module pruned with ``torch.nn.utils.prune`` (or of its state dict): every
    ``<name>_mask`` buffer, named ``<name>``."""
    state = source.state_dict() if isinstance(source, nn.Module) else source
    found = {k[: -len("_mask")]: v.detach().cpu().bool() for k, v in state.items() if k.endswith("_mask")}
    if not found:
        raise ConfigError("no torch.nn.utils.prune masks (no '<name>_mask' buffers) in what was given")
    return Mask(found)


__all__ = ["FORMATS", "write", "read", "compressed_tensors", "dense_state", "SparseLinear", "SparseMLP", "pays_off",
           "sparse_tensors", "sparse_model", "structured_mlp", "to_torch_prune", "mask_from_torch_prune"]
