"""What a user writes instead: a plain IMP loop against `ticketlab lottery` doing the same job.

The job: LeNet-300-100 on MNIST (55,000 training images, 5,000 validation, 10,000 test), SGD at lr 0.1,
batch 128, ``--epochs`` epochs per level, levels 0..``--levels`` (``--levels`` prunings of 20% of the
remaining weights by global magnitude over the two hidden layers, the output layer dense), each level
rewound to the initial weights; validation and test evaluated before training and after every epoch.
That is the OpenLTH preset ``mnist_lenet_300_100`` with ``--train.steps`` shortened.

- **user loop**: what one writes with PyTorch alone: the IDX files read into tensors, a
  ``DataLoader(TensorDataset(...), shuffle=True)``, ``torch.nn.utils.prune.global_unstructured`` with
  ``L1Unstructured`` at amount 0.2 per level, rewinding by copying the saved initial state into
  ``weight_orig`` (and the other parameters); Kaiming-normal initialisation as in OpenLTH.
- **ticketlab**: ``ticketlab.run_lottery(config, levels, RunContext(runs_dir=<temporary>))``, i.e.
  ``ticketlab lottery --preset mnist_lenet_300_100 --train.steps <E>ep --levels <L>``, run files included;
  it reads MNIST from its decoded copy under ``$TICKETLAB_DATA/.decoded`` (made during the warm-up, as
  the first run on a data set makes it), where the user loop decompresses the IDX files every time.

Both keep exactly the same number of weights at every level (20% of the remaining, rounded, over the
same layers) and run the same number of steps. Each timing covers the whole job of one seed, data
loading included; the two alternate seed by seed after one short warm-up each. Reported: wall and CPU
time per seed (median), the ratio user / ticketlab, and the mean final test accuracy over the seeds.
Real MNIST is read from ``../shared/data/mnist`` (relative to the repository root) or ``--mnist``; without
it the job runs on random MNIST-shaped data, with a warning (the accuracies are then meaningless).

    python bench/imp_vs_user_loop.py [--seeds 3] [--levels 3] [--epochs 2] [--mnist DIR] [--threads 1]
"""

from __future__ import annotations

import copy
import gzip
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

import common
import ticketlab
from ticketlab.data import RawData, register_dataset
from ticketlab.steps import Steps

DEFAULT_MNIST = common.REPO.parent / "shared" / "data" / "mnist"
VAL_SIZE, BATCH, LR, FRACTION = 5000, 128, 0.1, 0.2
MEAN, STD = 0.1307, 0.3081
RANDOM_DATASET = "bench_random_mnist"


# -- data --------------------------------------------------------------------------------------------
def random_mnist() -> Tuple[torch.Tensor, ...]:
    """uint8 images and int64 labels shaped like MNIST (60,000 + 10,000), fixed seed."""
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (60000, 1, 28, 28), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (60000,), generator=g),
            torch.randint(0, 256, (10000, 1, 28, 28), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (10000,), generator=g))


@register_dataset(name=RANDOM_DATASET)
def _random_source(root, download) -> RawData:
    train_x, train_y, test_x, test_y = random_mnist()
    return RawData(train_x, train_y, test_x, test_y, num_classes=10, mean=(MEAN,), std=(STD,))


def read_idx_gz(path: Path) -> torch.Tensor:
    """The user's IDX reader: images (N, 1, 28, 28) uint8 or labels (N,) int64."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if data[3] == 3:
        n = int.from_bytes(data[4:8], "big")
        return torch.from_numpy(np.frombuffer(data, np.uint8, offset=16).copy()).view(n, 1, 28, 28)
    return torch.from_numpy(np.frombuffer(data, np.uint8, offset=8).astype(np.int64))


def user_data(mnist: Optional[Path]):
    if mnist is None:
        train_x, train_y, test_x, test_y = random_mnist()
    else:
        def find(stem):
            raw = mnist / stem
            return raw if raw.exists() else mnist / f"{stem}.gz"
        train_x, train_y = read_idx_gz(find("train-images-idx3-ubyte")), read_idx_gz(find("train-labels-idx1-ubyte"))
        test_x, test_y = read_idx_gz(find("t10k-images-idx3-ubyte")), read_idx_gz(find("t10k-labels-idx1-ubyte"))
    norm = lambda x: (x.float() / 255 - MEAN) / STD  # noqa: E731
    return norm(train_x), train_y, norm(test_x), test_y


# -- the user's loop ---------------------------------------------------------------------------------
def lenet() -> nn.Sequential:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return correct / total


def user_imp(seed: int, levels: int, steps: int, mnist: Optional[Path]) -> float:
    """IMP with rewinding to initialisation, written with PyTorch alone; returns the final test accuracy."""
    torch.manual_seed(seed)
    x, y, test_x, test_y = user_data(mnist)
    perm = torch.randperm(len(x))
    val = TensorDataset(x[perm[:VAL_SIZE]], y[perm[:VAL_SIZE]])
    train = TensorDataset(x[perm[VAL_SIZE:]], y[perm[VAL_SIZE:]])
    loaders = {"val": DataLoader(val, batch_size=1000), "test": DataLoader(TensorDataset(test_x, test_y),
                                                                            batch_size=1000)}
    model = lenet()
    initial = copy.deepcopy(model.state_dict())
    pruned = [(model[1], "weight"), (model[3], "weight")]  # the output layer stays dense
    test_acc = 0.0
    for level in range(levels + 1):
        if level > 0:
            torch_prune.global_unstructured(pruned, pruning_method=torch_prune.L1Unstructured, amount=FRACTION)
            with torch.no_grad():  # rewind: the surviving weights restart from their initial values
                for name, p in model.named_parameters():
                    p.copy_(initial[name.replace("weight_orig", "weight")])
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        loader = DataLoader(train, batch_size=BATCH, shuffle=True)
        per_epoch = len(loader)
        accuracy(model, loaders["val"])
        accuracy(model, loaders["test"])
        step = 0
        while step < steps:
            train_loss = train_correct = seen = 0  # per-epoch training figures, as ticketlab records
            for xb, yb in loader:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                train_loss += loss.item() * len(yb)
                train_correct += (logits.argmax(1) == yb).sum().item()
                seen += len(yb)
                step += 1
                if step % per_epoch == 0 or step == steps:
                    accuracy(model, loaders["val"])
                    test_acc = accuracy(model, loaders["test"])
                    train_loss = train_correct = seen = 0
                if step == steps:
                    break
    return test_acc


# -- the fastest plain PyTorch: what ticketlab's loop does, written out (no files, no DataLoader) ------
def tensor_imp(seed: int, levels: int, steps: int, mnist: Optional[Path]) -> float:
    """The same job with in-memory batches (slices of a per-epoch permutation), masks enforced with
    ``torch._foreach_mul_``, batched evaluation and pruning by one ``kthvalue``: a lower bound."""
    torch.manual_seed(seed)
    x, y, test_x, test_y = user_data(mnist)
    perm = torch.randperm(len(x))
    val_x, val_y, x, y = x[perm[:VAL_SIZE]], y[perm[:VAL_SIZE]], x[perm[VAL_SIZE:]], y[perm[VAL_SIZE:]]

    def evaluate(ex, ey):
        with torch.inference_mode():
            return sum(int((model(ex[i:i + 2048]).argmax(1) == ey[i:i + 2048]).sum())
                       for i in range(0, len(ex), 2048)) / len(ex)

    model = lenet()
    initial = copy.deepcopy(model.state_dict())
    weights = [model[1].weight, model[3].weight]
    masks = [torch.ones_like(w) for w in weights]
    per_epoch = math.ceil(len(x) / BATCH)
    test_acc = 0.0
    for level in range(levels + 1):
        with torch.no_grad():
            if level > 0:  # prune 20% of the remaining weights by global magnitude, then rewind
                scores = torch.cat([(w.abs() * m).flatten() for w, m in zip(weights, masks)])
                remaining = int(sum(m.sum() for m in masks))
                cut = round(FRACTION * remaining)
                threshold = torch.kthvalue(scores[scores > 0], cut).values
                masks = [m * (w.abs() > threshold) for w, m in zip(weights, masks)]
            model.load_state_dict(initial)
            torch._foreach_mul_(weights, masks)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        evaluate(val_x, val_y)
        evaluate(test_x, test_y)
        loss_sum = torch.zeros(())
        for step in range(steps):
            epoch, offset = divmod(step, per_epoch)
            if offset == 0:
                order = torch.randperm(len(x))
            index = order[offset * BATCH:(offset + 1) * BATCH]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch._foreach_mul_([w.grad for w in weights], masks)
            optimizer.step()
            with torch.no_grad():
                torch._foreach_mul_(weights, masks)
            loss_sum += loss.detach()
            if (step + 1) % per_epoch == 0 or step + 1 == steps:
                evaluate(val_x, val_y)
                test_acc = evaluate(test_x, test_y)
    return test_acc


# -- ticketlab ---------------------------------------------------------------------------------------
def ticketlab_imp(seed: int, levels: int, steps: int, mnist: Optional[Path], threads: int) -> float:
    cfg = ticketlab.get_preset("mnist_lenet_300_100")
    data = replace(cfg.data, root=str(mnist)) if mnist is not None else replace(cfg.data, dataset=RANDOM_DATASET)
    cfg = replace(cfg, seed=seed, data=data, train=replace(cfg.train, steps=Steps(0, steps)))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ticketlab.RunContext(runs_dir=tmp, device="cpu", threads=threads, progress=False)
        _, summaries = ticketlab.run_lottery(cfg, levels, ctx)
    return summaries[-1]["final_test_accuracy"]


def clocked(fn, *args) -> Dict[str, float]:
    with common.Clock() as clock:
        accuracy_ = fn(*args)
    return {**clock.seconds(), "accuracy": accuracy_}


def main(argv=None) -> int:
    p = common.parser(__doc__, repeats=3)
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1, each a timed round (default: --repeats)")
    p.add_argument("--levels", type=int, default=3, help="prunings; levels 0..N are trained (default 3)")
    p.add_argument("--epochs", type=float, default=2.0, help="training length of every level (default 2)")
    p.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help=f"MNIST IDX folder (default {DEFAULT_MNIST})")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    seeds = args.seeds or args.repeats
    mnist: Optional[Path] = args.mnist
    if not (mnist / "train-images-idx3-ubyte.gz").exists() and not (mnist / "train-images-idx3-ubyte").exists():
        print(f"WARNING: no MNIST at {mnist}; timing on random MNIST-shaped data (accuracies meaningless)",
              flush=True)
        mnist = None
    steps = round(args.epochs * math.ceil((60000 - VAL_SIZE) / BATCH))

    jobs = {"user loop": (user_imp, (args.levels, steps, mnist)),
            "ticketlab": (ticketlab_imp, (args.levels, steps, mnist, args.threads)),
            "tensor loop": (tensor_imp, (args.levels, steps, mnist))}
    for fn, rest in jobs.values():  # warm-up: one short pruning round each
        fn(0, 1, 20, *rest[2:])
    runs = {name: [] for name in jobs}
    for seed in range(seeds):
        for name, (fn, rest) in jobs.items():
            runs[name].append(clocked(fn, seed, *rest))
        print(f"  seed {seed}: " + "  ".join(f"{k} {r[-1]['wall']:.1f} s wall, {r[-1]['cpu']:.1f} s CPU, "
                                              f"test acc {100 * r[-1]['accuracy']:.2f}" for k, r in runs.items()),
              flush=True)

    med = {k: {c: common.median([r[c] for r in v]) for c in ("wall", "cpu")} for k, v in runs.items()}
    acc = {k: sum(r["accuracy"] for r in v) / len(v) for k, v in runs.items()}
    data_name = "MNIST" if mnist is not None else "random MNIST-shaped data"
    title = common.header(f"IMP, LeNet-300-100 on {data_name}: levels 0-{args.levels} x {steps} steps "
                          f"({args.epochs:g} epochs), batch {BATCH}, SGD {LR}; median of {seeds} seeds", args.threads)
    rows = [[k, f"{med[k]['wall']:.1f}", f"{med[k]['cpu']:.1f}", f"{med['user loop']['wall'] / med[k]['wall']:.2f}",
             f"{100 * acc[k]:.2f}", " ".join(f"{100 * r['accuracy']:.2f}" for r in runs[k])] for k in runs]
    speedup = {c: med["user loop"][c] / med["ticketlab"][c] for c in ("wall", "cpu")}
    floor = {c: med["ticketlab"][c] / med["tensor loop"][c] for c in ("wall", "cpu")}
    gap = 100 * (acc["ticketlab"] - acc["user loop"])
    verdict = (f"ticketlab is {speedup['wall']:.2f}x faster in wall time ({speedup['cpu']:.2f}x in CPU time) "
               f"(target >= 1.4x); mean test accuracy {gap:+.2f} points against the user loop "
               f"(target >= -0.3); ticketlab takes {floor['wall']:.2f}x the time of the hand-written tensor loop")
    common.finish(args, "imp_vs_user_loop", title, ["loop", "wall s", "CPU s", "speed-up (wall)", "mean test acc %",
                                                    "test acc % per seed"], rows, verdict,
                  {"data": data_name, "levels": args.levels, "steps_per_level": steps, "seeds": seeds, "runs": runs,
                   "median_s": med, "mean_test_accuracy": acc, "speedup": speedup,
                   "ticketlab_over_tensor_loop": floor, "accuracy_gap_points": gap})
    return 0


if __name__ == "__main__":
    sys.exit(main())
