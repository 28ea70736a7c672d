import math

import pytest
import torch

from ticketlab.config import ModelConfig
from ticketlab.errors import ConfigError
from ticketlab.models import build_model
from ticketlab.sparsity import Mask
from ticketlab.methods.rst.ratios import (choose_pruned, cumulative_ratio, layer_indices, layer_stages,
                                       parse_index_ratios, pruned_count, pruned_fractions)


def model(name, shape=(3, 32, 32), **kwargs):
    return build_model(ModelConfig(name=name, **kwargs), shape, 100, seed=0)


def weights(m):
    from ticketlab.sparsity import prunable_parameters

    return {k: p.detach() for k, p in prunable_parameters(m).items()}


def test_resnet56_stages_and_readme_counts():
    net = model("resnet56")
    stages = layer_stages(net)
    assert stages["conv1.weight"] == 0 and stages["linear.weight"] == 4
    assert {stages[f"layer{k}.8.conv2.weight"] for k in (1, 2, 3)} == {1, 2, 3}
    ratios = pruned_fractions(net, stage_ratios=(0, 0.7, 0.7, 0.7, 0))
    mask = choose_pruned(weights(net), ratios, "min")
    for name, keep in mask.items():
        n = keep.numel()
        expected = 0 if stages[name] in (0, 4) else min(math.ceil(0.7 * n), n - 1)
        assert int((~keep).sum()) == expected, name
    # 16*16*9 = 2304 weights: ceil(1612.8) = 1613 pruned, 691 kept
    assert int(mask["layer1.0.conv1.weight"].sum()) == 691
    assert int(mask["layer2.0.conv1.weight"].sum()) == 4608 - 3226  # 32*16*9, ceil(3225.6)


def test_downsample_convs_share_stage_and_do_not_advance_the_index():
    net = model("resnet18", width=8)
    stages, indices = layer_stages(net), layer_indices(net)
    assert stages["layer2.0.downsample.0.weight"] == 2 and stages["fc.weight"] == 5
    assert indices["layer2.0.downsample.0.weight"] == indices["layer2.0.conv2.weight"]
    assert indices["layer2.1.conv1.weight"] == indices["layer2.0.conv2.weight"] + 1
    assert indices["fc.weight"] == 17  # stem + 16 block convs + fc, downsamples not counted
    with pytest.raises(ConfigError, match="6 stages"):
        pruned_fractions(net, stage_ratios=(0, 0.5, 0.5, 0))


def test_stage_ratios_refuse_non_resnet_names():
    with pytest.raises(ConfigError, match="ResNet-style"):
        layer_stages(model("mlp", (64,), hidden=(8,)))


def test_layer_index_ranges():
    net = model("mlp", (20,), hidden=(16, 12, 8))
    assert parse_index_ratios("[0-1:0.5, 3:0.25]") == [(0, 1, 0.5), (3, 3, 0.25)]
    ratios = pruned_fractions(net, layer_ratios="0-1:0.5,3:0.25")
    assert ratios == {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.0, "fc4.weight": 0.25}
    for bad, message in [("0-9:0.5", "layers are 0-3"), ("a:0.5", "INDEX:RATIO"), ("2-1:0.5", "backwards"),
                         ("0:1.5", r"\[0, 1\]")]:
        with pytest.raises(ConfigError, match=message):
            pruned_fractions(net, layer_ratios=bad)


def test_name_globs_last_match_wins_and_unmatched_is_an_error():
    net = model("resnet20")
    ratios = pruned_fractions(net, ratio_globs="layer*:0.5,layer3.*:0.9,linear.weight:0.1")
    assert ratios["conv1.weight"] == 0.0 and ratios["layer1.0.conv1.weight"] == 0.5
    assert ratios["layer3.2.conv2.weight"] == 0.9 and ratios["linear.weight"] == 0.1
    with pytest.raises(ConfigError, match="match no prunable layer"):
        pruned_fractions(net, ratio_globs="layer9*:0.5")
    with pytest.raises(ConfigError, match="one way"):
        pruned_fractions(net, ratio_globs="layer*:0.5", layer_ratios="0:0.1")


def test_dlth_count_rule():
    assert pruned_count(0.0, 100) == 0
    assert pruned_count(0.7, 2304) == 1613
    assert pruned_count(1.0, 10) == 9 and pruned_count(0.99, 10) == 9  # never the whole layer
    assert pruned_count(0.5, 1) == 0
    assert 0.07 * 100 > 7 and pruned_count(0.07, 100) == 7  # float noise does not add a weight
    assert pruned_count(1e-9, 10**6) == 1


def test_cumulative_ratios_of_rst_iter():
    values = [round(cumulative_ratio(0.7, c, 5), 3) for c in range(1, 6)]
    assert values == [0.214, 0.382, 0.514, 0.618, 0.700]
    assert cumulative_ratio(0.7, 5, 5) == 0.7
    q = 1 - 0.3 ** 0.2  # DLTH's running sum of q (1 - q)^(k-1)
    running = 0.0
    for c in range(1, 6):
        running += q * (1 - q) ** (c - 1)
        assert cumulative_ratio(0.7, c, 5) == pytest.approx(running, abs=1e-12)


def test_picks_min_max_rand():
    w = {"a": torch.tensor([0.5, -0.1, 0.3, 0.0, -0.9, 0.2]), "b": torch.tensor([[1.0, -2.0], [0.1, 0.4]])}
    ratios = {"a": 0.5, "b": 0.0}
    assert choose_pruned(w, ratios, "min")["a"].tolist() == [True, False, True, False, True, False]
    assert choose_pruned(w, ratios, "max")["a"].tolist() == [False, True, False, True, False, True]
    assert bool(choose_pruned(w, ratios, "min")["b"].all())
    masks = [choose_pruned(w, {"a": 0.5, "b": 0.5}, "rand", generator=torch.Generator().manual_seed(s))
             for s in (1, 1, 2, 3, 4)]
    assert masks[0] == masks[1] and any(m != masks[0] for m in masks[2:])
    assert all(int((~m["a"]).sum()) == 3 and int((~m["b"]).sum()) == 2 for m in masks)
    with pytest.raises(ConfigError, match="choose one of"):
        choose_pruned(w, ratios, "median")


def test_iter_rand_is_nested_with_exact_counts():
    net = model("mlp", (20,), hidden=(37, 23))
    w = weights(net)
    previous, generator = None, torch.Generator().manual_seed(0)
    for c in range(1, 6):
        ratios = {k: cumulative_ratio(0.7, c, 5) for k in w}
        mask = choose_pruned(w, ratios, "iter_rand", generator=generator, previous=previous)
        for name, keep in mask.items():
            assert int((~keep).sum()) == pruned_count(ratios[name], keep.numel()), (c, name)
        if previous is not None:
            assert mask.issubset(previous) and mask != previous
        previous = mask
    assert isinstance(previous, Mask)
