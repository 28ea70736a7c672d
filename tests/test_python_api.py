"""The Python API as a notebook user meets it: a bundle from tensors, the lottery on one's own module and
the tickets it returns, MaskedOptimizer under torch's schedulers and scalers, `--import` of one's registry."""

import copy
import json
import textwrap

import pytest
import torch

import ticketlab
from ticketlab.data import DataBundle
from ticketlab.errors import DataError


def _blobs(n=360, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 12, generator=g) * 3
    y = torch.arange(n) % 3
    return (centers[y] + torch.randn(n, 12, generator=g)).view(n, 1, 12), y


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_from_tensors_takes_pairs_and_tensor_datasets_and_carves_validation():
    x, y = _blobs()
    pairs = DataBundle.from_tensors((x[:300], y[:300]), (x[300:], y[300:]), val=60, name="blobs", seed=1)
    sets = DataBundle.from_tensors(torch.utils.data.TensorDataset(x[:300], y[:300]),
                                   torch.utils.data.TensorDataset(x[300:], y[300:]), val=60, name="blobs", seed=1)
    for bundle in (pairs, sets):
        assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (240, 60, 60)
        assert bundle.num_classes == 3 and bundle.input_shape == (1, 12) and bundle.name == "blobs"
        # the validation examples are carved out of the training set: disjoint, together all of it
        together = torch.cat([bundle.train.index, bundle.val.index]).sort().values
        assert torch.equal(together, torch.arange(300))
        assert torch.equal(bundle.val.x, x[bundle.val.index]) and torch.equal(bundle.train.y, y[bundle.train.index])
        assert torch.equal(bundle.clean_train_y, bundle.train.y)
    assert torch.equal(pairs.val.index, sets.val.index)
    other_seed = DataBundle.from_tensors((x[:300], y[:300]), (x[300:], y[300:]), val=60, seed=2)
    assert not torch.equal(other_seed.val.index, pairs.val.index)


def test_from_tensors_with_validation_tensors_and_bad_input():
    x, y = _blobs()
    bundle = DataBundle.from_tensors((x[:240], y[:240]), (x[300:], y[300:]), val=(x[240:300], y[240:300]))
    assert torch.equal(bundle.val.x, x[240:300]) and len(bundle.train) == 240 and bundle.val.index[0] == 0
    assert DataBundle.from_tensors((x[:240], y[:240]), (x[300:], y[300:])).val is None
    with pytest.raises(DataError, match="an \\(x, y\\) pair of tensors or a TensorDataset"):
        DataBundle.from_tensors(x[:240], (x[300:], y[300:]))
    with pytest.raises(DataError, match="labels must be non-negative integers"):
        DataBundle.from_tensors((x[:240], y[:240].float()), (x[300:], y[300:]))
    with pytest.raises(DataError, match="val=240 must lie in"):
        DataBundle.from_tensors((x[:240], y[:240]), (x[300:], y[300:]), val=240)
    with pytest.raises(DataError, match="differ in shape"):
        DataBundle.from_tensors((x[:240], y[:240]), (x[300:, :, :6], y[300:]))


def test_lottery_returns_the_tickets_and_names_the_module_and_data(tmp_path, capsys):
    x, y = _blobs()
    data = DataBundle.from_tensors((x[:300], y[:300]), (x[300:], y[300:]), val=60, name="blobs")
    torch.manual_seed(0)
    model = SmallNet()
    train = ticketlab.TrainConfig(steps="3ep", batch_size=20, lr=0.05)
    result = ticketlab.lottery(model, data, levels=2, train=train, runs_dir=tmp_path)
    path, tickets = result  # unpacks as (path, summaries) did
    assert result.path == path and [t.level for t in tickets] == [0, 1, 2]
    n = 12 * 16 + 16 * 3
    for ticket in tickets:
        mask, weights = ticket.mask, ticket.weights
        assert mask.num_kept() == round(0.8 ** ticket.level * n) and ticket.density == pytest.approx(mask.density())
        for name, keep in mask.items():
            assert torch.count_nonzero(weights[name][~keep]) == 0  # pruned weights are exactly 0
        assert ticket.test_accuracy == ticket["final_test_accuracy"] and ticket.val_accuracy is not None
    assert tickets[1].mask["body.1.weight"].sum() < tickets[0].mask["body.1.weight"].sum()
    assert result.ticket(2).load_into(SmallNet())(x[:4]).shape == (4, 3)

    config = json.loads((path / "config.json").read_text())
    assert config["model"]["name"] == f"{__name__}.SmallNet" and config["data"]["dataset"] == "blobs"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["model"]["class"] == f"{__name__}.SmallNet" and manifest["model"]["parameters"] == n + 16 + 3
    assert manifest["data"] == {"name": "blobs", "input_shape": [1, 12], "num_classes": 3, "train": 240, "val": 60,
                                "test": 60}
    assert manifest["precision"] == "fp32" and (path / "data.pt").exists()
    from ticketlab.cli import main

    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "blobs" in listed and f"{__name__}.SmallNet" in listed and "digits" not in listed


def test_lottery_checks_its_settings_before_the_run_directory_exists(tmp_path):
    x, y = _blobs()
    data = DataBundle.from_tensors((x[:300], y[:300]), (x[300:], y[300:]), val=60, name="blobs")
    model = SmallNet()
    with pytest.raises(ticketlab.ConfigError, match="train.batch_size=241 is larger than the 240 training examples"):
        ticketlab.lottery(model, data, levels=1, train=ticketlab.TrainConfig(steps="3ep", batch_size=241),
                          runs_dir=tmp_path)
    # the first pruning's settings fail now, not once level 0 has trained
    with pytest.raises(ticketlab.ConfigError, match="prune.layer_density fixes one density per layer"):
        ticketlab.lottery(model, data, levels=1, train=ticketlab.TrainConfig(steps="3ep", batch_size=20),
                          prune=ticketlab.PruneConfig(layer_density="head.*:0.5"), runs_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_step_lr_over_a_masked_optimizer_keeps_pruned_weights_at_zero():
    torch.manual_seed(0)
    model = SmallNet()
    mask = ticketlab.prune(model, 0.3)
    opt = ticketlab.MaskedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, mask)
    assert isinstance(opt, torch.optim.Optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = _blobs(64)
    for _ in range(6):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3) and opt.optimizer.param_groups[0]["lr"] == \
        opt.param_groups[0]["lr"]
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        assert torch.count_nonzero(params[name][~keep]) == 0 and params[name][keep].abs().sum() > 0
        assert torch.count_nonzero(opt.state[params[name]]["momentum_buffer"][~keep]) == 0
    opt.load_state_dict(opt.state_dict())  # the wrapped optimizer replaces its state: still shared
    assert opt.state is opt.optimizer.state and opt.param_groups is opt.optimizer.param_groups
    clone = copy.deepcopy(opt)
    assert clone.param_groups is clone.optimizer.param_groups and clone.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_masked_optimizer_under_grad_scaler_and_a_compiled_model():
    torch.manual_seed(0)
    model = SmallNet()
    mask = ticketlab.prune(model, 0.3)
    compiled = torch.compile(model, backend="eager")  # the wrapper's `_orig_mod.` names resolve to the mask's
    opt = ticketlab.MaskedOptimizer(torch.optim.Adam(compiled.parameters(), lr=0.01), compiled, mask)
    scaler = torch.amp.GradScaler("cpu")
    x, y = _blobs(64)
    for _ in range(4):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.cross_entropy(compiled(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        assert torch.count_nonzero(params[name][~keep]) == 0
        assert torch.count_nonzero(opt.state[params[name]]["exp_avg"][~keep]) == 0


def test_import_flag_makes_a_registered_model_usable_from_the_command_line(tmp_path, monkeypatch, capsys):
    from ticketlab.cli import main

    (tmp_path / "my_models_for_test.py").write_text(textwrap.dedent("""
        import torch
        import ticketlab

        @ticketlab.register_model(name="imported_tiny_mlp", replace=True)
        def imported_tiny_mlp(input_shape, num_classes, hidden=()):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    runs = tmp_path / "runs"
    code = main(["train", "--import", "my_models_for_test", "--preset", "digits_mlp", "--model.name",
                 "imported_tiny_mlp", "--train.steps", "1ep", "--runs-dir", str(runs), "--progress", "none"])
    assert code == 0
    (run,) = runs.iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "imported_tiny_mlp" and "--import" not in config
    assert json.loads((run / "manifest.json").read_text())["command"].split()[1:3] == ["train", "--import"]
    capsys.readouterr()
    assert main(["list", "models", "--import=my_models_for_test"]) == 0
    assert "imported_tiny_mlp" in capsys.readouterr().out
    assert main(["train", "--import", "no_such_module_here", "--preset", "digits_mlp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ticketlab: error: --import no_such_module_here: no module named") and "\n" not in err


def test_lightning_callback_keeps_pruned_weights_at_zero(tmp_path):
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from ticketlab.lightning import MaskCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = SmallNet()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    torch.manual_seed(0)
    module = Module()
    mask = ticketlab.prune(module.net, 0.3)
    x, y = _blobs(120)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20)
    trainer = pl.Trainer(max_epochs=2, callbacks=[MaskCallback(mask, prefix="net.")], accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, loader)
    params = dict(module.net.named_parameters())
    for name, keep in mask.items():
        assert torch.count_nonzero(params[name][~keep]) == 0 and params[name][keep].abs().sum() > 0


def test_import_flag_reaches_the_workers_of_a_sweep(tmp_path, monkeypatch, capsys):
    """Spawned workers start without the sweep's imports: each imports the --import modules again."""
    from ticketlab.cli import main

    (tmp_path / "sweep_models_for_test.py").write_text(textwrap.dedent("""
        import torch
        import ticketlab

        @ticketlab.register_model(name="sweep_tiny_mlp", replace=True)
        def sweep_tiny_mlp(input_shape, num_classes, hidden=()):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
    """))
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        name = "imported"
        preset = "digits_mlp"
        command = "train"
        seeds = 2
        [fields]
        model.name = "sweep_tiny_mlp"
        train.steps = "3it"
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    runs = tmp_path / "runs"
    code = main(["sweep", "study.toml", "--import", "sweep_models_for_test.py", "--workers", "2",
                 "--runs-dir", str(runs)])
    out = capsys.readouterr()
    assert code == 0, out
    names = [json.loads((p / "config.json").read_text())["model"]["name"] for p in runs.glob("train_*")]
    assert names == ["sweep_tiny_mlp"] * 2


def test_a_py_file_imported_for_every_job_of_a_sweep_in_one_process_runs_once(tmp_path, monkeypatch, capsys):
    """`--workers 1` runs the jobs in this process, each importing the --import file again: a file that
    registers without replace=True is not run again (its registration would be refused)."""
    import sys

    from ticketlab.cli import main
    from ticketlab.models.registry import MODELS

    (tmp_path / "sweep_once_models_for_test.py").write_text(textwrap.dedent("""
        import torch
        import ticketlab

        @ticketlab.register_model(name="sweep_once_mlp")
        def sweep_once_mlp(input_shape, num_classes, hidden=()):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
    """))
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        name = "imported_once"
        preset = "digits_mlp"
        command = "train"
        seeds = 2
        [fields]
        model.name = "sweep_once_mlp"
        train.steps = "3it"
    """))
    (tmp_path / "json.py").write_text("raise AssertionError('not to be run')\n")
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    try:
        code = main(["sweep", "study.toml", "--import", "sweep_once_models_for_test.py", "--workers", "1",
                     "--runs-dir", str(runs)])
        out = capsys.readouterr()
        assert code == 0, out
        assert len(list(runs.glob("train_*/final.pt"))) == 2
        assert main(["list", "models", "--import", "json.py"]) == 2  # would replace the json module
        err = capsys.readouterr().err.strip()
        assert err.startswith("ticketlab: error: --import json.py: a module named 'json' is already imported (from ")
        assert err.endswith("; rename the file") and "\n" not in err
    finally:
        sys.modules.pop("sweep_once_models_for_test", None)
        if "sweep_once_mlp" in MODELS.registered():
            MODELS.remove("sweep_once_mlp")


def test_a_failing_or_interrupted_import_is_one_line(tmp_path, monkeypatch, capsys):
    from ticketlab.cli import main

    (tmp_path / "two_line_failure_for_test.py").write_text("raise RuntimeError('first line\\nsecond line')\n")
    (tmp_path / "interrupted_import_for_test.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.chdir(tmp_path)
    assert main(["list", "models", "--import", "two_line_failure_for_test.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ticketlab: error: --import two_line_failure_for_test.py: importing it failed: "
                          "RuntimeError: first line") and "second line" in err and "\n" not in err
    assert main(["list", "models", "--import", "interrupted_import_for_test.py"]) == 130
    assert capsys.readouterr().err.startswith("ticketlab: interrupted")
