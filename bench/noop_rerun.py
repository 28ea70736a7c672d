"""The fixed cost of a command with nothing to do: a finished lottery job run again, as a whole process,
against the interpreter starting and importing ticketlab (what no command can avoid), side by side.

The job: `ticketlab lottery --preset digits_mlp --levels 3 --threads N` (finished once before timing).
Wall time (``--clock cpu``: the processes' CPU time), median of interleaved rounds.

    python bench/noop_rerun.py [--repeats 5] [--threads 1] [--clock wall]
"""

from __future__ import annotations

import sys
import tempfile

import common


def main() -> None:
    p = common.parser(__doc__, repeats=5, clock="wall")  # a whole process: the time one waits for
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        job = [sys.executable, "-m", "ticketlab", "lottery", "--preset", "digits_mlp", "--levels", "3", "--runs-dir",
               runs, "--threads", str(args.threads), "--device", "cpu", "--progress", "none"]
        imports = [sys.executable, "-c", "import ticketlab.cli, ticketlab.methods"]
        samples = common.interleaved({"python + import ticketlab": lambda: common.command_seconds(imports),
                                      "no-op rerun": lambda: common.command_seconds(job)}, args.repeats)
    times = {k: v[args.clock] for k, v in samples.items()}
    med = {k: common.median(v) for k, v in times.items()}
    ratio = med["no-op rerun"] / med["python + import ticketlab"]
    rows = [[k, f"{v:.2f}"] for k, v in med.items()]
    title = common.header(f"a finished lottery job run again, whole process, {args.clock} seconds (median)",
                          args.threads)
    common.finish(args, "noop_rerun", title, ["process", f"{args.clock} s"], rows,
                  f"no-op rerun / interpreter + import: {ratio:.2f} (target <= 1.3)",
                  {"clock": args.clock, "times": times, "ratio": ratio})


if __name__ == "__main__":
    main()
