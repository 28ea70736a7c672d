"""The config tree: frozen dataclasses that describe a run, its canonical JSON and its hash.

Each field is declared once, with its type, default and help text; the CLI flags (``--train.lr``), the
TOML/JSON file format, ``--help`` and the validation all come from these declarations. A run's hash is
taken over the canonical JSON with default-valued fields left out (so adding a field with a neutral
default changes no existing hash) and without the fields marked ``hash=False`` (paths, downloads and
other things that do not change results).

This module declares the core sections (``data``, ``model``, ``train``, ``prune``) and `RunConfig`, the
config of `ticketlab train`. A method declares its own sections in its module and gets its run-config
class from `run_config`; nothing here names a method.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

from ticketlab.errors import ConfigError
from ticketlab.fields import (  # noqa: F401  (re-exported: the config API in one place)
    Section, check_range, coerce, content_hash, field_types, from_mapping, get_path, hashed_fields, is_section,
    load_config_file, merge, option, to_jsonable,
)
from ticketlab.fields import iter_fields as _iter_fields
from ticketlab.seeds import derive_seed
from ticketlab.steps import Steps


@dataclass(frozen=True)
class DataConfig(Section):
    dataset: str = option("digits", "data source (see `ticketlab list datasets`)")
    val_size: int = option(0, "examples carved from the training set for validation", within="[0, inf)")
    subset: float = option(1.0, "fraction of the training split kept, in (0, 1]", within="(0, 1]")
    noise: Literal["none", "random", "symmetric", "pairflip", "asymmetric"] = option(
        "none", "label noise on the training split")
    noise_rate: float = option(0.0, "label-noise rate r in [0, 1]", within="[0, 1]")
    augment: bool = option(False, "batched pad-crop and flip augmentation (image data)")
    split_seed: int = option(0, "seed of the validation split and subset (fixed across replicates)")
    noise_seed: Optional[int] = option(None, "seed of the label noise (default: derived from --seed)")
    order_seed: Optional[int] = option(None, "seed of the batch order (default: derived from --seed)")
    augment_seed: Optional[int] = option(None, "seed of the augmentation (default: derived from --seed)")
    root: Optional[str] = option(None, "folder of this data set's files (default $TICKETLAB_DATA/<name>)",
                                 hash=False)
    download: bool = option(False, "download missing files from the official source", hash=False)
    stream: Literal["off", "on", "auto"] = option(
        "off", "imagefolder: decode batches in DataLoader workers instead of holding the images in memory "
        "(auto: when the decoded training images would exceed data.memory_gb)")
    memory_gb: float = option(8.0, "the memory budget of --data.stream auto, in GiB", within="(0, inf)")
    image_size: int = option(0, "side of a streamed image folder's square inputs (0: 224)", within="[0, 8192]")
    workers: int = option(4, "DataLoader worker processes that decode a streamed image folder", hash=False,
                          within="[0, 256]")
    tag: str = option("", "a name for this data, in the run's hash: trains other data of the same data set "
                      "(another --data.root) as a separate run")

    def validate(self) -> None:
        if self.stream != "off" and self.dataset != "imagefolder":
            raise ConfigError(f"data.stream={self.stream} is for the imagefolder data set; {self.dataset} is held in "
                              "memory (leave --data.stream off)")
        if self.image_size and self.stream == "off":
            raise ConfigError("data.image_size sizes a streamed image folder; with --data.stream off the images keep "
                              "the first training image's size (pass --data.stream on, or leave image_size at 0)")
        if self.noise != "none" and self.noise_rate == 0.0:
            raise ConfigError(f"data.noise={self.noise} needs --data.noise_rate > 0")
        if self.noise == "none" and self.noise_rate != 0.0:
            raise ConfigError("data.noise_rate is set but data.noise is none; "
                              "choose --data.noise random|symmetric|pairflip|asymmetric")


@dataclass(frozen=True)
class ModelConfig(Section):
    derived_fields = {"weights_digest": "weights"}  # `merge`: other weights get their own digest

    name: str = option("mlp", "architecture (see `ticketlab list models`)")
    hidden: Tuple[int, ...] = option((), "hidden widths of an MLP, e.g. 300,100 (empty: the model's default)",
                                     within="[1, inf)")
    depth: int = option(0, "depth of a Wide ResNet (0: the model's default)", within="[0, inf)")
    width: int = option(0, "width multiplier of a Wide ResNet or a ResNet (0: the model's default)", within="[0, inf)")
    shortcut: Literal["", "A", "B"] = option(
        "", "CIFAR ResNet shortcuts: A parameter-free (default), B 1x1 conv ('': the model's default)")
    stem: Literal["", "cifar", "imagenet"] = option(
        "", "ResNet-18/34/50 stem: cifar 3x3 stride 1, imagenet 7x7 stride 2 + max-pool ('': the model's default)")
    init: Literal["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform"] = option(
        "kaiming_normal", "initialisation of Conv/Linear weights (biases 0)")
    bn_init: Literal["ones", "uniform"] = option("ones", "BatchNorm weights: 1, or U(0, 1) as in OpenLTH (biases 0)")
    init_seed: Optional[int] = option(None, "seed of the initialisation (default: derived from --seed)")
    weights: str = option("", "start from this state dict (a torch or .safetensors file, loaded weights-only) "
                              "instead of the initialisation; its content digest is in the run hash", hash=False)
    weights_digest: str = option("", "sha256 of model.weights' file (filled in from it; do not set)")

    def validate(self) -> None:
        if self.weights and not self.weights_digest:
            from ticketlab.models.weights import file_digest

            object.__setattr__(self, "weights_digest", file_digest(self.weights))
        elif self.weights_digest and not self.weights:
            raise ConfigError("model.weights_digest is filled in from model.weights; set --model.weights PATH instead")


@dataclass(frozen=True)
class TrainConfig(Section):
    steps: Steps = option(Steps(40), "training length (40ep, 1000it, 2ep100it)")
    batch_size: int = option(128, "examples per step", within="[1, inf)")
    optimizer: Literal["sgd", "adam", "adamw"] = option("sgd", "optimizer")
    lr: float = option(0.1, "learning rate", within="[0, inf)")
    momentum: float = option(0.0, "SGD momentum", within="[0, 1]")
    nesterov: bool = option(False, "Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, "weight decay", within="[0, inf)")
    schedule: Literal["constant", "multistep", "cosine", "piecewise", "cyclic"] = option(
        "constant", "learning-rate schedule")
    milestones: Tuple[Steps, ...] = option((), "multistep milestones, e.g. 80ep,120ep")
    gamma: float = option(0.1, "multistep decay factor", within="(0, inf)")
    warmup: Steps = option(Steps(), "linear warm-up length (factor step/warmup, 0 at step 0)")
    piecewise: str = option("", "piecewise lr 'epoch:lr,...', e.g. 0:0.1,100:0.01")
    cycle: Steps = option(Steps(), "cyclic: length of one triangular cycle (lr at its ends, cycle_lr mid-way)")
    cycle_lr: float = option(0.0, "cyclic: learning rate at the middle of each cycle", within="[0, inf)")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy loss, in [0, 1)", within="[0, 1)")
    amp: Literal["none", "bf16", "fp16"] = option("none", "mixed precision on CUDA (ignored on CPU)")
    eval_every: Steps = option(Steps(1), "evaluation interval (validation and test)")
    checkpoint_every: Steps = option(Steps(1), "interval of resumable checkpoints", hash=False)
    keep_weights: Literal["all", "final"] = option(
        "all", "weights files a phase keeps when it finishes: all (its start, best-validation and final "
        "weights) or final (final.pt only, a third of the disk; the best figures stay in the summary)", hash=False)
    channels_last: bool = option(True, "channels_last memory format for conv nets on CUDA", hash=False)
    compile: bool = option(False, "torch.compile the model (CUDA; first steps pay the compile time)", hash=False)

    def validate(self) -> None:
        if self.steps.is_zero:
            raise ConfigError("train.steps must be positive, e.g. --train.steps 40ep")
        if self.eval_every.is_zero:
            raise ConfigError("train.eval_every must be positive, e.g. --train.eval_every 1ep")
        if self.checkpoint_every.is_zero:
            raise ConfigError("train.checkpoint_every must be positive, e.g. --train.checkpoint_every 1ep")
        if self.schedule == "piecewise" or self.piecewise.strip():
            parse_piecewise(self.piecewise)
        if self.schedule == "cyclic" and (self.cycle.is_zero or self.cycle_lr <= 0):
            raise ConfigError("train.schedule=cyclic needs --train.cycle (e.g. 8ep) and --train.cycle_lr > 0")
        if self.schedule == "multistep" and not self.milestones:
            raise ConfigError("train.schedule=multistep needs --train.milestones, e.g. 80ep,120ep")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("train.nesterov needs --train.optimizer sgd and --train.momentum > 0")


@dataclass(frozen=True)
class PruneConfig(Section):
    density: float = option(1.0, "fraction of prunable weights kept, in (0, 1]; 1 = dense", within="(0, 1]")
    criterion: Literal["magnitude", "gradient", "random"] = option(
        "magnitude", "score: |w|, |w * dL/dw| on one batch, or random")
    scope: Literal["global", "layer", "uniform", "erk", "er"] = option(
        "global", "global: one threshold; layer: every layer at the density; uniform: as layer, first layer dense; "
                  "erk / er: Erdos-Renyi(-Kernel) per-layer densities")
    output_rate: float = option(
        1.0, "pruning rate of the output layer relative to the others (0 keeps it dense, 0.5 half the rate)",
        within="[0, 1]")
    erk_power: float = option(1.0, "erk / er: power applied to the layer scores (RigL's erk_power_scale)",
                              within="[0, inf)")
    erk_budget: Literal["density", "rigl"] = option(
        "density", "erk / er: the shared budget as D * n (Sup-tickets) or n - floor((1 - D) n) per layer (RigL, "
                   "JaxPruner)")
    include_first: bool = option(True, "count the first prunable layer in the budget (false: keep it dense)")
    layer_density: str = option("", "explicit per-layer densities by name glob, e.g. 'conv1.*:1.0,fc*:0.1' "
                                "(last match wins; unmatched layers dense; overrides scope)")
    fraction: float = option(0.2, "fraction pruned per level in iterative pruning, in (0, 1)", within="(0, 1)")
    rule: Literal["exact", "openlth", "torch"] = option(
        "exact", "iterative counting: exact (round((1-f)^k n) kept), openlth (ceil(f R) of all R remaining, output "
        "layer included, then a strict threshold: OpenLTH's), torch (round(f R) of the pruned layers: "
        "global_unstructured's)")
    seed: Optional[int] = option(None, "seed of random scores and the scoring batch (default: derived)")
    modules: Tuple[str, ...] = option((), "also prune these weights, not pruned by default: embedding (Embedding "
                                          "tables), attention (MultiheadAttention's input projections)")

    def validate(self) -> None:
        unknown = [m for m in self.modules if m not in ("embedding", "attention")]
        if unknown:
            raise ConfigError(f"prune.modules: unknown {', '.join(unknown)}; choose from embedding, attention")
        if self.rule != "exact" and (self.criterion != "magnitude" or self.scope != "global"
                                     or self.output_rate not in (0.0, 1.0) or self.layer_density):
            raise ConfigError(f"prune.rule={self.rule} counts global magnitude pruning: use --prune.criterion "
                              "magnitude --prune.scope global with --prune.output_rate 0 (output layer kept) or 1, "
                              "and no layer_density")


@dataclass(frozen=True)
class RunConfig(Section):
    """A run: the master seed and the four core sections. This is `ticketlab train`'s config; a method
    with sections of its own gets a subclass from `run_config` that adds them, so each run's config holds
    exactly the sections its command uses, and its hash covers exactly those."""

    command = "train"  # the command whose runs this class describes (class attributes, not fields)
    variants = ("train",)  # the values `method` may take; the first is the default
    field_prefix = ""  # error messages name top-level fields without a section prefix

    method: str = option("train", "what the run does (set by the command; a variant for commands with several)")
    seed: int = option(0, "master seed; init, data order, noise and pruning seeds derive from it")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self):
        if self.method == "train" and "train" not in self.variants:  # the field's default, in the hash too
            object.__setattr__(self, "method", self.variants[0])
        super().__post_init__()

    def validate(self) -> None:
        if self.method not in self.variants:
            raise ConfigError(f"method={self.method!r} is not something `ticketlab {self.command}` runs; choose one "
                              f"of: {', '.join(self.variants)}")

    # -- seeds ---------------------------------------------------------------------------------
    def derived_seed(self, purpose: str, explicit: Optional[int] = None) -> int:
        """The seed for one source of randomness: ``explicit`` if set, else derived from --seed."""
        return explicit if explicit is not None else derive_seed(self.seed, purpose)

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
        """Rebuild a stored config. Sections of other commands left at their defaults are dropped: run
        directories written before each command held only its own sections carry them."""
        if isinstance(data, Mapping):
            data = drop_idle_sections(cls, data)
        return from_mapping(cls, data, prefix="")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def hash(self) -> str:
        """Canonical hash over the non-default, hashed fields; names the run directory."""
        return content_hash(self, 12)

    @property
    def run_name(self) -> str:
        return f"{self.method}_{self.hash()}"

    @classmethod
    def unknown_field_message(cls, key: str, full: str) -> Optional[str]:
        """The error for a top-level key this command does not know: another command's section names it."""
        owners = SECTION_OWNERS.get(key)
        if not owners or cls.command in owners:
            return None
        commands = " or ".join(f"`ticketlab {o}`" for o in owners)
        return (f"the {key!r} section belongs to {commands}, not `ticketlab {cls.command}`; "
                f"drop it or run {commands}")


# ---------------------------------------------------------------------------------------------
# method sections

SECTION_OWNERS: Dict[str, List[str]] = {}  # section name -> commands whose configs hold it
SECTION_TYPES: Dict[str, type] = {}


def run_config(command: str, *, variants: Tuple[str, ...] = (), **sections: type) -> type:
    """The run-config class of ``command``: `RunConfig` plus the given sections (name -> Section class).

    ``LotteryRunConfig = run_config("lottery", lottery=LotteryConfig)`` gives a frozen dataclass whose
    fields are the core ones and ``lottery``; a field or file section of another command is an error that
    names the command owning it (see `RunConfig.unknown_field_message`). ``variants``: the values of
    ``method`` (``--variant``; default: the command's name alone); a new config's method is the first.
    The method field's default stays ``"train"`` for hashing, so a run's hash names its variant.
    """
    for name, section in sections.items():
        if not is_section(section):
            raise TypeError(f"section {name!r} of {command!r} must be a Section dataclass, got {section!r}")
        if name in {f.name for f in dataclasses.fields(RunConfig)}:
            raise ValueError(f"{command!r} cannot declare a section named {name!r}: it is a core field")
        if SECTION_TYPES.get(name, section) is not section:
            raise ValueError(f"section {name!r} is already declared with another class by "
                             f"{', '.join(SECTION_OWNERS[name])}")
    fields = [(name, section, field(default_factory=section)) for name, section in sections.items()]
    title = "".join(part.capitalize() for part in command.replace("-", "_").split("_"))
    namespace = {"command": command, "variants": tuple(variants) or (command,), "__module__": __name__}
    cls = dataclasses.make_dataclass(f"{title}RunConfig", fields, bases=(RunConfig,), frozen=True, namespace=namespace)
    claim_sections(command, sections)
    return cls


def claim_sections(command: str, sections: Mapping[str, type]) -> None:
    """Record that ``command``'s configs hold ``sections`` (for the errors that name a section's owner)."""
    for name, section in sections.items():
        SECTION_TYPES[name] = section
        if command not in SECTION_OWNERS.setdefault(name, []):
            SECTION_OWNERS[name].append(command)


def forget_sections(command: str) -> None:
    """Undo `run_config`'s record of ``command``'s sections (a method unregistered to be declared again)."""
    for name in [n for n, owners in SECTION_OWNERS.items() if command in owners]:
        SECTION_OWNERS[name].remove(command)
        if not SECTION_OWNERS[name]:
            del SECTION_OWNERS[name]
            SECTION_TYPES.pop(name, None)


def method_sections(config_or_cls) -> Dict[str, type]:
    """The sections a run config holds beyond the core ones (name -> Section class)."""
    cls = config_or_cls if isinstance(config_or_cls, type) else type(config_or_cls)
    core = {f.name for f in dataclasses.fields(RunConfig)}
    types = field_types(cls)
    return {f.name: types[f.name] for f in dataclasses.fields(cls) if f.name not in core}


def convert(config: RunConfig, cls: type) -> RunConfig:
    """``config`` as a ``cls`` config: the fields both have are kept (the method if ``cls`` runs it, else
    ``cls``'s first variant), the other sections dropped."""
    if type(config) is cls:
        return config
    names = {f.name for f in dataclasses.fields(config)}
    kwargs = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.name in names}
    if kwargs.get("method") not in cls.variants:
        kwargs.pop("method", None)
    return cls(**kwargs)


def adopt(config: RunConfig, cls: type) -> RunConfig:
    """``config`` for a run function of ``cls``'s command: a core config (a preset) gains ``cls``'s default
    sections; a config holding another command's non-default section is refused, never silently cut."""
    lost = dropped_sections(config, cls)
    if lost:
        raise ConfigError(f"this is a `ticketlab {type(config).command}` config: its {', '.join(lost)} section does "
                          f"not apply to `ticketlab {cls.command}`; pass a {cls.__name__} (or drop the section)")
    return convert(config, cls)


def dropped_sections(config: RunConfig, cls: type) -> List[str]:
    """Sections of ``config`` that `convert` to ``cls`` would drop although they are not at their defaults."""
    keep = {f.name for f in dataclasses.fields(cls)}
    return [name for name in method_sections(config) if name not in keep and hashed_fields(getattr(config, name))]


def drop_idle_sections(cls: type, data: Mapping[str, Any]) -> Dict[str, Any]:
    """``data`` without the sections of other commands whose fields are all at their defaults (they change
    nothing; a stored ``config.json`` from before each command held only its own sections has them)."""
    return {k: v for k, v in data.items() if not _idle_foreign_section(cls, k, v)}


def _idle_foreign_section(cls: type, key: str, value: Any) -> bool:
    section = SECTION_TYPES.get(key)
    if section is None or key in {f.name for f in dataclasses.fields(cls)} or not isinstance(value, Mapping):
        return False
    try:
        return not hashed_fields(from_mapping(section, value, key + "."))
    except ConfigError:
        return False


# ---------------------------------------------------------------------------------------------
# helpers


def parse_piecewise(text: str, name: str = "train.piecewise") -> Tuple[Tuple[float, float], ...]:
    """``"0:0.1,100:0.01"`` -> ((0, 0.1), (100, 0.01)); keys are epochs (may be fractional), both finite
    and non-negative. ``name`` is the field named in errors."""
    entries = []
    for part in [p for p in text.replace("{", "").replace("}", "").replace(";", ",").split(",") if p.strip()]:
        try:
            key, value = (coerce(f"{name} entry {part.strip()!r}", float, v) for v in part.split(":"))
        except ValueError:  # ConfigError too: a non-finite number or an entry without one ':'
            raise ConfigError(f"{name} entry {part.strip()!r} is not 'epoch:lr' with finite numbers; "
                              "e.g. 0:0.1,100:0.01") from None
        if key < 0 or value < 0:
            raise ConfigError(f"{name} entry {part.strip()!r} is negative; epochs and learning rates are >= 0")
        entries.append((key, value))
    if not entries:
        raise ConfigError(f"{name} is empty; give 'epoch:lr' entries, e.g. 0:0.1,100:0.01")
    return tuple(sorted(entries))


def iter_fields(cls=None, prefix: str = ""):
    """Yield ``(dotted_name, type, field)`` for every leaf field of ``cls`` (default: the core run config)."""
    return _iter_fields(RunConfig if cls is None else cls, prefix)
