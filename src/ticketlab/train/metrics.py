"""`metrics.jsonl`: one JSON object per evaluation and split, appended as training goes.

A resumed run first cuts the file back to the lines its checkpoint knew about, so evaluations done
after the last checkpoint of a killed run are not recorded twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ticketlab import distributed


class MetricsLog:
    def __init__(self, path: Optional[Path], trackers: Sequence[Any] = (), phase: str = ""):
        """``trackers`` (`ticketlab.train.trackers.Tracker`) get every appended record, as ``phase``."""
        self.path = path
        self.records: List[Dict[str, Any]] = []
        self.trackers, self.phase = tuple(trackers), phase

    @property
    def lines(self) -> int:
        return len(self.records)

    def append(self, **record: Any) -> None:
        self.records.append(record)
        if not distributed.is_writer():
            return
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        for tracker in self.trackers:
            tracker.log(record, phase=self.phase, folder=self.path.parent if self.path is not None else None)

    def truncate(self, lines: int) -> None:
        """Keep the first ``lines`` records (in memory and on disk)."""
        if self.path is not None and self.path.exists():
            self.records = read_metrics(self.path)[:lines]
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records)
            from ticketlab.io import atomic_write_bytes

            atomic_write_bytes(self.path, text.encode())
        else:
            self.records = self.records[:lines]


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    """Records of a metrics file; a torn last line (killed mid-write) is ignored."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records
