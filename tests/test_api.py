"""The Python API shown in the README: prune any module, enforce in one's own loop, register additions."""

import pytest
import torch

import ticketlab
from ticketlab.config import merge


def _user_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def test_prune_any_module_and_train_in_own_loop(tmp_path):
    model = _user_model()
    mask = ticketlab.prune(model, 0.1, criterion="magnitude", scope="global")
    n = 64 * 32 + 32 * 10
    assert mask.num_kept() == round(0.1 * n) and mask.num_total() == n
    mask.save(tmp_path / "mask.pt")
    mask = ticketlab.Mask.load(tmp_path / "mask.pt")

    opt = ticketlab.MaskedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, mask)
    x, y = torch.randn(128, 1, 8, 8), torch.randint(0, 10, (128,))
    first = None
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        assert torch.count_nonzero(params[name][~keep]) == 0


def test_layerwise_gradient_prune_of_user_module():
    model = _user_model()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    mask = ticketlab.prune(model, 0.25, criterion="gradient", scope="layer", batch=(x, y))
    assert [r["kept"] for r in mask.report()[:-1]] == [512, 80]


def test_register_model_and_dataset_are_usable_from_a_config(tmp_path):
    @ticketlab.register_model(name="api_test_mlp")
    def api_test_mlp(input_shape, num_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, num_classes))

    @ticketlab.register_dataset(name="api_test_blobs")
    def api_test_blobs(root, download):
        g = torch.Generator().manual_seed(0)
        centers = torch.randn(3, 12, generator=g) * 3
        y = torch.arange(300) % 3
        x = centers[y] + torch.randn(300, 12, generator=g)
        return ticketlab.data.RawData(x[:240].view(240, 1, 12), y[:240], x[240:].view(60, 1, 12), y[240:],
                                      num_classes=3, mean=(0.0,), std=(1.0,), scale=1.0)

    config = merge(ticketlab.RunConfig(), {"data": {"dataset": "api_test_blobs", "val_size": 40},
                                           "model": {"name": "api_test_mlp"},
                                           "train": {"steps": "5ep", "batch_size": 20, "lr": 0.05}})
    run, summary = ticketlab.run_train(config, ticketlab.RunContext(runs_dir=tmp_path, progress=False))
    assert run.path.parent == tmp_path and summary["final_test_accuracy"] > 0.9


def test_rerunning_a_finished_train_builds_no_model_or_trainer(tmp_path, monkeypatch):
    import ticketlab.methods.experiment as experiment

    config = merge(ticketlab.get_preset("digits_mlp"), {"train": {"steps": "1ep"}, "prune": {"density": 0.5}})
    ctx = ticketlab.RunContext(runs_dir=tmp_path, progress=False)
    _, first = ticketlab.run_train(config, ctx)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run built a model or a trainer")

    monkeypatch.setattr(experiment, "Trainer", forbidden)
    monkeypatch.setattr(experiment, "build_model", forbidden)
    _, again = ticketlab.run_train(config, ctx)
    assert again == first


def test_lottery_on_a_user_module_and_data(tmp_path, capsys):
    from ticketlab.data import DataBundle, Split

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 12, generator=g) * 3
    y = torch.arange(360) % 3
    x = (centers[y] + torch.randn(360, 12, generator=g)).view(360, 1, 12)
    data = DataBundle(Split(x[:240], y[:240], torch.arange(240)), Split(x[240:300], y[240:300], torch.arange(60)),
                      Split(x[300:], y[300:], torch.arange(60)), 3, (1, 12), y[:240].clone())
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train = ticketlab.TrainConfig(steps="3ep", batch_size=20, lr=0.05)
    path, summaries = ticketlab.lottery(model, data, levels=2, train=train, runs_dir=tmp_path)
    assert [s["level"] for s in summaries] == [0, 1, 2]
    n = 12 * 16 + 16 * 3
    assert [round(s["density"] * n) for s in summaries] == [n, round(0.8 * n), round(0.64 * n)]
    start = torch.load(path / "level_2" / "start.pt", weights_only=True)
    mask = ticketlab.Mask.load(path / "level_2" / "mask.pt")
    w = "1.weight"
    assert torch.equal(start[w][mask[w]], initial[w][mask[w]])
    assert summaries[2]["final_test_accuracy"] > 0.9
    again_path, again = ticketlab.lottery(model, data, levels=2, train=train, runs_dir=tmp_path)
    assert again_path == path and again == summaries
    # a proper run directory: listed, reported under the module's name, removable
    from ticketlab.cli import main

    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    assert path.name in capsys.readouterr().out
    from ticketlab.analysis import collect

    rows = collect([path])
    assert {(r.dataset, r.model, r.level) for r in rows} == {("user data", "Sequential", k) for k in range(3)}
    assert main(["runs", "rm", path.name, "--runs-dir", str(tmp_path)]) == 0 and not path.exists()


def test_lottery_runs_of_differently_initialised_modules_do_not_collide():
    from ticketlab.methods.lottery import module_signature

    torch.manual_seed(0)
    a = torch.nn.Linear(4, 2)
    torch.manual_seed(1)
    b = torch.nn.Linear(4, 2)
    assert module_signature(a) != module_signature(b)
    assert module_signature(a) == module_signature(a)


def test_each_command_has_its_own_run_directories(tmp_path):
    """A config of one command never lands in another's directory through the Python API."""
    from ticketlab.config import convert
    from ticketlab.errors import ConfigError

    core = merge(ticketlab.get_preset("digits_mlp"), {"train": {"steps": "1ep"}, "model": {"hidden": "16"}})
    ctx = ticketlab.RunContext(runs_dir=tmp_path, progress=False)
    lottery_path, _ = ticketlab.run_lottery(convert(core, ticketlab.LotteryRunConfig), 0, ctx)
    train_run, _ = ticketlab.run_train(core, ctx)
    assert lottery_path.name.startswith("lottery_") and train_run.path.name.startswith("train_")
    assert ticketlab.LotteryRunConfig().method == "lottery" and ticketlab.RunConfig().method == "train"
    again, _ = ticketlab.run_train(ticketlab.LotteryRunConfig(**{k: getattr(core, k) for k in
                                                                 ("data", "model", "train", "prune")}), ctx)
    assert again.path == train_run.path  # a lottery config at its defaults: its core sections
    with pytest.raises(ConfigError, match="lottery section does not apply to `ticketlab train`"):
        ticketlab.run_train(merge(convert(core, ticketlab.LotteryRunConfig), {"lottery": {"retrain": "scratch"}}), ctx)
    with pytest.raises(ConfigError, match="is not something `ticketlab lottery` runs"):
        merge(ticketlab.LotteryRunConfig(), {"method": "bogus"})


def test_lottery_on_user_data_with_other_labels_is_another_run(tmp_path):
    from ticketlab.data import DataBundle, Split

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 1, 12, generator=g), torch.arange(200) % 3
    def bundle(labels):
        return DataBundle(Split(x[:150], labels[:150], torch.arange(150)), None,
                          Split(x[150:], labels[150:], torch.arange(50)), 3, (1, 12), labels[:150].clone())
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    train = ticketlab.TrainConfig(steps="1ep", batch_size=50, lr=0.05)
    a, _ = ticketlab.lottery(model, bundle(y), levels=0, train=train, runs_dir=tmp_path)
    shuffled = y[torch.randperm(200, generator=g)]
    assert int(shuffled.sum()) == int(y.sum())  # the same label sum: a sum-based signature would collide
    b, _ = ticketlab.lottery(model, bundle(shuffled), levels=0, train=train, runs_dir=tmp_path)
    assert a != b
    from ticketlab.analysis import collect

    rows = collect([tmp_path])
    assert len({r.experiment for r in rows}) == 2  # and they are not replicates of one experiment
