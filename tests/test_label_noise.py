import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketlab.data import apply_label_noise, random_relabel_indices
from ticketlab.errors import ConfigError

N, C = 20_000, 10


def labels(n=N, c=C, seed=0):
    return torch.randint(c, (n,), generator=torch.Generator().manual_seed(seed))


def within_4_sd(count, n, r):
    return abs(count - n * r) <= 4 * math.sqrt(n * r * (1 - r))


@pytest.mark.parametrize("n,r", [(10, 0.7), (10, 0.3), (1000, 0.2), (999, 0.5), (7, 1.0), (5, 0.01)])
def test_random_relabels_exactly_ceil_rn_examples(n, r):
    y = labels(n)
    chosen = random_relabel_indices(n, r, seed=3)
    expected = min(n, math.ceil(round(r * n, 9)))
    assert len(chosen) == expected and len(torch.unique(chosen)) == expected
    out = apply_label_noise(y, "random", r, C, seed=3)
    changed = (out != y).nonzero().flatten()
    assert set(changed.tolist()) <= set(chosen.tolist())  # only chosen examples may change


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), r=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_random_chosen_count_property(n, r, seed):
    chosen = random_relabel_indices(n, r, seed)
    assert len(torch.unique(chosen)) == len(chosen) == min(n, math.ceil(round(r * n, 9)))
    assert ((chosen >= 0) & (chosen < n)).all()


def test_random_new_labels_are_uniform_over_all_classes():
    y = labels()
    out = apply_label_noise(y, "random", 0.5, C, seed=1)
    chosen = random_relabel_indices(N, 0.5, seed=1)
    # a chosen label is kept with probability 1/C, so the flip rate is r * (C-1)/C
    assert within_4_sd(int((out != y).sum()), N, 0.5 * (C - 1) / C)
    counts = torch.bincount(out[chosen], minlength=C)
    assert all(within_4_sd(int(k), len(chosen), 1 / C) for k in counts)


@pytest.mark.parametrize("r", [0.1, 0.3, 0.8])
def test_symmetric_changes_binomial_count_to_other_classes(r):
    y = labels()
    out = apply_label_noise(y, "symmetric", r, C, seed=5)
    changed = out != y
    assert within_4_sd(int(changed.sum()), N, r)
    # the new class is uniform over the C-1 others: offsets (new - old) mod C spread evenly over 1..C-1
    offsets = torch.bincount((out[changed] - y[changed]) % C, minlength=C)
    assert offsets[0] == 0
    assert all(within_4_sd(int(k), int(changed.sum()), 1 / (C - 1)) for k in offsets[1:])


@pytest.mark.parametrize("r", [0.1, 0.45])
def test_pairflip_changes_only_to_next_class(r):
    y = labels()
    out = apply_label_noise(y, "pairflip", r, C, seed=9)
    changed = out != y
    assert within_4_sd(int(changed.sum()), N, r)
    assert torch.equal(out[changed], (y[changed] + 1) % C)


def test_asymmetric_relabels_exact_count_per_mapped_class_without_chaining():
    y = labels()
    cmap = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    out = apply_label_noise(y, "asymmetric", 0.4, C, seed=2, class_map=cmap)
    for c in range(C):
        members = y == c
        moved = members & (out != y)
        if c in cmap:
            assert int(moved.sum()) == math.ceil(round(0.4 * int(members.sum()), 9))
            assert (out[moved] == cmap[c]).all()  # a cat becomes a dog, never a dog again
        else:
            assert not moved.any()


def test_asymmetric_without_class_map_is_config_error():
    with pytest.raises(ConfigError, match="class map"):
        apply_label_noise(labels(100), "asymmetric", 0.2, C, seed=0)


@pytest.mark.parametrize("kind,cmap", [("random", None), ("symmetric", None), ("pairflip", None),
                                       ("asymmetric", {0: 1, 1: 0})])
def test_noise_is_reproducible_from_seed_and_leaves_input_alone(kind, cmap):
    y = labels(2000)
    before = y.clone()
    a = apply_label_noise(y, kind, 0.3, C, seed=11, class_map=cmap)
    b = apply_label_noise(y, kind, 0.3, C, seed=11, class_map=cmap)
    c = apply_label_noise(y, kind, 0.3, C, seed=12, class_map=cmap)
    assert torch.equal(y, before)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.dtype == torch.int64 and a.shape == y.shape


def test_rate_zero_and_none_return_an_unchanged_copy():
    y = labels(100)
    for kind in ("none", "random", "symmetric", "pairflip"):
        out = apply_label_noise(y, kind, 0.0, C, seed=0)
        assert torch.equal(out, y) and out.data_ptr() != y.data_ptr()


def test_rate_one_symmetric_and_pairflip_change_every_label():
    y = labels(500)
    assert (apply_label_noise(y, "symmetric", 1.0, C, seed=0) != y).all()
    assert torch.equal(apply_label_noise(y, "pairflip", 1.0, C, seed=0), (y + 1) % C)


def test_bad_kind_or_rate_is_config_error():
    with pytest.raises(ConfigError, match="unknown label noise"):
        apply_label_noise(labels(10), "gaussian", 0.1, C, seed=0)
    with pytest.raises(ConfigError, match="out of range"):
        apply_label_noise(labels(10), "random", 1.5, C, seed=0)
