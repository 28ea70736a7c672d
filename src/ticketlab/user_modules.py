"""``--import MODULE``: a user's module (or ``.py`` file) imported so its ``register_*`` calls run."""

from __future__ import annotations

import sys
from pathlib import Path

from ticketlab.errors import ConfigError, TicketlabError


def import_user_module(name: str) -> None:
    """Import a module by name (the current folder searched first, as ``python -m`` does) or a ``.py``
    file, running the ``register_*`` calls it makes; a module that is missing or fails is a one-line error."""
    import importlib
    import traceback

    try:
        if name.endswith(".py"):
            if not Path(name).is_file():
                raise ConfigError(f"--import {name}: no such file; give a module name or the path of a .py file")
            _import_file(name)
            return
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(f"--import {name}: no module named {exc.name!r}; check the name and that its folder is "
                              "the current one or on PYTHONPATH") from None
        raise ConfigError(f"--import {name}: importing it failed: {exc}") from None
    except TicketlabError:
        raise
    except Exception as exc:  # noqa: BLE001  (the user's code: its error, in one line, with where it happened)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise ConfigError(f"--import {name}: importing it failed: {type(exc).__name__}: {exc} "
                          f"({where.filename}:{where.lineno})") from None


def _import_file(name: str) -> None:
    """Import the ``.py`` file ``name`` as the module named by its stem, once: the same file again (a
    sweep imports its modules again for each job) is a no-op; another module of that name is refused,
    not replaced (``--import json.py`` would shadow the standard library's for everything after it)."""
    import importlib.util

    path = Path(name).resolve()
    loaded = sys.modules.get(path.stem)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        if origin is not None and Path(origin).resolve() == path:
            return
        raise ConfigError(f"--import {name}: a module named {path.stem!r} is already imported (from "
                          f"{origin or 'Python itself'}); rename the file")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)  # not imported: the next attempt runs it again
        raise


__all__ = ["import_user_module"]
