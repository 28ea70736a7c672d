"""What the benchmarks share: interleaved timing, the environment record, tables and JSON results.

Every benchmark times a fixed amount of work (steps, not epochs), warms each case up first, then runs
``repeats`` rounds in which every case runs once in turn (a, b, a, b, ...), so that a slow spell of the
machine hits all cases alike; figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ticketlab.analysis.table import render_table
from ticketlab.data import DataBundle, Split

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def parser(doc: str, *, repeats: int, clock: str = "cpu") -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has (``--threads``, ``--repeats``, ``--out``,
    ``--clock``, default ``clock``)."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds per case (default {repeats})")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/<script>.json)")
    p.add_argument("--clock", choices=("cpu", "wall"), default=clock,
                   help=f"compare process CPU time (robust on a shared machine) or wall time (default {clock})")
    return p


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def steady_heap() -> bool:
    """`ticketlab.heap.steady_heap` for a bench process, whatever the environment says: both loops of a
    case then run on the same heap settings, so page faults do not land on one or the other at random."""
    from ticketlab.heap import steady_heap as set_steady_heap

    return set_steady_heap(respect_environment=False)


class Clock:
    """Wall and process CPU seconds of a ``with`` block (CUDA work included: synchronises at both ends).

    CPU time is what the benchmarks compare on CPU: with one thread it equals the wall time on an idle
    machine, and unlike the wall time it does not grow while other processes hold the cores.
    """

    def __enter__(self) -> "Clock":
        _sync()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        _sync()
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu

    def seconds(self) -> Dict[str, float]:
        return {"wall": self.wall, "cpu": self.cpu}


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(cases: Mapping[str, Callable[[], Dict[str, float]]], repeats: int,
                warmups: Optional[Mapping[str, Callable[[], Any]]] = None) -> Dict[str, Dict[str, List[float]]]:
    """Warm every case up (``warmups[name]`` if given, else the case itself), then ``repeats`` rounds
    of every case in turn. A case returns ``{"wall": s, "cpu": s}`` for the work it timed (its set-up
    left out); the result maps case -> clock -> the seconds of each round."""
    for name, fn in cases.items():
        (warmups or {}).get(name, fn)()
    samples: Dict[str, Dict[str, List[float]]] = {name: {"wall": [], "cpu": []} for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            for clock, seconds in fn().items():
                samples[name][clock].append(seconds)
    return samples


def command_seconds(command: Sequence[str]) -> Dict[str, float]:
    """Wall and CPU seconds (the process's user + system time) of running ``command`` to its end, its
    output captured; a failing command raises. A case of `interleaved`."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> List[float]:
    """Round-by-round ratios of two interleaved cases."""
    return [a / b for a, b in zip(numerator, denominator)]


def environment(threads: int) -> Dict[str, Any]:
    """What the figures depend on: versions, CPU, threads, device, commit and time."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "threads": threads,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "commit": commit, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def header(title: str, threads: int) -> str:
    env = environment(threads)
    return f"{title}\n(torch {env['torch']}, {env['cpu']}, {threads} thread(s))"


def show(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print a titled table and return its text."""
    text = f"{title}\n{render_table(headers, rows)}"
    print(text, flush=True)
    return text


def print_row(row: Sequence[Any]) -> None:
    """One table row as soon as it is measured (the full table follows at the end)."""
    print("  " + "  ".join(map(str, row)), flush=True)


def finish(args: argparse.Namespace, script: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]],
           verdict: str, payload: Dict[str, Any]) -> None:
    """Print the titled table and the verdict line, then write both with ``payload`` (`write_results`)."""
    text = show("\n" + title, headers, rows)
    if verdict:
        print(verdict)
        text += "\n" + verdict
    write_results(args.out, script, args.threads, {**payload, "table": text})


def write_results(out: Path, script: str, threads: int, payload: Dict[str, Any]) -> Path:
    """Write ``payload`` with the environment to ``out`` (default ``bench/results/<script>.json``)."""
    path = Path(out) if out is not None else RESULTS / f"{script}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": script, "environment": environment(threads), **payload}, indent=2))
    print(f"wrote {path}\n", flush=True)
    return path


def random_bundle(input_shape: Sequence[int], num_classes: int, n_train: int, n_test: int, seed: int = 0,
                  device: str = "cpu") -> DataBundle:
    """In-memory random data of a data set's shape (standard-normal inputs, uniform labels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *input_shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (n_train + n_test,), generator=g).to(device)
    index = torch.arange(n_train + n_test, device=device)
    train = Split(x[:n_train], y[:n_train], index[:n_train])
    test = Split(x[n_train:], y[n_train:], index[n_train:] - n_train)
    return DataBundle(train, None, test, num_classes, tuple(input_shape), y[:n_train].clone())


class BareMasking:
    """What a bare masked loop does by hand, in the most direct vectorised way: pruned gradients zeroed
    before the optimizer step (`grads`), pruned weights and every optimizer-state tensor shaped like its
    weight zeroed after it (`after_step`), one ``torch._foreach_mul_`` each; the state list is built
    once, after the first step (optimizers update their state in place)."""

    def __init__(self, model: torch.nn.Module, mask: Optional[Mapping[str, torch.Tensor]]):
        params = dict(model.named_parameters())
        self.weights = [params[name] for name in mask] if mask is not None else []
        self.masks = [keep.to(device=w.device, dtype=w.dtype) for keep, w in zip(mask.values(), self.weights)] \
            if mask is not None else []
        self.states: List[torch.Tensor] = []
        self.state_masks: List[torch.Tensor] = []
        if self.weights:
            with torch.no_grad():
                torch._foreach_mul_(self.weights, self.masks)

    def grads(self) -> None:
        if self.weights:
            torch._foreach_mul_([w.grad for w in self.weights], self.masks)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.weights:
            return
        with torch.no_grad():
            torch._foreach_mul_(self.weights, self.masks)
            if not self.states:
                for w, m in zip(self.weights, self.masks):
                    for t in optimizer.state[w].values():
                        if torch.is_tensor(t) and t.shape == w.shape:
                            self.states.append(t)
                            self.state_masks.append(m)
            torch._foreach_mul_(self.states, self.state_masks)
