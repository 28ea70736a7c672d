"""The run store: one content-addressed directory per run.

``runs/<method>_<hash>/`` holds ``config.json`` (the full resolved config), ``manifest.json`` (versions,
device, threads, git commit, command line), the trainer's files (``metrics.jsonl``, checkpoints,
``summary.json``) and, for multi-phase methods, one subdirectory per phase. The same config always
maps to the same directory, so a repeated command resumes or returns at once instead of training again.

Two contracts every method keeps, so that nothing else needs to know its folder layout:

- every file a phase produces once (initial weights, a mask, start weights, a summary) is made through
  `ensure`: compute it if it is absent, write it atomically, read it back. Under torchrun every rank
  takes rank 0's branch there, only rank 0 writes, and all read after a barrier;
- a phase that is a result (a lottery level, a branch, a sparse network's training) carries its report
  row in its ``summary.json`` (`report_row`); `phase_rows` and `run_status` read only those.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import torch

from ticketlab import distributed, leftovers, runlock
from ticketlab.config import RunConfig, content_hash, get_path, iter_fields, to_jsonable
from ticketlab.data.fingerprint import differing
from ticketlab.errors import CheckpointError, TicketlabError
from ticketlab.io import load_torch, read_json, save_torch, write_json
from ticketlab.method import config_from_dict
from ticketlab.runfiles import read_object, read_summary
from ticketlab.version import __version__

CONFIG, MANIFEST, SUMMARY = "config.json", "manifest.json", "summary.json"
START = "start.pt"  # a phase's masked start weights, where its method keeps them
TRUNK = "trunk"  # the branch of a row that is not an ablation
T = TypeVar("T")


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def make_manifest(device: str, threads: int, argv: Optional[List[str]] = None,
                  record: Optional[Dict[str, Any]] = None,
                  data_fingerprint: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The environment of a run, plus ``record``: what its caller knows (the precision, a user's module),
    and the fingerprint of its data."""
    manifest = {**(record or {}),
        "ticketlab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": threads,
        "world_size": distributed.world_size(),
        "git_commit": _git_commit(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if data_fingerprint:  # what the run's data is (`ticketlab.data.fingerprint`), checked on every reuse
        manifest["data_fingerprint"] = dict(data_fingerprint)
    return manifest


@dataclass
class RunDir:
    path: Path
    config: RunConfig

    @classmethod
    def open(cls, runs_dir: Path, config: RunConfig, device: str = "cpu", threads: int = 1,
             argv: Optional[List[str]] = None, path: Optional[Path] = None,
             record: Optional[Dict[str, Any]] = None,
             data_fingerprint: Optional[Dict[str, str]] = None) -> "RunDir":
        """Create the run directory for ``config`` (``runs_dir/<run_name>`` unless ``path`` is given), or
        reopen it (checking it holds the same config, was trained in the precision of ``record``, and on
        data with the same ``data_fingerprint``). The process holds the run's lock from here
        (`ticketlab.runlock`); what a killed process left behind in it is removed (`ticketlab.leftovers`)."""
        path = Path(path) if path is not None else Path(runs_dir) / config.run_name
        runlock.hold(path)
        if (path / CONFIG).exists() and _hashed_view(read_json(path / CONFIG)) != _hashed_view(config.to_dict()):
            raise CheckpointError(f"{path / CONFIG} holds a different config; move that directory away to rerun")
        if distributed.is_writer():
            leftovers.remove(leftovers.run_leftovers(path))
        path.mkdir(parents=True, exist_ok=True)
        ensure(path / CONFIG, config.to_dict, save=save_json, load=lambda p: None)  # an existing one: read above
        runlock.watch(path)
        manifest = ensure(path / MANIFEST, lambda: make_manifest(device, threads, argv, record, data_fingerprint),
                          save=save_json,
                          load=lambda p: read_object(p, "manifest", "delete it and run the command again to write it"))
        precision = (record or {}).get("precision")
        if precision and manifest.get("precision", precision) != precision:
            raise CheckpointError(f"{path} was trained in {manifest['precision']} on {manifest.get('device')}; this "
                                  f"run would train in {precision} on {device}: resume it with the same --device and "
                                  "--train.amp, or give another --runs-dir")
        _check_data_fingerprint(path, manifest, data_fingerprint)
        _warn_if_environment_changed(manifest, device, threads)
        return cls(path, config)

    @property
    def done(self) -> bool:
        return (self.path / SUMMARY).exists()

    def sub(self, name: str) -> Path:
        runlock.check_present(self.path)
        sub = self.path / name
        sub.mkdir(parents=True, exist_ok=True)
        return sub


def _check_data_fingerprint(path: Path, manifest: Dict[str, Any], now: Optional[Dict[str, str]]) -> None:
    """Refuse data other than the run's (the data root is not in the hash; the content must be); a run
    from before fingerprints were recorded gains the fingerprint of the data it is used with now."""
    if not now:
        return
    recorded = manifest.get("data_fingerprint")
    if not isinstance(recorded, dict):
        write_json(path / MANIFEST, {**manifest, "data_fingerprint": dict(now)})
    elif recorded != now:
        raise CheckpointError(f"{path} was trained on other data: the {differing(recorded, now)} loaded now differ "
                              "from that run's; to train on this data as a separate run, add --data.tag NAME (or use "
                              "another --runs-dir)")


def _hashed_view(config_dict: Dict[str, Any]) -> str:
    try:
        return config_from_dict(config_dict).hash()
    except Exception:
        return "<unreadable>"


def ensure(path: Path, make: Callable[[], T], *, save: Optional[Callable[[T, Path], None]] = save_torch,
           load: Callable[[Path], Any] = load_torch) -> Any:
    """Compute-if-absent-then-write: ``make()`` runs only when ``path`` does not exist, its result is
    written with ``save`` (``save=None``: ``make`` writes ``path`` itself), and what is returned is read
    back from ``path``, so a first run and a rerun see the same bytes. ``make`` may write side files
    (a ``ratios.json`` beside a mask) before the file that marks the step done.

    Every phase output of every method goes through here: it is the one place for rank-0 writes,
    barriers and file locks when one run spans several processes."""
    path = Path(path)
    if not distributed.gate(path.exists()):  # under torchrun: every rank takes rank 0's branch
        value = make()
        failure: Optional[BaseException] = None
        if distributed.is_writer():  # the only writer
            try:
                runlock.check_present(path)
                if save is not None:
                    save(value, path)
                elif not path.exists():
                    raise RuntimeError(f"{path} was to be written by its phase, which returned without writing it")
            except Exception as exc:  # noqa: BLE001  (re-raised below, on every rank)
                failure = exc
        if not distributed.gate(failure is None):  # also the barrier: the others read once rank 0 has written
            raise failure if failure is not None else CheckpointError(f"rank 0 could not write {path}; see its error")
    return load(path)


def save_json(obj: Any, path: Path) -> None:
    """`write_json` with `ensure`'s argument order (value, path)."""
    write_json(path, obj)


# -- report rows ---------------------------------------------------------------------------------------


def experiment_fields(config: RunConfig) -> Dict[str, Any]:
    """Every field that changes results, with its value (defaults included), less the replicate ``seed``:
    what the report compares to tell experiments with the same label apart."""
    out = {}
    for dotted, _, f in iter_fields(type(config)):
        if dotted != "seed" and f.metadata.get("hash", True):
            out[dotted] = to_jsonable(get_path(config, dotted))
    return out


def experiment_key(config: RunConfig) -> str:
    """The key replicates share: the run hash with the seed left out."""
    return content_hash(dataclasses.replace(config, seed=0), 12)


def report_row(config: RunConfig, *, variant: str, level: int, density: Optional[float], branch: str = TRUNK,
               branch_options: Optional[Dict[str, Any]] = None, dataset: Optional[str] = None,
               model: Optional[str] = None, signature: str = "", metrics: str = "metrics.jsonl") -> Dict[str, Any]:
    """The ``row`` of a result phase's summary: what `ticketlab report` shows besides the accuracies
    (which it reads from the summary itself). ``level``: the lottery level, or the cycle count of an
    iterative method (0 for a single training); ``density``: the ticket's (a re-dense branch ends dense
    but is reported at its ticket's density); None: the summary's final density (a mask that changes).
    ``signature``: what tells experiments apart beyond the config (a user's module and data); ``metrics``:
    where the model's training metrics are, relative to the summary's folder."""
    group = experiment_key(config)
    if signature:
        group = hashlib.md5(f"{group}:{signature}".encode()).hexdigest()[:12]
    return {"method": type(config).command, "variant": variant, "level": int(level), "branch": branch,
            "branch_options": dict(branch_options or {}), "seed": config.seed,
            "density": None if density is None else float(density),
            "group": group, "dataset": dataset or config.data.dataset,
            "model": model or config.model.name, "noise": config.data.noise, "noise_rate": config.data.noise_rate,
            "fields": experiment_fields(config), "metrics": metrics}


def phase_rows(run: Path) -> Iterator[Tuple[Path, Dict[str, Any]]]:
    """``(folder, summary)`` of every finished result phase under ``run`` (summaries with a ``row``)."""
    for path in sorted(Path(run).rglob(SUMMARY)):
        summary = read_json(path)
        if isinstance(summary, dict) and isinstance(summary.get("row"), dict):
            yield path.parent, summary


def unfinished_phases(run: Path) -> List[Path]:
    """Phase folders under ``run`` that started training (metrics or a checkpoint) but have no summary."""
    started = {p.parent for name in ("metrics.jsonl", "checkpoint.pt") for p in Path(run).rglob(name)}
    return sorted(p for p in started if not (p / SUMMARY).exists())


def _warn_if_environment_changed(manifest: Dict[str, Any], device: str, threads: int) -> None:
    if not distributed.is_writer():  # rank r of a torchrun run is on device r: not a change
        return
    now = {"torch": torch.__version__, "device": str(device), "threads": threads}
    changed = [f"{k} {manifest.get(k)} -> {v}" for k, v in now.items() if k in manifest and manifest[k] != v]
    if changed:
        warnings.warn("resuming a run started elsewhere (" + ", ".join(changed) + "); results may not be "
                      "bit-identical to an uninterrupted run", stacklevel=3)


def load_config(run_path: Path) -> RunConfig:
    return config_from_dict(read_json(Path(run_path) / CONFIG))


def find_runs(runs_dir: Path) -> List[Path]:
    """Every run directory (a folder with a config.json) at any depth below ``runs_dir`` (``runs/demo/...``),
    not looking inside run directories or hidden folders."""
    found: List[Path] = []
    for folder, subfolders, files in os.walk(Path(runs_dir)):
        if CONFIG in files and Path(folder) != Path(runs_dir):
            found.append(Path(folder))
            subfolders.clear()
        else:
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
    return sorted(found)


def resolve_run(runs_dir: Path, name: str, exact: bool = False) -> Path:
    """A run given by path, by directory name or (unless ``exact``) by a unique prefix of its name or hash."""
    for direct in (Path(name), Path(runs_dir) / name):  # a path, or one relative to runs_dir (demo/train_...)
        if (direct / CONFIG).is_file():
            return direct
    if exact:
        matches = [p for p in find_runs(runs_dir) if p.name == name]
    else:
        matches = [p for p in find_runs(runs_dir) if p.name.startswith(name) or p.name.split("_")[-1].startswith(name)
                   or str(p.relative_to(runs_dir)).startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CheckpointError(f"no run {name!r} in {runs_dir}; `ticketlab runs list --runs-dir {runs_dir}` shows them")
    raise CheckpointError(f"{name!r} matches {len(matches)} runs in {runs_dir}; give more of the name")


def run_status(path: Path) -> str:
    """``done`` (the run's own summary exists), ``levels 0-K done`` (result phases finished, more may
    follow; ``, partial`` while one is unfinished), ``partial`` or ``new``."""
    path = Path(path)
    if (path / SUMMARY).exists():
        return "done"
    levels = trunk_levels(path)
    unfinished = unfinished_phases(path)
    if levels:
        return f"levels {levels[0]}-{levels[-1]} done" + (", partial" if unfinished else "")
    return "partial" if unfinished else "new"


def trunk_levels(path: Path) -> List[int]:
    """The finished trunk levels of a run (lottery levels, cycles; ``[0]`` for a single training)."""
    try:
        return sorted({s["row"]["level"] for _, s in phase_rows(path) if s["row"].get("branch") == TRUNK})
    except TicketlabError:
        return []


def latest_test_accuracy(path: Path) -> Optional[float]:
    """The run's final test accuracy: its own summary's, else that of its last finished trunk level."""
    path = Path(path)
    if (path / SUMMARY).exists():
        return read_summary(path / SUMMARY).get("final_test_accuracy")
    trunk = [s for _, s in phase_rows(path) if s["row"].get("branch") == TRUNK]
    return max(trunk, key=lambda s: s["row"]["level"]).get("final_test_accuracy") if trunk else None


def is_run_dir(path: Path) -> bool:
    """A directory ticketlab made: a manifest written by ticketlab and a config whose hash names the folder
    (or, for a config this version cannot read, such as one from an older version with another command's
    section, a folder named like a run: ``<method>_<12 hex digits>``)."""
    path = Path(path)
    try:
        manifest, raw = read_json(path / MANIFEST), read_json(path / CONFIG)
    except TicketlabError:
        return False
    if not (isinstance(manifest, dict) and "ticketlab" in manifest and isinstance(raw, dict)):
        return False
    try:
        return path.name.startswith(config_from_dict(raw).run_name)
    except Exception:
        method = raw.get("method")
        named_like_a_run = re.escape(str(method)) + r"_[0-9a-f]{12}(_\w+)?"
        return isinstance(method, str) and re.fullmatch(named_like_a_run, path.name) is not None


def remove_run(path: Path) -> None:
    """Delete a run directory, refusing anything that is not one (see `is_run_dir`) and a run in use. The
    folder is first renamed out of the runs (one atomic step), so a removal that fails half-way leaves
    no half run behind, only a hidden folder that `ticketlab runs clean` removes."""
    path = Path(path)
    if not is_run_dir(path):
        raise CheckpointError(f"{path} is not a ticketlab run directory (no ticketlab manifest, or its config does not "
                              "match its name); nothing removed")
    with runlock.holding(path, "stop it (or wait for it to finish) before removing it; nothing removed"):
        doomed = path.with_name(f".{path.name}{leftovers.REMOVING}{os.getpid()}")
        try:
            os.replace(path, doomed)
        except OSError as exc:
            raise CheckpointError(f"cannot remove {path} ({exc.strerror}); check its permissions; nothing "
                                  "removed") from None
        try:
            shutil.rmtree(doomed)
        except OSError as exc:
            raise CheckpointError(f"{path} is removed from the runs, but deleting its files stopped ({exc.strerror}: "
                                  f"{exc.filename}); `ticketlab runs clean` deletes the rest") from None


def clean_runs(runs_dir: Path) -> Tuple[List[Tuple[Path, int]], List[Path]]:
    """Remove what killed processes left behind (`ticketlab.leftovers`) in every run under ``runs_dir``
    that is not in use, the folders of unfinished `remove_run` calls and the temporary files of the
    decoded-data cache and of the image folders those runs name. Returns what was removed (with sizes) and
    the runs skipped as in use."""
    from ticketlab.data import imagefolder
    from ticketlab.data.cache import clean_cache

    freed: List[Tuple[Path, int]] = []
    busy: List[Path] = []
    image_roots = set()
    for run in find_runs(runs_dir):
        image_roots.add(_image_folder(run))
        try:
            with runlock.holding(run, None):  # skipped, without waiting to learn who holds it
                freed += leftovers.remove(leftovers.run_leftovers(run))
        except CheckpointError:
            busy.append(run)
    freed += leftovers.remove(p for p in leftovers.unfinished_removals(runs_dir) if not _removal_running(p))
    for root in sorted(image_roots - {None}):
        freed += imagefolder.clean_leftovers(root)
    return freed + clean_cache(), busy


def _image_folder(run: Path) -> Optional[Path]:
    """The ``--data.root`` of a run on an image folder, as its config records it (None: another data set)."""
    try:
        data = read_json(run / CONFIG).get("data")
    except (TicketlabError, OSError, AttributeError):
        return None
    if isinstance(data, dict) and data.get("dataset") == "imagefolder" and isinstance(data.get("root"), str):
        return Path(data["root"]).expanduser()
    return None


def _removal_running(folder: Path) -> bool:
    """Whether the process that renamed ``folder`` to remove it (its pid ends the name) still runs here."""
    try:
        pid = int(folder.name.rsplit(leftovers.REMOVING, 1)[1])
        if pid == os.getpid():  # this process is cleaning, not removing
            return False
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except OSError:  # someone else's process
        return True
    return True
