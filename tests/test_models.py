import math

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig
from ticketlab.errors import ConfigError
from ticketlab.models import (INIT_SCHEMES, MODELS, build_model, init_weights, output_layer_name,
                              register_model)

PART1 = {"mlp", "lenet_300_100", "conv2", "conv4", "conv6", "mnist1d_cnn"}
CIFAR = {"vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
         "resnet18", "resnet34", "resnet50", "wrn", "wrn_28_10", "wrn_16_8"}
SHAPES = {"mnist1d_cnn": (1, 40), **{name: (3, 32, 32) for name in CIFAR | {"conv2", "conv4", "conv6"}}}
OPTIONS = {"wrn": dict(depth=10, width=2)}  # the generic entry at a cheap size; wrn_28_10 runs at full size


def shape_for(name):
    return SHAPES.get(name, (1, 28, 28))


def n_params(model, suffix=""):
    return sum(p.numel() for k, p in model.named_parameters() if k.endswith(suffix))


def test_builtin_models_registered():
    assert PART1 | CIFAR <= set(MODELS.names())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_runs_and_names_its_output_layer(name):
    shape = shape_for(name)
    model = build_model(ModelConfig(name=name, **OPTIONS.get(name, {})), shape, 7, seed=0)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    layer = output_layer_name(model)
    modules = dict(model.named_modules())
    assert layer in modules
    assert f"{layer}.weight" in model.state_dict()
    assert modules[layer].weight.shape[0] == 7


@pytest.mark.parametrize("name, shape, total, weights, reference", [
    ("lenet_300_100", (1, 28, 28), 266_610, 266_200, 266_200),
    ("conv2", (3, 32, 32), 4_301_642, 4_300_992, 4_300_992),
    ("conv4", (3, 32, 32), 2_425_930, 2_425_024, 2_425_024),
    ("conv6", (3, 32, 32), 2_262_602, 2_261_184, 2_261_184),
    ("mnist1d_cnn", (1, 40), 7_460, 7_375, None),
])
def test_parameter_counts(name, shape, total, weights, reference):
    model = MODELS.get(name)(shape, 10)
    assert n_params(model) == total
    assert n_params(model, ".weight") == weights
    if reference is not None:  # published counts (Frankle & Carbin 2019), weights only
        assert abs(n_params(model) - reference) / reference < 0.01


def test_mlp_widths_and_hidden_from_config():
    model = build_model(ModelConfig(name="mlp", hidden=(100, 100)), (1, 8, 8), 10, seed=0)
    shapes = [m.weight.shape for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(100, 64), (100, 100), (10, 100)]
    assert output_layer_name(model) == "fc3"
    linear = MODELS.get("mlp")((5,), 3, hidden=())
    assert [n for n, m in linear.named_modules() if isinstance(m, nn.Linear)] == ["fc1"]
    assert linear.output_layer == "fc1" and linear(torch.zeros(4, 5)).shape == (4, 3)


def test_conv_models_follow_input_shape():
    model = MODELS.get("conv4")((1, 16, 8), 5)
    assert model.fc1.in_features == 128 * 4 * 2
    assert model(torch.zeros(2, 1, 16, 8)).shape == (2, 5)
    with pytest.raises(ConfigError, match="divisible"):
        MODELS.get("conv6")((3, 28, 28), 10)
    with pytest.raises(ConfigError, match="image input"):
        MODELS.get("conv2")((1, 40), 10)
    cnn = MODELS.get("mnist1d_cnn")((2, 100), 4)  # lengths 100 -> 49 -> 24 -> 11
    assert cnn.fc1.in_features == 25 * 11
    assert cnn(torch.zeros(3, 2, 100)).shape == (3, 4)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_build_is_deterministic_and_seed_dependent(scheme):
    cfg = ModelConfig(name="conv2", init=scheme)
    torch.manual_seed(123)
    a = build_model(cfg, (3, 8, 8), 10, seed=5).state_dict()
    torch.manual_seed(456)  # the global RNG must not matter
    b = build_model(cfg, (3, 8, 8), 10, seed=5).state_dict()
    c = build_model(cfg, (3, 8, 8), 10, seed=6).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k in a:
        if k.endswith("weight"):
            assert not torch.equal(a[k], c[k]), k
        else:
            assert torch.count_nonzero(a[k]) == 0, k  # biases are zero


def test_init_and_build_leave_global_rng_alone():
    model = MODELS.get("mlp")((1, 28, 28), 10)
    before = torch.get_rng_state()
    for scheme in INIT_SCHEMES:
        init_weights(model, scheme, seed=3)
    build_model(ModelConfig(name="conv4"), (3, 32, 32), 10, seed=3)
    assert torch.equal(before, torch.get_rng_state())


def _big_layer_weight(scheme):
    model = MODELS.get("mlp")((2000,), 10, hidden=(1000,))  # fc1: fan_in 2000, fan_out 1000
    init_weights(model, scheme, seed=0)
    return model.fc1.weight.detach()


@pytest.mark.parametrize("scheme, std", [
    ("kaiming_normal", math.sqrt(2 / 2000)),
    ("kaiming_uniform", math.sqrt(2 / 2000)),
    ("xavier_normal", math.sqrt(2 / 3000)),
    ("xavier_uniform", math.sqrt(2 / 3000)),
])
def test_init_scheme_std(scheme, std):
    w = _big_layer_weight(scheme)
    assert abs(w.std().item() / std - 1) < 0.05
    assert abs(w.mean().item()) < 0.05 * std
    if scheme.endswith("uniform"):
        bound = std * math.sqrt(3)  # sqrt(6/fan_in) resp. sqrt(6/(fan_in+fan_out))
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.999 * bound


def test_init_sets_norm_layers_and_conv1d():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4))
    for bn in (model[1], model[3]):
        nn.init.uniform_(bn.weight)
        nn.init.uniform_(bn.bias)
    nn.init.uniform_(model[0].bias, 1, 2)
    before = model[0].weight.detach().clone()
    init_weights(model, "kaiming_normal", seed=0)
    assert not torch.equal(before, model[0].weight)
    assert torch.equal(model[0].bias, torch.zeros(4))
    for bn in (model[1], model[3]):
        assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))


def test_unknown_init_scheme():
    with pytest.raises(ConfigError, match="kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform"):
        init_weights(nn.Linear(2, 2), "orthogonal", seed=0)


def test_unknown_model_lists_names():
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(name="conv5"), (3, 32, 32), 10, seed=0)
    message = str(info.value)
    assert "conv5" in message and all(name in message for name in PART1)


@pytest.mark.parametrize("name", ["conv4", "mnist1d_cnn", "lenet_300_100"])
def test_hidden_on_non_mlp_is_rejected(name):
    with pytest.raises(ConfigError, match="model.hidden does not apply .* only to MLPs"):
        build_model(ModelConfig(name=name, hidden=(10,)), shape_for(name), 10, seed=0)


def test_nonpositive_hidden_width_rejected():
    with pytest.raises(ConfigError, match="model.hidden"):
        build_model(ModelConfig(name="mlp", hidden=(10, 0)), (4,), 2, seed=0)


def test_user_registered_model_and_output_layer_fallback():
    name = "_test_user_tiny"

    @register_model(name=name)
    def tiny(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 6), nn.ReLU(),
                             nn.Linear(6, num_classes), nn.Softmax(dim=1))

    try:
        model = build_model(ModelConfig(name=name, init="xavier_normal"), (2, 3), 4, seed=0)
        assert output_layer_name(model) == "3"
        assert torch.count_nonzero(model[1].bias) == 0
        assert model(torch.zeros(1, 2, 3)).shape == (1, 4)
    finally:
        MODELS._entries.pop(name)
