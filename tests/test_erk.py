"""ERK / ER / uniform per-layer densities, glob densities, and prune with those allocations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.sparsity import (Mask, densities_from_globs, keep_counts, layer_densities, prunable_parameters,
                                prune)

S = torch.Size
LENET = {"fc1.weight": S((300, 784)), "fc2.weight": S((100, 300)), "fc3.weight": S((10, 100))}


def resnet20_shapes():
    shapes = {"conv1.weight": S((16, 3, 3, 3))}
    c_in = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in range(3):
            shapes[f"layer{stage}.{block}.conv1.weight"] = S((width, c_in, 3, 3))
            shapes[f"layer{stage}.{block}.conv2.weight"] = S((width, width, 3, 3))
            c_in = width
    shapes["fc.weight"] = S((10, 64))
    return shapes


def vgg16_shapes():
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    shapes, c_in = {}, 3
    for i, w in enumerate(widths):
        shapes[f"features.{i}.weight"] = S((w, c_in, 3, 3))
        c_in = w
    shapes["classifier.weight"] = S((10, 512))
    return shapes


NETS = {"lenet": LENET, "resnet20": resnet20_shapes(), "vgg16": vgg16_shapes()}
DENSITIES = [0.5, 0.2, 0.1, 0.05, 0.01]


def reference_erk(shapes, density, power=1.0, include_kernel=True, dense=()):
    """The reference loop (Sup-tickets' Masking.init, ERK branch), written out literally in numpy."""
    dense_layers = set(dense)
    while True:
        divisor, rhs, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n_param = np.prod(list(shape))
            if name in dense_layers:
                rhs -= n_param * (1 - density)
            else:
                rhs += n_param * density
                dims = list(shape) if include_kernel else list(shape)[:2]
                raw[name] = (np.sum(dims) / np.prod(dims)) ** power
                divisor += raw[name] * n_param
        if not raw:  # every layer capped dense (density close to 1)
            break
        epsilon = rhs / divisor
        max_prob = max(raw.values())
        if max_prob * epsilon > 1:
            dense_layers.update(k for k, v in raw.items() if v == max_prob)
        else:
            break
    return {k: 1.0 if k in dense_layers else float(epsilon * raw[k]) for k in shapes}


def half_up(x):
    return math.floor(x + 0.5)


def sizes_of(shapes):
    return {k: s.numel() for k, s in shapes.items()}


# -- ERK / ER against the reference -----------------------------------------------------------
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("method", ["erk", "er"])
def test_matches_reference_and_counts(net, density, method):
    shapes = NETS[net]
    ours = layer_densities(shapes, density, method)
    ref = reference_erk(shapes, density, include_kernel=method == "erk")
    assert list(ours) == list(shapes)
    for k in shapes:
        assert abs(ours[k] - ref[k]) <= 1e-6, k
        assert (ours[k] == 1.0) == (ref[k] == 1.0)  # capped layers are exactly dense
    sizes = sizes_of(shapes)
    n = sum(sizes.values())
    assert sum(ours[k] * sizes[k] for k in shapes) == pytest.approx(density * n, rel=1e-12)  # budget exact
    counts = keep_counts(sizes, ours, "layer")
    assert counts == {k: max(1, half_up(ours[k] * sizes[k])) for k in shapes}
    capped = [k for k in shapes if ours[k] == 1.0]
    assert all(counts[k] == sizes[k] for k in capped)
    assert all(0 < ours[k] < 1 for k in shapes if k not in capped)
    raw = {k: sum(s if method == "erk" else s[:2]) / math.prod(s if method == "erk" else s[:2])
           for k, s in shapes.items()}
    if capped and len(capped) < len(shapes):  # layers cap in order of raw score
        assert min(raw[k] for k in capped) > max(raw[k] for k in shapes if k not in capped)
    assert abs(sum(counts.values()) - density * n) <= len(shapes) / 2  # only rounding separates them


def test_capping_cases():
    res = layer_densities(NETS["resnet20"], 0.1, "erk")
    assert [k for k, d in res.items() if d == 1.0] == ["conv1.weight", "fc.weight"]  # largest raw scores
    half = layer_densities(NETS["resnet20"], 0.5, "erk")  # capping conv1 and fc pushes stage 1 over too
    assert [k for k, d in half.items() if d == 1.0] == ["conv1.weight"] + [
        f"layer1.{b}.conv{c}.weight" for b in range(3) for c in (1, 2)] + ["layer2.0.conv1.weight", "fc.weight"]
    lenet = layer_densities(LENET, 0.2, "erk")
    assert lenet["fc3.weight"] == 1.0 and lenet["fc1.weight"] < lenet["fc2.weight"] < 1.0
    # below any capping, every layer is eps * raw: ratios of densities are ratios of raw scores
    vgg = layer_densities(NETS["vgg16"], 0.01, "erk")
    raw = {k: sum(s) / math.prod(s) for k, s in NETS["vgg16"].items()}
    free = [k for k, d in vgg.items() if d < 1.0]
    assert len(free) >= 12
    for k in free:
        assert vgg[k] / vgg[free[0]] == pytest.approx(raw[k] / raw[free[0]], rel=1e-12)


def test_er_differs_on_convs_equals_on_linears():
    erk, er = (layer_densities(NETS["resnet20"], 0.1, m) for m in ("erk", "er"))
    assert max(abs(erk[k] - er[k]) for k in erk) > 1e-2
    # ER: (out + in) / (out * in) for a conv, no kernel term
    free = [k for k in er if er[k] < 1.0]
    a, b = NETS["resnet20"][free[0]], NETS["resnet20"][free[-1]]
    ratio = ((a[0] + a[1]) / (a[0] * a[1])) / ((b[0] + b[1]) / (b[0] * b[1]))
    assert er[free[0]] / er[free[-1]] == pytest.approx(ratio, rel=1e-12)
    for density in DENSITIES:
        erk, er = (layer_densities(LENET, density, m) for m in ("erk", "er"))
        assert all(abs(erk[k] - er[k]) <= 1e-12 for k in LENET)


@pytest.mark.parametrize("power", [0.0, 0.5, 2.0])
def test_power(power):
    shapes = NETS["resnet20"]
    ours = layer_densities(shapes, 0.05, "erk", power=power)
    ref = reference_erk(shapes, 0.05, power=power)
    assert all(abs(ours[k] - ref[k]) <= 1e-6 for k in shapes)
    if power == 0.0:
        assert all(d == pytest.approx(0.05, rel=1e-12) for d in ours.values())


def test_exclude_and_dense():
    shapes = NETS["resnet20"]
    sizes = sizes_of(shapes)
    rest = {k: s for k, s in shapes.items() if k != "conv1.weight"}
    ex = layer_densities(shapes, 0.1, "erk", exclude=["conv1.weight"])
    assert ex["conv1.weight"] == 1.0
    ref = reference_erk(rest, 0.1)
    assert all(abs(ex[k] - ref[k]) <= 1e-6 for k in rest)
    assert sum(ex[k] * sizes[k] for k in rest) == pytest.approx(0.1 * sum(sizes[k] for k in rest), rel=1e-12)

    big = "layer2.0.conv1.weight"
    de = layer_densities(shapes, 0.1, "erk", dense=[big])
    ref = reference_erk(shapes, 0.1, dense=[big])
    assert de[big] == 1.0 and all(abs(de[k] - ref[k]) <= 1e-6 for k in shapes)
    assert sum(de[k] * sizes[k] for k in shapes) == pytest.approx(0.1 * sum(sizes.values()), rel=1e-12)
    plain = layer_densities(shapes, 0.1, "erk")
    assert all(de[k] <= plain[k] for k in shapes if k != big)  # the others pay for the dense layer
    assert layer_densities(shapes, 1.0, "erk") == {k: 1.0 for k in shapes}


def test_layer_and_uniform():
    shapes = NETS["resnet20"]
    layer = layer_densities(shapes, 0.2, "layer")
    uniform = layer_densities(shapes, 0.2, "uniform")
    assert set(layer.values()) == {0.2}
    assert uniform["conv1.weight"] == 1.0 and all(uniform[k] == 0.2 for k in list(shapes)[1:])
    sizes = sizes_of(shapes)
    for scope, dens in (("layer", layer), ("uniform", uniform)):
        assert keep_counts(sizes, 0.2, scope) == keep_counts(sizes, dens, "layer")
    # excluding the first layer does not make the second one dense under "uniform"
    ex = layer_densities(shapes, 0.2, "uniform", exclude=["conv1.weight"], dense=["fc.weight"])
    assert ex == {**layer, "conv1.weight": 1.0, "fc.weight": 1.0}


def test_errors():
    shapes = NETS["resnet20"]
    with pytest.raises(ConfigError, match="erk, er, uniform, layer"):
        layer_densities(shapes, 0.1, "ekr")
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        layer_densities(shapes, 0.0, "erk")
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        layer_densities(shapes, float("nan"), "er")
    with pytest.raises(ConfigError, match="conv9.weight"):
        layer_densities(shapes, 0.1, "erk", exclude=["conv9.weight"])
    with pytest.raises(ConfigError, match="power"):
        layer_densities(shapes, 0.1, "erk", power=-1.0)
    big = [k for k in shapes if k.startswith("layer3")]
    with pytest.raises(ConfigError, match="forced dense"):
        layer_densities(shapes, 0.1, "erk", dense=big)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_property_matches_reference(data):
    n_layers = data.draw(st.integers(1, 8))
    shapes = {}
    for i in range(n_layers):
        dims = data.draw(st.lists(st.integers(1, 64), min_size=2, max_size=4))
        shapes[f"l{i}"] = S(dims)
    density = data.draw(st.floats(0.001, 1.0))
    method = data.draw(st.sampled_from(["erk", "er"]))
    ours = layer_densities(shapes, density, method)
    ref = reference_erk(shapes, density, include_kernel=method == "erk")
    assert all(abs(ours[k] - ref[k]) <= 1e-9 for k in shapes)
    assert all(0 < d <= 1.0 for d in ours.values())
    n = sum(s.numel() for s in shapes.values())
    assert sum(ours[k] * shapes[k].numel() for k in shapes) == pytest.approx(density * n, rel=1e-9)


# -- explicit densities by glob ---------------------------------------------------------------
NAMES = list(NETS["resnet20"])


def test_globs_last_match_wins():
    spec = "conv1.*:1.0, layer*.weight:0.1 ,fc.weight:0.5,layer3.*:0.05"
    d = densities_from_globs(NAMES, spec)
    assert d["conv1.weight"] == 1.0 and d["fc.weight"] == 0.5
    assert d["layer1.0.conv1.weight"] == 0.1 and d["layer2.2.conv2.weight"] == 0.1
    assert d["layer3.0.conv1.weight"] == 0.05  # matched by two patterns; the later one wins
    flipped = densities_from_globs(NAMES, "layer3.*:0.05,layer*.weight:0.1")
    assert flipped["layer3.0.conv1.weight"] == 0.1
    assert densities_from_globs(NAMES, {"layer1.*": 0.3}, default=0.7) == {
        k: 0.3 if k.startswith("layer1.") else 0.7 for k in NAMES}
    assert densities_from_globs(NAMES, "") == {k: 1.0 for k in NAMES}
    classes = densities_from_globs(NAMES, "layer[12].?.conv2.*:0.2")
    expected = [f"layer{s}.{b}.conv2.weight" for s in (1, 2) for b in range(3)]
    assert [k for k, v in classes.items() if v == 0.2] == expected


@pytest.mark.parametrize("spec, match", [
    ("conv1.weight", "ill-formed"), ("conv1.weight:abc", "ill-formed"), (":0.5", "ill-formed"),
    ("conv1.weight:0", r"\(0, 1\]"), ("conv1.weight:1.5", r"\(0, 1\]"), ("conv1.weight:nan", r"\(0, 1\]"),
    ({"conv1.weight": -0.1}, r"\(0, 1\]"), ("convv1.*:0.5", "match no prunable layer"),
    (3, "dict or a string"), ({"": 0.5}, "non-empty"),
])
def test_glob_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        densities_from_globs(NAMES, spec)
    assert "\n" not in str(info.value)


def test_glob_case_sensitive_and_default_checked():
    with pytest.raises(ConfigError, match="match no prunable layer"):
        densities_from_globs(["conv.weight"], "CONV.*:0.5")
    with pytest.raises(ConfigError, match="default"):
        densities_from_globs(NAMES, "", default=0.0)


# -- prune with ERK / ER / explicit densities -------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))
        return self.fc2(F.relu(self.fc1(x.mean((2, 3)))))


def shapes_of(model):
    return {k: p.shape for k, p in prunable_parameters(model).items()}


def expected_counts(shapes, densities):
    return {k: max(1, half_up(densities[k] * s.numel())) for k, s in shapes.items()}


@pytest.mark.parametrize("scope", ["erk", "er"])
@pytest.mark.parametrize("density", [0.3, 0.1, 0.02])
def test_prune_erk_exact_counts(scope, density):
    torch.manual_seed(0)
    model = SmallCNN()
    shapes, params = shapes_of(model), prunable_parameters(model)
    mask = prune(model, density, scope=scope)
    want = expected_counts(shapes, reference_erk(shapes, density, include_kernel=scope == "erk"))
    assert {k: int(m.sum()) for k, m in mask.items()} == want
    for k, m in mask.items():  # magnitude top-k within each layer
        w = params[k].detach().abs()
        if not bool(m.all()):
            assert w[m].min() >= w[~m].max()
    rnd = [prune(model, density, scope=scope, criterion="random", generator=torch.Generator().manual_seed(s))
           for s in (1, 1, 2)]
    assert all({k: int(m.sum()) for k, m in r.items()} == want for r in rnd)
    assert rnd[0] == rnd[1] and rnd[0] != rnd[2]


def test_prune_erk_power_and_first_layer():
    model = SmallCNN()
    shapes = shapes_of(model)
    mask = prune(model, 0.1, scope="erk", erk_power=0.5)
    assert {k: int(m.sum()) for k, m in mask.items()} == expected_counts(shapes, reference_erk(shapes, 0.1, 0.5))
    rest = {k: s for k, s in shapes.items() if k != "conv1.weight"}
    no_first = prune(model, 0.1, scope="erk", include_first=False)
    assert bool(no_first["conv1.weight"].all())
    assert {k: int(no_first[k].sum()) for k in rest} == expected_counts(rest, reference_erk(rest, 0.1))
    glob = prune(model, 0.1, scope="global", include_first=False)
    assert bool(glob["conv1.weight"].all())
    n_rest = sum(s.numel() for s in rest.values())
    assert glob.num_kept() - shapes["conv1.weight"].numel() == half_up(0.1 * n_rest)
    assert prune(model, 0.1, scope="uniform", include_first=False) == prune(model, 0.1, scope="uniform")


def test_prune_erk_output_rate():
    model = SmallCNN()
    shapes = shapes_of(model)
    mask = prune(model, 0.1, scope="erk", output_rate=0.5)
    n_out = shapes["fc2.weight"].numel()
    assert int(mask["fc2.weight"].sum()) == half_up(0.55 * n_out)
    rest = {k: s for k, s in shapes.items() if k != "fc2.weight"}
    assert {k: int(mask[k].sum()) for k in rest} == expected_counts(rest, reference_erk(rest, 0.1))


def test_prune_erk_iterative_nested():
    model = SmallCNN()
    mask = None
    for k in range(1, 8):
        new = prune(model, 0.7 ** k, scope="erk", mask=mask)
        if mask is not None:
            assert new.issubset(mask)
        mask = new
    with pytest.raises(ConfigError, match="never regrown"):
        prune(model, 0.5, scope="erk", mask=mask)


def test_prune_layer_density():
    model = SmallCNN()
    shapes = shapes_of(model)
    spec = densities_from_globs(list(shapes), "conv*:0.25,conv1.weight:1.0,fc2.weight:0.5", default=0.1)
    mask = prune(model, 0.9, layer_density=spec, scope="erk")  # layer_density wins over scope and density
    assert {k: int(m.sum()) for k, m in mask.items()} == expected_counts(shapes, spec)
    partial = prune(model, 0.9, layer_density={"conv2.weight": 0.1})
    assert int(partial["conv2.weight"].sum()) == half_up(0.1 * shapes["conv2.weight"].numel())
    assert all(bool(partial[k].all()) for k in shapes if k != "conv2.weight")
    assert isinstance(partial, Mask)
    with pytest.raises(ConfigError, match="conv9.weight"):
        prune(model, 0.5, layer_density={"conv9.weight": 0.1})
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        prune(model, 0.5, layer_density={"conv2.weight": 0.0})
    with pytest.raises(ConfigError, match="output_rate"):
        prune(model, 0.5, layer_density={"conv2.weight": 0.1}, output_rate=0.5)
    first = prune(model, 0.5, layer_density={"conv1.weight": 0.1}, include_first=False)
    assert first.density() == 1.0


# JaxPruner's published cases (sparsity_distributions_test.py: testGetSparsityERKSucceed and
# testERKSparsityMapGenerator), given there as sparsities (fractions removed) in TF layout, checked to
# their tolerance (assertAlmostEqual, places=2). ERK's score is symmetric in the dims; ER ("include_kernel=
# False") takes (n_in, n_out) from TF's last two dims, which are PyTorch's (out, in) first two.
_JAXPRUNER = [
    ("erk", {"a": (2, 4)}, 0.5, 1.0, {"a": 0.5}),
    ("erk", {"a": (2, 4), "b": (3, 6), "c": (2, 4, 6)}, 0.5, 1.0, {"a": 0.0, "b": 0.31, "c": 0.655}),
    ("er", {"a": (4, 2), "b": (6, 3), "c": (6, 4, 2)}, 0.5, 1.0, {"a": 0.21, "b": 0.47, "c": 0.56}),
    ("erk", {"a": (2, 4), "b": (3, 6), "c": (2, 4, 6)}, 0.8, 1.0, {"a": 0.556, "b": 0.70, "c": 0.85}),
    ("erk", {"a": (2, 4), "b": (3, 6), "c": (2, 4, 6)}, 0.5, 2.0, {"a": 0.0, "b": 0.033, "c": 0.758}),
    ("erk", {"a": (2, 4), "c": (3, 6, 7), "d": (7, 4)}, 0.5, 1.0, {"a": 0.0, "c": 0.64, "d": 0.0}),
    ("erk", {"a": (2, 4), "c": (3, 6, 7)}, 0.5, 1.0, {"a": 0.0, "c": 0.53}),
]


@pytest.mark.parametrize("method, shapes, sparsity, power, expected", _JAXPRUNER)
def test_erk_with_the_rigl_budget_matches_jaxpruners_published_values(method, shapes, sparsity, power, expected):
    densities = layer_densities(shapes, 1.0 - sparsity, method, power=power, budget="rigl")
    for name, value in expected.items():
        assert round(abs((1.0 - densities[name]) - value), 2) == 0, (name, 1.0 - densities[name], value)


def test_the_two_erk_budgets_differ_only_by_per_layer_rounding():
    shapes = {"conv": (16, 3, 3, 3), "fc1": (120, 400), "fc2": (10, 120)}
    ours = layer_densities(shapes, 0.1, "erk")
    rigl = layer_densities(shapes, 0.1, "erk", budget="rigl")
    sizes = {k: math.prod(s) for k, s in shapes.items()}
    assert abs(sum(ours[k] * n for k, n in sizes.items()) - 0.1 * sum(sizes.values())) < 1e-6
    kept_rigl = sum(rigl[k] * n for k, n in sizes.items())
    assert 0 < abs(kept_rigl - 0.1 * sum(sizes.values())) <= len(shapes)
    with pytest.raises(ConfigError, match="unknown ERK budget rule"):
        layer_densities(shapes, 0.1, "erk", budget="floor")
