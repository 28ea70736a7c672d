"""`ticketlab train`: train one model, dense or under a fixed mask chosen at initialisation."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ticketlab.config import PruneConfig, RunConfig
from ticketlab.data import DataBundle, epoch_permutation, load_data
from ticketlab.errors import CheckpointError
from ticketlab.io import load_torch, save_torch
from ticketlab.methods.context import RunContext
from ticketlab.models import build_model
from ticketlab.runs import RunDir
from ticketlab.sparsity import Mask, MaskEnforcer, densities_from_globs, prunable_parameters, prune
from ticketlab.train import Trainer

DATA_STATE, MASK = "data.pt", "mask.pt"


def prepare_data(config: RunConfig, ctx: RunContext) -> DataBundle:
    """Load the data; raises on bad input before anything is written."""
    return load_data(config.data, noise_seed=config.noise_seed, device=ctx.torch_device,
                     augment_seed=config.augment_seed)


def prepare(config: RunConfig, ctx: RunContext) -> Tuple[DataBundle, torch.nn.Module]:
    """Load the data and build the initial model; raises on bad input before anything is written."""
    data = prepare_data(config, ctx)
    model = build_model(config.model, data.input_shape, data.num_classes, seed=config.init_seed)
    return data, model.to(ctx.torch_device)


def scoring_batch(config: RunConfig, data: DataBundle) -> Tuple[torch.Tensor, torch.Tensor]:
    """The one training batch a gradient score is computed on, drawn with the pruning seed."""
    perm = epoch_permutation(len(data.train), config.prune_seed, 0, data.train.x.device)[: config.train.batch_size]
    return data.train.x[perm], data.train.y[perm]


def prune_options(p: PruneConfig, model: torch.nn.Module) -> Dict[str, Any]:
    """Keyword arguments of `ticketlab.sparsity.prune` that come straight from the prune config."""
    options: Dict[str, Any] = {"criterion": p.criterion, "scope": p.scope, "output_rate": p.output_rate,
                               "erk_power": p.erk_power, "include_first": p.include_first}
    if p.layer_density:
        options["layer_density"] = densities_from_globs(prunable_parameters(model), p.layer_density)
    return options


def initial_mask(config: RunConfig, model: torch.nn.Module, data: DataBundle) -> Optional[Mask]:
    """The mask a sparse `train` run uses (``prune.density < 1`` or explicit layer densities)."""
    p = config.prune
    if p.density >= 1.0 and not p.layer_density:
        return None
    generator = torch.Generator().manual_seed(config.prune_seed)
    batch = scoring_batch(config, data) if p.criterion == "gradient" else None
    return prune(model, p.density, batch=batch, generator=generator, **prune_options(p, model))


def open_run(config: RunConfig, ctx: RunContext, data: DataBundle) -> RunDir:
    """Create or reopen the run directory; its saved splits and labels must match the data loaded now."""
    run = RunDir.open(ctx.runs_dir, config, str(ctx.torch_device), torch.get_num_threads(), ctx.argv)
    path, state = run.path / DATA_STATE, data.state()
    if not path.exists():
        save_torch(state, path)
    else:
        saved = load_torch(path)
        if saved.keys() != state.keys() or any(not torch.equal(saved[k], state[k].cpu()) for k in state):
            raise CheckpointError(f"the data of {run.path} changed since the run started (splits or labels differ "
                                  f"from {path}); restore the original files or start a new --runs-dir")
    return run


def run_train(config: RunConfig, ctx: Optional[RunContext] = None) -> Tuple[RunDir, Dict[str, Any]]:
    ctx = ctx or RunContext()
    data, model = prepare(config, ctx)
    mask = initial_mask(config, model, data)  # before the run directory: bad prune settings write nothing
    run = open_run(config, ctx, data)
    enforcer = None
    if mask is not None:
        if not (run.path / MASK).exists():
            mask.save(run.path / MASK)
        enforcer = MaskEnforcer(model, Mask.load(run.path / MASK).to(ctx.torch_device))
    trainer = Trainer(model, data, config.train, order_seed=config.order_seed, out_dir=run.path,
                      enforcer=enforcer, progress=ctx.progress, label=config.run_name)
    return run, trainer.fit()
