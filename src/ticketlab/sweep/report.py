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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ticketlab.analysis.flops import layer_positions, phase_cost
from ticketlab.analysis.table import format_mean_std, render_table
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
        level, trains = int(row.get("level", 0)), costs[folder]["iterations"] > 0

        def needed(f: Path, r: Optional[Mapping]) -> bool:
            if r is None or f == folder:  # a shared phase (pre-training to the rewind point), its own
                return True
            trunk_level = int(r.get("level", 0)) if r.get("branch") == TRUNK else None
            if trunk_level is not None and trunk_level < level:  # the levels its mask comes from
                return True
            # a phase it lies inside: a Pools result needs its level trained; a branch that retrains does not
            return f in folder.parents and not (trains and trunk_level == level)

        parts = [f for f, _, r in phases if needed(f, r)]
        cost = {k: sum(costs[f][k] for f in parts) for k in ("iterations", "examples", "flops")}
        density = row.get("density")
        out.append({"branch": str(row.get("branch", TRUNK)), "level": level,
                    "density": float(summary.get("density") if density is None else density),
                    "test": summary.get("final_test_accuracy"), "best_val_test": summary.get("test_accuracy_at_best_val"),
                    **cost})
    return out


@dataclass
class StudyCell:
    """The results of one method, grid cell, branch and level over the seeds that finished."""

    label: str
    cell: Tuple[Any, ...]  # the grid values, in the order of the axes
    branch: str
    level: int
    results: List[Dict[str, Any]]

    def mean(self, key: str) -> float:
        return statistics.fmean(r[key] for r in self.results)

    def accuracy(self, key: str = "test") -> Tuple[Optional[float], float]:
        """Mean and std (0 for one seed) of a test accuracy, in %; (None, 0) when no run has it."""
        values = [100 * r[key] for r in self.results if isinstance(r[key], (int, float))]
        if not values:
            return None, 0.0
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def study_cells(folder: Path) -> Tuple[Dict[str, Any], List[StudyCell], int, List[str]]:
    """The record of the study in ``folder``, its cells in plan order, how many runs are not finished,
    and the finished runs that could not be read (left out, with why)."""
    record = read_json(Path(folder) / RECORD)
    runs_dir = Path(folder).resolve().parent.parent  # <runs>/studies/<name>
    shapes = ModelShapes()
    cells: Dict[tuple, StudyCell] = {}
    missing, unreadable = 0, []
    for entry in record.get("runs", []):
        path = runs_dir / str(entry.get("run", ""))
        if entry.get("status") != "done" or not entry.get("run") or not path.is_dir():
            missing += 1
            continue
        try:
            results = run_results(path, shapes)
        except TicketlabError as exc:
            unreadable.append(f"{path.name}: {exc}")
            continue
        values = tuple(v for _, v in entry["cell"])
        for result in results:
            key = (entry["label"], json.dumps(values), result["branch"], result["level"])
            if key not in cells:
                cells[key] = StudyCell(entry["label"], values, result["branch"], result["level"], [])
            cells[key].results.append(result)
    return record, list(cells.values()), missing, unreadable


def study_table(folder: Path, fmt: str = "terminal") -> str:
    """The table of the study whose record is in ``folder`` (runs not finished yet are left out)."""
    record, cells, missing, unreadable = study_cells(folder)
    rows = []
    for c in cells:
        rows.append([c.label, *c.cell, c.branch, c.level, f"{100 * c.mean('density'):.2f}",
                     format_mean_std(*c.accuracy("test"), len(c.results)),
                     format_mean_std(*c.accuracy("best_val_test"), len(c.results)), len(c.results),
                     _count(c.mean("iterations")), _count(c.mean("examples")), _flops(c.mean("flops"))])
    headers = ["method", *record.get("axes", []), "branch", "level", "density %", "test %", "test @ best val %",
               "seeds", "iterations", "examples", "train FLOPs"]
    table = render_table(headers, rows, fmt) if rows else "no finished runs yet"
    note = f"\n({missing} of {len(record.get('runs', []))} runs not finished; run the sweep again)" if missing else ""
    note += "".join(f"\n(left out, unreadable: {why})" for why in unreadable)
    return f"study {record.get('name', '?')}\n{table}{note}" if fmt == "terminal" else table


def plot_study(folder: Path, path_stem: Optional[Path] = None):
    """Test accuracy against density and against training FLOPs (both log scales), one line with error
    bars (std over seeds) per method, grid cell and branch: which method is best at a density, and at
    what cost. Saved (PNG and SVG) to ``path_stem`` (default ``<folder>/accuracy_vs_cost``); returns the
    Figure, or None when nothing has finished."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ticketlab.analysis.plots import (FONT, MARKERS, PALETTE, branch_name, density_axis, error_key, label_axes,
                                          outside_legend, save_figure, seed_label)

    record, cells, _, _ = study_cells(folder)
    series: Dict[tuple, List[StudyCell]] = defaultdict(list)
    for c in cells:
        if c.accuracy()[0] is not None:
            series[c.label, c.cell, c.branch].append(c)
    if not series:
        return None
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    by_density, by_cost = fig.subplots(1, 2, sharey=True)
    axes = record.get("axes", [])
    handles, names = [], []
    for index, ((label, cell, branch), points) in enumerate(series.items()):
        points = sorted(points, key=lambda c: c.level)
        seeds = sorted({len(p.results) for p in points})
        name = " ".join([label, *(f"{a}={v}" for a, v in zip(axes, cell))])
        name += ("" if branch == TRUNK else f": {branch_name(branch)}") + " " + seed_label(seeds)
        means, stds = zip(*(p.accuracy() for p in points))
        style = dict(marker=MARKERS[index % len(MARKERS)], markersize=5, capsize=3,
                     color=PALETTE[index % len(PALETTE)], linestyle="-" if branch == TRUNK else "--",
                     yerr=stds if seeds[-1] > 1 else None)
        handles.append(by_density.errorbar([100 * p.mean("density") for p in points], means, **style))
        by_cost.errorbar([p.mean("flops") for p in points], means, **style)
        names.append(name)
    densities = [p.mean("density") for points in series.values() for p in points]
    density_axis(by_density, densities)
    by_cost.set_xscale("log")
    label_axes(by_density, "density (% of prunable weights kept, log scale)", "final test accuracy (%)")
    label_axes(by_cost, "training FLOPs to make the result (log scale)", "")
    for ax in (by_density, by_cost):
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=FONT["tick"])
    several = any(len(p.results) > 1 for points in series.values() for p in points)
    outside_legend(fig, handles, names, title=error_key(several))
    fig.suptitle(f"study {record.get('name', '?')}: final test accuracy by density and by cost",
                 fontsize=FONT["title"])
    save_figure(fig, path_stem if path_stem is not None else Path(folder) / "accuracy_vs_cost")
    return fig


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def is_study(path: Path) -> bool:
    return (Path(path) / RECORD).is_file()


__all__ = ["study_table", "study_cells", "plot_study", "run_results", "is_study"]
