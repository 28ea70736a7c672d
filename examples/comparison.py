"""What the CPU comparisons in this folder share: the data folders, a pool of one-thread workers, and the
table of mean ± std over seeds."""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = {"mnist": ("mnist_lenet_300_100", REPO.parent / "shared" / "data" / "mnist"),
        "fashion": ("fashion_lenet_300_100", REPO.parent / "shared" / "data" / "fashion-mnist")}


def arguments(doc: str, runs_dir: str, extra: Callable = lambda parser: None):
    """The options every comparison takes (workers, seeds, runs folder, data folders): (args, data roots)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs-dir", default=runs_dir)
    for name, (_, folder) in DATA.items():
        parser.add_argument(f"--{name}-root", default=str(folder), help=f"the {name} IDX files")
    extra(parser)
    args = parser.parse_args()
    return args, data_roots(args)


def data_roots(args) -> Dict[str, str]:
    roots = {name: getattr(args, f"{name}_root") for name in DATA}
    for name, root in roots.items():
        if not Path(root).is_dir():
            sys.exit(f"{Path(sys.argv[0]).name}: no {name} data in {root}; pass --{name}-root DIR")
    return roots


def one_thread(job):
    """Run ``job = (fn, key, *args)`` on one thread: returns (key, fn(*args))."""
    fn, key, *args = job
    torch.set_num_threads(1)
    return key, fn(*args)


def run_all(jobs: Iterable[tuple], workers: int) -> Dict[tuple, dict]:
    """Every ``(fn, key, *args)`` job on a pool of ``workers`` processes; prints the total time."""
    jobs = list(jobs)
    began = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = dict(pool.imap_unordered(one_thread, jobs))
    print(f"\n{len(jobs)} runs, {workers} workers, {time.perf_counter() - began:.0f} s\n", flush=True)
    return results


def mean_std(values: Sequence[float]) -> str:
    values = [100 * v for v in values]
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def table(results: Dict[tuple, dict], rows: List[Tuple[str, float]], columns: Sequence[str], seeds: int,
          value: Callable[[dict], float] = lambda s: s["final_test_accuracy"]) -> str:
    """Markdown: one line per (data, density), one column per method, mean ± std over the seeds."""
    lines = ["| data | density | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for dataset, density in rows:
        cells = []
        for column in columns:
            found = [value(results[key]) for key in ((dataset, density, column, s) for s in range(seeds))
                     if key in results]
            cells.append(mean_std(found) if found else "-")
        lines.append(f"| {dataset} | {100 * density:.0f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)
