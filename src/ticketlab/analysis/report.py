"""`ticketlab report`: the rows of `collect` averaged over seeds (`aggregate`), rendered, and the plots.

Accuracies and densities are fractions in `AggRow` and percentages in the rendered output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional, Sequence

from ticketlab.analysis.aggregate import AggRow, aggregate
from ticketlab.analysis.rows import collect
from ticketlab.errors import ConfigError, TicketlabError
from ticketlab.logs import logger

FORMATS = ("terminal", "md", "csv", "json")


def _pct(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(100 * value, 6)


def render(agg: Sequence[AggRow], fmt: str = "terminal") -> str:
    """A table (terminal, md, csv) or a JSON list of the aggregated rows (percentages)."""
    from ticketlab.analysis.table import format_mean_std, render_table

    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt in ("csv", "json"):
        records = [{"experiment": a.label, "experiment_key": a.experiment, "level": a.level,
                    "density_pct": _pct(a.density), "density_pct_std": _pct(a.density_std), "mode": a.mode,
                    "branch": a.branch, "noise": a.noise, "noise_rate": a.noise_rate,
                    "final_test_pct": _pct(a.final_test), "final_test_pct_std": _pct(a.final_test_std),
                    "best_val_test_pct": _pct(a.best_val_test), "best_val_test_pct_std": _pct(a.best_val_test_std),
                    "corrupted_test_pct": _pct(a.corrupted), "corrupted_test_pct_std": _pct(a.corrupted_std),
                    "n": a.n, "seeds": list(a.seeds)} for a in agg]
        if fmt == "json":
            return json.dumps(records, indent=2)
        headers = list(records[0]) if records else ["experiment"]
        cells = [["" if v is None else ",".join(map(str, v)) if isinstance(v, list) else v for v in r.values()]
                 for r in records]
        return render_table(headers, cells, "csv")
    headers = ["experiment", "level", "density %", "mode", "branch", "final test %", "test @ best val %", "n"]
    cells = [[a.label, a.level, f"{100 * a.density:.2f}", a.mode, a.branch, format_mean_std(a.final_test, a.final_test_std, a.n, 100),
              format_mean_std(a.best_val_test, a.best_val_test_std, a.n, 100), a.n] for a in agg]
    if any(a.corrupted is not None for a in agg):  # scored by `ticketlab eval --corruptions`
        headers.insert(-1, "corrupted test %")
        for a, row in zip(agg, cells):
            row.insert(-1, format_mean_std(a.corrupted, a.corrupted_std, a.n, 100))
    return render_table(headers, cells, fmt)


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """Where the CLI writes plots by default: ``<first path>/report``."""
    return Path(paths[0]) / "report"


def figure_stems(stem: str | Path, keys: Sequence[str]) -> List[Path]:
    """One path stem per figure: ``stem`` itself for a single figure, else ``stem_<key>`` with the key made
    a file name ("digits mlp" -> ``accuracy_vs_density_digits_mlp``), unique."""
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    if len(keys) == 1:
        return [stem]
    out: List[Path] = []
    for key in keys:
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", key).strip("_") or "figure"
        name, n = f"{stem.name}_{slug}", 2
        while stem.with_name(name) in out:
            name, n = f"{stem.name}_{slug}_{n}", n + 1
        out.append(stem.with_name(name))
    return out


def plots_current(run: Path, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds this run's report plots, written after every result they show (a
    rerun of a finished command then writes no plot: nothing it draws has changed)."""
    plots = list(Path(out_dir).glob("*.png")) if Path(out_dir).is_dir() else []
    if not plots:
        return False
    written = min(p.stat().st_mtime_ns for p in plots)
    sources = [p for name in ("summary.json", "corruptions.json") for p in Path(run).rglob(name)]
    return all(p.stat().st_mtime_ns <= written for p in sources)


def report_main(paths: Sequence[str | Path], fmt: str = "terminal", plot: Optional[str | Path] = None,
                curves: Optional[str | Path] = None, out_dir: Optional[str | Path] = None,
                metric: str = "final", svg: Optional[bool] = True) -> str:
    """The report text; writes plots (PNG and SVG each) when asked.

    ``plot``/``curves``: a path stem or a .png/.svg path for the accuracy-vs-density figure (one per data
    set and model: ``<stem>_<data set>_<model>`` when there are several) and the training-curve figure
    (one per experiment: ``<stem>_<experiment>`` when there are several). ``out_dir``: write both there
    (``accuracy_vs_density``, ``training_curves``) unless given explicitly, ``mask_dynamics`` (density and
    explored fraction during training) when some run changes its mask, and ``cycle_accuracy`` when some run
    takes models per cycle (Sup-tickets). ``svg``: each figure's SVG too (False: PNG only; None: only where
    one exists, as run commands draw: `ticketlab report` writes both). Notes (the error measure, skipped
    folders, files written) follow the table for terminal/md and go to stderr for csv/json, which stay
    parseable.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    rows = collect(paths)
    if not rows:
        unfinished = f" ({len(rows.skipped)} unfinished or unreadable skipped)" if rows.skipped else ""
        if rows.outdated:
            unfinished += f" ({len(rows.outdated)} from before report rows: run their command again)"
        raise TicketlabError(f"no finished runs under {', '.join(map(str, paths))}{unfinished}; "
                             "run `ticketlab lottery` first")
    agg = aggregate(rows)
    text, notes = render(agg, fmt), []
    if fmt in ("terminal", "md") and any(a.n > 1 for a in agg):
        notes.append("accuracies: mean ± std (sample standard deviation) over the n seeds")
    if rows.outdated:
        notes.append(f"{len(rows.outdated)} run(s) predate report rows and are not shown: "
                     + ", ".join(str(p) for p in rows.outdated[:3]) + "; run their command again to add the "
                     "rows (finished phases do not train again)")
    if rows.skipped:
        notes.append(f"skipped {len(rows.skipped)} unfinished or unreadable level(s)/branch(es)/run(s): "
                     + ", ".join(str(p) for p in rows.skipped[:3]) + (" ..." if len(rows.skipped) > 3 else ""))
    masks = cycles = None
    if out_dir is not None:
        plot = plot if plot is not None else Path(out_dir) / "accuracy_vs_density"
        curves = curves if curves is not None else Path(out_dir) / "training_curves"
        masks, cycles = Path(out_dir) / "mask_dynamics", Path(out_dir) / "cycle_accuracy"
    if plot is not None or curves is not None:
        from ticketlab.analysis import plots

        if masks is not None and not any(plots.has_mask_records(r) for r in rows):
            masks = None  # no run changes its mask: no such figure
        if cycles is not None and not any(plots.cycle_records(r) for r in rows):
            cycles = None
        figures = []  # (stem, draw) of every figure to write
        if plot is not None:  # one per data set and model: their accuracies do not share an axis
            groups = plots.data_groups(agg)
            for stem, rows_of in zip(figure_stems(plot, [f"{d} {m}" for d, m in groups]), groups.values()):
                figures.append((stem, lambda g=rows_of: plots.plot_accuracy_vs_density(g, metric=metric)))
        if curves is not None:  # one per experiment, the lottery's first
            experiments = plots.curve_experiments(rows)
            labels = {r.experiment: r.label for r in rows}
            for stem, key in zip(figure_stems(curves, [labels[e] for e in experiments]), experiments):
                figures.append((stem, lambda k=key: plots.plot_training_curves(rows, experiment=k)))
        for stem, draw in ((masks, lambda: plots.plot_mask_dynamics(rows)),
                           (cycles, lambda: plots.plot_cycle_accuracy(rows))):
            if stem is not None:
                figures.append((stem, draw))
        for stem, draw in figures:
            notes.append("wrote " + ", ".join(map(str, plots.save_figure(draw(), stem, svg))))
    if notes and fmt in ("terminal", "md"):
        text += "\n\n" + "\n".join(notes)
    elif notes:
        logger.info("\n".join(notes))
    return text
