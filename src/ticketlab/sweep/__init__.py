"""`ticketlab sweep STUDY.toml`: expand a study (`study`), skip what is finished, run the rest on an
executor (`execute`), keep the study's record (`record`) and print its table (`report`).

The record, ``<runs-dir>/studies/<name>/study.json``, lists every planned run with its run directory and
status; a run counts as finished when the record says so and its directory is still there. Runs are the
commands' own run directories, so `ticketlab report`, `eval` and `runs` see them as any other run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ticketlab.errors import ConfigError
from ticketlab.runs import run_status
from ticketlab.sweep.execute import EXECUTORS, Job, executor_for
from ticketlab.sweep.record import RECORD, entry_of, read_record, study_dir, write_record
from ticketlab.sweep.study import Study, describe, find_duplicates, load_study

def sweep_main(study_file: str, runs_dir: str = "runs", executor: str = "local", workers: int = 2,
               dry_run: bool = False, device: str = "auto", threads: int = 1, partition: Optional[str] = None,
               gpus: int = 0, minutes: int = 60, out=None, imports: Sequence[str] = ()) -> int:
    """Plan, skip, run; returns the exit status (1 when a run failed). ``out``: where it prints (default: the
    ``sys.stdout`` of the call, not of the import). ``imports``: the ``--import`` modules, imported again
    by every worker."""
    out = sys.stdout if out is None else out
    if workers < 1 or threads < 1 or gpus < 0 or minutes < 1:
        raise ConfigError("--workers, --threads and --time must be at least 1 and --gpus-per-job at least 0")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    from ticketlab.methods.context import resolve_device

    if executor == "local":
        resolve_device(device)  # a bad --device fails here, not in every worker
    study, runs = load_study(Path(study_file)), Path(runs_dir)
    clash = find_duplicates(study, runs)
    if clash:
        raise ConfigError(clash)
    folder = study_dir(runs, study.name)
    previous = read_record(folder)
    entries = {r.key: entry_of(r, runs, previous.get(r.key)) for r in study.runs}
    todo = [r for r in study.runs if entries[r.key]["status"] != "done"]
    if dry_run:
        print(plan_table(study, entries, runs), file=out)
        print(f"{len(study.runs)} runs, {len(study.runs) - len(todo)} finished, {len(todo)} to run; record: "
              f"{folder / RECORD}", file=out)
        return 0
    write_record(folder, study, runs, entries)
    print(f"study {study.name}: {len(study.runs)} runs, {len(study.runs) - len(todo)} finished, {len(todo)} to run "
          f"on {executor}" + (f" ({workers} workers)" if executor == "local" else ""), file=out, flush=True)
    imports = tuple(str(Path(m).resolve()) if m.endswith(".py") else m for m in imports)
    jobs = [Job(r.key, r.command, r.config.to_dict(), r.options, str(runs.resolve()), device, threads, imports)
            for r in todo]
    run_on = executor_for(executor, workers, folder / "submitit", partition, gpus, minutes)
    failed: List[str] = []
    for count, result in enumerate(run_on(jobs), 1):
        entry = entries[result["key"]]
        what = f"{entry['label']} {describe(entry['cell'], entry['seed'])}"
        if "error" in result:
            entry["status"], entry["error"] = "failed", result["error"]
            failed.append(what)
            print(f"[{count}/{len(jobs)}] {what}: failed: {result['error'].strip().splitlines()[-1]}", file=out,
                  flush=True)
        else:
            entry.update(status="done", seconds=result["seconds"])
            entry.pop("error", None)
            print(f"[{count}/{len(jobs)}] {what}: done in {result['seconds']:.0f} s ({entry['run']})", file=out,
                  flush=True)
        write_record(folder, study, runs, entries)
    from ticketlab.sweep.report import plot_study, study_table

    print(study_table(folder), file=out)
    if plot_study(folder) is not None:
        print(f"wrote {folder / 'accuracy_vs_cost'}.png, .svg", file=out)
    if failed:
        print(f"ticketlab: {len(failed)} run(s) failed ({'; '.join(failed)}); the errors are in {folder / RECORD}; "
              "fix them and run the sweep again (finished runs are kept)", file=out)
        return 1
    return 0


def plan_table(study: Study, entries: Dict[str, Dict[str, Any]], runs_dir: Path) -> str:
    from ticketlab.analysis.table import render_table

    rows = []
    for run in study.runs:
        entry = entries[run.key]
        path = runs_dir / entry["run"]
        state = "done" if entry["status"] == "done" else (run_status(path) if path.is_dir() else "new")
        rows.append([run.label, *[str(v) for _, v in run.cell], run.seed, entry["run"], state])
    return render_table(["method", *study.axes, "seed", "run", "status"], rows)


__all__ = ["sweep_main", "study_dir", "read_record", "RECORD"]
