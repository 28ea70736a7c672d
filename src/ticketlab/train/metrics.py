"""`metrics.jsonl`: one JSON object per evaluation and split, appended as training goes.

A resumed run first cuts the file back to the lines its checkpoint knew about, so evaluations done
after the last checkpoint of a killed run are not recorded twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from ticketlab import distributed
from ticketlab.errors import CheckpointError


class MetricsLog:
    def __init__(self, path: Optional[Path]):
        self.path = path
        self.records: List[Dict[str, Any]] = []

    @property
    def lines(self) -> int:
        return len(self.records)

    def append(self, **record: Any) -> None:
        self.records.append(record)
        if self.path is not None and distributed.is_writer():
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

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
    """Records of a metrics file; a torn last line (killed mid-write) is ignored. A line that is JSON but
    not a record (an object with a step and a split) is a `CheckpointError`: the file was damaged."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not (isinstance(record, dict) and isinstance(record.get("step"), int) and "split" in record):
            raise CheckpointError(f"{path} line {number} is not a metrics record (a JSON object with a step and a "
                                  f"split); restore the file, or remove {path.parent} and run the command again to "
                                  "train that phase again")
        records.append(record)
    return records
