"""The machinery behind config fields: declaration, coercion, validation, canonical JSON and hashing.

`ticketlab.config` declares the sections with `option`; everything here is independent of which
sections exist, so a method adding its own section needs nothing new.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional

from ticketlab.errors import ConfigError
from ticketlab.steps import Steps


def option(default, help: str, hash: bool = True, within: Optional[str] = None, **kwargs):
    """A dataclass field with help text; ``hash=False`` keeps it out of the run hash. ``within`` is the
    interval a number (or each number of a list) must lie in, e.g. ``"[0, inf)"`` or ``"(0, 1]"``; every
    field is checked against it on construction, before the section's own `Section.validate`."""
    metadata = {"help": help, "hash": hash}
    if within is not None:
        metadata["within"] = Interval.parse(within)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass(frozen=True)
class Interval:
    """A field's allowed range; ``inf`` as a bound only says "unbounded": values are finite (see `coerce`)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def parse(cls, text: str) -> "Interval":
        match = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*", text)
        if not match:
            raise ValueError(f"not an interval: {text!r}; write e.g. '[0, inf)' or '(0, 1]'")
        low, high = (_bound(match.group(i)) for i in (2, 3))
        return cls(low, high, match.group(1) == "(", match.group(4) == ")")

    def check(self, name: str, value) -> None:
        check_range(name, value, self.low, self.high, self.low_open, self.high_open)


def _bound(text: str):
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else float(text)


INT_LIMITS = (-(2**63), 2**64 - 1)  # every integer fits in 64 bits: the seeds torch.Generator.manual_seed takes


class Section:
    """Base of the config dataclasses: values are coerced to the annotated types, then validated.

    So ``TrainConfig(steps="40ep")`` in Python means the same as ``--train.steps 40ep`` on the command
    line, and a wrong type fails at construction, naming the field.
    """

    def __post_init__(self):
        types = field_types(type(self))
        for f in dataclasses.fields(self):
            value, tp = getattr(self, f.name), types[f.name]
            if is_section(tp):
                if isinstance(value, Mapping):
                    object.__setattr__(self, f.name, from_mapping(tp, value, f.name + "."))
                elif not isinstance(value, tp):
                    raise ConfigError(f"{f.name} must be a {tp.__name__} or a table of its fields; got {value!r}")
            else:
                name = f"{_section_name(self)}{f.name}"
                value = coerce(name, tp, value)
                object.__setattr__(self, f.name, value)
                within = f.metadata.get("within")
                if within is not None:
                    for number in value if isinstance(value, tuple) else (value,):
                        if number is not None:
                            within.check(f"{name} entry" if isinstance(value, tuple) else name, number)
        self.validate()

    def validate(self) -> None:
        """Range and consistency checks; raise `ConfigError` naming the field and the fix."""


def _section_name(obj) -> str:
    prefix = getattr(type(obj), "field_prefix", None)
    return prefix if prefix is not None else type(obj).__name__.replace("Config", "").lower() + "."



def check_range(name, value, low, high, low_open=False, high_open=False):
    bad = (value <= low if low_open else value < low) or (value >= high if high_open else value > high)
    if bad or (isinstance(value, float) and math.isnan(value)):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name}={value} is out of range; it must lie in {lo}{low}, {high}{hi}")



def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, Steps):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Steps):
        return str(value)
    if isinstance(value, tuple):
        return [to_jsonable(v) for v in value]
    return value


def hashed_fields(obj) -> Dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        if not f.metadata.get("hash", True):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, Steps):
            nested = hashed_fields(value)
            if nested:
                out[f.name] = nested
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value != default:
            out[f.name] = to_jsonable(value)
    return out


def field_types(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp is not Steps


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (from JSON, TOML or a command-line string) to the annotated type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)][0]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return coerce(name, inner, value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        inner = args[0]
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, e.g. 1,2,3; got {value!r}")
        return tuple(coerce(name, inner, v) for v in value)
    if tp is Steps:
        try:
            return Steps.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name} must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _is_int(value))):
            raise ConfigError(f"{name} must be an integer (ASCII digits); got {value!r}")
        number = int(value) if isinstance(value, int) or len(value) < 100 else None  # int() refuses 4300 digits
        if number is None or not INT_LIMITS[0] <= number <= INT_LIMITS[1]:
            raise ConfigError(f"{name}={str(value).strip()[:40]} does not fit in 64 bits; give an integer between "
                              f"{INT_LIMITS[0]} and {INT_LIMITS[1]}")
        return number
    if tp is float:
        number = None
        if not isinstance(value, bool) and (isinstance(value, (int, float)) or (isinstance(value, str)
                                                                               and value.isascii())):
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                pass
        if number is None:
            raise ConfigError(f"{name} must be a number (ASCII digits); got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{name}={value!r} is not a finite number; give a finite value")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string; got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {name}")


def _is_int(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes superscripts (``"²"``), which ``int`` then refuses."""
    return re.fullmatch(r"\s*[+-]?[0-9]+\s*", text) is not None


def from_mapping(cls, data: Mapping[str, Any], prefix: str, command: str = ""):
    """Build dataclass ``cls`` from a nested mapping; unknown keys and wrong types are errors.

    ``command`` names the command in the hint of an unknown-field error (default: ``cls.command``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of fields; got {data!r}")
    command = command or getattr(cls, "command", "train")
    types = field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = prefix + key
        if key not in names:
            raise ConfigError(_unknown_field(cls, key, full, prefix, names, command))
        tp = types[key]
        kwargs[key] = from_mapping(tp, value, full + ".", command) if is_section(tp) else coerce(full, tp, value)
    return cls(**kwargs)


def _unknown_field(cls, key: str, full: str, prefix: str, names, command: str) -> str:
    own = getattr(cls, "unknown_field_message", None)
    message = own(key, full) if own is not None else None
    if message:
        return message
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return f"unknown config field {full!r}{hint}; see `ticketlab {command} --help` for the fields"


def merge(base: Any, overrides: Mapping[str, Any], prefix: str = "", command: str = "") -> Any:
    """Return ``base`` with the nested ``overrides`` applied (values already typed or raw strings). A
    section's ``derived_fields`` (derived field -> its source) go back to their defaults when the source is
    set without them, so the section's `validate` derives them afresh instead of keeping the old source's."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of fields; got {overrides!r}")
    command = command or getattr(type(base), "command", "train")
    types = field_types(type(base))
    names = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in overrides.items():
        full = prefix + key
        if key not in names:
            raise ConfigError(_unknown_field(type(base), key, full, prefix, names, command))
        tp = types[key]
        if is_section(tp):
            changes[key] = merge(getattr(base, key), value, full + ".", command)
        else:
            changes[key] = coerce(full, tp, value)
    for derived, source in getattr(type(base), "derived_fields", {}).items():
        if source in changes and derived not in changes:  # recomputed from the new source by `validate`
            changes[derived] = next(f.default for f in dataclasses.fields(base) if f.name == derived)
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as exc:  # pragma: no cover - guarded by the name check above
        raise ConfigError(str(exc)) from None



def iter_fields(cls, prefix: str = ""):
    """Yield ``(dotted_name, type, field)`` for every leaf field of the tree."""
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        if is_section(tp):
            yield from iter_fields(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, tp, f


def get_path(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A nested mapping as one level of dotted keys: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def nested_keys(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """The inverse of `dotted_keys`."""
    out: Dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


MAX_NESTING = 16  # tables (or lists) in tables: a config needs 3, a study file 4


def load_config_file(path: str) -> Dict[str, Any]:
    """Read a ``.toml`` or ``.json`` config file (by its extension) into a nested mapping (validated later by `merge`); the top level
    must be a table and the nesting at most `MAX_NESTING` deep."""
    import pathlib

    p = pathlib.Path(path)
    if p.suffix not in (".toml", ".json"):
        raise ConfigError(f"config file {path} is neither .toml nor .json; write the fields as TOML or JSON in a file "
                          "of that extension")
    kind = "JSON" if p.suffix == ".json" else "TOML"
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing .toml or .json file")
    too_deep = ConfigError(f"config file {path} nests tables or lists more than {MAX_NESTING} deep; a config has "
                           "sections of fields (e.g. [train] lr = 0.1)")
    try:
        text = p.read_text()
        tree = json.loads(text) if kind == "JSON" else toml_module().loads(text)
    except RecursionError:  # the parsers recurse once per level
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {kind}: {str(exc).splitlines()[0]}") from None
    if nesting_depth(tree) > MAX_NESTING:
        raise too_deep
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a table of fields (e.g. {{\"train\": {{\"lr\": 0.1}}}}); "
                          f"it holds a {type(tree).__name__}")
    return tree


def nesting_depth(tree: Any) -> int:
    """How deep tables and lists nest in ``tree`` (a scalar: 0), without recursion."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


def toml_module():
    """The TOML reader: the standard library's ``tomllib`` (Python 3.11+), else ``tomli`` (a dependency
    on 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    return tomllib


def content_hash(obj, length: int = 12) -> str:
    """MD5 of the canonical JSON of ``obj``'s non-default, hashed fields (OpenLTH's hashname)."""
    import hashlib

    canonical = json.dumps(hashed_fields(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest()[:length]
