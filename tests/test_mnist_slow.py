"""Real-MNIST and Fashion-MNIST checks (slow): they run when ../shared/data/mnist and
../shared/data/fashion-mnist exist and skip otherwise."""

import json

import pytest

from ticketlab.cli import main

pytestmark = pytest.mark.slow


def test_lenet_lth_preset_reaches_97_percent_in_5_epochs(mnist_root, tmp_path, capsys):
    code = main(["train", "--preset", "mnist_lenet_300_100_lth", "--train.steps", "5ep", "--data.root", str(mnist_root),
                 "--threads", "1", "--progress", "none", "--runs-dir", str(tmp_path)])
    assert code == 0
    (run,) = list(tmp_path.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_accuracy"] >= 0.970, summary
    assert summary["steps"] == 5 * 917  # ceil(55,000 / 60) iterations per epoch


def test_fashion_lenet_preset_reaches_82_percent_in_one_epoch(fashion_mnist_root, tmp_path):
    code = main(["train", "--preset", "fashion_lenet_300_100", "--train.steps", "1ep", "--data.root",
                 str(fashion_mnist_root), "--threads", "1", "--progress", "none", "--runs-dir", str(tmp_path)])
    assert code == 0
    (run,) = list(tmp_path.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_accuracy"] >= 0.82, summary
    assert summary["steps"] == 430  # ceil(55,000 / 128): 5,000 of the 60,000 held out for validation
