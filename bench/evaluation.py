"""Evaluation on the CPU: ticketlab's `evaluate` against a bare `inference_mode` loop over the same
tensors, and against the fixed batch of 2048 it used before (what the batch choice saves).

Models: LeNet-300-100 on 10,000 MNIST-shaped examples, ResNet-20 on 2,048 CIFAR-shaped ones (random
weights and inputs: the work does not depend on them). The bare loop is what one writes by hand: batches
of the same size as ticketlab's choice, cross-entropy summed and argmax compared on the device, one
host synchronisation at the end. CPU time, median of interleaved rounds.

    python bench/evaluation.py [--repeats 5]
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

import common
from ticketlab.config import ModelConfig
from ticketlab.models import build_model
from ticketlab.train.evaluate import eval_batch_size, evaluate

CASES = {"lenet_300_100": ((1, 28, 28), 10000), "resnet20": ((3, 32, 32), 2048)}


def bare(model, x, y, batch):
    loss, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            logits = model(x[start:start + batch])
            loss += F.cross_entropy(logits, y[start:start + batch], reduction="sum")
            correct += (logits.argmax(1) == y[start:start + batch]).sum()
    return loss.item(), correct.item()


def cpu_seconds(fn) -> float:
    began = time.process_time()
    fn()
    return time.process_time() - began


def main() -> None:
    args = common.parser(__doc__, repeats=5).parse_args()
    common.set_threads(args.threads)
    rows, payload = [], {}
    for name, (shape, n) in CASES.items():
        model = build_model(ModelConfig(name=name), shape, 10, seed=0).eval()
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
        batch = eval_batch_size(model, x)
        cases = {"bare loop": lambda: bare(model, x, y, batch), "ticketlab": lambda: evaluate(model, x, y),
                 "batch 2048 (before)": lambda: evaluate(model, x, y, batch_size=2048)}
        for fn in cases.values():
            fn()  # warm-up
        times = {k: [] for k in cases}
        for _ in range(args.repeats):
            for k, fn in cases.items():
                times[k].append(cpu_seconds(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append([name, n, batch, f"{med['bare loop']:.3f}", f"{med['ticketlab']:.3f}",
                     f"{med['ticketlab'] / med['bare loop']:.3f}", f"{med['batch 2048 (before)']:.3f}",
                     f"{med['batch 2048 (before)'] / med['ticketlab']:.2f}"])
        common.print_row(rows[-1])
        payload[name] = {"batch": batch, **med}
    worst = max(float(r[5]) for r in rows)
    title = common.header("evaluation on the CPU, cpu seconds per pass (median)", args.threads)
    common.finish(args, "evaluation", title, ["model", "examples", "batch", "bare s", "ticketlab s",
                                              "ticketlab / bare", "batch 2048 s", "speed-up over 2048"],
                  rows, f"largest ticketlab / bare: {worst:.3f} (target <= 1.05)", payload)


if __name__ == "__main__":
    main()
