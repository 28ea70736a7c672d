"""Seed averages of report rows: one `AggRow` per (experiment, branch, level)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ticketlab.analysis.rows import Row, branch_order, experiment_order


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
    corrupted: Optional[float] = None  # mean over seeds of the mean corrupted test accuracy (`ticketlab eval`)
    corrupted_std: Optional[float] = None
    rewind: str = ""  # see `Row.rewind`


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
        corrupted, corrupted_std = _mean_std([r.corrupted for r in group])
        out.append(AggRow(first.experiment, first.label, branch, level, first.mode, first.noise, first.noise_rate,
                          first.dataset, first.model, len(group), tuple(sorted(r.seed for r in group)),
                          density, density_std, final, final_std, best, best_std, corrupted, corrupted_std,
                          first.rewind))
    return sorted(out, key=lambda a: (experiment_order(a), branch_order(a.branch), a.level))


def _mean_std(values: Iterable[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0
