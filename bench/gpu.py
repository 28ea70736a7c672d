"""GPU: the ticketlab trainer against a bare PyTorch loop on CUDA (skipped where there is no CUDA device).

ResNet-20 on CIFAR-shaped random data held on the device, batch 128, SGD (momentum 0.9), mixed precision
(bf16 autocast), channels_last, dense and at 20% and 2% density; with ``--compile`` also both loops
under ``torch.compile`` (the first calls pay the compilation, inside the warm-up). The bare loop does
what a careful user writes: batches by indexing the device tensors with a device permutation, the mask
enforced with one ``torch._foreach_mul_`` for gradients, weights and momentum. Both evaluate the small
test split before and after. Wall time with ``torch.cuda.synchronize()`` at both ends; the table shows
the median of ``--repeats`` interleaved runs, images per second, the ratio ticketlab / bare and the
largest weight difference between the two at the end (bf16 kernels need not be bit-identical).

    python bench/gpu.py [--steps 200] [--repeats 5] [--compile]
"""

from __future__ import annotations

import copy
import sys
from typing import Dict, Optional

import torch
import torch.nn.functional as F

import common
from ticketlab.config import ModelConfig, TrainConfig
from ticketlab.data import DataBundle, epoch_permutation
from ticketlab.models import build_model
from ticketlab.sparsity import Mask, MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Trainer

ORDER_SEED, BATCH = 0, 128
SGD = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)


def autocast(device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def bare_loop(model: torch.nn.Module, mask: Optional[Mask], data: DataBundle, steps: int, compiled: bool) -> None:
    device = data.train.x.device
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD["lr"], momentum=SGD["momentum"],
                                weight_decay=SGD["weight_decay"])
    masking = common.BareMasking(model, mask)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def evaluate() -> None:
        model.eval()
        with torch.no_grad(), autocast(device):
            (forward(prepare(data.test.x)).argmax(1) == data.test.y).sum()
        model.train()

    x_all, y_all, n = data.train.x, data.train.y, len(data.train)
    ipe = -(-n // BATCH)
    evaluate()
    for step in range(steps):
        epoch, offset = divmod(step, ipe)
        if offset == 0:
            perm = epoch_permutation(n, ORDER_SEED, epoch, device)
        index = perm[offset * BATCH:(offset + 1) * BATCH]
        with autocast(device):
            loss = F.cross_entropy(forward(prepare(x_all[index])), y_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        masking.grads()
        optimizer.step()
        masking.after_step(optimizer)
    evaluate()


def trainer_loop(model: torch.nn.Module, mask: Optional[Mask], data: DataBundle, steps: int, compiled: bool) -> None:
    cfg = TrainConfig(steps=Steps(0, steps), batch_size=BATCH, eval_every=Steps(0, 10 ** 9), amp="bf16",
                      channels_last=True, compile=compiled, **SGD)
    enforcer = MaskEnforcer(model, mask) if mask is not None else None
    Trainer(model, data, cfg, order_seed=ORDER_SEED, enforcer=enforcer, progress=False).fit()


def main(argv=None) -> int:
    p = common.parser(__doc__, repeats=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--compile", action="store_true", help="also time both loops under torch.compile")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only checks the script")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("GPU benchmark: no CUDA device; skipped", flush=True)
        return 0
    common.set_threads(args.threads)
    device = torch.device(args.device)
    data = common.random_bundle((3, 32, 32), 10, n_train=10240, n_test=512, device=str(device))
    title = common.header(f"GPU: ResNet-20, CIFAR-shaped data on {device}, batch {BATCH}, bf16 autocast, "
                          f"channels_last; {args.steps} steps, wall time, median of {args.repeats} interleaved runs",
                          args.threads)
    print(title, flush=True)
    rows, records = [], []
    for compiled in ((False, True) if args.compile else (False,)):
        for density in (1.0, 0.2, 0.02):
            template = build_model(ModelConfig(name="resnet20"), (3, 32, 32), 10, seed=0)
            mask = prune(template, density) if density < 1 else None
            last: Dict[str, torch.nn.Module] = {}

            def runner(loop, key, steps, compiled=compiled, template=template, mask=mask, last=last):
                def run() -> Dict[str, float]:
                    model = copy.deepcopy(template).to(device)
                    with common.Clock() as clock:
                        loop(model, mask, data, steps, compiled)
                    last[key] = model
                    return clock.seconds()
                return run

            warm = 30 if compiled else 10
            samples = common.interleaved(
                {"bare": runner(bare_loop, "bare", args.steps), "ours": runner(trainer_loop, "ours", args.steps)},
                args.repeats, warmups={"bare": runner(bare_loop, "bare", warm), "ours": runner(trainer_loop, "ours", warm)})
            bare, ours = (common.median(samples[k]["wall"]) for k in ("bare", "ours"))
            a, b = last["bare"].state_dict(), last["ours"].state_dict()
            diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())
            label = "dense" if density == 1 else f"{density:.0%}"
            row = [("compiled" if compiled else "eager"), label, f"{1e3 * bare / args.steps:.2f}",
                   f"{1e3 * ours / args.steps:.2f}", f"{BATCH * args.steps / ours:,.0f}", f"{ours / bare:.3f}",
                   f"{diff:.1e}"]
            rows.append(row)
            common.print_row(row)
            records.append({"compiled": compiled, "density": density, "steps": args.steps, "bare_s": samples["bare"],
                            "trainer_s": samples["ours"], "ratio": ours / bare, "max_weight_diff": diff})
    common.finish(args, "gpu", title, ["mode", "density", "bare ms/step", "ticketlab ms/step", "ticketlab img/s",
                                       "ratio", "max |w diff|"], rows, "", {"repeats": args.repeats, "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
