"""The fixed cost of a command with nothing to do: a finished lottery job run again, as a whole process,
against the interpreter starting and importing ticketlab (what no command can avoid), side by side.

The job: `ticketlab lottery --preset digits_mlp --levels 3` (finished once before timing). Wall time,
median of interleaved rounds.

    python bench/noop_rerun.py [--repeats 5]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

import common


def wall(command) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    args = common.parser(__doc__, repeats=5).parse_args()
    with tempfile.TemporaryDirectory() as runs:
        job = [sys.executable, "-m", "ticketlab", "lottery", "--preset", "digits_mlp", "--levels", "3", "--runs-dir",
               runs, "--threads", "1", "--device", "cpu", "--progress", "none"]
        imports = [sys.executable, "-c", "import ticketlab.cli, ticketlab.methods"]
        wall(job)  # the job itself, once
        times = {"python + import ticketlab": [], "no-op rerun": []}
        for _ in range(args.repeats):
            times["python + import ticketlab"].append(wall(imports))
            times["no-op rerun"].append(wall(job))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["no-op rerun"] / med["python + import ticketlab"]
    rows = [[k, f"{v:.2f}"] for k, v in med.items()]
    title = common.header("a finished lottery job run again, whole process, wall seconds (median)", args.threads)
    common.finish(args, "noop_rerun", title, ["process", "wall s"], rows,
                  f"no-op rerun / interpreter + import: {ratio:.2f} (target <= 1.3)", {"times": times, "ratio": ratio})


if __name__ == "__main__":
    main()
