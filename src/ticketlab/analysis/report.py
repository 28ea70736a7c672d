"""`ticketlab report`: average the rows of `collect` over seeds, render them, draw the plots.

Accuracies and densities are fractions in `AggRow` and percentages in the rendered output.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ticketlab.analysis.rows import Row, branch_order, collect, experiment_order
from ticketlab.errors import ConfigError, TicketlabError

FORMATS = ("terminal", "md", "csv", "json")


@dataclass(frozen=True)
class AggRow:
    """Mean and sample std (0 for one seed) over the seeds of one (experiment, branch, level)."""

    experiment: str
    label: str
    branch: str
    level: int
    mode: str
    noise: str
    noise_rate: float
    dataset: str
    model: str
    n: int
    seeds: Tuple[int, ...]
    density: float
    density_std: float
    final_test: Optional[float]
    final_test_std: Optional[float]
    best_val_test: Optional[float]
    best_val_test_std: Optional[float]


def aggregate(rows: Sequence[Row]) -> List[AggRow]:
    """Group by (experiment, branch, level); sorted by experiment, branch (trunk first), level."""
    groups: Dict[tuple, List[Row]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.branch, row.level), []).append(row)
    out = []
    for (_, branch, level), group in groups.items():
        first = group[0]
        density, density_std = _mean_std([r.density for r in group])
        final, final_std = _mean_std([r.final_test for r in group])
        best, best_std = _mean_std([r.best_val_test for r in group])
        out.append(AggRow(first.experiment, first.label, branch, level, first.mode, first.noise, first.noise_rate,
                          first.dataset, first.model, len(group), tuple(sorted(r.seed for r in group)),
                          density, density_std, final, final_std, best, best_std))
    return sorted(out, key=lambda a: (experiment_order(a), branch_order(a.branch), a.level))


def _mean_std(values: Iterable[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


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
    return render_table(headers, cells, fmt)


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """Where the CLI writes plots by default: ``<first path>/report``."""
    return Path(paths[0]) / "report"


def report_main(paths: Sequence[str | Path], fmt: str = "terminal", plot: Optional[str | Path] = None,
                curves: Optional[str | Path] = None, out_dir: Optional[str | Path] = None,
                metric: str = "final") -> str:
    """The report text; writes plots (PNG and SVG each) when asked.

    ``plot``/``curves``: a path stem or a .png/.svg path for the accuracy-vs-density figure and the
    training-curve figure. ``out_dir``: write both there (``accuracy_vs_density``, ``training_curves``)
    unless given explicitly. Notes (skipped folders, files written) follow the table for terminal/md
    and go to stderr for csv/json, which stay parseable.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    rows = collect(paths)
    if not rows:
        unfinished = f" ({len(rows.skipped)} unfinished or unreadable skipped)" if rows.skipped else ""
        raise TicketlabError(f"no finished runs under {', '.join(map(str, paths))}{unfinished}; "
                             "run `ticketlab lottery` first")
    agg = aggregate(rows)
    text, notes = render(agg, fmt), []
    if rows.skipped:
        notes.append(f"skipped {len(rows.skipped)} unfinished or unreadable level(s)/branch(es)/run(s): "
                     + ", ".join(str(p) for p in rows.skipped[:3]) + (" ..." if len(rows.skipped) > 3 else ""))
    if out_dir is not None:
        plot = plot if plot is not None else Path(out_dir) / "accuracy_vs_density"
        curves = curves if curves is not None else Path(out_dir) / "training_curves"
    if plot is not None or curves is not None:
        from ticketlab.analysis import plots

        for stem, draw in ((plot, lambda s: plots.plot_accuracy_vs_density(agg, s, metric=metric)),
                           (curves, lambda s: plots.plot_training_curves(rows, s))):
            if stem is not None:
                draw(stem)
                notes.append("wrote " + ", ".join(map(str, plots.output_files(stem))))
    if notes and fmt in ("terminal", "md"):
        text += "\n\n" + "\n".join(notes)
    elif notes:
        print("\n".join(notes), file=sys.stderr)
    return text
