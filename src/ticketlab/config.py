"""The config tree: frozen dataclasses that describe a run, its canonical JSON and its hash.

Each field is declared once, with its type, default and help text; the CLI flags (``--train.lr``), the
TOML/JSON file format, ``--help`` and the validation all come from these declarations. A run's hash is
taken over the canonical JSON with default-valued fields left out (so adding a field with a neutral
default changes no existing hash) and without the fields marked ``hash=False`` (paths, downloads and
other things that do not change results).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional, Tuple

from ticketlab.errors import ConfigError
from ticketlab.fields import (  # noqa: F401  (re-exported: the config API in one place)
    Section, check_range, coerce, content_hash, field_types, from_mapping, get_path, hashed_fields, is_section,
    load_config_file, merge, option, to_jsonable,
)
from ticketlab.fields import iter_fields as _iter_fields
from ticketlab.steps import Steps


@dataclass(frozen=True)
class DataConfig(Section):
    dataset: str = option("digits", "data source (see `ticketlab list datasets`)")
    val_size: int = option(0, "examples carved from the training set for validation")
    subset: float = option(1.0, "fraction of the training split kept, in (0, 1]")
    noise: Literal["none", "random", "symmetric", "pairflip", "asymmetric"] = option(
        "none", "label noise on the training split")
    noise_rate: float = option(0.0, "label-noise rate r in [0, 1]")
    augment: bool = option(False, "batched pad-crop and flip augmentation (image data)")
    split_seed: int = option(0, "seed of the validation split and subset (fixed across replicates)")
    noise_seed: Optional[int] = option(None, "seed of the label noise (default: derived from --seed)")
    order_seed: Optional[int] = option(None, "seed of the batch order (default: derived from --seed)")
    augment_seed: Optional[int] = option(None, "seed of the augmentation (default: derived from --seed)")
    root: Optional[str] = option(None, "folder of this data set's files (default $TICKETLAB_DATA/<name>)",
                                 hash=False)
    download: bool = option(False, "download missing files from the official source", hash=False)

    def validate(self) -> None:
        check_range("data.subset", self.subset, 0.0, 1.0, low_open=True)
        check_range("data.noise_rate", self.noise_rate, 0.0, 1.0)
        check_range("data.val_size", self.val_size, 0, math.inf)
        if self.noise != "none" and self.noise_rate == 0.0:
            raise ConfigError(f"data.noise={self.noise} needs --data.noise_rate > 0")
        if self.noise == "none" and self.noise_rate != 0.0:
            raise ConfigError("data.noise_rate is set but data.noise is none; "
                              "choose --data.noise random|symmetric|pairflip|asymmetric")


@dataclass(frozen=True)
class ModelConfig(Section):
    name: str = option("mlp", "architecture (see `ticketlab list models`)")
    hidden: Tuple[int, ...] = option((), "hidden widths of an MLP, e.g. 300,100 (empty: the model's default)")
    depth: int = option(0, "depth of a Wide ResNet (0: the model's default)")
    width: int = option(0, "width multiplier of a Wide ResNet or a ResNet (0: the model's default)")
    shortcut: Literal["", "A", "B"] = option(
        "", "CIFAR ResNet shortcuts: A parameter-free (default), B 1x1 conv ('': the model's default)")
    stem: Literal["", "cifar", "imagenet"] = option(
        "", "ResNet-18/34/50 stem: cifar 3x3 stride 1, imagenet 7x7 stride 2 + max-pool ('': the model's default)")
    init: Literal["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform"] = option(
        "kaiming_normal", "initialisation of Conv/Linear weights (biases 0)")
    bn_init: Literal["ones", "uniform"] = option("ones", "BatchNorm weights: 1, or U(0, 1) as in OpenLTH (biases 0)")
    init_seed: Optional[int] = option(None, "seed of the initialisation (default: derived from --seed)")


@dataclass(frozen=True)
class TrainConfig(Section):
    steps: Steps = option(Steps(40), "training length (40ep, 1000it, 2ep100it)")
    batch_size: int = option(128, "examples per step")
    optimizer: Literal["sgd", "adam", "adamw"] = option("sgd", "optimizer")
    lr: float = option(0.1, "learning rate")
    momentum: float = option(0.0, "SGD momentum")
    nesterov: bool = option(False, "Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, "weight decay")
    schedule: Literal["constant", "multistep", "cosine", "piecewise", "cyclic"] = option(
        "constant", "learning-rate schedule")
    milestones: Tuple[Steps, ...] = option((), "multistep milestones, e.g. 80ep,120ep")
    gamma: float = option(0.1, "multistep decay factor")
    warmup: Steps = option(Steps(), "linear warm-up length (factor step/warmup, 0 at step 0)")
    piecewise: str = option("", "piecewise lr 'epoch:lr,...', e.g. 0:0.1,100:0.01")
    cycle: Steps = option(Steps(), "cyclic: length of one triangular cycle (lr at its ends, cycle_lr mid-way)")
    cycle_lr: float = option(0.0, "cyclic: learning rate at the middle of each cycle")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy loss, in [0, 1)")
    amp: Literal["none", "bf16", "fp16"] = option("none", "mixed precision on CUDA (ignored on CPU)")
    eval_every: Steps = option(Steps(1), "evaluation interval (validation and test)")
    checkpoint_every: Steps = option(Steps(1), "interval of resumable checkpoints", hash=False)
    channels_last: bool = option(True, "channels_last memory format for conv nets on CUDA", hash=False)
    compile: bool = option(False, "torch.compile the model (CUDA; first steps pay the compile time)", hash=False)

    def validate(self) -> None:
        if self.steps.is_zero:
            raise ConfigError("train.steps must be positive, e.g. --train.steps 40ep")
        check_range("train.batch_size", self.batch_size, 1, math.inf)
        check_range("train.lr", self.lr, 0.0, math.inf)
        check_range("train.momentum", self.momentum, 0.0, 1.0)
        check_range("train.weight_decay", self.weight_decay, 0.0, math.inf)
        if self.eval_every.is_zero:
            raise ConfigError("train.eval_every must be positive, e.g. --train.eval_every 1ep")
        if self.checkpoint_every.is_zero:
            raise ConfigError("train.checkpoint_every must be positive, e.g. --train.checkpoint_every 1ep")
        if self.schedule == "piecewise":
            parse_piecewise(self.piecewise)
        check_range("train.label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        if self.schedule == "cyclic" and (self.cycle.is_zero or self.cycle_lr <= 0):
            raise ConfigError("train.schedule=cyclic needs --train.cycle (e.g. 8ep) and --train.cycle_lr > 0")
        if self.schedule == "multistep" and not self.milestones:
            raise ConfigError("train.schedule=multistep needs --train.milestones, e.g. 80ep,120ep")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("train.nesterov needs --train.optimizer sgd and --train.momentum > 0")


@dataclass(frozen=True)
class PruneConfig(Section):
    density: float = option(1.0, "fraction of prunable weights kept, in (0, 1]; 1 = dense")
    criterion: Literal["magnitude", "gradient", "random"] = option(
        "magnitude", "score: |w|, |w * dL/dw| on one batch, or random")
    scope: Literal["global", "layer", "uniform", "erk", "er"] = option(
        "global", "global: one threshold; layer: every layer at the density; uniform: as layer, first layer dense; "
                  "erk / er: Erdos-Renyi(-Kernel) per-layer densities")
    output_rate: float = option(
        1.0, "pruning rate of the output layer relative to the others (0 keeps it dense, 0.5 half the rate)")
    erk_power: float = option(1.0, "erk / er: power applied to the layer scores (RigL's erk_power_scale)")
    include_first: bool = option(True, "count the first prunable layer in the budget (false: keep it dense)")
    layer_density: str = option("", "explicit per-layer densities by name glob, e.g. 'conv1.*:1.0,fc*:0.1' "
                                "(last match wins; unmatched layers dense; overrides scope)")
    fraction: float = option(0.2, "fraction pruned per level in iterative pruning, in (0, 1)")
    seed: Optional[int] = option(None, "seed of random scores and the scoring batch (default: derived)")

    def validate(self) -> None:
        check_range("prune.density", self.density, 0.0, 1.0, low_open=True)
        check_range("prune.output_rate", self.output_rate, 0.0, 1.0)
        check_range("prune.erk_power", self.erk_power, 0.0, math.inf)
        check_range("prune.fraction", self.fraction, 0.0, 1.0, low_open=True, high_open=True)


@dataclass(frozen=True)
class LotteryConfig(Section):
    retrain: Literal["rewind", "lr-rewind", "finetune", "scratch"] = option(
        "rewind", "how each level k >= 1 retrains after pruning")
    rewind: Steps = option(Steps(), "rewind point: weights (rewind) or schedule (lr-rewind) restart at this step")
    finetune_lr: float = option(0.0, "finetune: constant learning rate of levels k >= 1 (0: train.lr)")
    finetune_steps: Steps = option(Steps(), "finetune: training length of levels k >= 1 (0: train.steps)")

    def validate(self) -> None:
        check_range("lottery.finetune_lr", self.finetune_lr, 0.0, math.inf)


@dataclass(frozen=True)
class BranchConfig(Section):
    """An ablation on a finished lottery trunk; names the branch directory, not the trunk."""

    name: Literal["retrain", "reinit", "random-prune", "oneshot"] = option("reinit", "which ablation")
    regain: Steps = option(Steps(), "retrain: step at which pruned weights become trainable (0: train.steps)")
    steps: Steps = option(Steps(), "retrain: total training length (0: twice train.steps)")
    layerwise: bool = option(True, "random-prune: keep each layer's count (false: only the global count)")
    seed: Optional[int] = option(None, "seed of the branch's new initialisation or random mask (default: derived)")


RST_VARIANTS = ("rst", "rst-iter", "l1", "l1-iter", "l1-lth")  # `ticketlab rst --variant`; stored as `method`


@dataclass(frozen=True)
class RSTConfig(Section):
    """DLTH's RST / RST_Iter and the L1 / L1_Iter baselines (`ticketlab rst`); DLTH's option names in brackets."""

    stage_ratios: Tuple[float, ...] = option(
        (), "fractions PRUNED per ResNet stage: stem, layer1.., classifier, e.g. 0,0.7,0.7,0.7,0 [stage_pr]")
    layer_ratios: str = option("", "fractions PRUNED by Conv/Linear layer index, e.g. 0-4:0.5,5:0.6 (others 0)")
    ratio_globs: str = option("", "fractions PRUNED by layer-name glob, e.g. 'layer*:0.7' (last match wins, others 0)")
    pick_pruned: Literal["min", "max", "rand", "iter_rand"] = option(
        "min", "pruned set: smallest |w|, largest |w|, uniformly random, nested random (RST_Iter)")
    base: str = option("init", "weights pruned: init (this run's initialisation), trained (a dense model trained "
                               "first, in dense/), or the path of a state-dict file [base_model_path]")
    lr_prune: float = option(1e-3, "regularisation phase: SGD learning rate (momentum, weight decay from train)")
    batch_size_prune: int = option(64, "regularisation phase: batch size")
    reg_granularity: float = option(1e-4, "regularisation: coefficient increment per update [reg_granularity_prune]")
    reg_upper_limit: float = option(1.0, "regularisation: a layer is finished once its coefficient exceeds this")
    update_reg_interval: int = option(5, "regularisation: iterations between coefficient updates")
    stabilize_reg_interval: Steps = option(Steps(0, 40000), "regularisation: length of the stabilisation phase")
    reg_schedule: Literal["x", "x^2", "x^3"] = option(
        "x", "coefficient as a function of a linear counter (x, x^2, x^3) [RST_schedule]")
    block_loss_grad: bool = option(False, "regularisation: gradients are the penalty's only (loss gradient dropped)")
    num_cycles: int = option(0, "cycles of rst-iter / l1-iter / l1-lth (cumulative ratio 1-(1-p)^(c/C))")
    weight_delete: bool = option(False, "rst-iter: zero each cycle's pruned weights and keep them at 0 afterwards")
    iter_finetune: bool = option(False, "rst-iter: fine-tune steps_mini after every cycle but the last [RST_Iter_ft]")
    steps_mini: Steps = option(Steps(), "length of the training inside each cycle (l1-iter, l1-lth, rst-iter) "
                                        "[epochs_mini]")
    lr_ft_mini: str = option("", "piecewise lr 'epoch:lr,...' of the in-cycle training ('': constant train.lr)")
    test_interval: Steps = option(Steps(0, 2000), "regularisation phase: evaluation interval")
    save_interval: Steps = option(Steps(0, 2000), "regularisation phase: checkpoint interval", hash=False)
    last_n: int = option(5, "summary: mean and std of the test accuracy over the last N evaluations [last_n_epoch]")

    def validate(self) -> None:
        given = [bool(self.stage_ratios), bool(self.layer_ratios.strip()), bool(self.ratio_globs.strip())]
        if sum(given) > 1:
            raise ConfigError("give the pruned fractions one way: rst.stage_ratios, rst.layer_ratios or "
                              "rst.ratio_globs, not several")
        for ratio in self.stage_ratios:
            check_range("rst.stage_ratios entry", ratio, 0.0, 1.0)
        check_range("rst.lr_prune", self.lr_prune, 0.0, math.inf, low_open=True)
        check_range("rst.batch_size_prune", self.batch_size_prune, 1, math.inf)
        check_range("rst.reg_granularity", self.reg_granularity, 0.0, math.inf, low_open=True)
        check_range("rst.reg_upper_limit", self.reg_upper_limit, 0.0, math.inf, low_open=True)
        check_range("rst.update_reg_interval", self.update_reg_interval, 1, math.inf)
        check_range("rst.num_cycles", self.num_cycles, 0, math.inf)
        check_range("rst.last_n", self.last_n, 1, math.inf)
        if self.lr_ft_mini:
            try:
                parse_piecewise(self.lr_ft_mini)
            except ConfigError:
                raise ConfigError(f"rst.lr_ft_mini={self.lr_ft_mini!r} is not 'epoch:lr,...'; e.g. 0:0.01") from None
        if self.test_interval.is_zero or self.save_interval.is_zero:
            raise ConfigError("rst.test_interval and rst.save_interval must be positive, e.g. 2000it")


@dataclass(frozen=True)
class RunConfig(Section):
    method: str = option("train", "what the run does (set by the command)")
    seed: int = option(0, "master seed; init, data order, noise and pruning seeds derive from it")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)
    rst: RSTConfig = field(default_factory=RSTConfig)

    # -- seeds ---------------------------------------------------------------------------------
    def derived_seed(self, purpose: str, explicit: Optional[int] = None) -> int:
        """The seed for one source of randomness: ``explicit`` if set, else a stable hash of --seed."""
        if explicit is not None:
            return explicit
        digest = hashlib.sha256(f"{self.seed}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    @property
    def init_seed(self) -> int:
        return self.derived_seed("init", self.model.init_seed)

    @property
    def order_seed(self) -> int:
        return self.derived_seed("order", self.data.order_seed)

    @property
    def noise_seed(self) -> int:
        return self.derived_seed("noise", self.data.noise_seed)

    @property
    def augment_seed(self) -> int:
        return self.derived_seed("augment", self.data.augment_seed)

    @property
    def prune_seed(self) -> int:
        return self.derived_seed("prune", self.prune.seed)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        return from_mapping(cls, data, prefix="")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def hash(self) -> str:
        """Canonical hash over the non-default, hashed fields; names the run directory."""
        return content_hash(self, 12)

    @property
    def run_name(self) -> str:
        return f"{self.method}_{self.hash()}"


# ---------------------------------------------------------------------------------------------
# helpers


def parse_piecewise(text: str) -> Tuple[Tuple[float, float], ...]:
    """``"0:0.1,100:0.01"`` -> ((0, 0.1), (100, 0.01)); keys are epochs (may be fractional)."""
    entries = []
    for part in [p for p in text.replace("{", "").replace("}", "").replace(";", ",").split(",") if p.strip()]:
        try:
            key, value = part.split(":")
            entries.append((float(key), float(value)))
        except ValueError:
            raise ConfigError(f"train.piecewise entry {part!r} is not 'epoch:lr'; e.g. 0:0.1,100:0.01") from None
    if not entries:
        raise ConfigError("train.schedule=piecewise needs --train.piecewise, e.g. 0:0.1,100:0.01")
    return tuple(sorted(entries))


def branch_hash(branch: BranchConfig) -> str:
    return content_hash(branch, 8)


def iter_fields(cls=None, prefix: str = ""):
    """Yield ``(dotted_name, type, field)`` for every leaf field of ``cls`` (default: the whole run config)."""
    return _iter_fields(RunConfig if cls is None else cls, prefix)
