"""The study record, ``<runs-dir>/studies/<name>/study.json``: every planned run with its run directory,
options and status, rewritten (atomically) after each run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ticketlab.io import read_json, write_json
from ticketlab.sweep.study import PlannedRun, Study

RECORD = "study.json"


def study_dir(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir) / "studies" / name


def read_record(folder: Path) -> Dict[str, Dict[str, Any]]:
    """The study record's entries by run key (empty for a new study)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    raw = read_json(path)
    entries = raw.get("runs", []) if isinstance(raw, dict) else []
    return {e["key"]: e for e in entries if isinstance(e, dict) and "key" in e}


def write_record(folder: Path, study: Study, runs_dir: Path, entries: Dict[str, Dict[str, Any]]) -> None:
    write_json(Path(folder) / RECORD, {"name": study.name, "source": str(study.source), "axes": list(study.axes),
                                       "runs_dir": str(runs_dir), "runs": [entries[r.key] for r in study.runs]})


def entry_of(run: PlannedRun, runs_dir: Path, previous: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    path = run.directory(runs_dir)
    same = previous is not None and previous.get("run") == path.name and previous.get("options") == run.options
    status = previous["status"] if same else "planned"
    if status == "done" and not path.is_dir():
        status = "planned"  # removed since: run it again
    return {"key": run.key, "label": run.label, "cell": [list(c) for c in run.cell], "seed": run.seed,
            "command": run.command, "run": path.name, "options": run.options, "status": status,
            **({"seconds": previous["seconds"]} if same and "seconds" in previous else {})}


__all__ = ["RECORD", "study_dir", "read_record", "write_record", "entry_of"]
