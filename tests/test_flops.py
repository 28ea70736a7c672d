"""Training cost: FLOPs from shapes and masks against hand computation, examples per step range."""

import json

import pytest
import torch

from ticketlab.analysis.flops import (forward_flops, layer_positions, mask_timeline, phase_cost, phase_flops,
                                      step_flops)
from ticketlab.config import ModelConfig
from ticketlab.data import examples_seen
from ticketlab.models import build_model
from ticketlab.sparsity import Mask

LENET_DENSE = 784 * 300 + 300 * 100 + 100 * 10  # multiply-adds of one example
RESNET20_DENSE = (3 * 16 * 9 * 32 * 32                                  # stem at 32x32
                  + 6 * 16 * 16 * 9 * 32 * 32                           # stage 1 at 32x32
                  + (16 * 32 * 9 + 5 * 32 * 32 * 9) * 16 * 16           # stage 2 at 16x16 (option-A shortcuts)
                  + (32 * 64 * 9 + 5 * 64 * 64 * 9) * 8 * 8             # stage 3 at 8x8
                  + 64 * 10)                                            # classifier after pooling


def lenet():
    model = build_model(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10, seed=0)
    return model, layer_positions(model, (1, 28, 28))


def test_lenet_step_flops_dense_and_masked():
    _, layers = lenet()
    assert layers == {"fc1.weight": (235200, 1), "fc2.weight": (30000, 1), "fc3.weight": (1000, 1)}
    assert step_flops(layers, 60) == 3 * 60 * 2 * LENET_DENSE
    kept = {"fc1.weight": 2352, "fc2.weight": 300}  # fc3 not named: dense
    assert step_flops(layers, 60, kept) == 3 * 60 * 2 * (2352 + 300 + 1000)


def test_resnet20_step_flops_dense_and_masked():
    model = build_model(ModelConfig(name="resnet20"), (3, 32, 32), 10, seed=0)
    layers = layer_positions(model, (3, 32, 32))
    assert RESNET20_DENSE == 40_551_040 and forward_flops(layers) == 2 * RESNET20_DENSE
    generator = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(p.shape, generator=generator) < 0.1 for n, p in model.named_parameters()
                 if p.dim() > 1})
    kept = {n: int(t.sum()) for n, t in mask.items()}
    spatial = {"conv1": 32 * 32, "layer1": 32 * 32, "layer2": 16 * 16, "layer3": 8 * 8, "linear": 1}
    by_hand = sum(k * spatial[n.split(".")[0]] for n, k in kept.items())
    assert step_flops(layers, 128, kept) == 3 * 128 * 2 * by_hand


@pytest.mark.parametrize("n,batch", [(10, 4), (12, 4), (55000, 128), (7, 10)])
def test_examples_seen_counts_each_batch(n, batch):
    ipe = -(-n // batch)
    sizes = [batch if i < ipe - 1 else n - (ipe - 1) * batch for i in range(ipe)]
    for start, end in [(0, 0), (0, 1), (0, ipe), (1, 3 * ipe + 2), (ipe - 1, ipe + 1), (5, 4)]:
        assert examples_seen(n, batch, start, end) == sum(sizes[s % ipe] for s in range(start, end))


def test_phase_flops_follows_the_mask_records(tmp_path):
    _, layers = lenet()
    records = [{"split": "mask", "step": 0, "kept": {"fc1.weight": 100}},
               {"split": "val", "step": 5, "accuracy": 0.5},
               {"split": "mask", "step": 5, "kept": {"fc1.weight": 50}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn')
    timeline = mask_timeline(tmp_path)
    assert timeline == [(0, {"fc1.weight": 100}), (5, {"fc1.weight": 50})]
    per = {k: 3 * forward_flops(layers, kept) for k, kept in [(0, timeline[0][1]), (5, timeline[1][1])]}
    # 10 examples in batches of 4: steps 0..7 see 4, 4, 2, 4, 4, 2, 4, 4
    assert phase_flops(layers, timeline, 0, 8, 10, 4) == per[0] * (4 + 4 + 2 + 4 + 4) + per[5] * (2 + 4 + 4)
    assert phase_flops(layers, timeline, 6, 8, 10, 4) == per[5] * (4 + 4)
    cost = phase_cost(tmp_path, {"start_step": 2, "steps": 8}, layers, 10, 4)  # metrics.jsonl: a trained phase
    assert cost == {"iterations": 6, "examples": 2 + 4 + 4 + 2 + 4 + 4,
                    "flops": per[0] * (2 + 4 + 4) + per[5] * (2 + 4 + 4)}


def test_phase_cost_from_a_mask_file_or_dense(tmp_path):
    model, layers = lenet()
    mask = Mask.ones(model)
    mask["fc1.weight"][:100] = False
    mask.save(tmp_path / "mask.pt")
    (tmp_path / "metrics.jsonl").write_text("")  # where the trainer ran
    kept = 235200 - 100 * 784 + 30000 + 1000
    cost = phase_cost(tmp_path, {"start_step": 0, "steps": 3, "subset_size": 8}, layers, 55000, 4)
    assert cost == {"iterations": 3, "examples": 4 + 4 + 4, "flops": 3 * 2 * kept * 12}
    # the kept counts a trainer writes into its summary come before mask.pt
    summary = {"start_step": 0, "steps": 1, "kept": {"fc1.weight": 10, "fc2.weight": 0, "fc3.weight": 0}}
    assert phase_cost(tmp_path, summary, layers, 10, 4)["flops"] == 3 * 4 * 2 * 10
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "metrics.jsonl").write_text("")
    assert phase_cost(dense, {"start_step": 0, "steps": 1}, layers, 10, 4)["flops"] == 3 * 4 * 2 * LENET_DENSE
    assert phase_cost(dense, {"steps": 0}, layers, 10, 4) == {"iterations": 0, "examples": 0, "flops": 0}
    copied = tmp_path / "copied"  # a summary that repeats another phase's steps, where no trainer ran
    copied.mkdir()
    assert phase_cost(copied, {"start_step": 0, "steps": 5}, layers, 10, 4) == {"iterations": 0, "examples": 0,
                                                                               "flops": 0}
