"""Inference speed and file size of exported tickets against the dense (masked) model.

Models: LeNet-300-100 (MNIST shape) and ResNet-20 (CIFAR shape), random initial weights pruned by global
magnitude (the output layer at half the rate, as the presets) to 20%, 5%, 2% and 1% density; speed does
not depend on what the weights learned. For each: the masked dense model and the `sparse` export (CSR
Linear layers where they are faster at batch 256, chosen by the exporter), and for LeNet the
`structured` export (dead neurons removed), timed side by side in one run: latency at batch 1 and
throughput at batch 256, on one thread and on all cores, CPU time medians over interleaved rounds. File
sizes: the dense checkpoint (`torch.save` of the state dict) against the `safetensors` export (kept
values and a bitmap) and the `sparse` one. GPU: not measured (CSR kernels there are another study).

    python bench/inference.py [--repeats 5] [--densities 0.2,0.05,0.02,0.01] [--models lenet_300_100,resnet20]
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import common
from ticketlab.config import ModelConfig, to_jsonable
from ticketlab.export import export_ticket, load_export
from ticketlab.export.source import Ticket
from ticketlab.models import build_model
from ticketlab.sparsity import prune

MODELS = {"lenet_300_100": (1, 28, 28), "resnet20": (3, 32, 32)}


def make_ticket(name: str, density: float) -> Ticket:
    shape = MODELS[name]
    model = build_model(ModelConfig(name=name), shape, 10, seed=0).eval()
    mask = prune(model, density, output_rate=0.5)
    mask.apply_(model)
    spec = {"model": to_jsonable(ModelConfig(name=name)), "input_shape": list(shape), "num_classes": 10,
            "source": {"level": 0}}
    return Ticket(model, mask, spec)


def per_call(model, x, calls: int) -> float:
    """CPU seconds per forward of ``x`` (median of 3 bursts of ``calls``)."""
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        bursts = []
        for _ in range(3):
            began = time.process_time()
            for _ in range(calls):
                model(x)
            bursts.append((time.process_time() - began) / calls)
    return statistics.median(bursts)


def size_of(state) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())


def measure(name: str, label: str, ticket: Ticket, folder: Path, repeats: int, cores: int, payload: list) -> list:
    """The table rows of one ticket: dense and each export timed side by side, and the file sizes."""
    rows = []
    kinds = {"dense": ticket.model}
    sparse = export_ticket(ticket, "sparse", folder / "sparse.safetensors", batch=256)
    kinds["sparse"] = load_export(sparse)
    if name == "lenet_300_100":
        kinds["structured"] = load_export(export_ticket(ticket, "structured", folder / "s.safetensors"))
    packed = export_ticket(ticket, "safetensors", folder / "t.safetensors")
    dense_bytes = size_of(ticket.model.state_dict())
    x1 = torch.randn(1, *MODELS[name])
    x256 = torch.randn(256, *MODELS[name])
    calls1, calls256 = (200, 20) if name == "lenet_300_100" else (10, 1)
    timings = {k: {"b1_1t": [], "b256_1t": [], "b256_all": []} for k in kinds}
    for _ in range(repeats):  # interleaved: every kind once a round
        for kind, model in kinds.items():
            torch.set_num_threads(1)
            timings[kind]["b1_1t"].append(per_call(model, x1, calls1))
            timings[kind]["b256_1t"].append(per_call(model, x256, calls256))
            torch.set_num_threads(cores)
            began = time.perf_counter()
            with torch.inference_mode():
                for _ in range(calls256):
                    model(x256)
            timings[kind]["b256_all"].append((time.perf_counter() - began) / calls256)
    base = {k: statistics.median(v) for k, v in timings["dense"].items()}
    for kind in kinds:
        med = {k: statistics.median(v) for k, v in timings[kind].items()}
        row = [name, label, kind, f"{1e3 * med['b1_1t']:.3f}",
               f"{base['b1_1t'] / med['b1_1t']:.2f}", f"{256 / med['b256_1t']:,.0f}",
               f"{base['b256_1t'] / med['b256_1t']:.2f}", f"{base['b256_all'] / med['b256_all']:.2f}",
               {"dense": f"{dense_bytes / 1024:.0f}", "sparse": f"{sparse.stat().st_size / 1024:.0f}"}.get(kind, "-")]
        rows.append(row)
        common.print_row(row)
        payload.append({"model": name, "density": ticket.mask.density(), "ticket": label, "kind": kind, **med})
    rows.append([name, label, "safetensors file", "-", "-", "-", "-", "-",
                 f"{packed.stat().st_size / 1024:.0f} ({dense_bytes / packed.stat().st_size:.1f}x smaller)"])
    common.print_row(rows[-1])
    return rows


def main() -> None:
    p = common.parser(__doc__, repeats=5)
    p.add_argument("--densities", default="0.2,0.05,0.02,0.01")
    p.add_argument("--models", default=",".join(MODELS), help="a comma-separated subset of " + ", ".join(MODELS))
    p.add_argument("--run", help="also time this finished run's trained ticket (a lenet_300_100 or resnet20 run)")
    p.add_argument("--level", type=int, help="the level of --run (default: its sparsest)")
    args = p.parse_args()
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        p.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    densities = [float(d) for d in args.densities.split(",")]
    cores = len(os.sched_getaffinity(0))
    rows, payload = [], []
    tickets = [(name, f"{100 * density:g}%", lambda name=name, density=density: make_ticket(name, density))
               for name in args.models.split(",") for density in densities]
    if args.run:
        from ticketlab.export import load_ticket

        trained = load_ticket(Path(args.run), args.level)
        name = trained.spec["model"]["name"]
        if name not in MODELS:
            p.error(f"--run holds a {name} model; this bench times {', '.join(MODELS)}")
        tickets.append((name, f"{100 * trained.mask.density():.3g}% trained", lambda: trained))
    with tempfile.TemporaryDirectory() as folder:
        for name, label, ticket in tickets:
            torch.set_num_threads(1)
            rows += measure(name, label, ticket(), Path(folder), args.repeats, cores, payload)
    title = common.header("inference: exports against the dense masked model, CPU time (all cores: wall time)", 1)
    headers = ["model", "density", "kind", "batch-1 ms", "speed-up", "batch-256 img/s", "speed-up",
               f"speed-up, {cores} threads", "file KiB"]
    common.finish(args, "inference", title, headers, rows, "", {"results": payload, "threads_all": cores})


if __name__ == "__main__":
    main()
