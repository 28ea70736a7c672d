"""Methods as plug-ins: a method module declares itself once with a `Method`, and registers it.

The declaration is everything the rest of ticketlab needs to know about a method: its command name and
help line, its run-config class (the core sections plus its own, from `ticketlab.config.run_config`), its
variants (the values of ``config.method`` it runs, picked with ``--variant``), its extra flags, its presets
and its run function. The CLI builds its subcommands, flags and ``--help`` from the registry; stored
configs are rebuilt through it (`config_from_dict`); the report reads the rows that phases write into
their summaries. So adding a method edits no central file::

    ToyRunConfig = run_config("toy", toy=ToyConfig)
    register_method(Method(name="toy", help="...", config=ToyRunConfig, run=run_toy))

``run(config, options, ctx) -> Path`` trains (or resumes, or returns at once when finished) and returns
the run directory; ``options`` holds the values of the method's run-option flags (``--levels``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ticketlab.config import (RunConfig, claim_sections, convert, dropped_sections, forget_sections, merge,
                              method_sections)
from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.presets import PRESETS
from ticketlab.registry import Registry


@dataclass(frozen=True)
class Flag:
    """A command-line flag of one method beyond its config fields: an alias of a config field
    (``field="lottery.retrain"``) or a run option passed to the run function (``field=""``)."""

    name: str  # e.g. "--levels"
    help: str
    field: str = ""
    default: Any = None  # run options only
    type: Callable[[str], Any] = str
    required: bool = False  # run options only; checked after --help, so `--help` alone works
    metavar: str = ""

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Method:
    name: str  # the command: `ticketlab <name>`
    help: str  # one line, shown by `ticketlab --help` and atop the command's own help
    config: type  # its run-config class: `RunConfig` or one made by `run_config`
    run: Callable[..., Path]  # run(config, options, ctx) -> run directory
    flags: Tuple[Flag, ...] = ()
    presets: Mapping[str, RunConfig] = field(default_factory=dict)
    show: Optional[Callable[[Path], str]] = None  # text printed after a run (default: its report table)
    run_dir: Optional[Callable[[RunConfig, Path], Path]] = None  # where a config's run lives (default below)
    owns_runs: bool = True  # False: it writes into another command's run directories (`branch`)
    distributed: bool = True  # False: refuses to run under torchrun (a method that records per example)

    @property
    def choices(self) -> Tuple[str, ...]:
        """The values of ``config.method`` it runs (its config class's variants; ``--variant``)."""
        return self.config.variants

    def directory(self, config: RunConfig, runs_dir: Path) -> Path:
        """The run directory ``config`` trains into: ``runs_dir/<method>_<hash>`` unless the method says."""
        return self.run_dir(config, Path(runs_dir)) if self.run_dir else Path(runs_dir) / config.run_name

    def variant_of(self, config: RunConfig, chosen: Optional[str] = None) -> str:
        """The variant a command runs: ``--variant``, else the config's own (a preset's), else the first."""
        if chosen is not None:
            if chosen not in self.choices:
                raise ConfigError(f"unknown {self.name} variant {chosen!r}; choose one of: {', '.join(self.choices)}")
            return chosen
        return config.method if config.method in self.choices else self.choices[0]


METHODS: Registry[Method] = Registry("method", builtins="ticketlab.methods")  # imported on first lookup


RESERVED_COMMANDS = ("runs", "report", "list", "eval", "sweep", "export")  # the CLI's own commands
RESERVED_FLAGS = ("--preset", "--config", "--seed", "--variant", "--runs-dir", "--device", "--threads", "--dry-run",
                  "--progress", "--help", "-h")


def register_method(method: Method) -> Method:
    """Add ``method`` (and its presets); the CLI shows it from the next parser built on. Returns it as
    registered: its ``run`` releases the run locks it takes when it returns (`releasing_locks`)."""
    if method.name in RESERVED_COMMANDS or method.name.startswith("-") or not method.name:
        raise ValueError(f"a method cannot be named {method.name!r}: the CLI has commands {RESERVED_COMMANDS}")
    taken = [f.name for f in method.flags if f.name in RESERVED_FLAGS or not f.name.startswith("--")
             or "." in f.name]
    if taken:
        raise ValueError(f"method {method.name!r}: flag(s) {taken} clash with the CLI's own or with config fields; "
                         "name method flags --like-this")
    if getattr(method.config, "command", None) != method.name:
        raise ValueError(f"method {method.name!r}: its config class is {method.config.__name__} of command "
                         f"{getattr(method.config, 'command', None)!r}; build it with run_config({method.name!r}, ...)")
    if method.owns_runs:
        for other in METHODS:
            taken = set(method.choices) & set(METHODS.get(other).choices)
            if METHODS.get(other).owns_runs and taken:
                raise ValueError(f"method {method.name!r}: variant(s) {sorted(taken)} already belong to {other!r}")
    for name, preset in method.presets.items():
        if type(preset) is not method.config or preset.method not in method.choices:
            raise ValueError(f"preset {name!r} of {method.name!r} must be a {method.config.__name__} with one of "
                             f"its variants as method")
    method = replace(method, run=releasing_locks(method.run))
    METHODS.register(method, name=method.name)
    claim_sections(method.name, method_sections(method.config))
    for name, preset in method.presets.items():
        PRESETS.register(preset, name=name)
    return method


def releasing_locks(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` releasing, when it returns or raises, the run locks taken inside it
    (`ticketlab.runlock.session`): whoever calls a method (the CLI, a sweep job, Python), its runs are free
    for another process or ``ticketlab runs rm`` afterwards, not only once this process ends."""
    if getattr(run, "releases_locks", False):
        return run

    @functools.wraps(run)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        from ticketlab import runlock  # imports torch: not for `ticketlab --help`

        with runlock.session():
            return run(*args, **kwargs)

    wrapped.releases_locks = True
    return wrapped


def unregister_method(name: str) -> None:
    """Remove a method, its presets and its sections' ownership (tests, notebooks that re-declare one)."""
    method = METHODS.remove(name)
    for preset in method.presets:
        PRESETS.remove(preset)
    forget_sections(method.name)


def method_of_run(method_value: str) -> Method:
    """The method whose runs store ``config.method == method_value`` (e.g. ``"rst-iter"`` -> rst)."""
    for name in METHODS:
        method = METHODS.get(name)
        if method.owns_runs and method_value in method.choices:
            return method
    known = sorted(v for n in METHODS for v in METHODS.get(n).choices)
    raise CheckpointError(f"no registered method runs {method_value!r} (known: {', '.join(known)}); import the "
                          "module that registers it before reading this run")


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """A stored config (``config.json``) as its method's run-config class."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"a stored config must be a JSON object, got {type(raw).__name__}")
    method = raw.get("method", "train")
    cls = RunConfig if method == "train" and "train" not in METHODS else method_of_run(str(method)).config
    return cls.from_dict(raw)


def compose_config(method: Method, preset: Optional[str] = None, layers: Sequence[Mapping[str, Any]] = (),
                   variant: Optional[str] = None) -> Tuple[RunConfig, List[str]]:
    """The config ``method`` runs: the preset (its core sections, plus ``method``'s own when it is this
    method's), then each mapping of ``layers`` in turn, then the variant (``--variant``, else the
    config's own, else the first). Its model and data set must be registered ones (a misspelt name is
    refused with the closest, for a command, a sweep's plan or Python alike). Also returns the preset's
    sections that were dropped."""
    from ticketlab.presets import get_preset

    config, lost = method.config(), []
    if preset:
        chosen = get_preset(preset)
        lost = dropped_sections(chosen, method.config)
        config = convert(chosen, method.config)
    for layer in layers:
        config = merge(config, layer)
    config = merge(config, {"method": method.variant_of(config, variant)})
    check_names(config)
    return config, lost


def check_names(config: RunConfig) -> None:
    """Refuse a model or data set name that no registry knows (`ConfigError` with the closest ones)."""
    from ticketlab.data import DATASETS  # imports torch: not for `ticketlab --help`
    from ticketlab.models import MODELS

    MODELS.get(config.model.name)
    DATASETS.get(config.data.dataset)


def options_of(method: Method, values: Mapping[str, Any]) -> Dict[str, Any]:
    """The run options of ``method`` from parsed flag values (defaults filled in)."""
    return {flag.dest: values.get(flag.dest, flag.default) for flag in method.flags if not flag.field}


__all__ = ["Flag", "Method", "METHODS", "register_method", "releasing_locks", "unregister_method", "method_of_run",
           "config_from_dict", "compose_config", "options_of"]
