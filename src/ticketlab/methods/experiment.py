"""What every method shares: its data, a model factory and a run directory, the initial weights kept in
``init.pt``, one way to train a phase under a mask, and the report row a result phase carries.

A method subclasses `Experiment`, opens it with `Experiment.open` (data loaded, then `open_dir`: settings
checked by `validate` before anything is written, then the run directory created or reopened) and trains its phases
with `train_phase`; every file it makes once goes through `ticketlab.runs.ensure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch

from ticketlab.config import PruneConfig, RunConfig, TrainConfig
from ticketlab.data import DataBundle, epoch_permutation, load_data
from ticketlab.errors import CheckpointError, ConfigError
from ticketlab import distributed
from ticketlab.io import remove_file, write_json
from ticketlab.methods.context import RunContext
from ticketlab.runfiles import TRAINER_KEYS, read_summary
from ticketlab.models import build_model
from ticketlab.models.weights import load_pretrained
from ticketlab.runs import START, SUMMARY, TRUNK, RunDir, ensure, report_row
from ticketlab.sparsity import Mask, MaskEnforcer, densities_from_globs, opt_in_modules, prunable_parameters
from ticketlab.status import current_phase, note, output_mode, phase
from ticketlab.train import Callback, Trainer
from ticketlab.train.accel import precision
from ticketlab.train.trackers import Tracker
from ticketlab.train.trainer import finished

T = TypeVar("T")
ModelFactory = Callable[[int], torch.nn.Module]  # seed -> a freshly initialised model (CPU)
Weights = Dict[str, torch.Tensor]
DATA_STATE = "data.pt"
SCORING_STEP = 10**9  # augmentation stream of gradient-scoring batches, apart from training steps


@dataclass
class Experiment:
    config: RunConfig
    data: DataBundle
    make_model: ModelFactory
    path: Path
    device: torch.device
    progress: Optional[bool] = None
    dataset_name: str = ""  # names in report rows for a user's own data or module ("": from the config)
    model_name: str = ""
    signature: str = ""  # what the config does not say about a user's module and data (in the rows' key)
    trackers: Sequence[Tracker] = ()  # receive every metric record of every phase (`ticketlab.train.trackers`)

    @classmethod
    def open(cls, config: RunConfig, ctx: RunContext, **fields: Any) -> "Experiment":
        """Load the data, then check the settings and open the run directory (`open_dir`)."""
        data = prepare_data(config, ctx)
        exp = cls(config, data, config_model_factory(config, data), Path(ctx.runs_dir) / config.run_name,
                  ctx.torch_device, ctx.progress, trackers=ctx.trackers, **fields)
        exp.open_dir(ctx.argv)
        return exp

    def open_dir(self, argv: Optional[List[str]] = None, **record: Any) -> RunDir:
        """Check the settings (`validate`, skipped for a finished run), then create or reopen the run
        directory, whose data must match this experiment's (fingerprint, saved splits and labels); bad
        input fails before anything is written. ``record``: more for the manifest (a user's module and data)."""
        if not self.is_finished():
            self.validate()
        run = RunDir.open(self.path.parent, self.config, str(self.device), torch.get_num_threads(), argv,
                          path=self.path, record=run_record(self.config, self.device, **record),
                          data_fingerprint=self.data.fingerprint)
        check_data_state(self.path, self.data)
        warn_unused_amp(self.config, self.device)
        return run

    def is_finished(self) -> bool:
        """Whether the run has nothing left to do (its settings were checked when it began): its own
        ``summary.json``; a method whose runs write none says what else. Reads files only (the run's lock is
        not held yet)."""
        return (self.path / SUMMARY).exists()

    def validate(self) -> torch.nn.Module:
        """Refuse bad settings before the run directory exists (subclasses add their checks). Returns the
        initial model it built, for a subclass's checks to use instead of building another."""
        self.check_batch_size("train.batch_size", self.config.train.batch_size)
        return self.initial_model()

    def check_batch_size(self, name: str, size: int) -> None:
        """A batch holds at most the whole training split (one full-batch step per epoch)."""
        n = len(self.data.train)
        if size > n:
            raise ConfigError(f"{name}={size} is larger than the {n} training examples; give at most {n} "
                              f"(--{name} {n} trains on the whole split at every step)")

    # -- weights ----------------------------------------------------------------------------------
    def initial_model(self) -> torch.nn.Module:
        """The model every phase starts from: initialised from ``init_seed``, or ``--model.weights``."""
        model = self.make_model(self.config.init_seed)
        if self.config.model.weights:
            load_pretrained(model, self.config.model.weights, self.config.model.weights_digest)
        return model

    def fresh_initial_weights(self) -> Weights:
        return self.initial_model().state_dict()

    def initial_weights(self) -> Weights:
        """The initialisation, drawn once and kept in ``init.pt`` so every phase starts from the same."""
        return ensure(self.path / "init.pt", self.fresh_initial_weights)

    def model_with(self, weights: Weights) -> torch.nn.Module:
        model = self.make_model(self.config.init_seed)
        model.load_state_dict(weights)
        return model.to(self.device)

    # -- phases -----------------------------------------------------------------------------------
    def train_phase(self, out: Path, weights: Union[Weights, Callable[[], Weights]], mask: Optional[Mask],
                    cfg: TrainConfig, *, order_seed: int,
                    extra: Dict[str, Any], callbacks: Sequence[Callback] = (), start_step: int = 0,
                    stop_at: Optional[int] = None, lr_at: Optional[Callable[[int], float]] = None,
                    data: Optional[DataBundle] = None) -> Dict[str, Any]:
        """Train ``weights`` (or what a callable returns, called only if the phase trains) into ``out``
        under ``mask`` (None: dense); a finished ``out`` returns its summary without building anything, a
        checkpointed one resumes. ``extra`` goes into the summary (a finished summary that lacks some of
        it, from an older version, gains it in place). ``data``: another bundle than the experiment's (a
        training subset)."""
        label = f"{self.path.name}/{out.relative_to(self.path)}" if out != self.path else self.path.name

        def fit() -> None:
            model = self.model_with(weights() if callable(weights) else weights)
            enforcer = MaskEnforcer(model, (mask if mask is not None else Mask.ones(model)).to(self.device))
            Trainer(model, data if data is not None else self.data, cfg, order_seed=order_seed, out_dir=out,
                    enforcer=enforcer,
                    callbacks=callbacks, start_step=start_step, progress=self.progress, label=label,
                    summary_extra=extra, stop_at=stop_at, lr_at=lr_at, trackers=self.trackers).fit()
            if cfg.keep_weights == "final" and distributed.is_writer():
                remove_file(out / START)  # a method's start weights of the phase: made again when needed

        done = finished(out)  # a summary whose weights files were deleted goes: the phase trains again
        if done and current_phase() is None:  # within `phases`, which said it already
            note(f"{label} already finished", self.progress)

        return with_summary_extra(out, ensure(out / SUMMARY, fit, save=None, load=trainer_summary), extra)

    def phases(self, what: str, keys: Sequence[int], folder: Callable[[int], Path],
               train: Callable[[int], T], name: str = "") -> List[T]:
        """``train(k)`` for each key, each under a progress `phase` ("level 3 of 10", or "level 4, 1 of 7"
        when the keys are not 0..N) so its bar shows where the command is and an overall ETA; first one
        line on the keys whose ``folder`` is finished (`finished`: a summary whose weights files were deleted
        goes here, and that key trains again). ``name``: the run as the lines call it (default: its folder's
        name)."""
        name, keys = name or self.path.name, list(keys)
        done = [k for k in keys if finished(folder(k))]
        which = f"{what}{'s' if len(done) > 1 else ''} {_spans(done)}"
        if done and len(done) == len(keys):
            note(f"{name} already finished ({which})", self.progress)
        elif done:
            note(f"{name}: {which} already finished", self.progress)
        whole = keys == list(range(len(keys)))
        out = []
        for i, k in enumerate(keys):
            text = f"{what} {k} of {keys[-1]}" if whole else f"{what} {k}, {i + 1} of {len(keys)}"
            with phase(text, i, len(keys)):
                out.append(train(k))
        return out

    def row(self, *, variant: str, level: int, density: Optional[float], branch: str = TRUNK,
            branch_options: Optional[Dict[str, Any]] = None, metrics: str = "metrics.jsonl") -> Dict[str, Any]:
        """The report row of one of this experiment's result phases (see `ticketlab.runs.report_row`)."""
        return report_row(self.config, variant=variant, level=level, density=density, branch=branch,
                          branch_options=branch_options, dataset=self.dataset_name or None,
                          model=self.model_name or None, signature=self.signature, metrics=metrics)


def _spans(keys: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    spans: List[List[int]] = []
    for k in sorted(keys):
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def with_summary_extra(out: Path, summary: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``summary`` with ``extra`` merged in; rewritten when that changes it (a summary written before a
    key existed, such as the report row)."""
    merged = {**summary, **extra}
    if merged != summary:
        write_json(out / SUMMARY, merged)
    return merged


# -- shared by the methods ------------------------------------------------------------------------------


def prepare_data(config: RunConfig, ctx: RunContext) -> DataBundle:
    """Load the data (a status line while a data set decodes for the first time); raises on bad input
    before anything is written."""
    with output_mode(ctx.progress):
        return load_data(config.data, noise_seed=config.noise_seed, device=ctx.torch_device,
                         augment_seed=config.augment_seed)


def run_record(config: RunConfig, device: torch.device, **more: Any) -> Dict[str, Any]:
    """What a run's manifest records besides the environment: the precision it trains in (resuming it
    in another is refused) and ``more`` (a user's module and data)."""
    return {"precision": precision(config.train.amp, device), **more}


def warn_unused_amp(config: RunConfig, device: torch.device) -> None:
    """Say once a run is open that ``--train.amp`` does nothing off CUDA (it trains in fp32 there)."""
    if config.train.amp != "none" and precision(config.train.amp, device) == "fp32":
        from ticketlab.logs import logger

        logger.warning(f"train.amp {config.train.amp} applies on CUDA only: this run trains in fp32 on {device} "
                       "(its manifest records the precision)")


def check_data_state(path: Path, data: DataBundle) -> None:
    """Save the data's splits and labels with the run the first time; refuse data that differs later."""
    state = data.state()
    saved = ensure(path / DATA_STATE, lambda: state)
    if saved.keys() != state.keys() or any(not torch.equal(saved[k], state[k].cpu()) for k in state):
        raise CheckpointError(f"the data of {path} changed since the run started (splits or labels differ "
                              f"from {path / DATA_STATE}); restore the original files or start a new --runs-dir")


def config_model_factory(config: RunConfig, data: DataBundle) -> ModelFactory:
    def make(seed: int) -> torch.nn.Module:
        return opt_in_modules(build_model(config.model, data.input_shape, data.num_classes, seed=seed),
                              config.prune.modules)

    return make


def masked(weights: Weights, mask: Mask) -> Weights:
    """A copy of ``weights`` with the pruned entries set to exactly 0."""
    out = {k: v.clone() for k, v in weights.items()}
    for name, keep in mask.items():
        out[name] = out[name] * keep.to(out[name].device, out[name].dtype)
    return out


def scoring_batch(data: DataBundle, seed: int, batch_size: int, augment_step: int = SCORING_STEP
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The one training batch a gradient score is computed on: the first ``batch_size`` examples of the
    permutation of ``seed``, augmented as a training batch (step ``augment_step``) when the data is."""
    index = epoch_permutation(len(data.train), seed, 0, data.train.x.device)[:batch_size]
    x = data.train.x[index]
    return (data.augment(x, augment_step) if data.augment is not None else x), data.train.y[index]


def trainer_summary(path: Path) -> Dict[str, Any]:
    """A phase's ``summary.json`` as the trainer wrote it (its shape checked)."""
    return read_summary(path, TRAINER_KEYS)


def prune_options(p: PruneConfig, model: torch.nn.Module) -> Dict[str, Any]:
    """Keyword arguments of `ticketlab.sparsity.prune` that come straight from the prune config."""
    options: Dict[str, Any] = {"criterion": p.criterion, "scope": p.scope, "output_rate": p.output_rate,
                               "erk_power": p.erk_power, "include_first": p.include_first, "erk_budget": p.erk_budget}
    if p.layer_density:
        options["layer_density"] = densities_from_globs(prunable_parameters(model), p.layer_density)
    return options


def save_mask(mask: Mask, path: Path) -> None:
    mask.save(path)


__all__ = ["Experiment", "ModelFactory", "Weights", "prepare_data", "run_record", "check_data_state",
           "config_model_factory", "masked",
           "scoring_batch", "prune_options", "save_mask", "trainer_summary", "with_summary_extra"]
