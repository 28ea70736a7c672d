"""`metrics.jsonl`: one JSON object per evaluation and split, appended as training goes.

The file is appended to, not rewritten, so it has no checksum record; the trainer's checkpoint carries
the records it covers instead. A resumed run rewrites the file from them (`MetricsLog.restore`):
evaluations done after the last checkpoint of a killed run are not recorded twice, and history lost to
a damaged file is put back, with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ticketlab import distributed
from ticketlab.io import DamagedFileError
from ticketlab.logs import logger


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
        """Keep the first ``lines`` records (in memory and on disk): what a checkpoint without its
        records (an older version's) gives; missing lines are reported, not silently dropped."""
        if self.path is not None and self.path.exists():
            kept = read_metrics(self.path, strict=False)[:lines]
            if len(kept) < lines and distributed.is_writer():
                logger.warning(f"{self.path} holds only {len(kept)} readable lines of the {lines} its checkpoint "
                               "covers (the file was damaged); the history after them is lost")
            self._rewrite(kept)
        else:
            self.records = self.records[:lines]

    def restore(self, records: Sequence[Dict[str, Any]]) -> None:
        """Make the log hold exactly ``records`` (a checkpoint's), rewriting the file; a file whose first
        lines differ from them was damaged and is repaired, with a warning."""
        records = [dict(r) for r in records]
        if self.path is not None and self.path.exists():
            on_disk = read_metrics(self.path, strict=False)[:len(records)]
            if on_disk != records and distributed.is_writer():
                logger.warning(f"{self.path} did not match the {len(records)} records of its checkpoint (the file "
                               "was damaged); rewritten from the checkpoint")
        self._rewrite(records)

    def _rewrite(self, records: List[Dict[str, Any]]) -> None:
        self.records = records
        if self.path is not None:
            from ticketlab.io import atomic_write_bytes

            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
            atomic_write_bytes(self.path, text.encode(), checksum=False)


def read_metrics(path: Path, strict: bool = True) -> List[Dict[str, Any]]:
    """The records of a metrics file, up to a torn last line (killed mid-write), which is ignored.
    Anything else unreadable (binary garbage, a line that is not a JSON object) raises a one-line
    `DamagedFileError` when ``strict``; otherwise the records before it are returned."""
    lines = Path(path).read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("step"), int) and "split" in record):
            torn = number == len(lines)  # the last line, without its newline
            if strict and not torn:
                raise DamagedFileError(path, f"{path} line {number} is not a metrics record (a JSON object with a "
                                             "step and a split); delete the summary.json beside it and run the "
                                             "command that made the run again, which trains that phase again") from None
            break
        records.append(record)
    return records
