"""Figures for `ticketlab report`: accuracy against density and accuracy during training.

Accuracy against density, with experiments that differ only in label-noise rate on one figure, is the
sparse double-descent curve. Matplotlib is imported inside the functions (``import ticketlab`` stays
fast) and figures are `matplotlib.figure.Figure` objects on their own Agg canvas, never pyplot, so no
global state changes. Each plot function returns its Figure and, given a path stem, saves PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

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


def save_figure(fig, stem: str | Path, svg: Optional[bool] = True) -> List[Path]:
    """``fig`` as PNG and SVG (``svg=False``: PNG only; None: the SVG only where one exists already, so a
    redrawn figure never leaves a stale one); returns the files written."""
    files = output_files(stem)
    if svg is False or (svg is None and not files[1].exists()):
        files = files[:1]
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


def density_axis(ax, densities: Sequence[float]) -> None:
    """``ax``'s x-axis as densities (%) on an inverted log scale, 100% on the left, a subset labelled."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ticks = density_ticks(densities)
    ax.set_xticks([100 * t for t in ticks], [format_percent(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(100 * max(densities) * 1.15, 100 * min(densities) / 1.15)  # inverted: sparser to the right


def seed_label(counts: Iterable[int]) -> str:
    """A series' seed counts in its legend entry: '(n=3)', or '(n=1-3)' when its points differ."""
    counts = sorted(set(counts))
    return f"(n={counts[0]})" if len(counts) == 1 else f"(n={counts[0]}-{counts[-1]})"


def error_key(several: bool, error: str = "std") -> str:
    """The legend title: what the error bars are (``error``: a key of `ERRORS`), or that there are none."""
    return f"mean ± {ERRORS[error]} over n seeds" if several else "one seed per point: no error bars"


# Okabe-Ito: told apart with colour blindness; each series also has its own marker and line style, so a
# greyscale print keeps them apart too.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = "osD^vPX*"
FONT = {"title": 12, "label": 11, "tick": 10, "legend": 9.5, "note": 9}
# how figure legends name lottery retraining modes and branches (others keep their names)
MODES = {"train": "dense training", "rewind": "IMP, rewind to {point}", "lr-rewind": "IMP, learning-rate rewinding",
         "finetune": "IMP, fine-tuning", "scratch": "IMP, new initialisation each level"}
BRANCHES = {"reinit": "random reinit branch", "random-prune": "random pruning branch",
            "retrain": "retrain branch", "reorder": "reordered data branch", "oneshot": "one-shot pruning branch"}
ERRORS = {"std": "std", "sem": "standard error"}


def new_axes(size: Tuple[float, float] = (6.4, 4.6)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.tick_params(labelsize=FONT["tick"])
    ax.grid(True, alpha=0.3)
    return fig, ax


def label_axes(ax, xlabel: str, ylabel: str, title: Optional[str] = None) -> None:
    ax.set_xlabel(xlabel, fontsize=FONT["label"])
    ax.set_ylabel(ylabel, fontsize=FONT["label"])
    if title:
        ax.set_title(wrap(title), fontsize=FONT["title"])


def wrap(text: str, width: int = 68) -> str:
    """A title broken into lines of at most ``width`` characters, so none is cut off at the figure's edges."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def outside_legend(fig, handles, labels, title: Optional[str] = None, where: str = "lower center"):
    """The legend outside the axes (below them, or right of them), never over a data point."""
    ncols = 1 if "right" in where or len(labels) < 3 else 2
    return fig.legend(handles, labels, loc=f"outside {where}", ncols=ncols, fontsize=FONT["legend"],
                      title=title, title_fontsize=FONT["legend"], frameon=False)


def mode_name(mode: str, rewind: str = "") -> str:
    """'rewind' with rewind point '0it' -> 'IMP, rewind to init'; '2ep' -> 'IMP, rewind to epoch 2'."""
    if mode not in MODES:
        return mode
    if mode == "rewind" and not rewind:
        return "IMP, weight rewinding"
    return MODES[mode].format(point=rewind_point(rewind)) if mode == "rewind" else MODES[mode]


def rewind_point(text: str) -> str:
    from ticketlab.steps import Steps

    steps = Steps.parse(text)
    if steps.is_zero:
        return "init"
    if not steps.it:
        return f"epoch {steps.ep}"
    return f"iteration {steps.it}" if not steps.ep else f"epoch {steps.ep} + {steps.it} iterations"


def branch_name(branch: str) -> str:
    """'reinit' -> 'random reinit branch'; a label made unique by its options keeps them."""
    name, _, rest = branch.partition(" ")
    return BRANCHES.get(name, f"{name} branch") + (f" {rest}" if rest else "")


def experiment_name(row, with_data: bool = True) -> str:
    """An experiment's name in a figure: its label with the mode made readable ("digits mlp rewind noise
    symmetric 20%" -> "digits mlp IMP, rewind to init, noise symmetric 20%"); without the data set and model
    when the title says them (``with_data=False``)."""
    data = f"{row.dataset} {row.model} "
    rest = row.label.removeprefix(data)
    if rest.startswith(row.mode):
        tail = rest.removeprefix(row.mode).strip()
        name = mode_name(row.mode, row.rewind)
        rest = name if not tail else f"{name} {tail}" if tail[0] in "([" else f"{name}, {tail}"
    return (data if with_data and row.label.startswith(data) else "") + rest


def series_name(row, branch: str = TRUNK) -> str:
    """A row's experiment (`experiment_name`, in full), and its branch unless it is the trunk."""
    name = experiment_name(row)
    return name if branch == TRUNK else f"{name}: {branch_name(branch)}"


def data_groups(agg: Sequence[AggRow]) -> Dict[Tuple[str, str], List[AggRow]]:
    """The rows by (data set, model), in report order: each pair gets a figure of its own."""
    groups: Dict[Tuple[str, str], List[AggRow]] = {}
    for row in agg:
        groups.setdefault((row.dataset, row.model), []).append(row)
    return groups


def dodge(index: int, count: int, densities: Sequence[float]) -> float:
    """The factor that shifts series ``index`` of ``count`` along the log density axis, so error bars at one
    density sit side by side: a fraction of the smallest gap between densities, centred on the true one."""
    import math

    if count < 2:
        return 1.0
    logs = sorted({round(math.log10(d), 9) for d in densities if d > 0})
    gap = min((b - a for a, b in zip(logs, logs[1:])), default=0.1)
    step = min(0.012, 0.3 * gap / (count - 1))
    return 10 ** ((index - (count - 1) / 2) * step)


def plot_accuracy_vs_density(agg: Sequence[AggRow], path_stem: Optional[str | Path] = None,
                             metric: str = "final", error: str = "std"):
    """Test accuracy (%) against density on an inverted log axis (100% on the left) for one data set and
    model: one line per (experiment, branch), its mean over seeds with error bars (``error``: "std" or
    "sem" over the seeds; none for one seed), the series offset a little sideways so bars do not overlap.
    Several data sets or models: draw each of `data_groups` on its own. Returns the Figure; saves it when
    given a stem."""
    import math

    if metric not in METRICS:
        raise TicketlabError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    if error not in ERRORS:
        raise TicketlabError(f"unknown error measure {error!r}; choose one of: {', '.join(ERRORS)}")
    pairs = data_groups(agg)
    if len(pairs) > 1:
        raise TicketlabError("these rows hold " + ", ".join(f"{d} {m}" for d, m in pairs) + "; draw one figure per "
                             "data set and model (`ticketlab.analysis.plots.data_groups`)")
    attr, what = METRICS[metric]
    series: Dict[Tuple[str, str], List[AggRow]] = {}
    for row in agg:
        if getattr(row, attr) is not None:
            series.setdefault((row.experiment, row.branch), []).append(row)
    if not series:
        raise TicketlabError(f"no {what} to plot: the runs have no test split")
    fig, ax = new_axes()
    dataset, model = next(iter(pairs))
    densities = [p.density for points in series.values() for p in points]
    one_experiment = len({e for e, _ in series}) == 1
    several = any(p.n > 1 for points in series.values() for p in points)  # seeds: error bars, offset
    handles, labels = [], []
    for index, ((_, branch), points) in enumerate(series.items()):
        points = sorted(points, key=lambda p: -p.density)
        name = experiment_name(points[0], with_data=False)  # the title says them
        if branch != TRUNK:
            name = branch_name(branch) if one_experiment else f"{name}: {branch_name(branch)}"
        name += " " + seed_label(p.n for p in points)
        spread = [100 * getattr(p, attr + "_std") / (math.sqrt(p.n) if error == "sem" else 1) for p in points]
        shift = dodge(index, len(series), densities) if several else 1.0
        container = ax.errorbar([100 * p.density * shift for p in points], [100 * getattr(p, attr) for p in points],
                                yerr=spread if max(p.n for p in points) > 1 else None,
                                color=PALETTE[index % len(PALETTE)], marker=MARKERS[index % len(MARKERS)],
                                markersize=5, capsize=3, linewidth=1.5, elinewidth=1,
                                linestyle="-" if branch == TRUNK else "--")
        handles.append(container)
        labels.append(name)
    density_axis(ax, densities)
    ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))  # no room above 100% (one point autoscales past it)
    label_axes(ax, "density (% of prunable weights kept, log scale)", f"{what} (%)",
               f"{dataset} {model}: {what} vs density")
    key = error_key(several, error)
    if several and len(series) > 1:
        key += "; series offset sideways for legibility"
    outside_legend(fig, handles, labels, title=key)
    if path_stem is not None:
        save_figure(fig, path_stem)
    return fig


def curve_experiments(rows: Sequence[Row]) -> List[str]:
    """The experiments with trunk rows, the one with the most levels first (a lottery before a single
    training of the same data), then in report order."""
    levels: Dict[str, set] = {}
    for r in sorted(rows, key=row_order):
        if r.branch == TRUNK:
            levels.setdefault(r.experiment, set()).add(r.level)
    return sorted(levels, key=lambda e: -len(levels[e]))  # stable: report order among equals


def plot_training_curves(source: Sequence[Row] | Sequence[str | Path], path_stem: Optional[str | Path] = None,
                         split: str = "test", experiment: Optional[str] = None):
    """Accuracy (%) against epoch, one line per trunk level (coloured by level) of one experiment (its key;
    default: the first of `curve_experiments`), evaluations marked: the mean over its seeds, with the
    seeds' range shaded when there are several. The y-axis spans the evaluations after the first (the
    untrained model's accuracy would squash the endings together; the title says where it lies).
    ``source``: rows from `collect`, or paths to collect from."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.ticker import MaxNLocator

    rows = list(source) if source and all(isinstance(r, Row) for r in source) else collect(source)
    order = curve_experiments(rows)
    if not order:
        raise TicketlabError("no finished levels to draw training curves for; run `ticketlab lottery` first")
    if experiment is None:
        experiment = order[0]
    elif experiment not in order:
        raise TicketlabError(f"no finished levels of experiment {experiment!r}; choose one of: {', '.join(order)}")
    by_level: Dict[int, List[Row]] = {}
    for r in sorted(rows, key=row_order):
        if r.experiment == experiment and r.branch == TRUNK:
            by_level.setdefault(r.level, []).append(r)
    first = next(iter(by_level.values()))[0]
    seeds = sorted({r.seed for runs in by_level.values() for r in runs})
    norm = Normalize(0, max(max(by_level), 1))
    cmap = ListedColormap(colormaps["viridis"](np.linspace(0, 0.85, 256)))  # without the pale yellow end
    fig, ax = new_axes((6.4, 4.6))
    later, initial = [], []  # accuracies after the first evaluation, and at it
    for level, runs in sorted(by_level.items()):
        epochs, values = seed_curves(runs, split)
        if not epochs:
            continue
        color = cmap(norm(level))
        mean = values.mean(0)
        ax.plot(epochs, mean, color=color, linewidth=1.3, marker="o", markersize=3,
                label=f"level {level} ({format_percent(runs[0].density)})")
        if len(values) > 1:
            ax.fill_between(epochs, values.min(0), values.max(0), color=color, alpha=0.15, linewidth=0)
        lows, highs = values.min(0), values.max(0)
        initial.append(float(lows[0]))
        later.extend([float(lows[1:].min()), float(highs[1:].max())] if len(epochs) > 1 else [])
    who = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of {len(seeds)} seeds, range shaded"
    if later:
        low, high = min(later), max(later)
        pad = max(0.5, 0.08 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(high + pad, 100 + pad / 4))  # room for markers at 100%
        hidden = [v for v in initial if v < low - pad]
        if hidden:
            span = f"{min(hidden):.0f}%" if round(min(hidden)) == round(max(hidden)) else \
                f"{min(hidden):.0f}-{max(hidden):.0f}%"
            who += f"; epoch 0 (untrained): {span}, below the axis"
    label_axes(ax, "epoch", f"{split} accuracy (%)")
    data = f"{first.dataset} {first.model}"
    fig.suptitle(wrap(f"{data}, {experiment_name(first, with_data=False)}: {split} accuracy during training"),
                 fontsize=FONT["title"])
    ax.set_title(who, fontsize=FONT["note"])
    if len(by_level) > 10:
        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="level")
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        bar.ax.tick_params(labelsize=FONT["tick"])
        bar.set_label("level", fontsize=FONT["label"])
    elif ax.lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=FONT["legend"],
                  title="level (density)", title_fontsize=FONT["legend"], frameon=False)  # beside the data
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
        color = PALETTE[index % len(PALETTE)]
        by_kind: Dict[str, Dict[int, List[float]]] = {}
        for r in runs:
            for rec in cycle_records(r):
                by_kind.setdefault(rec["split"], {}).setdefault(rec["cycle"], []).append(100 * rec["test_accuracy"])
        for kind, points in by_kind.items():
            marker = markers.setdefault(kind, "os^Dvx"[len(markers) % 6])
            cycles = sorted(points)
            ax.plot(cycles, [np.mean(points[c]) for c in cycles], color=color, marker=marker, linewidth=1,
                    linestyle="-" if kind == "superposed" else ":",
                    label=f"{series_name(runs[0], branch)}: {kind} (n={len(runs)})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    label_axes(ax, "cycle", "test accuracy (%)", "test accuracy of the models taken per cycle")
    outside_legend(fig, *ax.get_legend_handles_labels(), title="mean over n seeds")
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
        label = f"{series_name(runs[0], branch)} (n={len(runs)})"
        for ax, value in zip(axes, ("density", "explored")):
            epochs, values = seed_curves(runs, "mask", value)
            if not epochs:
                continue
            line, = ax.plot(epochs, values.mean(0), marker=".", markersize=3, linewidth=1.2, label=label)
            if len(values) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15, linewidth=0)
    for ax, what, title in zip(axes, ("density (% of prunable weights kept)", "explored (% of weights ever active)"),
                               ("density during training", "topology explored")):
        ax.tick_params(labelsize=FONT["tick"])
        ax.grid(True, alpha=0.3)
        label_axes(ax, "epoch", what, title)
    outside_legend(fig, *axes[0].get_legend_handles_labels(), title="mean over n seeds, range shaded")
    if path_stem is not None:
        save_figure(fig, path_stem)
    return fig
