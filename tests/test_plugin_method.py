"""A method declared from outside the package (here, inside this test module) gets everything a built-in
method has: a CLI command with its flags and help, a config section that round-trips and hashes, a
resumable run and a report row. Nothing in `ticketlab` is edited for it; "Adding a method" in the README
follows this file."""

import json
from dataclasses import dataclass

import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import DataConfig, ModelConfig, Section, TrainConfig, merge, option, run_config
from ticketlab.method import Method, config_from_dict, register_method, unregister_method
from ticketlab.methods import Experiment, RunContext
from ticketlab.train import Callback, read_metrics
from killing import killing


@dataclass(frozen=True)
class ToyConfig(Section):
    shrink: float = option(1.0, "multiply every gradient by this before the step")


ToyRunConfig = run_config("toy", toy=ToyConfig)


class ShrinkGradients(Callback):
    def __init__(self, factor: float):
        self.factor, self.calls = factor, 0

    def after_backward(self, state):
        for p in state.model.parameters():
            p.grad.mul_(self.factor)
        self.calls += 1

    def on_train_end(self, state):
        state.add_summary(shrunk_steps=self.calls)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class ToyRun(Experiment):
    def run(self):
        extra = {"row": self.row(variant="toy", level=0, density=1.0)}
        return self.train_phase(self.path / "phase", self.initial_weights, None, self.config.train,
                                order_seed=self.config.order_seed, extra=extra,
                                callbacks=[ShrinkGradients(self.config.toy.shrink)])


def run_toy(config, options, ctx):
    run = ToyRun.open(config, ctx)
    run.run()
    return run.path


PRESET = ToyRunConfig(method="toy", data=DataConfig(dataset="digits", val_size=180),
                      model=ModelConfig(name="mlp", hidden=(16,)),
                      train=TrainConfig(steps="2ep", batch_size=64, lr=0.05, eval_every="1ep"),
                      toy=ToyConfig(shrink=0.5))


@pytest.fixture
def toy():
    method = register_method(Method(name="toy", help="a toy method: training with shrunk gradients",
                                    config=ToyRunConfig, run=run_toy, presets={"toy_digits": PRESET}))
    yield method
    unregister_method("toy")


def test_the_command_its_flags_help_and_report_row(toy, tmp_path, capsys):
    common = ["--preset", "toy_digits", "--runs-dir", str(tmp_path), "--progress", "none"]
    assert main(["toy", *common, "--toy.shrink", "0.25"]) == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("toy_") and f"run directory: {run}" in out and "digits mlp toy" in out
    summary = json.loads((run / "phase" / "summary.json").read_text())
    assert summary["shrunk_steps"] == 2 * summary["iters_per_epoch"] and summary["row"]["method"] == "toy"
    assert main(["report", str(tmp_path), "--format", "json", "--no-plots"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert (record["mode"], record["level"], record["branch"], record["density_pct"]) == ("toy", 0, "trunk", 100.0)
    assert record["final_test_pct"] == pytest.approx(100 * summary["final_test_accuracy"])

    assert main(["toy", "--preset", "toy_digits", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--toy.shrink" in help_text and "0.5" in help_text and "--rst." not in help_text
    assert main(["train", "--toy.shrink", "2", "--runs-dir", str(tmp_path)]) == 2
    assert "--toy.shrink is a field of `ticketlab toy`" in capsys.readouterr().err
    assert main(["list", "presets"]) == 0
    assert "toy_digits" in capsys.readouterr().out


def test_its_config_round_trips_and_hashes(toy):
    config = merge(PRESET, {"toy": {"shrink": "0.25"}})
    again = config_from_dict(json.loads(config.to_json()))
    assert again == config and type(again) is ToyRunConfig and again.toy.shrink == 0.25
    assert again.run_name == config.run_name != PRESET.run_name
    assert merge(PRESET, {"data": {"root": "/elsewhere"}}).hash() == PRESET.hash()


ToyKilled = killing(ToyRun, lambda out: out.name == "phase")


def test_its_run_resumes_bit_identical_after_a_kill(toy, tmp_path):
    ctx = lambda name: RunContext(runs_dir=tmp_path / name, progress=False)  # noqa: E731
    straight = ToyRun.open(PRESET, ctx("a"))
    straight.run()
    killed = ToyKilled.open(PRESET, ctx("b"))
    killed.kill_at = 30
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert (killed.path / "phase" / "checkpoint.pt").exists()
    resumed = ToyRun.open(PRESET, ctx("b"))
    summary = resumed.run()
    a, b = (torch.load(r.path / "phase" / "final.pt", weights_only=True) for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [read_metrics(r.path / "phase" / "metrics.jsonl") for r in (straight, resumed)]
    assert metrics[0] == metrics[1]
    assert summary["shrunk_steps"] == 2 * summary["iters_per_epoch"]  # the callback's count survived the kill


def test_its_run_lets_the_run_go_when_it_returns(toy, tmp_path):
    from test_run_lock import lock_is_free

    path = toy.run(PRESET, {}, RunContext(runs_dir=tmp_path, progress=False))  # as the CLI and a sweep call it
    assert (path / "phase" / "summary.json").is_file() and lock_is_free(path)


def test_a_method_can_be_declared_again_and_bad_declarations_are_refused(toy):
    from ticketlab.config import SECTION_OWNERS
    from ticketlab.method import Flag

    unregister_method("toy")
    assert "toy" not in SECTION_OWNERS
    register_method(Method(name="toy", help="again", config=ToyRunConfig, run=run_toy))
    assert SECTION_OWNERS["toy"] == ["toy"]
    for bad, message in ((dict(name="runs"), "cannot be named 'runs'"),
                         (dict(flags=(Flag("--seed", "clash"),)), "clash with the CLI's own"),
                         (dict(name="toy2"), "config class is ToyRunConfig of command 'toy'")):
        fields = {"name": "toy", "help": "x", "config": ToyRunConfig, "run": run_toy, **bad}
        with pytest.raises(ValueError, match=message):
            register_method(Method(**fields))
