"""A sweep on the local pool against the same runs one after another.

The study: ``--runs`` LeNet-300-100 runs on MNIST (`mnist_lenet_300_100`, ``--epochs`` epochs each,
seeds 0..runs-1), each on one thread. "one after another" is ``ticketlab sweep --workers 1`` (the runs
in this process, in turn, as a user's loop over the commands would), "pool" is ``--workers 2`` (spawned
worker processes, start-up included). Each case starts from an empty runs folder; the two alternate
``--repeats`` times. Reported: wall time of each (median) and the ratio pool / one after another, which
on two free cores should be at most 0.6. Real MNIST from ``../shared/data/mnist`` or ``--mnist``; without
it the digits set (much smaller runs, so start-up weighs more).

    python bench/sweep_pool.py [--runs 4] [--epochs 10] [--repeats 2] [--mnist DIR]
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import common
from ticketlab.sweep import sweep_main

DEFAULT_MNIST = common.REPO.parent / "shared" / "data" / "mnist"

STUDY = """
name = "pool-bench"
command = "train"
preset = "{preset}"
seeds = {runs}
[fields]
train.steps = "{epochs}ep"
{root}
"""


def timed(study: Path, workers: int) -> float:
    with tempfile.TemporaryDirectory() as runs:
        began = time.perf_counter()
        code = sweep_main(str(study), runs, workers=workers, device="cpu", threads=1, out=io.StringIO())
        seconds = time.perf_counter() - began
    if code != 0:
        raise SystemExit(f"the sweep failed (exit {code})")
    return seconds


def main() -> None:
    p = common.parser(__doc__, repeats=2)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    args = p.parse_args()
    common.set_threads(args.threads)
    real = (args.mnist / "train-images-idx3-ubyte.gz").exists() or (args.mnist / "train-images-idx3-ubyte").exists()
    preset, root = ("mnist_lenet_300_100", f'data.root = "{args.mnist}"') if real else ("digits_mlp", "")
    if not real:
        print(f"no MNIST in {args.mnist}: timing digits_mlp runs instead")
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "study.toml"
        study.write_text(STUDY.format(preset=preset, runs=args.runs, epochs=args.epochs, root=root))
        timed(study, 1)  # warm-up: the decoded-data cache, imports
        times = {"one after another": [], "pool, 2 workers": []}
        for _ in range(args.repeats):
            times["one after another"].append(timed(study, 1))
            times["pool, 2 workers"].append(timed(study, 2))
            common.print_row([f"{k} {v[-1]:.1f} s" for k, v in times.items()])
    serial, pool = (statistics.median(v) for v in times.values())
    ratios = common.paired_ratios(times["pool, 2 workers"], times["one after another"])
    ratio = statistics.median(ratios)
    rows = [["one after another", f"{serial:.1f}", "1.00"], ["pool, 2 workers", f"{pool:.1f}", f"{ratio:.2f}"]]
    title = common.header(f"sweep of {args.runs} {preset} runs of {args.epochs} epochs, wall time", args.threads)
    verdict = f"pool / one after another: {ratio:.2f} (target <= 0.6)"
    common.finish(args, "sweep_pool", title, ["case", "wall s (median)", "ratio"], rows, verdict,
                  {"times": times, "ratio": ratio, "preset": preset, "runs": args.runs, "epochs": args.epochs})


if __name__ == "__main__":
    main()
