"""`ticketlab export`: every format predicts as the masked model, loads in a fresh process, and keeps
what it promises (a small file, fewer neurons, the exact mask)."""

import io
import json
import subprocess
import sys

import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import ModelConfig, to_jsonable
from ticketlab.export import FORMATS, export_ticket, load_export, mask_from_torch_prune, to_torch_prune
from ticketlab.export.source import Ticket
from ticketlab.models import build_model
from ticketlab.sparsity import Mask, prunable_parameters

pytest.importorskip("safetensors")


def ticket(name="lenet_300_100", hidden=(), density=0.02, seed=0, shape=(1, 28, 28)):
    """A model with random weights under a random mask of ``density`` (pruned weights exactly 0)."""
    config = ModelConfig(name=name, hidden=hidden)
    model = build_model(config, shape, 10, seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    mask = Mask({n: torch.rand(p.shape, generator=g) < density for n, p in prunable_parameters(model).items()})
    mask.apply_(model)
    spec = {"model": to_jsonable(config), "input_shape": list(shape), "num_classes": 10, "source": {"level": 0}}
    return Ticket(model, mask, spec)


def logits(model, x):
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_predicts_as_the_masked_model_in_a_fresh_process(tmp_path, fmt):
    t = ticket(name="mlp", hidden=(64, 32), density=0.2)
    path = export_ticket(t, fmt, tmp_path / f"{fmt}.safetensors", batch=64)
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.save({"x": x, "expected": logits(t.model, x)}, tmp_path / "probe.pt")
    code = ("import sys, torch; from ticketlab.export import load_export; "
            f"p = torch.load({str(tmp_path / 'probe.pt')!r}); m = load_export({str(path)!r}); "
            "print(float((m(p['x']) - p['expected']).abs().max()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 1e-4
    assert (logits(load_export(path), x) - logits(t.model, x)).abs().max() < 1e-4


def test_the_safetensors_file_is_small_and_plain_safetensors_reads_it(tmp_path):
    t = ticket(density=0.02)
    path = export_ticket(t, "safetensors", tmp_path / "t.safetensors")
    dense = io.BytesIO()
    torch.save(t.model.state_dict(), dense)
    assert len(dense.getvalue()) >= 10 * path.stat().st_size
    code = f"""
import json, numpy as np, torch
from safetensors import safe_open
with safe_open({str(path)!r}, framework="pt") as f:
    meta = json.loads(f.metadata()["ticketlab"]); tensors = {{k: f.get_tensor(k) for k in f.keys()}}
shape = meta["shapes"]["fc1.weight"]
keep = np.unpackbits(tensors["fc1.weight.bitmap"].numpy(), count=int(np.prod(shape))).astype(bool)
w = np.zeros(int(np.prod(shape)), dtype=np.float32); w[keep] = tensors["fc1.weight.values"].numpy()
torch.save(torch.from_numpy(w.reshape(shape)), {str(tmp_path / 'fc1.pt')!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(tmp_path / "fc1.pt"), t.model.fc1.weight.detach())


def test_structured_export_removes_dead_neurons_and_predicts_the_same(tmp_path):
    t = ticket(name="mlp", hidden=(40, 30), density=0.5)
    with torch.no_grad():
        for rows in ([3, 7, 8], ):
            t.mask["fc1.weight"][rows] = False  # nothing feeds these: they output ReLU(bias), a constant
        t.model.fc1.bias[3] = 0.7  # one constant that matters downstream (folded into fc2's bias)
        t.mask["fc3.weight"][:, [0, 5]] = False  # these feed nothing
        t.mask["fc2.weight"][:, 11] = False  # neither does this one of layer 1
        t.mask.apply_(t.model)
    path = export_ticket(t, "structured", tmp_path / "s.safetensors")
    small = load_export(path)
    _, meta = __import__("ticketlab.export.formats", fromlist=["read"]).read(path)
    assert meta["spec"]["model"]["hidden"] == [40 - 4, 30 - 2]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(t.model)
    x = torch.randn(128, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    assert (logits(small, x) - logits(t.model, x)).abs().max() < 1e-5


def test_the_torch_prune_round_trip_keeps_the_mask_exactly(tmp_path):
    t = ticket(density=0.05)
    pruned = to_torch_prune(build_model(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10, seed=3), t.mask)
    assert mask_from_torch_prune(pruned) == t.mask
    assert {"fc1.weight_orig", "fc1.weight_mask"} <= set(pruned.state_dict())
    path = export_ticket(t, "torch-prune", tmp_path / "p.safetensors")
    from ticketlab.export.formats import read

    tensors, _ = read(path)
    assert mask_from_torch_prune(tensors) == t.mask


def test_export_from_a_finished_run_and_bad_input(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["lottery", "--preset", "digits_mlp", "--levels", "2", "--runs-dir", str(runs), "--progress", "none",
                 "--device", "cpu"]) == 0
    (run,) = [p for p in runs.iterdir() if p.name.startswith("lottery_")]
    capsys.readouterr()
    assert main(["export", str(run), "--format", "sparse", "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "level_2_sparse.safetensors" in out and "density 64.00%" in out
    gap = float(out.split("test examples: ")[1].split()[0])
    assert gap < 1e-4
    assert main(["export", str(run), "--level", "7"]) == 2
    assert "no finished level 7" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "structured"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
