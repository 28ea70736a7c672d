"""Figures for `ticketlab report`: accuracy against density and accuracy during training.

Accuracy against density, with experiments that differ only in label-noise rate on one figure, is the
sparse double-descent curve. Matplotlib is imported inside the functions (``import ticketlab`` stays
fast) and figures are `matplotlib.figure.Figure` objects on their own Agg canvas, never pyplot, so no
global state changes. Each plot function returns its Figure and, given a path stem, saves PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ticketlab.analysis.aggregate import AggRow
from ticketlab.analysis.rows import TRUNK, Row, collect, row_order
from ticketlab.errors import TicketlabError
from ticketlab.train.metrics import read_metrics

SUFFIXES = (".png", ".svg")
METRICS = {"final": ("final_test", "final test accuracy"),
           "best": ("best_val_test", "test accuracy at best validation")}


def output_files(stem: str | Path) -> List[Path]:
    """``out/acc``, ``out/acc.png`` or ``out/acc.svg`` -> ``[out/acc.png, out/acc.svg]``."""
    stem = Path(stem)
    if stem.suffix.lower() in SUFFIXES:
        stem = stem.with_suffix("")
    return [Path(f"{stem}{suffix}") for suffix in SUFFIXES]


def save_figure(fig, stem: str | Path) -> List[Path]:
    files = output_files(stem)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    for path in files:
        svg = path.suffix == ".svg"
        fig.savefig(path, dpi=150, metadata={"Date": None} if svg else None)
    return files


def format_percent(density: float) -> str:
    """0.1074 -> '10.7%', 1.0 -> '100%', 0.00115 -> '0.115%'."""
    return f"{100 * density:.3g}%"


def density_ticks(densities: Sequence[float], max_ticks: int = 9) -> List[float]:
    """Densities to label, largest first: a subset of those given, at most ``max_ticks``, evenly
    spaced in log scale (greedy: each at least the overall ratio ** (1 / (max_ticks - 1)) below the last)."""
    values = sorted({round(d, 12) for d in densities if d > 0}, reverse=True)
    if len(values) <= 1:
        return values
    ratio = (values[0] / values[-1]) ** (1 / (max_ticks - 1))
    ticks = [values[0]]
    for value in values[1:]:
        if ticks[-1] / value >= ratio * (1 - 1e-9):
            ticks.append(value)
    return ticks


def new_axes(size: Tuple[float, float] = (7.5, 4.8)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_accuracy_vs_density(agg: Sequence[AggRow], path_stem: Optional[str | Path] = None,
                             metric: str = "final"):
    """Test accuracy (%) against density on an inverted log axis (100% on the left), one line with
    error bars (std over seeds) per (experiment, branch). Returns the Figure; saves it when given a stem."""
    from matplotlib.ticker import NullLocator

    if metric not in METRICS:
        raise TicketlabError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    attr, what = METRICS[metric]
    series: Dict[Tuple[str, str], List[AggRow]] = {}
    for row in agg:
        if getattr(row, attr) is not None:
            series.setdefault((row.experiment, row.branch), []).append(row)
    if not series:
        raise TicketlabError(f"no {what} to plot: the runs have no test split")
    fig, ax = new_axes()
    common = _common_prefix(agg)  # in the title, so left out of the legend
    for (_, branch), points in series.items():
        points = sorted(points, key=lambda p: -p.density)
        label = points[0].label.removeprefix(common) + ("" if branch == TRUNK else f" / {branch}")
        ax.errorbar([100 * p.density for p in points], [100 * getattr(p, attr) for p in points],
                    yerr=[100 * getattr(p, attr + "_std") for p in points], marker="o", markersize=4, capsize=3,
                    linestyle="-" if branch == TRUNK else "--", label=f"{label} (n={max(p.n for p in points)})")
    densities = [p.density for points in series.values() for p in points]
    ax.set_xscale("log")
    ticks = density_ticks(densities)
    ax.set_xticks([100 * t for t in ticks], [format_percent(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(100 * max(densities) * 1.15, 100 * min(densities) / 1.15)  # inverted: sparser to the right
    ax.set_xlabel("density (% of prunable weights kept, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{common.strip()}: {what} vs density" if common else f"{what} vs density")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if path_stem is not None:
        save_figure(fig, path_stem)
    return fig


def plot_training_curves(source: Sequence[Row] | Sequence[str | Path], path_stem: Optional[str | Path] = None,
                         split: str = "test"):
    """Accuracy (%) against epoch, one line per trunk level (coloured by level) of the first experiment:
    the mean over its seeds, with the seeds' range shaded when there are several. ``source``: rows from
    `collect`, or paths to collect from."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.ticker import MaxNLocator

    rows = list(source) if source and all(isinstance(r, Row) for r in source) else collect(source)
    trunk = sorted((r for r in rows if r.branch == TRUNK), key=row_order)
    if not trunk:
        raise TicketlabError("no finished levels to draw training curves for; run `ticketlab lottery` first")
    first = trunk[0]
    by_level: Dict[int, List[Row]] = {}
    for r in trunk:
        if r.experiment == first.experiment:
            by_level.setdefault(r.level, []).append(r)
    seeds = sorted({r.seed for runs in by_level.values() for r in runs})
    norm = Normalize(0, max(max(by_level), 1))
    cmap = ListedColormap(colormaps["viridis"](np.linspace(0, 0.85, 256)))  # without the pale yellow end
    fig, ax = new_axes()
    for level, runs in sorted(by_level.items()):
        epochs, values = seed_curves(runs, split)
        if not epochs:
            continue
        color = cmap(norm(level))
        ax.plot(epochs, values.mean(0), color=color, linewidth=1.3,
                label=f"level {level} ({format_percent(runs[0].density)})")
        if len(values) > 1:
            ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} accuracy (%)")
    who = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of {len(seeds)} seeds, range shaded"
    ax.set_title(f"{first.label}, {who}: {split} accuracy during training")
    ax.grid(True, alpha=0.3)
    if len(by_level) > 10:
        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="level")
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    elif ax.lines:
        ax.legend(fontsize="small", title="level (density)")
    if path_stem is not None:
        save_figure(fig, path_stem)
    return fig


def seed_curves(runs: Sequence[Row], split: str, value: str = "accuracy"):
    """(epochs, ``value`` in % with one row per run) at the epochs every run recorded ``split``."""
    import numpy as np

    curves = []
    for r in runs:
        records = read_metrics(r.metrics_file) if r.metrics_file.is_file() else []
        curve = {rec["epoch"]: 100 * rec[value] for rec in records
                 if rec.get("split") == split and rec.get(value) is not None}
        if curve:
            curves.append(curve)
    if not curves:
        return [], np.zeros((0, 0))
    epochs = sorted(set.intersection(*(set(c) for c in curves)))
    return epochs, np.array([[c[e] for e in epochs] for c in curves])


def has_mask_records(row: Row) -> bool:
    """Whether a row's metrics hold ``"mask"`` records (a method whose mask changes logs them)."""
    return any(r.get("split") == "mask" for r in _records(row))


def cycle_records(row: Row) -> List[dict]:
    """A row's records of models taken per cycle (Sup-tickets' pre-train model, tickets, superposed models):
    those with a ``cycle`` and a ``test_accuracy``."""
    return [r for r in _records(row) if "cycle" in r and r.get("test_accuracy") is not None]


def _records(row: Row) -> List[dict]:
    return read_metrics(row.metrics_file) if row.metrics_file.is_file() else []


def _groups(rows: Sequence[Row], keep, missing: str) -> Dict[Tuple[str, str], List[Row]]:
    """The rows ``keep`` accepts, by (experiment, branch) in report order; `TicketlabError` ``missing`` if none."""
    groups: Dict[Tuple[str, str], List[Row]] = {}
    for r in sorted(rows, key=row_order):
        if keep(r):
            groups.setdefault((r.experiment, r.branch), []).append(r)
    if not groups:
        raise TicketlabError(missing)
    return groups


def plot_cycle_accuracy(rows: Sequence[Row], path_stem: Optional[str | Path] = None):
    """Test accuracy (%) of the models a run takes per cycle against the cycle, one colour per experiment
    and one marker per kind of model (e.g. pre-train end, cheap ticket, superposed), means over seeds."""
    import numpy as np

    groups = _groups(rows, cycle_records, "no per-cycle records to plot: none of these runs takes models per cycle")
    fig, ax = new_axes()
    markers = {}
    for index, ((_, branch), runs) in enumerate(groups.items()):
        color = f"C{index % 10}"
        by_kind: Dict[str, Dict[int, List[float]]] = {}
        for r in runs:
            for rec in cycle_records(r):
                by_kind.setdefault(rec["split"], {}).setdefault(rec["cycle"], []).append(100 * rec["test_accuracy"])
        for kind, points in by_kind.items():
            marker = markers.setdefault(kind, "os^Dvx"[len(markers) % 6])
            cycles = sorted(points)
            ax.plot(cycles, [np.mean(points[c]) for c in cycles], color=color, marker=marker, linewidth=1,
                    linestyle="-" if kind == "superposed" else ":",
                    label=f"{runs[0].label}{'' if branch == TRUNK else ' / ' + branch}: {kind} (n={len(runs)})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cycle")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("models taken per cycle")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if path_stem is not None:
        save_figure(fig, path_stem)
    return fig


def plot_mask_dynamics(rows: Sequence[Row], path_stem: Optional[str | Path] = None):
    """Density and the fraction of weights ever active (Liu et al.'s in-time over-parameterisation) against
    epoch, from the ``"mask"`` records of the rows' metrics: one line per (experiment, branch), the mean
    over its seeds with their range shaded. Returns the Figure; saves it when given a stem."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _groups(rows, has_mask_records,
                     "no mask records to plot: none of these runs changes its mask during training")
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for (_, branch), runs in groups.items():
        label = runs[0].label + ("" if branch == TRUNK else f" / {branch}") + f" (n={len(runs)})"
        for ax, value in zip(axes, ("density", "explored")):
            epochs, values = seed_curves(runs, "mask", value)
            if not epochs:
                continue
            line, = ax.plot(epochs, values.mean(0), marker=".", markersize=3, linewidth=1.2, label=label)
            if len(values) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15, linewidth=0)
    for ax, what in zip(axes, ("density (% of prunable weights kept)", "explored (% of weights ever active)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
    axes[0].set_title("density during training")
    axes[1].set_title("topology explored")
    axes[1].legend(fontsize="small")
    if path_stem is not None:
        save_figure(fig, path_stem)
    return fig


def _common_prefix(agg: Sequence[AggRow]) -> str:
    pairs = {(a.dataset, a.model) for a in agg}
    return f"{next(iter(pairs))[0]} {next(iter(pairs))[1]} " if len(pairs) == 1 else ""
