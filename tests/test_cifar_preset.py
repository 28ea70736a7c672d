"""A short CPU run of the cifar10_resnet20 preset on a small CIFAR-10 pickle set written by the test."""

import json

import torch

from ticketlab.cli import main
from test_data_images import write_cifar10


def test_cifar10_resnet20_trains_and_checkpoints_on_a_small_pickle_set(tmp_path, capsys):
    write_cifar10(tmp_path / "cifar10", per_batch=40, n_test=40)
    args = ["train", "--preset", "cifar10_resnet20", "--data.root", str(tmp_path / "cifar10"), "--data.val_size", "40",
            "--train.steps", "2ep", "--train.batch_size", "32", "--train.milestones", "1ep",
            "--train.checkpoint_every", "0ep3it", "--threads", "1", "--progress", "none",
            "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    (run,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * 5  # 160 training images at batch 32
    assert (run / "best.pt").exists() and not (run / "checkpoint.pt").exists()
    state = torch.load(run / "final.pt", weights_only=True)
    assert state["conv1.weight"].shape == (16, 3, 3, 3) and "linear.weight" in state
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["augment"] is True and config["model"]["name"] == "resnet20"
