"""The table of a study: one line per method, grid cell, branch and level, mean ± std over seeds, with
the training cost of each line (`ticketlab.analysis.flops`).

The cost of a result is what it took to make it: its own phase, the phases it lies inside (the level
of a Pools result, the run of a Sup-tickets model), the trunk levels before it, and the run's phases that
carry no report row (a pre-training to the rewind point). Iterations, examples and FLOPs are means over
the seeds that finished.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ticketlab.analysis.flops import layer_positions, phase_cost
from ticketlab.analysis.table import render_table
from ticketlab.errors import TicketlabError
from ticketlab.io import read_json
from ticketlab.runs import SUMMARY, TRUNK, load_config
from ticketlab.sweep.record import RECORD

Layers = Mapping[str, Tuple[int, int]]


class ModelShapes:
    """Layer shapes and training-split sizes of runs' models, loaded once per distinct data and model."""

    def __init__(self):
        self.cache: Dict[str, Tuple[Layers, int]] = {}

    def of(self, run: Path) -> Tuple[Layers, int, int]:
        from ticketlab.data import load_data
        from ticketlab.models import build_model

        config = load_config(run)
        key = repr((config.data, config.model, config.noise_seed))
        if key not in self.cache:
            data = load_data(config.data, noise_seed=config.noise_seed, device="cpu")
            model = build_model(config.model, data.input_shape, data.num_classes, seed=0)
            self.cache[key] = (layer_positions(model, data.input_shape), len(data.train))
        layers, n = self.cache[key]
        return layers, n, config.train.batch_size


def run_results(run: Path, shapes: ModelShapes) -> List[Dict[str, Any]]:
    """Every result phase of ``run`` with its accuracy, density and cost."""
    run = Path(run)
    phases = []
    for path in sorted(run.rglob(SUMMARY)):
        summary = read_json(path)
        if isinstance(summary, dict):
            phases.append((path.parent, summary, summary.get("row") if isinstance(summary.get("row"), dict) else None))
    if not phases:
        return []
    layers, n, batch = shapes.of(run)
    costs = {folder: phase_cost(folder, summary, layers, n, batch) for folder, summary, _ in phases}
    out = []
    for folder, summary, row in phases:
        if row is None:
            continue
        level = int(row.get("level", 0))
        parts = [f for f, _, r in phases
                 if r is None or f == folder or f in folder.parents
                 or (r.get("branch") == TRUNK and int(r.get("level", 0)) < level)]
        cost = {k: sum(costs[f][k] for f in parts) for k in ("iterations", "examples", "flops")}
        density = row.get("density")
        out.append({"branch": str(row.get("branch", TRUNK)), "level": level,
                    "density": float(summary.get("density") if density is None else density),
                    "test": summary.get("final_test_accuracy"), "best_val_test": summary.get("test_accuracy_at_best_val"),
                    **cost})
    return out


def study_table(folder: Path, fmt: str = "terminal") -> str:
    """The table of the study whose record is in ``folder`` (runs not finished yet are left out)."""
    record = read_json(Path(folder) / RECORD)
    runs_dir, axes = Path(folder).resolve().parent.parent, list(record.get("axes", []))  # <runs>/studies/<name>
    shapes = ModelShapes()
    cells: Dict[tuple, List[Dict[str, Any]]] = defaultdict(list)
    order: Dict[tuple, int] = {}
    missing = 0
    for entry in record.get("runs", []):
        path = runs_dir / str(entry.get("run", ""))
        if entry.get("status") != "done" or not entry.get("run") or not path.is_dir():
            missing += 1
            continue
        try:
            results = run_results(path, shapes)
        except TicketlabError:
            missing += 1
            continue
        for result in results:
            key = (entry["label"], tuple(json.dumps(v) for _, v in entry["cell"]), result["branch"], result["level"])
            order.setdefault(key, len(order))
            cells[key].append(result)
    rows = []
    for key in sorted(cells, key=lambda k: order[k]):
        label, values, branch, level = key
        found = cells[key]
        rows.append([label, *[json.loads(v) for v in values], branch, level,
                     f"{100 * statistics.fmean(r['density'] for r in found):.2f}",
                     _mean_std([r["test"] for r in found]), _mean_std([r["best_val_test"] for r in found]),
                     len(found), _count(statistics.fmean(r["iterations"] for r in found)),
                     _count(statistics.fmean(r["examples"] for r in found)),
                     _flops(statistics.fmean(r["flops"] for r in found))])
    headers = ["method", *axes, "branch", "level", "density %", "test %", "test @ best val %", "seeds",
               "iterations", "examples", "train FLOPs"]
    table = render_table(headers, rows, fmt) if rows else "no finished runs yet"
    note = f"\n({missing} of {len(record['runs'])} runs not finished; run the sweep again)" if missing else ""
    return f"study {record['name']}\n{table}{note}" if fmt == "terminal" else table


def _mean_std(values: List[Optional[float]]) -> str:
    values = [100 * v for v in values if isinstance(v, (int, float))]
    if not values:
        return "-"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def is_study(path: Path) -> bool:
    return (Path(path) / RECORD).is_file()


__all__ = ["study_table", "run_results", "is_study"]
