"""A study file: a base run, a grid over any fields, seeds and methods, expanded into the runs it names.

```toml
name = "lenet-methods"            # optional: the file's stem
preset = "mnist_lenet_300_100"    # the base: preset, fields, the command's options
command = "lottery"
seeds = 3                         # 0, 1, 2 (or a list)
[fields]
train.steps = "2ep"
[options]
levels = 3
[grid]                            # every combination; dotted field names
"data.noise_rate" = [0.0, 0.2]
[[method]]                        # optional: several commands in one study, each on the same grid
name = "rigl"
command = "dst"
variant = "rigl"
fields = { dst.init_density = 0.05 }
```

Each ``[[method]]`` table takes ``name``, ``command``, ``variant``, ``preset``, ``fields`` and ``options``;
what it leaves out comes from the top level (the top-level ``options`` only for the top-level command). Every run is the config its command would build from the
same preset and flags, so a run of a study and the same run typed by hand share one run directory.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ticketlab.config import RunConfig, load_config_file
from ticketlab.fields import dotted_keys, nested_keys
from ticketlab.errors import ConfigError, TicketlabError
from ticketlab.method import METHODS, Method, compose_config

MAX_RUNS = 100_000  # runs one study may plan: each is built and checked before anything runs
STUDY_KEYS = ("name", "command", "variant", "preset", "seeds", "fields", "options", "grid", "method")
METHOD_KEYS = ("name", "command", "variant", "preset", "fields", "options")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its method label, grid cell and seed, and what its command runs."""

    label: str  # the ``[[method]]`` name (or the command)
    cell: Tuple[Tuple[str, Any], ...]  # (field, value) of each grid axis
    seed: int
    command: str
    config: RunConfig
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return json.dumps([self.label, [list(c) for c in self.cell], self.seed])

    def directory(self, runs_dir: Path) -> Path:
        return METHODS.get(self.command).directory(self.config, Path(runs_dir))


@dataclass(frozen=True)
class Study:
    name: str
    source: Path
    axes: Tuple[str, ...]
    runs: Tuple[PlannedRun, ...]


def load_study(path: Path) -> Study:
    """Read and expand a study file; every run's config is built and checked before anything runs."""
    import ticketlab.methods  # noqa: F401  (registers the built-in methods)

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no study file {path}; write one as in the README's `ticketlab sweep` section")
    raw = load_config_file(str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"study file {path} must hold a table of keys (name, preset, grid, ...)")
    _check_keys(raw, STUDY_KEYS, f"study file {path}")
    name = str(raw.get("name") or path.stem)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"study name {name!r} (in {path}) may hold letters, digits, - and _ only")
    seeds = _seeds(raw.get("seeds", 1), path)
    grid = dotted_keys(_table(raw, "grid", path))
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid field {axis!r} of {path} must be a non-empty list of values, e.g. [0.1, 0.2]")
    methods = raw.get("method", [{}])
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods) or not methods:
        raise ConfigError(f"`method` of {path} must be an array of tables: [[method]] blocks")
    planned = len(seeds) * len(methods) * math.prod(len(values) for values in grid.values())
    if planned > MAX_RUNS:
        raise ConfigError(f"{path} plans {planned} runs (seeds x grid x methods), more than {MAX_RUNS}; split it "
                          "into smaller studies")
    runs: List[PlannedRun] = []
    labels = set()
    for entry in methods:
        _check_keys(entry, METHOD_KEYS, f"a [[method]] table of {path}")
        command = str(entry.get("command", raw.get("command", "")))
        method = _method(command, path)
        label = str(entry.get("name") or (f"{command} {entry['variant']}" if "variant" in entry else command))
        if label in labels:
            raise ConfigError(f"two [[method]] tables of {path} are named {label!r}; give each its own `name`")
        labels.add(label)
        preset = entry.get("preset", raw.get("preset"))
        variant = entry.get("variant", raw.get("variant"))
        if raw.get("options") and not raw.get("command"):
            raise ConfigError(f"top-level `options` of {path} belong to the top-level command, and there is none; "
                              "add command = \"...\" or move them into the [[method]] tables")
        shared = _table(raw, "options", path) if command == raw.get("command") else {}
        options = _options(method, {**shared, **_table(entry, "options", path)}, path)
        base = [_table(raw, "fields", path), _table(entry, "fields", path)]
        for values in itertools.product(*grid.values()):
            cell = tuple(zip(grid, values))
            for seed in seeds:
                layers = [*base, nested_keys(dict(cell)), {"seed": seed}]
                try:
                    config, _ = compose_config(method, preset, layers, variant)
                except TicketlabError as exc:
                    raise ConfigError(f"{path}, method {label!r}, {describe(cell, seed)}: {exc}") from None
                runs.append(PlannedRun(label, cell, seed, command, config, options))
    return Study(name, path, tuple(grid), tuple(runs))


def describe(cell, seed) -> str:
    """``field=value, ..., seed N`` of a planned run (``cell``: (field, value) pairs)."""
    return ", ".join([f"{k}={v}" for k, v in cell] + [f"seed {seed}"])


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(allowed)}")


def _table(raw: Mapping[str, Any], key: str, path: Path) -> Dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"`{key}` of {path} must be a table ([{key}] or {key} = {{...}}), got {value!r}")
    return value


def _seeds(value: Any, path: Path) -> List[int]:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RUNS:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"`seeds` of {path} repeats a seed: {value}")
        return list(value)
    raise ConfigError(f"`seeds` of {path} must be a count (3: seeds 0, 1, 2) or a list of integers, got {value!r}")


def _method(command: str, path: Path) -> Method:
    if not command:
        raise ConfigError(f"{path} names no command; add command = \"lottery\" (or another of "
                          f"{', '.join(METHODS.ordered())})")
    if command not in METHODS:
        raise ConfigError(f"unknown command {command!r} in {path}; choose one of {', '.join(METHODS.ordered())}")
    if not METHODS.get(command).owns_runs:
        raise ConfigError(f"`{command}` in {path} writes into other runs' directories; sweep the runs it starts "
                          "from, then run it on them")
    return METHODS.get(command)


def _options(method: Method, given: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """The command's run options (``levels = 3`` for ``--levels 3``), parsed as its flags parse them."""
    flags = {f.dest: f for f in method.flags if not f.field}
    out = {dest: flag.default for dest, flag in flags.items()}
    for key, value in given.items():
        dest = key.lstrip("-").replace("-", "_")
        if dest not in flags:
            allowed = ", ".join(f.name.lstrip("-") for f in flags.values()) or "none"
            raise ConfigError(f"`{method.name}` has no option {key!r} (in {path}); its options: {allowed}")
        try:
            out[dest] = flags[dest].type(str(value))
        except (TicketlabError, ValueError) as exc:
            raise ConfigError(f"option {key} = {value!r} of {path}: {exc}") from None
    missing = [f.name for f in flags.values() if f.required and out.get(f.dest) is None]
    if missing:
        raise ConfigError(f"`{method.name}` needs {', '.join(m.lstrip('-') for m in missing)} in the options of {path}")
    return out


def find_duplicates(study: Study, runs_dir: Path) -> Optional[str]:
    """A message when two planned runs would share one run directory (a grid axis that changes nothing)."""
    seen: Dict[Path, PlannedRun] = {}
    for run in study.runs:
        where = run.directory(runs_dir)
        if where in seen:
            other = seen[where]
            why = ("a grid field that the command does not use? remove it from the grid" if other.options == run.options
                   else "runs that differ only in their options (levels) are one run: keep the one with the most")
            return (f"{other.label} ({describe(other.cell, other.seed)}) and {run.label} "
                    f"({describe(run.cell, run.seed)}) would share one run directory ({where.name}): {why}")
        seen[where] = run
    return None


__all__ = ["PlannedRun", "Study", "load_study", "find_duplicates", "describe"]
