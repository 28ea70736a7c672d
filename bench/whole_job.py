"""OpenLTH's job shape as one `ticketlab lottery` process, against the sum of what it cannot avoid.

The job: LeNet-300-100 on MNIST, SGD 0.1, batch 128, 4 levels (0-3) of 2 epochs, test set evaluated every
epoch (`openlth_mnist_lenet_300_100` with `--train.steps 2ep --levels 3`), as a whole process from an
empty runs folder. Its limit, measured in the same run: the interpreter starting and importing torch and
ticketlab and building a first torch optimizer (which imports ``torch._dynamo``), plus the same number of
bare training steps (a plain loop over in-memory tensors: index a batch, forward, cross-entropy, backward,
SGD step, then the masks multiplied into weights) and the same number of bare evaluation passes over the
test set (`inference_mode`, batches of 1024). Reported: the ratio job / limit (target at most 1.15). Wall
time (``--clock cpu``: CPU time), median of interleaved rounds; ``--threads`` torch threads for both
(default one); ``--bare-heap steady`` gives the bare loop the steady C heap a run command sets.

    python bench/whole_job.py [--repeats 3] [--threads 1] [--clock wall] [--mnist DIR] [--bare-heap default]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F

import common
from ticketlab.config import ModelConfig
from ticketlab.models import build_model

DEFAULT_MNIST = common.REPO.parent / "shared" / "data" / "mnist"
LEVELS, EPOCHS, BATCH, TRAIN, TEST = 4, 2, 128, 60000, 10000


def job(mnist: Path, threads: int) -> Dict[str, float]:
    """The job from an empty runs folder."""
    with tempfile.TemporaryDirectory() as runs:
        return common.command_seconds(
            [sys.executable, "-m", "ticketlab", "lottery", "--preset", "openlth_mnist_lenet_300_100",
             "--data.root", str(mnist), "--train.steps", f"{EPOCHS}ep", "--levels", str(LEVELS - 1),
             "--runs-dir", runs, "--threads", str(threads), "--device", "cpu", "--progress", "none"])


def bare_work(threads: int) -> Dict[str, float]:
    """The job's training steps and evaluation passes in a plain loop (random MNIST-shaped tensors)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(TRAIN, 784, generator=g), torch.randint(0, 10, (TRAIN,), generator=g)
    tx, ty = torch.randn(TEST, 784, generator=g), torch.randint(0, 10, (TEST,), generator=g)
    model = build_model(ModelConfig(name="lenet_300_100"), (784,), 10, seed=0)
    masks = [torch.rand(p.shape, generator=g) < 0.5 for p in model.parameters() if p.dim() > 1]
    weights = [p for p in model.parameters() if p.dim() > 1]
    steps = -(-TRAIN // BATCH)
    with common.Clock() as clock:
        for _ in range(LEVELS):
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for epoch in range(EPOCHS + 1):  # an evaluation before training and after every epoch
                with torch.inference_mode():
                    for start in range(0, TEST, 1024):
                        logits = model(tx[start:start + 1024])
                        F.cross_entropy(logits, ty[start:start + 1024], reduction="sum")
                        (logits.argmax(1) == ty[start:start + 1024]).sum()
                if epoch == EPOCHS:
                    break
                order = torch.randperm(TRAIN, generator=g)
                for b in range(steps):
                    index = order[b * BATCH:(b + 1) * BATCH]
                    loss = F.cross_entropy(model(x[index]), y[index])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        torch._foreach_mul_(weights, masks)
    return clock.seconds()


def main() -> None:
    p = common.parser(__doc__, repeats=3, clock="wall")  # a whole process: the time one waits for
    p.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    p.add_argument("--bare-heap", choices=("default", "steady"), default="default",
                   help="the bare loop's C heap: glibc's defaults, as a loop of one's own has (default), or the "
                        "steady heap a ticketlab run command sets (ticketlab.heap)")
    args = p.parse_args()
    if args.bare_heap == "steady":
        common.steady_heap()
    if not args.mnist.is_dir():
        sys.exit(f"whole_job.py: no MNIST in {args.mnist}; pass --mnist DIR")
    # A process that trains with a torch optimizer pays torch's lazy import of torch._dynamo (~1 s) when it
    # builds its first one: part of the start-up a process of one's own pays too (the in-process bare
    # loop pays it once, in its warm-up).
    startup = [sys.executable, "-c", "import torch, ticketlab.cli, ticketlab.methods; "
               "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"]
    samples = common.interleaved(  # warmed up: the job once (the decoded-data cache, the file system)
        {"ticketlab lottery process": lambda: job(args.mnist, args.threads),
         "start-up": lambda: common.command_seconds(startup),
         "bare steps + evaluation": lambda: bare_work(args.threads)},
        args.repeats, warmups={"start-up": lambda: None, "bare steps + evaluation": lambda: None})
    times = {k: v[args.clock] for k, v in samples.items()}
    med = {k: common.median(v) for k, v in times.items()}
    limit = med["start-up"] + med["bare steps + evaluation"]
    ratio = med["ticketlab lottery process"] / limit
    rows = [[k, f"{v:.2f}"] for k, v in med.items()] + [["limit (start-up + bare)", f"{limit:.2f}"]]
    title = common.header(f"OpenLTH's job shape: {LEVELS} levels x {EPOCHS} epochs, {args.clock} seconds (median)",
                          args.threads)
    common.finish(args, "whole_job", title, ["what", f"{args.clock} s"], rows,
                  f"ticketlab process / limit: {ratio:.3f} (target <= 1.15)",
                  {"clock": args.clock, "bare_heap": args.bare_heap, "times": times, "ratio": ratio})


if __name__ == "__main__":
    main()
