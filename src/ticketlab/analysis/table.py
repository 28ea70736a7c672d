"""Plain tables for the terminal, markdown and CSV."""

from __future__ import annotations

import csv
import io
from typing import Any, Optional, Sequence


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "terminal") -> str:
    cells = [[str(c) for c in row] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(cells)
        return out.getvalue().rstrip("\n")
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    if fmt == "md":
        line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
        return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, cells)])


def format_mean_std(mean: Optional[float], std: Optional[float], n: int, scale: float = 1) -> str:
    """'97.00 ± 1.41': mean ± std over ``n`` seeds, each times ``scale`` (100 for fractions); the mean
    alone for one seed (it has no spread); '-' without a mean."""
    if mean is None:
        return "-"
    return f"{scale * mean:.2f}" if n < 2 else f"{scale * mean:.2f} ± {scale * std:.2f}"
