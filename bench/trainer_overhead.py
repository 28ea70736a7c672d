"""Trainer overhead: the ticketlab trainer against a bare PyTorch loop doing the same work.

Both train LeNet-300-100 for a fixed number of steps on the same in-memory MNIST-shaped tensors, with the
same optimizer, batch size and batch order source (a seeded permutation per epoch). The masked bare loop
zeroes gradients before the step and weights and optimizer state after it with `torch._foreach_mul_`, the
most direct vectorised way. Each case is warmed up once, then timed ``--repeats`` times; the table shows
the median seconds and the ratio trainer / bare (1.00 = no overhead). Results also go to a JSON file.

    python bench/trainer_overhead.py [--steps 400] [--repeats 5] [--threads 1] [--out bench/results/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ticketlab.analysis.table import render_table
from ticketlab.config import ModelConfig, TrainConfig
from ticketlab.data import DataBundle, Split, epoch_permutation
from ticketlab.models import build_model
from ticketlab.sparsity import MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Trainer
from ticketlab.train.optim import build_optimizer


def make_data(n_train: int, n_test: int, seed: int = 0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    train = Split(x[:n_train], y[:n_train], torch.arange(n_train))
    test = Split(x[n_train:], y[n_train:], torch.arange(n_test))
    return DataBundle(train, None, test, 10, (1, 28, 28), y[:n_train].clone())


def fresh_model(density: float):
    model = build_model(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10, seed=0)
    mask = prune(model, density) if density < 1 else None
    return model, mask


def run_trainer(data: DataBundle, cfg: TrainConfig, density: float) -> float:
    model, mask = fresh_model(density)
    enforcer = MaskEnforcer(model, mask) if mask is not None else None
    trainer = Trainer(model, data, cfg, order_seed=0, enforcer=enforcer, progress=False)
    began = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - began


def run_bare(data: DataBundle, cfg: TrainConfig, density: float) -> float:
    model, mask = fresh_model(density)
    optimizer = build_optimizer(model.parameters(), cfg)
    params = dict(model.named_parameters())
    weights = [params[name] for name in mask] if mask is not None else []
    masks = [m.to(weights[0].dtype) for m in mask.values()] if mask is not None else []
    if mask is not None:
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)
    x_all, y_all, n, bs = data.train.x, data.train.y, len(data.train), cfg.batch_size
    ipe = -(-n // bs)
    total = cfg.steps.to_iters(ipe)
    began = time.perf_counter()
    for step in range(total):
        epoch, offset = divmod(step, ipe)
        if offset == 0:
            perm = epoch_permutation(n, 0, epoch, x_all.device)
        index = perm[offset * bs:(offset + 1) * bs]
        loss = F.cross_entropy(model(x_all[index]), y_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if weights:
            torch._foreach_mul_([w.grad for w in weights], masks)
        optimizer.step()
        if weights:
            with torch.no_grad():
                torch._foreach_mul_(weights, masks)
                states = [t for w in weights for t in optimizer.state[w].values()
                          if torch.is_tensor(t) and t.shape == w.shape]
                torch._foreach_mul_(states, [m for m, w in zip(masks, weights)
                                             for t in optimizer.state[w].values()
                                             if torch.is_tensor(t) and t.shape == w.shape])
    return time.perf_counter() - began


def measure(fn, repeats: int, *args) -> float:
    fn(*args)  # warm-up
    return statistics.median(fn(*args) for _ in range(repeats))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/trainer_overhead.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = make_data(n_train=12_800, n_test=256)
    cases = [("sgd+momentum", 128, dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)),
             ("adam", 60, dict(optimizer="adam", lr=1.2e-3))]
    rows, records = [], []
    for name, batch, opt_kwargs in cases:
        cfg = TrainConfig(steps=Steps(0, args.steps), batch_size=batch, eval_every=Steps(1000),
                          **opt_kwargs)
        for density in (1.0, 0.2, 0.02):
            bare = measure(run_bare, args.repeats, data, cfg, density)
            ours = measure(run_trainer, args.repeats, data, cfg, density)
            label = "dense" if density == 1 else f"masked {density:.0%}"
            rows.append([f"lenet_300_100 {name} b{batch}", label, f"{bare:.3f}", f"{ours:.3f}", f"{ours / bare:.3f}"])
            records.append({"case": name, "batch": batch, "density": density, "steps": args.steps,
                            "bare_s": bare, "trainer_s": ours, "ratio": ours / bare})
    print(f"trainer overhead, {args.steps} steps, median of {args.repeats}, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print(render_table(["case", "mask", "bare s", "ticketlab s", "ratio"], rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "results": records}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
