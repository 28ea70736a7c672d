"""The Lottery Ticket result on real MNIST (slow, about 5-10 minutes on one thread)."""

import json
import statistics

import pytest

from ticketlab.cli import main

pytestmark = pytest.mark.slow


def _summaries(run, pattern):
    return {json.loads(p.read_text())["level"]: json.loads(p.read_text()) for p in run.glob(pattern)}


def test_lenet_tickets_match_dense_and_beat_reinit(mnist_root, tmp_path):
    common = ["--preset", "mnist_lenet_300_100_lth", "--train.steps", "3ep", "--data.root", str(mnist_root),
              "--threads", "1", "--progress", "none", "--runs-dir", str(tmp_path)]
    for seed in ("0", "1"):
        assert main(["lottery", *common, "--seed", seed, "--levels", "10", "--retrain", "rewind"]) == 0
        assert main(["branch", *common, "--seed", seed, "--levels", "1-10", "--branch", "reinit"]) == 0
    runs = sorted(p for p in tmp_path.iterdir() if p.name.startswith("lottery_"))
    assert len(runs) == 2
    trunk = [_summaries(run, "level_*/summary.json") for run in runs]
    reinit = [_summaries(run, "level_*/branch_reinit_*/summary.json") for run in runs]

    def mean(groups, level):
        return statistics.mean(g[level]["final_test_accuracy"] for g in groups)

    assert trunk[0][10]["density"] == pytest.approx(0.108, abs=0.002)
    dense, ticket = mean(trunk, 0), mean(trunk, 10)
    print(f"dense {dense:.4f}, ticket at level 10 {ticket:.4f}")
    assert ticket >= dense - 0.005
    sparse_levels = [k for k in range(1, 11) if trunk[0][k]["density"] <= 0.215]
    assert sparse_levels == [7, 8, 9, 10]
    gap = statistics.mean(mean(trunk, k) - mean(reinit, k) for k in sparse_levels)
    print({k: (round(mean(trunk, k), 4), round(mean(reinit, k), 4)) for k in range(1, 11)})
    assert gap > 0
