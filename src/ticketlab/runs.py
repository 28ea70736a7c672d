"""The run store: one content-addressed directory per run.

``runs/<method>_<hash>/`` holds ``config.json`` (the full resolved config), ``manifest.json`` (versions,
device, threads, git commit, command line), the trainer's files (``metrics.jsonl``, checkpoints,
``summary.json``) and, for multi-phase methods, one subdirectory per phase. The same config always
maps to the same directory, so a repeated command resumes or returns at once instead of training again.
"""

from __future__ import annotations

import datetime
import platform
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ticketlab.config import RunConfig
from ticketlab.errors import CheckpointError
from ticketlab.io import read_json, write_json

CONFIG, MANIFEST = "config.json", "manifest.json"


def _version() -> str:
    from ticketlab import __version__

    return __version__


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def make_manifest(device: str, threads: int, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return {
        "ticketlab": _version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": threads,
        "git_commit": _git_commit(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class RunDir:
    path: Path
    config: RunConfig

    @classmethod
    def open(cls, runs_dir: Path, config: RunConfig, device: str = "cpu", threads: int = 1,
             argv: Optional[List[str]] = None) -> "RunDir":
        """Create the run directory for ``config``, or reopen it (checking it holds the same config)."""
        path = Path(runs_dir) / config.run_name
        if (path / CONFIG).exists():
            stored = read_json(path / CONFIG)
            if _hashed_view(stored) != _hashed_view(config.to_dict()):
                raise CheckpointError(f"{path / CONFIG} holds a different config; move that directory away to rerun")
            _warn_if_environment_changed(read_json(path / MANIFEST) if (path / MANIFEST).exists() else {},
                                         device, threads)
        else:
            path.mkdir(parents=True, exist_ok=True)
            write_json(path / CONFIG, config.to_dict())
            write_json(path / MANIFEST, make_manifest(device, threads, argv))
        return cls(path, config)

    @property
    def done(self) -> bool:
        return (self.path / "summary.json").exists()

    def sub(self, name: str) -> Path:
        sub = self.path / name
        sub.mkdir(parents=True, exist_ok=True)
        return sub


def _hashed_view(config_dict: Dict[str, Any]) -> str:
    try:
        return RunConfig.from_dict(config_dict).hash()
    except Exception:
        return "<unreadable>"


def _warn_if_environment_changed(manifest: Dict[str, Any], device: str, threads: int) -> None:
    now = {"torch": torch.__version__, "device": str(device), "threads": threads}
    changed = [f"{k} {manifest.get(k)} -> {v}" for k, v in now.items() if k in manifest and manifest[k] != v]
    if changed:
        warnings.warn("resuming a run started elsewhere (" + ", ".join(changed) + "); results may not be "
                      "bit-identical to an uninterrupted run", stacklevel=3)


def load_config(run_path: Path) -> RunConfig:
    return RunConfig.from_dict(read_json(Path(run_path) / CONFIG))


def find_runs(runs_dir: Path) -> List[Path]:
    """Every run directory (a folder with a config.json) directly under ``runs_dir``."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if (p / CONFIG).is_file())


def resolve_run(runs_dir: Path, name: str, exact: bool = False) -> Path:
    """A run given by path, by directory name or (unless ``exact``) by a unique prefix of its name or hash."""
    direct = Path(name)
    if (direct / CONFIG).is_file():
        return direct
    if exact:
        matches = [p for p in find_runs(runs_dir) if p.name == name]
    else:
        matches = [p for p in find_runs(runs_dir)
                   if p.name.startswith(name) or p.name.split("_")[-1].startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CheckpointError(f"no run {name!r} in {runs_dir}; `ticketlab runs list --runs-dir {runs_dir}` shows them")
    raise CheckpointError(f"{name!r} matches {len(matches)} runs in {runs_dir}; give more of the name")


def run_status(path: Path) -> str:
    """``done``, ``partial`` or ``new``; for lottery runs ``levels 0-K done`` (and ``, partial``)."""
    if (path / "summary.json").exists():
        return "done"
    levels = sorted(int(p.name.split("_")[1]) for p in path.glob("level_*") if p.name.split("_")[1].isdigit())
    if levels:
        done = [k for k in levels if (path / f"level_{k}" / "summary.json").exists()]
        text = f"levels 0-{max(done)} done" if done else "no level done"
        return text + (", partial" if len(done) < len(levels) else "")
    if any(path.rglob("checkpoint.pt")) or any(path.rglob("metrics.jsonl")):
        return "partial"
    return "new"


def is_run_dir(path: Path) -> bool:
    """A directory ticketlab made: a manifest written by ticketlab and a config whose hash names the folder."""
    path = Path(path)
    try:
        manifest = read_json(path / MANIFEST)
        config = load_config(path)
    except Exception:
        return False
    return isinstance(manifest, dict) and "ticketlab" in manifest and path.name.startswith(config.run_name)


def remove_run(path: Path) -> None:
    """Delete a run directory, refusing anything that is not one (see `is_run_dir`)."""
    if not is_run_dir(path):
        raise CheckpointError(f"{path} is not a ticketlab run directory (no ticketlab manifest, or its config does not "
                              "match its name); nothing removed")
    shutil.rmtree(path)
