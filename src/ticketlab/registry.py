"""One registry type for models, data sources, scorers, allocators and methods.

A registry maps names to callables. Registration is a decorator that takes the name from the
function (or an explicit ``name=``); registering a name twice is an error. Looking up an unknown name
raises `ConfigError` listing the valid names and the closest matches. A registry whose built-in entries
are registered by another module (``builtins=``, e.g. the methods) imports it on its first lookup or
registration, so that importing the package does not import them (and torch) until something asks for
them, and a user's entry meets the built-in names when it is registered (``replace=True`` overrides one).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import weakref
from typing import Dict, Generic, Iterator, List, Optional, TypeVar

from ticketlab.errors import ConfigError

T = TypeVar("T")
_REGISTRIES: "weakref.WeakSet[Registry]" = weakref.WeakSet()  # registries sharing a built-ins module load it together


class Registry(Generic[T]):
    def __init__(self, kind: str, builtins: Optional[str] = None):
        self.kind = kind
        self._builtins = builtins  # the module that registers the built-in entries, until it is imported
        self._entries: Dict[str, T] = {}
        _REGISTRIES.add(self)

    def builtins_from(self, module: str) -> None:
        """From now on, ``module`` registers further built-in entries, imported on first use (for a
        registry whose own module registers some built-ins first, which must not import the others)."""
        self._builtins = module

    def _loaded(self) -> Dict[str, T]:
        """The entries, the built-in ones included (their module is imported on first use; if that import
        fails, it is tried again on the next use rather than leaving the registry without them)."""
        module = self._builtins
        if module is not None:
            sharing = [r for r in _REGISTRIES if r._builtins == module]
            for registry in sharing:  # first: the module's registrations look entries up
                registry._builtins = None
            try:
                importlib.import_module(module)
            except BaseException:
                for registry in sharing:
                    registry._builtins = module
                raise
        return self._entries

    def register(self, obj: Optional[T] = None, *, name: Optional[str] = None, replace: bool = False):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def add(item: T) -> T:
            key = name or getattr(item, "__name__", None)
            if not key:
                raise ValueError(f"cannot infer a {self.kind} name for {item!r}; pass name=")
            if key in self._loaded() and not replace:  # a built-in's name too: they are loaded first
                raise ValueError(f"{self.kind} {key!r} is already registered; pass replace=True to override")
            self._entries[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._loaded()[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(sorted(self._entries))}"
            ) from None

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry."""
        self.get(name)  # the unknown-name error
        return self._entries.pop(name)

    def ordered(self) -> List[str]:
        """Names in registration order (`names` sorts them)."""
        return list(self._loaded())

    def registered(self) -> Dict[str, T]:
        """The entries registered so far, without importing the built-in ones."""
        return dict(self._entries)

    def names(self, pattern: str = "*") -> List[str]:
        return sorted(n for n in self._loaded() if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._loaded())
