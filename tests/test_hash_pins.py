"""Run directories are named by config hashes: these must not change when code moves (OpenLTH's test_desc).

The values were taken before the methods became plug-ins (each command's config holding only its own
sections); a config that carried another command's section is the only kind whose hash may differ.
"""

import pytest

from ticketlab.config import RunConfig, convert, merge
from ticketlab.methods.branches import BranchConfig, BranchRunConfig, branch_hash, trunk_config
from ticketlab.methods.lottery import LotteryRunConfig
from ticketlab.presets import get_preset


def _as(cls, preset, overrides=None):
    return merge(convert(get_preset(preset), cls), overrides or {})


PINNED = [
    (lambda: _as(RunConfig, "digits_mlp"), "train_18d837c16427"),
    (lambda: _as(RunConfig, "digits_mlp", {"prune": {"density": 0.2, "scope": "erk", "criterion": "random"}}),
     "train_4c77b33f031e"),
    (lambda: _as(RunConfig, "mnist_lenet_300_100", {"train": {"lr": 0.05}, "seed": 3}), "train_0d34b4abef28"),
    (lambda: _as(LotteryRunConfig, "mnist_lenet_300_100", {"method": "lottery"}), "lottery_0be4be2be646"),
    (lambda: _as(LotteryRunConfig, "mnist_lenet_300_100_lth",
                 {"method": "lottery", "lottery": {"rewind": "1000it", "retrain": "rewind"}}), "lottery_060466c1bc4d"),
    (lambda: _as(LotteryRunConfig, "digits_mlp", {"method": "lottery", "lottery": {"retrain": "finetune",
                 "finetune_lr": 0.01}, "data": {"noise": "symmetric", "noise_rate": 0.2}}), "lottery_fd8af0052d9d"),
    (lambda: _as(LotteryRunConfig, "cifar10_resnet20", {"method": "lottery", "lottery": {"retrain": "lr-rewind"}}),
     "lottery_3c244551df2f"),
    (lambda: get_preset("cifar100_resnet56_rst"), "rst_23f969678bce"),
    (lambda: get_preset("cifar100_resnet56_rst_iter"), "rst-iter_b6b96217c9f9"),
    (lambda: get_preset("mnist1d_cnn_rst"), "rst_73943c4cc717"),
    (lambda: merge(get_preset("mnist1d_cnn_rst"), {"method": "l1", "rst": {"layer_ratios": "0-3:0.95"}}),
     "l1_8580c423e029"),
]


@pytest.mark.parametrize("make, name", PINNED, ids=[name for _, name in PINNED])
def test_run_names_are_pinned(make, name):
    config = make()
    assert config.run_name == name
    assert type(config).from_dict(config.to_dict()).run_name == name


@pytest.mark.parametrize("branch, digest", [
    (BranchConfig(), "99914b93"),
    (BranchConfig(name="retrain", regain="1ep", steps="3ep"), "4f4da22c"),
    (BranchConfig(name="random-prune", layerwise=False, seed=4), "635f80f7"),
])
def test_branch_folders_are_pinned_and_live_in_the_trunk(branch, digest):
    assert branch_hash(branch) == digest
    config = merge(convert(get_preset("mnist_lenet_300_100"), BranchRunConfig), {"method": "lottery"})
    config = merge(config, {"branch": {"name": branch.name}})
    assert trunk_config(config).run_name == "lottery_0be4be2be646"


def test_a_stored_config_with_another_commands_default_sections_loads_to_the_same_hash():
    """Run directories written when every config held every section: their idle sections are dropped."""
    from ticketlab.method import config_from_dict

    stored = _as(LotteryRunConfig, "mnist_lenet_300_100", {"method": "lottery"}).to_dict()
    stored["rst"] = {"lr_prune": 0.001, "last_n": 5}  # both at their defaults
    assert config_from_dict(stored).run_name == "lottery_0be4be2be646"
    stored["rst"] = {"lr_prune": 0.5}  # not at its default: that config is not a lottery run's
    with pytest.raises(Exception, match="belongs to `ticketlab rst`"):
        config_from_dict(stored)
