"""Mask: prunable parameters, counts, composition, persistence."""

import os

import pytest
import torch
from torch import nn

from ticketlab.errors import CheckpointError
from ticketlab.sparsity import Mask, output_layer_name, prunable_parameters


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 4, 1)
        self.fc = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)


def random_mask(model, density=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({k: torch.rand(p.shape, generator=g) < density for k, p in prunable_parameters(model).items()})


def test_prunable_parameters_order_and_output():
    model = ConvNet()
    assert list(prunable_parameters(model)) == ["conv.weight", "conv1d.weight", "fc.weight", "head.weight"]
    assert output_layer_name(model) == "head"
    assert list(prunable_parameters(model, include_output=False)) == ["conv.weight", "conv1d.weight", "fc.weight"]
    model.output_layer = "fc"
    assert output_layer_name(model) == "fc"
    assert "fc.weight" not in prunable_parameters(model, include_output=False)
    model.output_layer = model.conv1d
    assert output_layer_name(model) == "conv1d"
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Softmax(-1))
    assert output_layer_name(seq) == "2"
    assert list(prunable_parameters(seq, include_output=False)) == ["0.weight"]
    params = prunable_parameters(model)
    assert all(params[k] is dict(model.named_parameters())[k] for k in params)


def test_counts_and_report():
    mask = Mask({"a": torch.tensor([[True, False], [False, False]]), "b": torch.ones(3, dtype=torch.bool)})
    assert (mask.num_kept(), mask.num_total()) == (4, 7)
    assert mask.density() == pytest.approx(4 / 7)
    rows = mask.report()
    assert [r["name"] for r in rows] == ["a", "b", "total"]
    assert rows[0] == {"name": "a", "shape": (2, 2), "kept": 1, "total": 4, "density": 0.25}
    assert rows[-1]["kept"] == 4 and rows[-1]["total"] == 7
    assert "a" in mask and "c" not in mask and len(mask) == 2 and list(mask) == ["a", "b"]
    assert Mask({"x": torch.tensor([1, 0])})["x"].dtype == torch.bool


def test_ones():
    model = ConvNet()
    ones = Mask.ones(model)
    assert list(ones) == list(prunable_parameters(model)) and ones.density() == 1.0
    assert "head.weight" not in Mask.ones(model, include_output=False)
    assert Mask.ones({"w": torch.zeros(2, 5)})["w"].shape == (2, 5)


def test_compose_and_nesting():
    a = Mask({"x": torch.tensor([True, True, False, True]), "y": torch.tensor([True, False])})
    b = Mask({"x": torch.tensor([True, False, True, True]), "z": torch.tensor([False, True])})
    c = a & b
    assert c["x"].tolist() == [True, False, False, True]
    assert c["y"].tolist() == [True, False] and c["z"].tolist() == [False, True]
    assert c.issubset(a) and c.issubset(b)
    assert not a.issubset(b)
    assert a.issubset(Mask({})) and not Mask({}).issubset(a)
    assert Mask({"x": torch.ones(4, dtype=torch.bool)}).issubset(Mask({"y": torch.ones(2, dtype=torch.bool)}))
    assert c == (b & a) and c != a


def test_apply_zeroes_pruned_only():
    model = ConvNet()
    mask = random_mask(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask.apply_(model)
    params = dict(model.named_parameters())
    for k, m in mask.items():
        assert bool((params[k][~m] == 0).all())
        assert torch.equal(params[k][m], before[k][m])
    assert torch.equal(params["fc.bias"], before["fc.bias"])
    with pytest.raises(CheckpointError, match="nope.weight"):
        Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}).apply_(model)


def test_masks_apply_through_nested_wrappers_and_strip_wrapper_prefixes():
    from ticketlab.sparsity.mask import strip_wrapper_prefixes

    class Wrapper(nn.Module):  # as DistributedDataParallel (module.) and torch.compile (_orig_mod.) hold a model
        def __init__(self, attribute, inner):
            super().__init__()
            setattr(self, attribute, inner)

    model = ConvNet()
    mask = random_mask(model, 0.3)
    wrapped = Wrapper("_orig_mod", Wrapper("module", model))
    assert next(iter(dict(wrapped.named_parameters()))) == "_orig_mod.module.conv.weight"
    mask.apply_(wrapped)
    assert all(torch.count_nonzero(p[~mask[k]]) == 0 and p[mask[k]].ne(0).all()
               for k, p in prunable_parameters(model).items())
    assert strip_wrapper_prefixes(["_orig_mod.module.a", "_orig_mod.module.b"]) == ["a", "b"]
    assert strip_wrapper_prefixes(["module.a", "b"]) == ["module.a", "b"]  # only prefixes every name has
    assert strip_wrapper_prefixes([]) == []


@pytest.mark.parametrize("name", ["mask.pt", "mask.safetensors"])
def test_save_load_round_trip(tmp_path, name):
    model = ConvNet()
    mask = random_mask(model, 0.3)
    path = tmp_path / "sub" / name
    mask.save(path)
    mask.save(path)  # overwrite in place
    assert sorted(os.listdir(path.parent)) == [name, name + ".sha256"]  # the file and its checksum, no temp files
    loaded = Mask.load(path)
    assert loaded == mask and list(loaded) == list(mask)
    assert Mask.from_state_dict(mask.state_dict()) == mask


@pytest.mark.parametrize("name", ["mask.pt", "mask.safetensors"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00not a mask at all" * 10)
    with pytest.raises(CheckpointError) as info:
        Mask.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "re-create" in message


@pytest.mark.parametrize("name", ["mask.pt", "mask.safetensors"])
def test_an_intact_mask_that_does_not_parse_names_the_cause_and_is_not_called_damaged(tmp_path, name):
    from ticketlab.io import DamagedFileError, atomic_write_bytes

    path = tmp_path / name
    atomic_write_bytes(path, b"\x00not a mask at all" * 10)  # its checksum record vouches for these bytes
    with pytest.raises(CheckpointError, match=r"is intact \(it matches its checksum\) but loading it failed: ") as info:
        Mask.load(path)
    assert not isinstance(info.value, DamagedFileError) and "\n" not in str(info.value)


def test_wrong_content_and_missing(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.randn(3, 3)}, path)
    with pytest.raises(CheckpointError, match="not a mask file"):
        Mask.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        Mask.load(tmp_path / "missing.pt")


def test_failed_save_leaves_no_temp(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        Mask({"a": torch.ones(2, dtype=torch.bool)}).save(tmp_path / "m.pt")
    assert os.listdir(tmp_path) == []
