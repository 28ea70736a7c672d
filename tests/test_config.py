import json

import pytest

from ticketlab.config import RunConfig, merge
from ticketlab.errors import ConfigError
from ticketlab.presets import get_preset, list_presets
from ticketlab.steps import Steps


@pytest.mark.parametrize("text, ep, it", [("40ep", 40, 0), ("1000it", 0, 1000), ("2ep100it", 2, 100), ("7", 0, 7)])
def test_steps_parse_and_print(text, ep, it):
    steps = Steps.parse(text)
    assert (steps.ep, steps.it) == (ep, it)
    assert Steps.parse(str(steps)) == steps
    assert steps.to_iters(391) == ep * 391 + it


@pytest.mark.parametrize("bad", ["", "ep", "3 epochs", "-1it", "1.5ep"])
def test_steps_reject_garbage(bad):
    with pytest.raises(ConfigError, match="not a duration"):
        Steps.parse(bad)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_round_trips_through_json(name):
    from ticketlab.method import config_from_dict

    config = get_preset(name)
    again = config_from_dict(json.loads(config.to_json()))
    assert again == config and type(again) is type(config)
    assert again.hash() == config.hash()


def test_hashes_are_pinned():
    """Changing these means every existing run directory gets a new name: do it only on purpose."""
    assert RunConfig().hash() == "99914b932bd3"  # md5 of "{}": all fields at their defaults
    assert RunConfig(seed=1).hash() == "3aa9f49e22c9"
    assert merge(get_preset("digits_mlp"), {"method": "train"}).hash() == "18d837c16427"
    assert merge(get_preset("mnist_lenet_300_100"), {"method": "train"}).hash() == "aa21ec70fa4c"
    assert merge(get_preset("mnist_lenet_300_100_lth"), {"method": "train"}).hash() == "06444627ec73"


def test_hash_ignores_paths_and_downloads_but_not_seed():
    base = get_preset("mnist_lenet_300_100")
    assert merge(base, {"data": {"root": "/elsewhere", "download": True}}).hash() == base.hash()
    assert merge(base, {"train": {"checkpoint_every": "3ep"}}).hash() == base.hash()
    assert merge(base, {"seed": 1}).hash() != base.hash()
    assert merge(base, {"train": {"lr": 0.05}}).hash() != base.hash()


def test_overrides_are_typed():
    config = merge(RunConfig(), {"train": {"lr": "0.05", "steps": "2ep100it", "milestones": "1ep,2ep",
                                           "nesterov": "false"}, "model": {"hidden": "300,100"}})
    assert config.train.lr == 0.05
    assert config.train.steps == Steps(2, 100)
    assert config.train.milestones == (Steps(1), Steps(2))
    assert config.model.hidden == (300, 100)


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"lrr": 1}}, "unknown config field 'train.lrr' \\(did you mean train.lr\\?\\)"),
    ({"bogus": 1}, "unknown config field 'bogus'"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number"),
    ({"train": {"batch_size": "1.5"}}, "train.batch_size must be an integer"),
    ({"train": {"optimizer": "rmsprop"}}, "choose one of: sgd, adam, adamw"),
    ({"prune": {"density": 0}}, "prune.density=0.0 is out of range"),
    ({"prune": {"density": 1.5}}, "prune.density=1.5 is out of range"),
    ({"data": {"noise": "symmetric"}}, "needs --data.noise_rate"),
    ({"train": {"schedule": "multistep"}}, "needs --train.milestones"),
])
def test_bad_fields_are_rejected_with_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        merge(RunConfig(), overrides)


def test_derived_seeds_are_distinct_and_stable():
    config = RunConfig(seed=3)
    seeds = {config.init_seed, config.order_seed, config.noise_seed, config.prune_seed}
    assert len(seeds) == 4
    assert RunConfig(seed=3).init_seed == config.init_seed
    assert RunConfig(seed=4).init_seed != config.init_seed
    explicit = merge(config, {"data": {"order_seed": 11}})
    assert explicit.order_seed == 11


def test_toml_file(tmp_path):
    from ticketlab.config import load_config_file

    path = tmp_path / "c.toml"
    path.write_text('seed = 2\n[train]\nlr = 0.01\nsteps = "3ep"\n[data]\ndataset = "mnist1d"\n')
    config = merge(RunConfig(), load_config_file(str(path)))
    assert (config.seed, config.train.lr, config.train.steps, config.data.dataset) == (2, 0.01, Steps(3), "mnist1d")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nwarp = 9\n")
    with pytest.raises(ConfigError, match="train.warp"):
        merge(RunConfig(), load_config_file(str(bad)))


def test_other_weights_over_a_lower_layer_get_their_own_digest(tmp_path, capsys):
    """A layer that sets model.weights without a digest drops the lower layers' digest (file, then flag;
    merge and compose_config in Python), so the run is named by, and later checks, the weights it uses."""
    from ticketlab.cli import main
    from ticketlab.method import METHODS, compose_config
    from ticketlab.models.weights import file_digest

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights a")
    b.write_bytes(b"weights b")
    only_b = merge(RunConfig(), {"model": {"weights": str(b)}})
    assert only_b.model.weights_digest == file_digest(str(b)) != file_digest(str(a))

    over_a = merge(merge(RunConfig(), {"model": {"weights": str(a)}}), {"model": {"weights": str(b)}})
    assert over_a == only_b
    lottery = METHODS.get("lottery")
    layered, _ = compose_config(lottery, "digits_mlp", [{"model": {"weights": str(a)}}, {"model": {"weights": str(b)}}])
    assert layered == compose_config(lottery, "digits_mlp", [{"model": {"weights": str(b)}}])[0]
    assert merge(over_a, {"model": {"weights": ""}}).model == RunConfig().model  # no weights: no digest either
    stored = merge(over_a, {"model": {"weights": str(a), "weights_digest": "0" * 16}})  # a stored config's pair
    assert stored.model.weights_digest == "0" * 16

    config_file = tmp_path / "f.json"
    config_file.write_text(json.dumps({"model": {"weights": str(a)}}))
    assert main(["lottery", "--preset", "digits_mlp", "--config", str(config_file), "--model.weights", str(b),
                 "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    *shown, where = capsys.readouterr().out.strip().splitlines()
    assert json.loads("\n".join(shown))["model"]["weights_digest"] == file_digest(str(b))
    assert where == f"run directory: {tmp_path / 'runs' / layered.run_name}"
