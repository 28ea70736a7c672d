"""The shared pieces the coming methods build on: state-dict arithmetic, BatchNorm recomputation, predictions,
training subsets and seeds."""

import pytest
import torch
from torch import nn

from ticketlab import seeds
from ticketlab.config import DataConfig
from ticketlab.data import DataBundle, Split, load_data
from ticketlab.train import average, interpolate, predict, recompute_bn, training_batches


def _net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():  # values on a grid of 1/8: sums and halves below are exact in float32
        for p in net.parameters():
            p.copy_(torch.round(p * 8) / 8)
        net[1].running_mean.copy_(torch.arange(4.0) / 4)
        net[1].num_batches_tracked.fill_(seed + 5)
    return net.state_dict()


def test_interpolation_and_averaging_are_exact_on_a_toy_model():
    a, b, c = _net(0), _net(1), _net(2)
    assert all(torch.equal(interpolate(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(interpolate(a, b, 1.0)[k], b[k]) for k in a if b[k].is_floating_point())
    half = interpolate(a, b, 0.5)
    for k, v in half.items():
        if v.is_floating_point():
            assert torch.equal(v, (a[k] + b[k]) / 2), k
    assert half["1.num_batches_tracked"] == a["1.num_batches_tracked"] == 5  # integers: from the first
    quarter = interpolate(a, b, 0.25)
    assert torch.equal(quarter["0.weight"], 0.75 * a["0.weight"] + 0.25 * b["0.weight"])
    mean = average([a, b, c])
    for k, v in mean.items():
        if v.is_floating_point():
            expected = (a[k].double() + b[k].double() + c[k].double()) / 3
            assert torch.equal(v, expected.float()), k
    weighted = average([a, b], weights=[3, 1])
    assert torch.equal(weighted["0.weight"], 0.75 * a["0.weight"] + 0.25 * b["0.weight"])
    assert torch.equal(average([a])["3.bias"], a["3.bias"])
    with pytest.raises(ValueError, match="differ in their entries"):
        average([a, {k: v for k, v in b.items() if k != "3.bias"}])


def test_recompute_bn_is_the_cumulative_average_over_one_pass():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3, momentum=0.3))
    batches = [torch.randn(n, 5) * (i + 1) + i for i, n in enumerate((8, 8, 8, 5))]
    with torch.no_grad():
        net[1].running_mean.fill_(7.0)  # stale statistics that must not survive
        hidden = [net[0](x) for x in batches]
    net.eval()
    assert recompute_bn(net, batches) == 4
    bn = net[1]
    expected_mean = torch.stack([h.mean(0) for h in hidden]).mean(0)
    expected_var = torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var, expected_var, rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == 4 and bn.momentum == 0.3 and not net.training
    assert recompute_bn(nn.Linear(2, 2), iter(())) == 0
    kept = bn.running_mean.clone()
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn(net, iter(()))
    assert torch.equal(bn.running_mean, kept)


def test_training_batches_cover_one_epoch_in_the_seeded_order_and_predict_matches_argmax():
    data = load_data(DataConfig(dataset="digits", val_size=180), noise_seed=0)
    batches = list(training_batches(data, 500, seed=4))
    assert [len(b) for b in batches] == [500, 500, 257]
    again = list(training_batches(data, 500, seed=4))
    assert all(torch.equal(x, y) for x, y in zip(batches, again))
    assert torch.equal(torch.cat(batches).sort(0).values, data.train.x.sort(0).values)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    labels = predict(model, data.test, batch_size=100)
    assert torch.equal(labels, model(data.test.x).argmax(1)) and model.training


def test_subset_keeps_the_chosen_training_examples_and_their_source_indices():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=g), torch.arange(10) % 3
    data = DataBundle(Split(x, y, torch.arange(100, 110)), None, Split(x[:2], y[:2], torch.arange(2)), 3, (3,),
                      (y + 1) % 3)
    part = data.subset(torch.tensor([7, 2, 5]))
    assert torch.equal(part.train.x, x[[7, 2, 5]]) and torch.equal(part.train.y, y[[7, 2, 5]])
    assert part.train.index.tolist() == [107, 102, 105] and part.clean_train_y.tolist() == [2, 0, 0]
    assert part.test is data.test and len(data.train) == 10
    chosen = torch.zeros(10, dtype=torch.bool)
    chosen[[2, 5, 7]] = True
    assert data.subset(chosen).train.index.tolist() == [102, 105, 107]  # a boolean mask, in index order
    for bad in (torch.tensor([10]), torch.tensor([1.5]), torch.ones(3, dtype=torch.bool)):
        with pytest.raises(ValueError, match="positions in the training split"):
            data.subset(bad)


def test_seeds_are_stable_and_separate_purposes_steps_and_streams():
    # these numbers name what every existing run drew: changing them changes results
    assert seeds.derive_seed(0, "init") == 27910499
    assert seeds.stream_generator(3, 1).initial_seed() == 3 * 1_000_003 + 1
    assert seeds.step_generator(7, 100).initial_seed() == seeds.step_generator(7, 100).initial_seed()
    draws = {(p, s): torch.rand(3, generator=seeds.generator(5, p, s)).tolist()
             for p in ("grow", "drop") for s in (0, 1)}
    assert len({tuple(v) for v in draws.values()}) == 4
    assert draws["grow", 1] == torch.rand(3, generator=seeds.generator(5, "grow", 1)).tolist()
