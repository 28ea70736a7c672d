"""Counting rule, exact top-k selection, nesting, output rate and scorers."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.sparsity import SCORERS, Mask, keep_counts, prunable_parameters, prune, select_topk

SHAPES = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
DENSITIES = [0.5, 0.2, 0.05, 0.011]


def half_up(x):
    return math.floor(x + 0.5)


def mlp_scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g).abs() for k, s in SHAPES.items()}


def sizes_of(scores):
    return {k: v.numel() for k, v in scores.items()}


def reference_topk(scores, counts):
    """Independent selection: python sort by (-score, index), best-of-each-tensor first if global."""
    if isinstance(counts, dict):
        return {k: reference_topk({k: s}, counts[k])[k] for k, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()]).tolist()
    forced, start = set(), 0
    for s in scores.values():
        seg = flat[start:start + s.numel()]
        best = max(range(len(seg)), key=lambda i: (seg[i], -i))
        if seg[best] > -math.inf:
            forced.add(start + best)
        start += s.numel()
    order = [i for i in sorted(range(len(flat)), key=lambda i: (-flat[i], i))
             if i not in forced and flat[i] > -math.inf]
    kept = forced | set(order[:max(counts - len(forced), 0)])
    keep = torch.zeros(len(flat), dtype=torch.bool)
    keep[sorted(kept)] = True
    out, start = {}, 0
    for k, s in scores.items():
        out[k] = keep[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return out


# -- the counting rule ------------------------------------------------------------------------
def test_half_up_not_bankers():
    assert keep_counts({"a": 5}, 0.5, "layer") == {"a": 3}  # round(2.5) would give 2
    assert keep_counts({"a": 10}, 0.25, "layer") == {"a": 3}
    assert keep_counts({"a": 3, "b": 2}, 0.5, "global") == 3
    assert keep_counts({"a": 1000, "b": 10}, 0.0001, "layer") == {"a": 1, "b": 1}


@pytest.mark.parametrize("density", DENSITIES)
def test_global_count_exact(density):
    scores = mlp_scores()
    n = sum(sizes_of(scores).values())
    masks = select_topk(scores, keep_counts(sizes_of(scores), density, "global"))
    assert sum(int(m.sum()) for m in masks.values()) == half_up(density * n)
    assert all(int(m.sum()) >= 1 for m in masks.values())
    flat_s = torch.cat([s.reshape(-1) for s in scores.values()])
    flat_m = torch.cat([m.reshape(-1) for m in masks.values()])
    assert flat_s[flat_m].min() >= flat_s[~flat_m].max()


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("scope", ["layer", "uniform"])
def test_layerwise_counts_exact(density, scope):
    scores = mlp_scores(1)
    masks = select_topk(scores, keep_counts(sizes_of(scores), density, scope))
    for i, (k, s) in enumerate(scores.items()):
        expected = s.numel() if scope == "uniform" and i == 0 else max(1, half_up(density * s.numel()))
        assert int(masks[k].sum()) == expected
        if expected < s.numel():
            assert s[masks[k]].min() >= s[~masks[k]].max()


def test_global_keeps_one_per_layer():
    scores = {"a": torch.arange(1.0, 1001.0), "b": torch.zeros(10)}
    masks = select_topk(scores, keep_counts(sizes_of(scores), 0.011, "global"))
    assert int(masks["b"].sum()) == 1 and bool(masks["b"][0])  # the lowest index among tied bests
    assert int(masks["a"].sum()) == half_up(0.011 * 1010) - 1
    assert bool(masks["a"][-10:].all())


def test_ties_all_equal_keep_lowest_indices():
    scores = {k: torch.ones(s) for k, s in SHAPES.items()}
    sizes = sizes_of(scores)
    layer = select_topk(scores, keep_counts(sizes, 0.2, "layer"))
    for k, m in layer.items():
        c = half_up(0.2 * sizes[k])
        assert torch.equal(m.reshape(-1), torch.arange(sizes[k]) < c)
    k_total = keep_counts(sizes, 0.2, "global")
    glob = select_topk(scores, k_total)
    n1, n2 = sizes["fc1.weight"], sizes["fc2.weight"]
    expected = torch.arange(sum(sizes.values())) < k_total - 2  # first two of the others are forced
    expected[[n1, n1 + n2]] = True
    assert torch.equal(torch.cat([m.reshape(-1) for m in glob.values()]), expected)


@pytest.mark.parametrize("counts", ["global", "layer"])
def test_ties_from_small_set_match_reference_and_repeat(counts):
    g = torch.Generator().manual_seed(3)
    scores = {"a": torch.randint(0, 3, (40, 30), generator=g).float(),
              "b": torch.randint(0, 3, (30, 20), generator=g).float(),
              "c": torch.randint(0, 3, (20, 5), generator=g).float()}
    c = keep_counts(sizes_of(scores), 0.3, counts)
    first, second = select_topk(scores, c), select_topk(scores, c)
    ref = reference_topk(scores, c)
    for k in scores:
        assert torch.equal(first[k], second[k]) and torch.equal(first[k], ref[k])
    total = sum(int(m.sum()) for m in first.values())
    assert total == (c if counts == "global" else sum(c.values()))


def test_neg_inf_never_kept():
    g = torch.Generator().manual_seed(4)
    scores = {"a": torch.rand(50, generator=g), "b": torch.rand(30, generator=g)}
    scores["a"][:40] = -math.inf
    scores["b"][::2] = -math.inf
    for counts in [{"a": 5, "b": 5}, {"a": 20, "b": 30}, 12, 70]:
        masks = select_topk(scores, counts)
        for k in scores:
            assert not bool((masks[k] & (scores[k] == -math.inf)).any())
    assert [int(m.sum()) for m in select_topk(scores, {"a": 5, "b": 5}).values()] == [5, 5]
    assert [int(m.sum()) for m in select_topk(scores, {"a": 20, "b": 30}).values()] == [10, 15]
    assert sum(int(m.sum()) for m in select_topk(scores, 12).values()) == 12
    all_pruned = {"a": torch.full((4,), -math.inf), "b": torch.rand(6, generator=g)}
    masks = select_topk(all_pruned, 3)
    assert int(masks["a"].sum()) == 0 and int(masks["b"].sum()) == 3


def test_large_tensor_bracketing_is_exact():
    g = torch.Generator().manual_seed(5)
    big = torch.cat([torch.randint(0, 50, (700_000,), generator=g).float(), torch.randn(300_000, generator=g)])
    order = np.lexsort((np.arange(big.numel()), -big.numpy()))  # by score descending, then index
    for density in (0.9, 0.3, 0.001):
        k = keep_counts({"a": big.numel()}, density, "layer")["a"]
        expected = torch.zeros(big.numel(), dtype=torch.bool)
        expected[torch.from_numpy(order[:k])] = True
        assert torch.equal(select_topk({"a": big}, {"a": k})["a"], expected)
        joined = select_topk({"a": big[:600_000], "b": big[600_000:]}, k)
        forced = np.array([int(big[:600_000].argmax()), 600_000 + int(big[600_000:].argmax())])
        rest = order[~np.isin(order, forced)][: k - 2]
        expected = torch.zeros(big.numel(), dtype=torch.bool)
        expected[torch.from_numpy(np.concatenate([forced, rest]))] = True
        assert torch.equal(torch.cat([joined["a"], joined["b"]]), expected)


def test_large_tensor_adversarial_sample_is_exact():
    n = 1_000_000
    big = torch.rand(n, generator=torch.Generator().manual_seed(6))
    big[:: n // 65536] = 100.0  # exactly the strided positions a subsample would look at
    for k in (10, 50_000, 400_000):
        expected = torch.zeros(n, dtype=torch.bool)
        expected[torch.from_numpy(np.lexsort((np.arange(n), -big.numpy()))[:k])] = True
        assert torch.equal(select_topk({"a": big}, {"a": k})["a"], expected)


@pytest.mark.parametrize("values", ["distinct", "ties", "hidden from the sample"])
def test_a_few_of_many_is_exact(values):
    """k <= n / 16 selects among candidates above a sampled bound (DST's regrowth): exact in every case."""
    n = 235_200
    g = torch.Generator().manual_seed(7)
    big = {"distinct": lambda: torch.rand(n, generator=g),
           "ties": lambda: torch.randint(0, 400, (n,), generator=g).float()}.get(values, lambda: torch.rand(n, generator=g))()
    big[torch.randperm(n, generator=g)[: n // 3]] = -math.inf  # the active positions of a growth step
    if values == "hidden from the sample":
        stride = n // 4096
        off_sample = torch.arange(n) % stride != 0
        big[off_sample & (big > 0.99)] += 10.0  # every large entry where the strided sample does not look
    for k in (1, 37, 2716, n // 16):
        expected = torch.zeros(n, dtype=torch.bool)
        expected[torch.from_numpy(np.lexsort((np.arange(n), -big.numpy()))[:k])] = True
        assert torch.equal(select_topk({"a": big}, {"a": k})["a"], expected), k


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_exact_and_ordered(data):
    n_tensors = data.draw(st.integers(1, 3))
    values = st.one_of(st.integers(-3, 3).map(float), st.floats(-10, 10, allow_nan=False), st.just(-math.inf))
    scores = {}
    for i in range(n_tensors):
        size = data.draw(st.integers(1, 40))
        scores[f"t{i}"] = torch.tensor(data.draw(st.lists(values, min_size=size, max_size=size)))
    density = data.draw(st.floats(0.001, 1.0))
    sizes = sizes_of(scores)
    for scope in ("global", "layer"):
        c = keep_counts(sizes, density, scope)
        masks = select_topk(scores, c)
        ref = reference_topk(scores, c)
        assert all(torch.equal(masks[k], ref[k]) for k in scores)
        finite = sum(int((s > -math.inf).sum()) for s in scores.values())
        kept = sum(int(m.sum()) for m in masks.values())
        if scope == "global":
            assert kept == min(c, finite)
            assert c == max(half_up(density * sum(sizes.values())), n_tensors)
            forced = {k: int(s.argmax()) for k, s in scores.items()}
            for k, s in scores.items():
                m = masks[k].clone()
                m[forced[k]] = False
                dropped = torch.cat([scores[j][~masks[j]] for j in scores])
                if m.any() and dropped.numel():
                    assert s[m].min() >= dropped.max()
        else:
            for k, s in scores.items():
                assert int(masks[k].sum()) == min(c[k], int((s > -math.inf).sum()))


# -- prune: nesting, output rate, errors ------------------------------------------------------
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(196, 75), nn.Linear(75, 25), nn.Linear(25, 10)
        self.output_layer = "fc3"

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def rerandomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_iterative_pruning_nested_exact(scope):
    torch.manual_seed(0)
    model = MLP()
    params = prunable_parameters(model)
    n = sum(p.numel() for p in params.values())
    mask = None
    for k in range(1, 6):
        rerandomize(model, k)  # weights move between levels, so nesting must come from the mask
        d = 0.8 ** k
        new = prune(model, d, scope=scope, mask=mask)
        if scope == "global":
            assert new.num_kept() == half_up(d * n)
        else:
            assert all(int(new[name].sum()) == half_up(d * p.numel()) for name, p in params.items())
        if mask is not None:
            assert new.issubset(mask) and not mask.issubset(new)
        mask = new


def test_prune_does_not_modify_model():
    model = MLP()
    before = copy.deepcopy(model.state_dict())
    prune(model, 0.3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_output_rate():
    model = MLP()
    sizes = {k: p.numel() for k, p in prunable_parameters(model).items()}
    n_out = sizes["fc3.weight"]
    n_rest = sum(sizes.values()) - n_out
    m0 = prune(model, 0.2, output_rate=0.0)
    assert bool(m0["fc3.weight"].all())
    assert m0.num_kept() - n_out == half_up(0.2 * n_rest)
    m5 = prune(model, 0.2, output_rate=0.5)
    assert int(m5["fc3.weight"].sum()) == half_up((1 - 0.5 * 0.8) * n_out)
    assert m5.num_kept() - int(m5["fc3.weight"].sum()) == half_up(0.2 * n_rest)
    m1 = prune(model, 0.2, output_rate=1.0)
    assert m1.num_kept() == half_up(0.2 * (n_rest + n_out))
    ml = prune(model, 0.2, scope="layer", output_rate=0.5)
    assert int(ml["fc3.weight"].sum()) == half_up(0.6 * n_out)
    assert int(ml["fc1.weight"].sum()) == half_up(0.2 * sizes["fc1.weight"])
    mu = prune(model, 0.2, scope="uniform", output_rate=0.0)
    assert bool(mu["fc1.weight"].all()) and bool(mu["fc3.weight"].all())
    assert int(mu["fc2.weight"].sum()) == half_up(0.2 * sizes["fc2.weight"])
    assert "fc3.weight" not in prune(model, 0.2, include_output=False)


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, float("nan")])
def test_bad_density(bad):
    with pytest.raises(ConfigError, match=r"prune density must lie in \(0, 1\]"):
        prune(MLP(), bad)


def test_density_above_mask_rejected():
    model = MLP()
    mask = prune(model, 0.5)
    with pytest.raises(ConfigError, match="exceeds"):
        prune(model, 0.6, mask=mask)
    again = prune(model, 0.33, mask=prune(model, 0.33))  # 0.33 * n rounds down: still allowed
    assert again == prune(model, 0.33)
    with pytest.raises(ConfigError, match="scope"):
        prune(model, 0.5, scope="erk2")
    with pytest.raises(ConfigError, match="magnitude"):
        prune(model, 0.5, criterion="magnitud")


# -- scorers ----------------------------------------------------------------------------------
def test_gradient_score_equals_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    model.eval()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    reference_model = copy.deepcopy(model)
    buffers = copy.deepcopy(dict(model.named_buffers()))
    rng = torch.get_rng_state()
    scores = SCORERS.get("gradient")(prunable_parameters(model), model=model, batch=(x, y))
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(buffers[k], b) for k, b in model.named_buffers())
    reference_model.train()  # same global RNG state -> same dropout mask
    ref_params = prunable_parameters(reference_model)
    loss = F.cross_entropy(reference_model(x), y)
    grads = torch.autograd.grad(loss, list(ref_params.values()))
    for (k, p), g in zip(ref_params.items(), grads):
        assert torch.equal(scores[k], (p.detach() * g).abs())
    mask = prune(model, 0.3, criterion="gradient", batch=(x, y))
    assert mask.num_kept() == half_up(0.3 * (48 + 24))


def test_gradient_needs_batch():
    with pytest.raises(ConfigError, match="batch"):
        prune(MLP(), 0.5, criterion="gradient")


def test_random_scores_reproducible():
    model = MLP()
    params = prunable_parameters(model)
    rnd = SCORERS.get("random")
    a = rnd(params, generator=torch.Generator().manual_seed(7))
    b = rnd(params, generator=torch.Generator().manual_seed(7))
    c = rnd(params, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in params)
    assert not any(torch.equal(a[k], c[k]) for k in params)
    rng = torch.get_rng_state()
    m1 = prune(model, 0.3, criterion="random", generator=torch.Generator().manual_seed(1))
    m2 = prune(model, 0.3, criterion="random", generator=torch.Generator().manual_seed(1))
    m3 = prune(model, 0.3, criterion="random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), rng)
    assert m1 == m2 and m1 != m3
    assert prune(model, 0.3, criterion="random") == prune(model, 0.3, criterion="random")
    assert isinstance(m1, Mask)
