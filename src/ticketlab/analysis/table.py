"""Plain tables for the terminal, markdown and CSV."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence


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
