"""Rows of `ticketlab report`: every finished result phase under some run directories.

Each result phase (a lottery level, a branch, a single training, the sparse network of an RST run) writes
its report row into its ``summary.json`` (`ticketlab.runs.report_row`): method, variant, level, branch,
density, the seed-free experiment key and the fields that tell experiments apart. Rows are read from
there alone, so the report knows no method's folder layout. A phase folder that started training but has
no summary is unfinished and listed as skipped. Replicates (runs that differ only in ``seed``) share an
experiment key. Accuracies and densities are fractions here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ticketlab.errors import TicketlabError
from ticketlab.fields import dotted_keys
from ticketlab.io import read_json
from ticketlab.runs import CONFIG, SUMMARY, TRUNK, phase_rows, unfinished_phases


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
    path: Path = Path(".")  # folder holding this row's summary.json
    metrics: Path = Path("metrics.jsonl")  # the training metrics of this row's model
    corrupted: Optional[float] = None  # mean test accuracy on corrupted data (`ticketlab eval`), if scored
    rewind: str = ""  # a lottery run's rewind point (``lottery.rewind``), for readable figure labels

    @property
    def metrics_file(self) -> Path:
        return self.path / self.metrics


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row) if f.name not in ("label", "branch"))


class Rows(list):
    """A ``list[Row]`` that also remembers the unfinished phase folders it skipped and the runs whose
    summaries predate report rows."""

    def __init__(self, rows: Iterable[Row] = (), skipped: Sequence[Path] = (), outdated: Sequence[Path] = ()):
        super().__init__(rows)
        self.skipped: List[Path] = list(skipped)
        self.outdated: List[Path] = list(outdated)


# -- collecting ---------------------------------------------------------------------------------------


def find_run_dirs(paths: Sequence[str | Path]) -> List[Path]:
    """Run directories among ``paths``: each path is a run (has config.json) or a folder of runs."""
    found: Dict[Path, None] = {}
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise TicketlabError(f"{path} is not a directory; pass a run directory or a folder of runs")
        candidates = [path] if (path / CONFIG).is_file() else sorted(p for p in path.iterdir() if p.is_dir())
        for run in candidates:
            if (run / CONFIG).is_file():
                found.setdefault(run.resolve(), None)
    return list(found)


def collect(paths: Sequence[str | Path]) -> Rows:
    """Every finished result phase under ``paths``; ``.skipped`` lists the unfinished ones."""
    records, skipped, outdated = [], [], []
    for run in find_run_dirs(paths):
        try:
            found = [_record(folder, summary) for folder, summary in phase_rows(run)]
        except (TicketlabError, KeyError, TypeError, ValueError):  # an unreadable summary: report the rest
            skipped.append(run)
            continue
        if not found and any(run.rglob(SUMMARY)):
            outdated.append(run)
        records.extend(found)
        skipped.extend(unfinished_phases(run))
    labels = _experiment_labels(records)
    branches: Dict[str, Dict[str, Tuple[str, Dict[str, Any]]]] = {}  # made unique within each experiment
    for r in records:
        branches.setdefault(r["experiment"], {})[r["branch_id"]] = (r["branch"], r["branch_options"])
    branch_labels = {key: _disambiguate(items) for key, items in branches.items()}
    rows = [Row(**{k: r[k] for k in _ROW_FIELDS}, label=labels[r["experiment"]],
                branch=branch_labels[r["experiment"]][r["branch_id"]]) for r in records]
    return Rows(sorted(rows, key=row_order), skipped, outdated)


def _record(folder: Path, summary: Dict[str, Any]) -> Dict[str, Any]:
    row = summary["row"]
    options = dotted_keys(row.get("branch_options") or {})
    return {"experiment": str(row["group"]), "seed": int(row["seed"]), "level": int(row["level"]),
            "density": float(summary["density"] if row["density"] is None else row["density"]),
            "mode": str(row["variant"]), "branch": str(row["branch"]),
            "branch_options": options, "branch_id": str(row["branch"]) + json.dumps(options, sort_keys=True),
            "noise": str(row.get("noise", "none")), "noise_rate": float(row.get("noise_rate", 0.0)),
            "final_test": summary.get("final_test_accuracy"), "best_val_test": summary.get("test_accuracy_at_best_val"),
            "steps": int(summary.get("steps", 0)), "dataset": str(row.get("dataset", "?")),
            "model": str(row.get("model", "?")), "flat": dict(row.get("fields") or {}), "path": folder,
            "metrics": Path(row.get("metrics", "metrics.jsonl")), "corrupted": _corrupted(folder),
            "rewind": str((row.get("fields") or {}).get("lottery.rewind", ""))}


def _corrupted(folder: Path) -> Optional[float]:
    path = folder / "corruptions.json"
    if not path.is_file():
        return None
    value = read_json(path).get("mean")
    return float(value) if isinstance(value, (int, float)) else None


# -- experiment labels ----------------------------------------------------------------------------------


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
