"""VGG, CIFAR ResNets, ResNet-18/34/50 and Wide ResNets: sizes, structure, options and BN init."""

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig
from ticketlab.errors import ConfigError
from ticketlab.models import MODELS, build_model, init_weights
from ticketlab.models.resnet import PadShortcut

CIFAR = (3, 32, 32)


def meta_model(name, shape=CIFAR, num_classes=10, **kwargs):
    """Build without allocating or initialising storage: enough for counts and structure."""
    with torch.device("meta"):
        return MODELS.get(name)(shape, num_classes, **kwargs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, kwargs, num_classes, exact, published", [
    ("vgg11", {}, 10, 9_231_114, None),
    ("vgg13", {}, 10, 9_416_010, None),
    ("vgg16", {}, 10, 14_728_266, 14.73e6),
    ("vgg19", {}, 10, 20_040_522, None),
    ("resnet20", {}, 10, 269_722, 0.27e6),
    ("resnet32", {}, 10, 464_154, 0.46e6),
    ("resnet44", {}, 10, 658_586, 0.66e6),
    ("resnet56", {}, 10, 853_018, 0.85e6),
    ("resnet110", {}, 10, 1_727_962, 1.73e6),
    ("resnet18", {}, 10, 11_173_962, 11.17e6),
    ("resnet34", {}, 10, 21_282_122, 21.3e6),
    ("resnet18", {"stem": "imagenet"}, 1000, 11_689_512, 11.69e6),  # torchvision resnet18
    ("resnet50", {"stem": "imagenet"}, 1000, 25_557_032, 25.56e6),  # torchvision resnet50
    ("resnet50", {}, 10, 23_520_842, None),
    ("wrn_28_10", {}, 10, 36_479_194, 36.5e6),
    ("wrn", {"depth": 28, "width": 10}, 10, 36_479_194, 36.5e6),
    ("wrn_16_8", {}, 10, 10_961_370, 11.0e6),
])
def test_parameter_counts(name, kwargs, num_classes, exact, published):
    count = n_params(meta_model(name, CIFAR, num_classes, **kwargs))
    assert count == exact
    if published is not None:
        assert abs(count - published) / published < 0.02


def test_option_a_shortcuts_have_no_parameters_and_option_b_projects():
    a, b = meta_model("resnet20"), meta_model("resnet20", shortcut="B")
    assert not [k for k in a.state_dict() if "downsample" in k]
    assert sum(isinstance(m, PadShortcut) for m in a.modules()) == 2
    projections = {k: tuple(v.shape) for k, v in b.named_parameters() if "downsample" in k}
    assert projections == {
        "layer2.0.downsample.0.weight": (32, 16, 1, 1), "layer2.0.downsample.1.weight": (32,),
        "layer2.0.downsample.1.bias": (32,),
        "layer3.0.downsample.0.weight": (64, 32, 1, 1), "layer3.0.downsample.1.weight": (64,),
        "layer3.0.downsample.1.bias": (64,),
    }
    assert n_params(b) - n_params(a) == 32 * 16 + 64 + 64 * 32 + 128


def test_option_a_subsamples_and_pads_with_zero_channels():
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    out = PadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_cifar_resnet_names_follow_dlth_stages(shortcut):
    model = build_model(ModelConfig(name="resnet56", shortcut=shortcut), (3, 8, 8), 10, seed=0)
    assert model.output_layer == "linear"
    prefixes = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert prefixes == {"conv1", "bn1", "layer1", "layer2", "layer3", "linear"}
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [9, 9, 9]
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [16, 32, 64]
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 10)


def test_resnet_stems():
    cifar, imagenet = meta_model("resnet18"), meta_model("resnet18", stem="imagenet")
    assert (cifar.conv1.kernel_size, cifar.conv1.stride) == ((3, 3), (1, 1)) and cifar.maxpool is None
    assert (imagenet.conv1.kernel_size, imagenet.conv1.stride, imagenet.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert (imagenet.maxpool.kernel_size, imagenet.maxpool.stride) == (3, 2)
    seen = []
    model = MODELS.get("resnet18")((3, 64, 64), 200, stem="imagenet", width=8)
    model.layer1.register_forward_hook(lambda module, inputs, output: seen.append(output.shape) and None)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 200)
    assert seen == [(2, 8, 16, 16)]  # 64 -> 32 (conv) -> 16 (max-pool)


def test_torchvision_layout_of_resnet50():
    model = meta_model("resnet50", stem="imagenet", num_classes=1000)
    assert [name for name, _ in model.named_children()] == [
        "conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    keys = model.state_dict()
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    for key, shape in [("layer1.0.downsample.0.weight", (256, 64, 1, 1)), ("layer2.0.conv2.weight", (128, 128, 3, 3)),
                       ("layer4.2.conv3.weight", (2048, 512, 1, 1)), ("layer4.2.bn3.running_var", (2048,)),
                       ("fc.weight", (1000, 2048))]:
        assert tuple(keys[key].shape) == shape, key
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)  # "v1.5"
    assert len(keys) == 320  # as torchvision's resnet50().state_dict()


@pytest.mark.parametrize("name, base", [("resnet18", 64), ("resnet20", 16)])
def test_width_scales_base_channels(name, base):
    default = build_model(ModelConfig(name=name), (3, 8, 8), 10, seed=0)
    half = build_model(ModelConfig(name=name, width=base // 2), (3, 8, 8), 10, seed=0)
    head = default.output_layer
    assert default.conv1.out_channels == base and half.conv1.out_channels == base // 2
    assert getattr(half, head).in_features == getattr(default, head).in_features // 2
    assert half(torch.zeros(2, 3, 8, 8)).shape == (2, 10)


def test_wide_resnet_structure():
    model = meta_model("wrn_28_10")
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [4, 4, 4]
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [160, 320, 640]
    shortcuts = [name for name, m in model.named_modules() if name.endswith("shortcut")]
    assert shortcuts == ["layer1.0.shortcut", "layer2.0.shortcut", "layer3.0.shortcut"]
    assert model.layer1[1].shortcut is None and model.output_layer == "fc"
    small = build_model(ModelConfig(name="wrn", depth=16, width=1), (3, 8, 8), 10, seed=0)
    assert [len(small.layer1), small.layer3[0].conv1.out_channels] == [2, 64]
    assert [n for n, _ in small.named_children()][:2] == ["conv1", "layer1"]  # pre-activation: no BN on the stem


@pytest.mark.parametrize("depth", [27, 4, 12])
def test_wrn_depth_must_be_6n_plus_4(depth):
    with pytest.raises(ConfigError, match=f"model.depth={depth} .* 6n\\+4"):
        build_model(ModelConfig(name="wrn", depth=depth), CIFAR, 10, seed=0)


@pytest.mark.parametrize("name, field, value", [
    ("vgg16", "shortcut", "B"), ("vgg16", "width", 32), ("resnet20", "stem", "imagenet"),
    ("resnet18", "shortcut", "A"), ("resnet18", "depth", 34), ("wrn_28_10", "width", 4), ("resnet56", "depth", 20),
])
def test_options_that_do_not_apply_are_rejected(name, field, value):
    with pytest.raises(ConfigError, match=f"model.{field} does not apply to model '{name}'"):
        build_model(ModelConfig(name=name, **{field: value}), CIFAR, 10, seed=0)


@pytest.mark.parametrize("name, kwargs, match", [
    ("resnet20", {"shortcut": "C"}, "model.shortcut='C'"),
    ("resnet18", {"stem": "tiny"}, "model.stem='tiny'"),
    ("resnet18", {"width": -2}, "model.width"),
    ("wrn", {"width": 0}, "model.width=0"),
])
def test_bad_option_values(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        meta_model(name, **kwargs)


@pytest.mark.parametrize("name", ["vgg11", "resnet20", "resnet50", "wrn_16_8"])
@pytest.mark.parametrize("shape", [(3, 32), (1, 3, 32, 32)])
def test_non_image_input_is_rejected(name, shape):
    with pytest.raises(ConfigError, match="image input"):
        meta_model(name, shape)


def test_vgg_input_sizes():
    model = MODELS.get("vgg11")((1, 64, 48), 200)  # any channel count; larger inputs are averaged
    assert model.conv1.in_channels == 1 and model.fc.in_features == 512
    assert model(torch.zeros(2, 1, 64, 48)).shape == (2, 200)
    with pytest.raises(ConfigError, match="smaller than 32x32"):
        meta_model("vgg16", (1, 28, 28))


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "wrn_16_8"])
def test_resnets_take_other_channel_counts_and_sizes(name):
    model = meta_model(name, (1, 28, 28), 3)
    assert model.conv1.in_channels == 1
    small = MODELS.get(name)((1, 7, 7), 3, **({} if name == "wrn_16_8" else {"width": 4}))
    assert small(torch.zeros(2, 1, 7, 7)).shape == (2, 3)


def _norm_weights(model):
    return torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


def test_bn_init_uniform_is_seeded_and_in_unit_interval():
    uniform = ModelConfig(name="resnet20", bn_init="uniform")
    a = build_model(uniform, (3, 8, 8), 10, seed=3)
    b = build_model(uniform, (3, 8, 8), 10, seed=3)
    c = build_model(uniform, (3, 8, 8), 10, seed=4)
    ones = build_model(ModelConfig(name="resnet20"), (3, 8, 8), 10, seed=3)
    w = _norm_weights(a)
    assert w.numel() == 16 + 3 * 2 * (16 + 32 + 64)  # stem BN, then two BNs per block
    assert w.min() >= 0 and w.max() < 1 and len(torch.unique(w)) == w.numel()
    assert abs(w.mean().item() - 0.5) < 0.05
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(w, _norm_weights(c))
    assert torch.equal(_norm_weights(ones), torch.ones_like(w))
    for model in (a, ones):
        biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(torch.count_nonzero(bias) == 0 for bias in biases)
    assert torch.equal(a.conv1.weight, ones.conv1.weight)  # drawn before the first BN
    assert not torch.equal(a.layer1[0].conv1.weight, ones.layer1[0].conv1.weight)  # one generator, in order


def test_bn_init_uniform_leaves_other_norms_at_one():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.BatchNorm1d(3))
    init_weights(model, "kaiming_normal", seed=0, bn_init="uniform")
    assert torch.equal(model[2].weight, torch.ones(4))
    for bn in (model[1], model[3]):
        assert 0 <= bn.weight.min() and bn.weight.max() < 1 and len(torch.unique(bn.weight)) == bn.weight.numel()
    with pytest.raises(ConfigError, match="model.bn_init='zeros'.*ones, uniform"):
        init_weights(model, "kaiming_normal", seed=0, bn_init="zeros")
