"""`ticketlab report`: the rows of `collect` averaged over seeds (`aggregate`), rendered, and the plots.

Accuracies and densities are fractions in `AggRow` and percentages in the rendered output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ticketlab.analysis.aggregate import AggRow, aggregate
from ticketlab.analysis.rows import collect
from ticketlab.errors import ConfigError, TicketlabError
from ticketlab.logs import logger

FORMATS = ("terminal", "md", "csv", "json")


def _pct(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(100 * value, 6)


def _pm(mean: Optional[float], std: Optional[float]) -> str:
    return "-" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def render(agg: Sequence[AggRow], fmt: str = "terminal") -> str:
    """A table (terminal, md, csv) or a JSON list of the aggregated rows (percentages)."""
    from ticketlab.analysis.table import render_table

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
    cells = [[a.label, a.level, f"{100 * a.density:.2f}", a.mode, a.branch, _pm(a.final_test, a.final_test_std),
              _pm(a.best_val_test, a.best_val_test_std), a.n] for a in agg]
    if any(a.corrupted is not None for a in agg):  # scored by `ticketlab eval --corruptions`
        headers.insert(-1, "corrupted test %")
        for a, row in zip(agg, cells):
            row.insert(-1, _pm(a.corrupted, a.corrupted_std))
    return render_table(headers, cells, fmt)


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """Where the CLI writes plots by default: ``<first path>/report``."""
    return Path(paths[0]) / "report"


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
                metric: str = "final") -> str:
    """The report text; writes plots (PNG and SVG each) when asked.

    ``plot``/``curves``: a path stem or a .png/.svg path for the accuracy-vs-density figure and the
    training-curve figure. ``out_dir``: write both there (``accuracy_vs_density``, ``training_curves``)
    unless given explicitly, ``mask_dynamics`` (density and explored fraction during training) when some
    run changes its mask, and ``cycle_accuracy`` when some run takes models per cycle (Sup-tickets). Notes (skipped folders, files written) follow the table for terminal/md
    and go to stderr for csv/json, which stay parseable.
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
        for stem, draw in ((plot, lambda s: plots.plot_accuracy_vs_density(agg, s, metric=metric)),
                           (curves, lambda s: plots.plot_training_curves(rows, s)),
                           (masks, lambda s: plots.plot_mask_dynamics(rows, s)),
                           (cycles, lambda s: plots.plot_cycle_accuracy(rows, s))):
            if stem is not None:
                draw(stem)
                notes.append("wrote " + ", ".join(map(str, plots.output_files(stem))))
    if notes and fmt in ("terminal", "md"):
        text += "\n\n" + "\n".join(notes)
    elif notes:
        logger.info("\n".join(notes))
    return text
