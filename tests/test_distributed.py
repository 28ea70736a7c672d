"""One run on two processes (torchrun, gloo on the CPU) against the same run on one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ticketlab import distributed
from ticketlab.cli import main
from ticketlab.errors import CheckpointError
from ticketlab.io import load_torch
from ticketlab.sparsity import Mask
from ticketlab.train import read_metrics

FLAGS = ["--preset", "digits_mlp", "--model.hidden", "32", "--train.batch_size", "64", "--train.steps", "6ep",
         "--train.eval_every", "2ep", "--levels", "2", "--threads", "1", "--device", "cpu", "--progress", "none"]


def ticketlab(*args, ranks=1, runs, popen=False):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--standalone"] \
        if ranks > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "ticketlab", "lottery", *FLAGS, *args, "--runs-dir", str(runs)]
    if popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def descendants(pid: int):
    """Process ids below ``pid`` (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_dir(runs: Path) -> Path:
    (path,) = [p for p in runs.iterdir() if p.name.startswith("lottery_")]
    return path


def test_two_ranks_train_what_one_rank_trains(tmp_path):
    one, two = ticketlab(runs=tmp_path / "one"), ticketlab(ranks=2, runs=tmp_path / "two")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run directory:") == 1  # rank 0 alone prints (and writes)
    a, b = run_dir(tmp_path / "one"), run_dir(tmp_path / "two")
    assert a.name == b.name  # the same config: the process count is not part of it
    for k in range(3):
        assert Mask.load(a / f"level_{k}" / "mask.pt") == Mask.load(b / f"level_{k}" / "mask.pt"), k
        wa, wb = (load_torch(p / f"level_{k}" / "final.pt") for p in (a, b))
        assert max(float((wa[n] - wb[n]).abs().max()) for n in wa) < 1e-4, k
        ma, mb = (read_metrics(p / f"level_{k}" / "metrics.jsonl") for p in (a, b))
        assert [(m["split"], m["step"]) for m in ma] == [(m["split"], m["step"]) for m in mb]  # no line twice
        for x, y in zip(ma, mb):
            assert abs(x["accuracy"] - y["accuracy"]) <= 0.01, (k, x, y)  # train accuracy: summed over ranks
            assert abs(x["loss"] - y["loss"]) < 1e-3, (k, x, y)
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["world_size"] == 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks' processes in /proc")
def test_a_killed_two_rank_run_resumes_on_two_ranks_only(tmp_path):
    slow = ["--train.steps", "30ep", "--train.checkpoint_every", "2ep", "--levels", "1"]
    reference = ticketlab(*slow, ranks=2, runs=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    runs = tmp_path / "killed"
    process = ticketlab(*slow, ranks=2, runs=runs, popen=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("lottery_*/level_1/checkpoint.pt")):
        time.sleep(0.02)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun starts each rank in a session of its own
        os.kill(pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)
    path = run_dir(runs)
    assert (path / "level_1" / "checkpoint.pt").exists() and not (path / "level_1" / "summary.json").exists()
    single = ticketlab(*slow, runs=runs)
    assert single.returncode == 2 and "written by a run on 2 process(es)" in single.stderr
    assert single.stderr.count("\n") == 1
    resumed = ticketlab(*slow, ranks=2, runs=runs)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (load_torch(p / "level_1" / "final.pt") for p in (run_dir(tmp_path / "reference"), path))
    assert all(torch.equal(a[n], b[n]) for n in a)  # bit-identical to the uninterrupted two-rank run


def test_prac_and_the_other_commands_refuse_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["prac", "--preset", "digits_mlp", "--runs-dir", str(tmp_path)]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 2  # N copies would race on the same files
    assert "not a run command" in capsys.readouterr().err


@pytest.mark.parametrize("n,world", [(64, 2), (65, 2), (7, 3), (3, 3), (128, 5)])
def test_shards_cover_a_batch_once(monkeypatch, n, world):
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    parts = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(distributed.shard_bounds(n))
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert max(e - s for s, e in parts) - min(e - s for s, e in parts) <= 1


def _check_same_worker(rank, world, init, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        distributed.check_same("same", "mask")
        try:
            distributed.check_same(f"digest-of-rank-{rank}", "mask")
            results[rank] = "no error"
        except CheckpointError as exc:
            results[rank] = str(exc)
        results[f"gate{rank}"] = distributed.gate(rank == 0)  # rank 0's answer everywhere
        results[f"sum{rank}"] = float(distributed.all_sum(torch.tensor(float(rank + 1))))
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_masks_files_and_sums(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_check_same_worker, args=(2, f"file://{tmp_path / 'store'}", results), nprocs=2)
        results = dict(results)
    assert all("the mask differs between ranks" in results[r] for r in range(2))
    assert results["gate0"] is True and results["gate1"] is True
    assert results["sum0"] == results["sum1"] == 3.0
