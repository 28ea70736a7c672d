"""`ticketlab export RUN --format F`: a ticket as a smaller or faster model (`formats`), from a finished
phase of a run (`source`); `load_export` rebuilds any export as a module."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.export.formats import (FORMATS, compressed_tensors, dense_state, mask_from_torch_prune, read,
                                      sparse_model, sparse_tensors, structured_mlp, to_torch_prune, write)
from ticketlab.export.source import Ticket, build_from_spec, load_ticket, run_data


def export_ticket(ticket: Ticket, fmt: str, out: Path, batch: int = 256) -> Path:
    """Write ``ticket`` as ``fmt`` to ``out`` (a ``.safetensors`` file)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    meta = {"format": fmt, "spec": ticket.spec}
    state = {k: v.detach().cpu() for k, v in ticket.model.state_dict().items()}
    if fmt == "safetensors":
        tensors, meta["shapes"] = compressed_tensors(state, ticket.mask)
    elif fmt == "sparse":
        with torch.inference_mode():
            tensors, meta["sparse_layers"] = sparse_tensors(ticket.model, batch, ticket.spec)
        meta["batch"] = batch
    elif fmt == "structured":
        tensors, hidden = structured_mlp(ticket.model)
        meta["spec"] = {**ticket.spec, "model": {**ticket.spec["model"], "name": "mlp", "hidden": hidden}}
    else:
        pruned = to_torch_prune(build_from_spec(ticket.spec), ticket.mask)
        pruned.load_state_dict({_orig(k, ticket.mask): v for k, v in state.items()}, strict=False)
        tensors = dict(pruned.state_dict())
    return write(Path(out), tensors, meta)


def _orig(name: str, mask) -> str:
    return f"{name}_orig" if name in mask else name


def export_run(run: Path, fmt: str, out: Optional[Path] = None, level: Optional[int] = None, batch: int = 256,
               checkpoint: str = "final", loaded=None) -> Tuple[Path, Ticket]:
    """Export a finished run's trunk result at ``level`` (default: its last); the file goes to ``out``
    (default ``<run>/export/level_<k>_<format>.safetensors``). ``loaded``: the run's `run_data`
    ``(config, data)`` when the caller has it already. Returns the file and the ticket written."""
    ticket = load_ticket(Path(run), level, checkpoint, loaded)
    out = Path(out) if out is not None else \
        Path(run) / "export" / f"level_{ticket.spec['source']['level']}_{fmt}.safetensors"
    return export_ticket(ticket, fmt, out, batch), ticket


def export_main(run: str, fmt: str, out: Optional[str], level: Optional[int], batch: int, checkpoint: str) -> str:
    """`ticketlab export`: write the file, load it back, compare its predictions on the test split."""
    loaded = run_data(Path(run))  # loaded once: for the ticket and for the comparison
    path, ticket = export_run(Path(run), fmt, out, level, batch, checkpoint, loaded)
    contents = read(path)  # the file as written, read once: for the module and for its description
    exported, meta = load_export(path, contents), contents[1]
    with torch.inference_mode():
        x = loaded[1].test.x[:2048]
        gap = float((ticket.model(x) - exported(x)).abs().max())
    dense = (Path(run) / ticket.spec["source"]["phase"] / f"{checkpoint}.pt").stat().st_size
    size = path.stat().st_size
    lines = [f"wrote {path} ({fmt}, {size / 1024:.1f} KiB, {dense / size:.2f}x smaller than the dense checkpoint's "
             f"{dense / 1024:.1f} KiB)" if size <= dense else
             f"wrote {path} ({fmt}, {size / 1024:.1f} KiB, {size / dense:.2f}x the dense checkpoint's {dense / 1024:.1f} KiB)",
             f"{ticket.spec['source']['phase']} of {ticket.spec['source']['run']}, density "
             f"{100 * ticket.mask.density():.2f}%; largest |logit difference| from the masked model on {len(x)} test "
             f"examples: {gap:.2e}"]
    if fmt == "sparse":
        lines.append(f"CSR layers at batch {batch}: {', '.join(meta['sparse_layers']) or 'none (dense was faster)'}")
    if fmt == "structured":
        lines.append(f"hidden widths: {meta['spec']['model']['hidden']}")
    return "\n".join(lines)


def load_export(path: Path, contents: Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]] = None) -> nn.Module:
    """The module an export file describes, in eval mode, on the CPU; ``contents``: the file's
    ``(tensors, meta)`` when the caller has read it already."""
    tensors, meta = read(Path(path)) if contents is None else contents
    fmt = meta.get("format")
    if fmt == "sparse":
        return sparse_model(tensors, meta)
    model = build_from_spec(meta["spec"])
    if fmt == "safetensors":
        model.load_state_dict(dense_state(tensors, meta["shapes"]))
    elif fmt == "structured":
        model.load_state_dict(tensors)
    elif fmt == "torch-prune":
        to_torch_prune(model, mask_from_torch_prune(tensors))
        model.load_state_dict(tensors)
    else:
        raise ConfigError(f"{path} has export format {fmt!r}, which this version does not read")
    return model.eval()


__all__ = ["FORMATS", "export_main", "export_run", "export_ticket", "load_export", "load_ticket", "to_torch_prune",
           "mask_from_torch_prune", "Ticket"]
