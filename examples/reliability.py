"""Reliability of runs against kills, damaged files and concurrent commands, through the installed CLI.

1. Kills: each job (a 3-level lottery, an rst-iter run, a train run, all on small built-in data) runs once
   uninterrupted as the reference; then, for each of ``--kills`` points spread evenly over the
   reference's wall time, a fresh copy of the job is started, killed with SIGKILL at that point, and run
   again to the end. The resumed run directory must equal the reference file by file: weights and masks
   tensor by tensor, JSON by value (wall-clock ``*_seconds`` left out), everything else byte by byte (the
   manifest, which records times and the command line, and the report's figures excepted).
2. Damaged files: every file of a finished lottery run, and the checkpoint of a killed one, is damaged
   three ways (one byte flipped in the middle, cut to half, replaced by garbage), then the command runs
   again. Each outcome is one of: refused in one line with exit 2; repaired (exit 0, every file equal to
   the reference's); not read (exit 0, only the damaged file differs: the command did not need it);
   silently different (exit 0, another result); a traceback.
3. Concurrency: two identical commands started together; ``runs rm`` while the run trains.

    python examples/reliability.py [--kills 20] [--jobs lottery,rst-iter,train] [--work /tmp/reliability]

Measured run time: about 25 minutes on two cores (see the README, "Reliability"). Prints one table per part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch

JOBS = {
    "lottery": ["lottery", "--preset", "digits_mlp", "--levels", "3"],
    "rst-iter": ["rst", "--preset", "mnist1d_cnn_rst", "--variant", "rst-iter", "--rst.num-cycles", "2",
                 "--train.steps", "1ep", "--rst.reg-granularity", "0.05", "--rst.stabilize-reg-interval", "10it"],
    "train": ["train", "--preset", "digits_mlp", "--train.steps", "30ep"],
}
UNCOMPARED = ("manifest.json", "report/")  # times and the command line; figures are drawn from the rest
SKIPPED = (".tmp", ".sha256")  # a checksum record follows its file, which is compared (its times aside)


def command(args: List[str], runs: Path) -> List[str]:
    """The CLI command line of ``args`` on one thread, its runs in ``runs``, no progress bars."""
    return [sys.executable, "-m", "ticketlab", *args, "--threads", "1", "--runs-dir", str(runs), "--progress", "none"]


def ticketlab(args: List[str], runs: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command(args, runs), capture_output=True, text=True, timeout=timeout)


def files_of(runs: Path) -> Dict[str, Path]:
    return {str(p.relative_to(runs)): p for p in sorted(runs.rglob("*")) if p.is_file()
            and not any(part in str(p.relative_to(runs)) for part in UNCOMPARED) and not p.name.endswith(SKIPPED)}


def same_file(a: Path, b: Path) -> bool:
    try:
        if a.suffix == ".pt":
            x, y = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
            return equal(x, y)
        if a.suffix == ".json":
            return without_times(json.loads(a.read_text())) == without_times(json.loads(b.read_text()))
    except Exception:  # noqa: BLE001  (a damaged file left in place: not the same)
        return False
    return a.read_bytes() == b.read_bytes()


def without_times(value):
    """A summary with its wall-clock durations (``*_seconds``) left out: they are not results."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def equal(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(equal(a, b) for a, b in zip(x, y))
    return x == y


def differences(reference: Path, runs: Path) -> List[str]:
    """Relative paths that differ between two runs folders (missing or extra files included). A checkpoint
    left in a finished phase is reported as extra."""
    ref, got = files_of(reference), files_of(runs)
    out = sorted(set(ref) ^ set(got))
    out += [name for name in sorted(set(ref) & set(got)) if not same_file(ref[name], got[name])]
    return out


def timed_reference(job: str, work: Path) -> Tuple[Path, float]:
    runs = work / job / "reference"
    shutil.rmtree(runs, ignore_errors=True)
    began = time.perf_counter()
    done = ticketlab(JOBS[job], runs)
    if done.returncode:
        raise SystemExit(f"the reference {job} run failed: {done.stderr.strip().splitlines()[-1:]}")
    return runs, time.perf_counter() - began


def reference(job: str, work: Path) -> Path:
    """The reference runs of ``job`` (made first when missing): what every other part compares against."""
    runs = work / job / "reference"
    return runs if runs.exists() else timed_reference(job, work)[0]


def kill_at(job: str, runs: Path, delay: float) -> None:
    process = subprocess.Popen(command(JOBS[job], runs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def kills(job: str, work: Path, count: int) -> Dict:
    reference, seconds = timed_reference(job, work)
    startup = 1.5  # interpreter and torch import: a kill before it tests nothing
    points = [startup + (seconds - startup) * (i + 0.5) / count for i in range(count)]
    survived, failures = 0, []
    for i, delay in enumerate(points):
        runs = work / job / f"kill_{i}"
        shutil.rmtree(runs, ignore_errors=True)
        kill_at(job, runs, delay)
        resumed = ticketlab(JOBS[job], runs)
        diff = differences(reference, runs) if resumed.returncode == 0 else [resumed.stderr.strip()[-200:]]
        if not diff:
            survived += 1
            shutil.rmtree(runs)
        else:
            failures.append((round(delay, 2), diff[:3]))
    return {"job": job, "reference_s": round(seconds, 1), "kills": count, "bit_identical": survived, "failures": failures}


DAMAGES = {
    "flip": lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0x5A]) + b[len(b) // 2 + 1:] if b else b"\x00",
    "truncate": lambda b: b[: len(b) // 2],
    "garbage": lambda b: os.urandom(max(16, len(b))),
}


def outcome(done: subprocess.CompletedProcess, reference: Path, runs: Path, damaged: str) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    if "Traceback" in done.stderr:
        return "traceback"
    if done.returncode == 2 and len(lines) == 1:
        return "refused in one line"
    if done.returncode == 0:
        diff = differences(reference, runs)
        if not diff:
            return "repaired (exit 0, result equal)"
        return "not read (exit 0, result equal)" if diff == [damaged] else "silently different"
    return f"exit {done.returncode}, {len(lines)} lines"


def try_damage(source: Path, name: str, kind: str, reference: Path, work: Path) -> str:
    """The outcome of the lottery job run again on a copy of ``source`` whose file ``name`` is damaged
    the ``kind`` way (`DAMAGES`)."""
    runs = work / "damage"
    shutil.rmtree(runs, ignore_errors=True)
    shutil.copytree(source, runs)
    target = runs / name
    target.write_bytes(DAMAGES[kind](target.read_bytes()))
    return outcome(ticketlab(JOBS["lottery"], runs), reference, runs, name)


def partly_trained(work: Path) -> Tuple[Path, List[str]]:
    """A lottery run killed as soon as a level has a checkpoint, and that checkpoint (none if it finished
    first)."""
    partial = work / "partial"
    shutil.rmtree(partial, ignore_errors=True)
    process = subprocess.Popen(command(JOBS["lottery"], partial), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = []
    while process.poll() is None and not checkpoints:
        checkpoints = sorted(partial.rglob("checkpoint.pt"))
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return partial, [str(c.relative_to(partial)) for c in checkpoints[:1]]


def damages(work: Path) -> Dict:
    finished = reference("lottery", work)
    partial, checkpoints = partly_trained(work)
    counts: Dict[str, int] = {}
    cases = []
    for source, names in ((finished, list(files_of(finished))), (partial, checkpoints)):
        for name in names:
            for kind in DAMAGES:
                result = try_damage(source, name, kind, finished, work)
                counts[result] = counts.get(result, 0) + 1
                if result in ("traceback", "silently different") or result.startswith("exit"):
                    cases.append((name, kind, result))
    return {"damaged": sum(counts.values()), "outcomes": counts, "cases": cases}


def concurrency(work: Path) -> Dict:
    finished = reference("lottery", work)
    runs = work / "concurrent"
    shutil.rmtree(runs, ignore_errors=True)
    job = command(JOBS["lottery"], runs)
    both = [subprocess.Popen(job, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read().strip()) for p in both]
    two = {"exit codes": sorted(code for code, _ in results),
           "messages": [err.splitlines()[-1] for code, err in results if code and err],
           "result equals the reference": not differences(finished, runs)}
    # runs rm while the run trains
    shutil.rmtree(runs, ignore_errors=True)
    training = subprocess.Popen(job, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dirs = []
    for _ in range(3000):  # until level 1 trains (its first checkpoint): mid-run, with levels 2 and 3 to come
        run_dirs = [p.parent.parent for p in runs.glob("*/level_1/checkpoint.pt")]
        if run_dirs or training.poll() is not None:
            break
        time.sleep(0.01)
    removed = subprocess.run([sys.executable, "-m", "ticketlab", "runs", "rm", str(run_dirs[0]) if run_dirs else "none",
                              "--runs-dir", str(runs)], capture_output=True, text=True)
    code = training.wait()
    leftovers = sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) if runs.exists() else []
    rm = {"rm exit": removed.returncode, "rm says": (removed.stderr or removed.stdout).strip().splitlines()[-1:],
          "trainer exit": code, "trainer says": training.stderr.read().strip().splitlines()[-1:],
          "left without config.json": [p for p in leftovers if p.count("/") == 1 and not (runs / p.split("/")[0] / "config.json").exists()][:5]}
    return {"two identical commands": two, "runs rm during training": rm}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--jobs", default=",".join(JOBS))
    p.add_argument("--parts", default="kills,damages,concurrency")
    p.add_argument("--work", type=Path, default=Path("/tmp/reliability"))
    args = p.parse_args()
    unknown = set(args.jobs.split(",")) - set(JOBS)
    if unknown:
        p.error(f"unknown job(s) {', '.join(sorted(unknown))}; choose from {', '.join(JOBS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    report = {}
    parts = args.parts.split(",")
    if "kills" in parts:
        report["kills"] = [kills(job, args.work, args.kills) for job in args.jobs.split(",")]
        for row in report["kills"]:
            print(f"kills  {row['job']:<9} {row['bit_identical']}/{row['kills']} resumed bit-identically "
                  f"(reference {row['reference_s']} s)", flush=True)
            for failure in row["failures"]:
                print(f"       killed at {failure[0]} s: {failure[1]}", flush=True)
    if "damages" in parts:
        report["damages"] = damages(args.work)
        print(f"damages {report['damages']['damaged']} damaged files: {report['damages']['outcomes']}")
        for case in report["damages"]["cases"]:
            print(f"        {case}")
    if "concurrency" in parts:
        report["concurrency"] = concurrency(args.work)
        print("concurrency", json.dumps(report["concurrency"], indent=1))
    (args.work / "reliability.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
