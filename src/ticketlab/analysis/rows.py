"""Rows of `ticketlab report`: every finished level and branch under some run directories.

A run directory holds ``config.json`` and either ``level_<k>/`` folders (IMP; each level may hold
``branch_<name>_<hash>/`` ablations with a ``branch.json``) or, for a single training run, its own
``summary.json`` (read as level 0). A level or branch without ``summary.json`` is unfinished and
skipped. Replicates are runs whose configs differ only in ``seed``: they share an experiment key.
Accuracies and densities are fractions here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ticketlab.config import RunConfig, field_types, is_section, to_jsonable
from ticketlab.errors import TicketlabError
from ticketlab.io import read_json

TRUNK = "trunk"
# Fields that never distinguish experiments: the replicate seed (top level only) and bookkeeping.
_NOT_EXPERIMENT = {"levels", "root", "download", "runs_dir", "device", "threads", "verbose"}
_NOT_BRANCH = {"name", "level", "levels", "seed", "trunk", "path", "root"}


@dataclass(frozen=True)
class Row:
    """One finished level or branch of one run (one seed)."""

    experiment: str  # key shared by replicates
    label: str
    seed: int
    level: int
    density: float
    mode: str  # lottery retrain mode, or the method name for other runs
    branch: str  # "trunk" for levels, else the branch label
    noise: str
    noise_rate: float
    final_test: Optional[float]
    best_val_test: Optional[float]
    steps: int
    dataset: str = ""
    model: str = ""
    path: Path = Path(".")  # folder holding this row's summary.json and metrics.jsonl


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row) if f.name not in ("label", "branch"))


class Rows(list):
    """A ``list[Row]`` that also remembers the unfinished level/branch folders it skipped."""

    def __init__(self, rows: Iterable[Row] = (), skipped: Sequence[Path] = ()):
        super().__init__(rows)
        self.skipped: List[Path] = list(skipped)


# -- collecting ---------------------------------------------------------------------------------------


def find_run_dirs(paths: Sequence[str | Path]) -> List[Path]:
    """Run directories among ``paths``: each path is a run (has config.json) or a folder of runs."""
    found: Dict[Path, None] = {}
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise TicketlabError(f"{path} is not a directory; pass a run directory or a folder of runs")
        candidates = [path] if (path / "config.json").is_file() else sorted(p for p in path.iterdir() if p.is_dir())
        for run in candidates:
            if (run / "config.json").is_file():
                found.setdefault(run.resolve(), None)
    return list(found)


def collect(paths: Sequence[str | Path]) -> Rows:
    """Every finished level and branch under ``paths``; ``.skipped`` lists the unfinished ones."""
    records, skipped = [], []
    for run in find_run_dirs(paths):
        try:
            records.extend(_read_run(run, skipped))
        except TicketlabError:  # an unreadable config.json or summary.json: report the rest
            skipped.append(run)
    labels = _experiment_labels(records)
    branches: Dict[str, Dict[str, Tuple[str, Dict[str, Any]]]] = {}  # made unique within each experiment
    for r in records:
        branches.setdefault(r["experiment"], {})[r["branch_id"]] = (r["branch"], r["branch_options"])
    branch_labels = {key: _disambiguate(items) for key, items in branches.items()}
    rows = [Row(**{k: r[k] for k in _ROW_FIELDS if k in r}, label=labels[r["experiment"]],
                branch=branch_labels[r["experiment"]][r["branch_id"]]) for r in records]
    return Rows(sorted(rows, key=row_order), skipped)


def _read_run(run: Path, skipped: List[Path]) -> List[Dict[str, Any]]:
    raw = read_json(run / "config.json")
    data, model = raw.get("data", {}), raw.get("model", {})
    flat = _flatten(experiment_dict(raw, keep_defaults=True))
    base = {
        "experiment": experiment_key(raw), "seed": int(raw.get("seed", 0)), "mode": _mode(raw),
        "noise": data.get("noise", "none"), "noise_rate": float(data.get("noise_rate", 0.0)),
        "dataset": data.get("dataset", "?"), "model": model.get("name", "?"), "flat": flat,
    }
    fraction = float(raw.get("prune", {}).get("fraction", 0.2))
    levels = sorted((int(p.name[6:]), p) for p in run.glob("level_*") if p.is_dir() and p.name[6:].isdigit())
    phases = levels or [(0, run)]
    records = []
    for level, folder in phases:
        records.extend(_phase_record(base, level, folder, TRUNK, {}, fraction, skipped))
        for branch_dir in sorted(p for p in folder.glob("branch_*") if p.is_dir()):
            info = read_json(branch_dir / "branch.json") if (branch_dir / "branch.json").is_file() else {}
            name = info.get("name") or branch_dir.name.split("_")[1]
            options = {k: v for k, v in info.items() if k not in _NOT_BRANCH}
            records.extend(_phase_record(base, level, branch_dir, name, options, fraction, skipped))
    return records


def _phase_record(base, level, folder, branch, options, fraction, skipped) -> List[Dict[str, Any]]:
    if not (folder / "summary.json").is_file():
        skipped.append(folder)
        return []
    summary = read_json(folder / "summary.json")
    # a re-dense (retrain) branch ends at density 1; it is reported at its ticket's density
    density = summary.get("ticket_density", summary.get("density"))
    return [dict(base, level=level, path=folder, branch=branch, branch_options=_flatten(options),
                 branch_id=branch + json.dumps(options, sort_keys=True),
                 density=float(density) if density is not None else (1 - fraction) ** level,
                 final_test=summary.get("final_test_accuracy"),
                 best_val_test=summary.get("test_accuracy_at_best_val"), steps=int(summary.get("steps", 0)))]


def _mode(raw: Dict[str, Any]) -> str:
    method = raw.get("method", "train")
    return (raw.get("lottery") or {}).get("retrain", "rewind") if method == "lottery" else method


# -- experiment keys and labels -----------------------------------------------------------------------


def experiment_dict(raw: Dict[str, Any], keep_defaults: bool = False) -> Dict[str, Any]:
    """The config without ``seed``, fields that do not change results and (unless ``keep_defaults``)
    fields at their `RunConfig` default; sections `RunConfig` does not know (e.g. a newer ``lottery``)
    are kept whole, less the bookkeeping names in ``_NOT_EXPERIMENT``."""
    return _canonical({k: v for k, v in raw.items() if k != "seed"}, RunConfig, keep_defaults)


def experiment_key(raw: Dict[str, Any]) -> str:
    text = json.dumps(experiment_dict(raw), sort_keys=True, separators=(",", ":"))
    return hashlib.md5(text.encode()).hexdigest()[:12]


def _canonical(raw: Dict[str, Any], cls, keep_defaults: bool) -> Dict[str, Any]:
    known = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
    types = field_types(cls) if cls is not None else {}
    out = {}
    for key, value in raw.items():
        f = known.get(key)
        if key in _NOT_EXPERIMENT or (f is not None and not f.metadata.get("hash", True)):
            continue
        if isinstance(value, dict):
            section = _canonical(value, types[key] if f is not None and is_section(types[key]) else None,
                                 keep_defaults)
            if section:
                out[key] = section
        elif keep_defaults or f is None or is_section(types[key]) or value != _default_json(f):
            out[key] = value
    return out


def _default_json(f: dataclasses.Field) -> Any:
    return to_jsonable(f.default if f.default is not dataclasses.MISSING else f.default_factory())


def _flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _experiment_labels(records: List[Dict[str, Any]]) -> Dict[str, str]:
    """Labels "<dataset> <model> <mode>", plus the noise when any experiment has label noise, made unique."""
    experiments = {r["experiment"]: r for r in records}
    any_noise = any(r["noise"] != "none" for r in experiments.values())
    items = {}
    for key, r in experiments.items():
        label = f"{r['dataset']} {r['model']} {r['mode']}"
        if r["noise"] != "none":
            label += f" noise {r['noise']} {100 * r['noise_rate']:.3g}%"
        elif any_noise:
            label += " noise 0%"
        items[key] = (label, r["flat"])
    return _disambiguate(items)


def _disambiguate(items: Dict[Any, Tuple[str, Dict[str, Any]]]) -> Dict[Any, str]:
    """Labels made unique: where several ids share a label, append the (up to 3) fields that differ."""
    by_label: Dict[str, List[Any]] = {}
    for ident, (label, _) in items.items():
        by_label.setdefault(label, []).append(ident)
    out = {}
    for label, idents in by_label.items():
        flats = [items[i][1] for i in idents]
        fields = sorted({k for f in flats for k in f if len({json.dumps(g.get(k)) for g in flats}) > 1})
        for ident, flat in zip(idents, flats):
            if len(idents) == 1:
                out[ident] = label
            elif 0 < len(fields) <= 3:
                out[ident] = label + " (" + ", ".join(f"{k}={_short(flat.get(k, '-'))}" for k in fields) + ")"
            else:
                out[ident] = f"{label} [{hashlib.md5(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:8]}]"
    return out


def _short(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def experiment_order(r) -> tuple:  # r: Row or AggRow
    return (r.dataset, r.model, r.mode, r.noise_rate, r.noise, r.label)


def branch_order(branch: str) -> tuple:
    return (branch != TRUNK, branch)


def row_order(r: Row) -> tuple:
    """Sort key of rows: experiment (data, model, mode, noise rate), branch (trunk first), level, seed."""
    return (experiment_order(r), branch_order(r.branch), r.level, r.seed)
