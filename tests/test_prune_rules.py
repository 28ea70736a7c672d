"""Other tools' counting for iterative global magnitude pruning: OpenLTH's and torch.nn.utils.prune's."""

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from ticketlab.config import ModelConfig, PruneConfig
from ticketlab.errors import ConfigError
from ticketlab.models import build_model
from ticketlab.sparsity import Mask, prune_remaining


def lenet(seed=0):
    return build_model(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10, seed=seed)


def test_openlth_counting_keeps_openlths_numbers():
    model, mask = lenet(), Mask.ones(lenet(), include_output=True)
    assert mask.num_kept() == 266_200
    kept = []
    for level in range(1, 4):  # the weights change between levels in a real run; the counts do not depend on it
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(generator=torch.Generator().manual_seed(level))
        mask = prune_remaining(model, mask, 0.2, "openlth", include_output=False)
        kept.append(mask.num_kept())
        assert bool(mask["fc3.weight"].all())  # counted in the budget, never pruned
    assert kept == [212_959, 170_366, 136_291]


def test_openlth_counting_prunes_ties_at_the_threshold():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2, 2, 2], [2, 3, 4, 5], [6, 7, 8, 9]]))
    mask = Mask.ones(model, include_output=True)  # 12 + 6 weights
    new = prune_remaining(model, mask, 0.1, "openlth", include_output=False)
    # ceil(0.1 * 18) = 2: the threshold is the 3rd smallest |w| (2.0); all five weights <= 2 go
    assert new.num_kept() == 18 - 5
    assert not bool(new["0.weight"][0].any()) and not bool(new["0.weight"][1, 0]) and bool(new["0.weight"][1, 1:].all())


def test_torch_counting_equals_global_unstructured_level_by_level():
    ours, theirs = lenet(), lenet()
    mask = Mask.ones(ours, include_output=True)
    layers = [(theirs.fc1, "weight"), (theirs.fc2, "weight")]
    for level in range(1, 6):
        with torch.no_grad():  # new weights each level, the same in both (torch keeps them in weight_orig)
            for name, a in ours.named_parameters():
                a.normal_(generator=torch.Generator().manual_seed(level))
                layer, _, param = name.rpartition(".")
                target = getattr(theirs.get_submodule(layer), param + "_orig", None)
                (target if target is not None else getattr(theirs.get_submodule(layer), param)).copy_(a)
            theirs(torch.zeros(1, 1, 28, 28))  # torch recomputes weight = weight_orig * weight_mask on a forward
        mask = prune_remaining(ours, mask, 0.2, "torch", include_output=False)
        torch_prune.global_unstructured(layers, pruning_method=torch_prune.L1Unstructured, amount=0.2)
        assert torch.equal(mask["fc1.weight"], theirs.fc1.weight_mask.bool()), level
        assert torch.equal(mask["fc2.weight"], theirs.fc2.weight_mask.bool()), level


def test_other_rules_need_global_magnitude_pruning():
    with pytest.raises(ConfigError, match="global magnitude"):
        PruneConfig(rule="openlth", scope="layer").validate()
    with pytest.raises(ConfigError, match="global magnitude"):
        PruneConfig(rule="torch", output_rate=0.5).validate()
    PruneConfig(rule="openlth", output_rate=0.0).validate()


def test_the_openlth_preset_is_openlths_job(mnist_root, tmp_path):
    from ticketlab.cli import main

    assert main(["lottery", "--preset", "openlth_mnist_lenet_300_100", "--data.root", str(mnist_root),
                 "--train.steps", "5it", "--levels", "3", "--runs-dir", str(tmp_path), "--progress", "none",
                 "--device", "cpu"]) == 0
    (run,) = list(tmp_path.iterdir())
    kept = [Mask.load(run / f"level_{k}" / "mask.pt").num_kept() for k in range(4)]
    assert kept == [266_200, 212_959, 170_366, 136_291]
    summary = __import__("json").loads((run / "level_0" / "summary.json").read_text())
    assert summary["iters_per_epoch"] == 469  # 60,000 training images, no validation split, batch 128
