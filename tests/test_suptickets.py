"""Sup-tickets: phase lengths, the cyclic rate, the superposition arithmetic, and the method on top of DST."""

import json

import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import convert, merge
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, read_json
from ticketlab.methods.suptickets import SupTicketsRun, SupTicketsRunConfig, phase_epochs, reprune, superpose
from ticketlab.presets import get_preset
from ticketlab.sparsity import Mask
from ticketlab.train import average, read_metrics
from experiments import load_for, make_experiment
from killing import killing

BASE = merge(convert(get_preset("digits_mlp"), SupTicketsRunConfig), {
    "model": {"hidden": "32"}, "prune": {"scope": "erk"},
    "train": {"steps": "6ep", "eval_every": "2ep", "checkpoint_every": "10it", "schedule": "multistep",
              "milestones": "2ep,3ep"},
    "dst": {"init_density": 0.2, "update_every": "10it"},
    "suptickets": {"cycle": 1, "cycle_rate": 0.34, "lr_1": 0.001, "lr_2": 0.01, "large_death_rate": 0.5}})


@pytest.fixture(scope="module")
def digits():
    return load_for(BASE)


def make(config, data, path, cls=SupTicketsRun):
    return make_experiment(cls, config, data, path)


def cfg(**suptickets):
    return merge(BASE, {"suptickets": suptickets})


@pytest.mark.parametrize("epochs, cycle, rate, expected", [
    (250, 8, 0.1, (226, 24, 3)),  # the README's setting
    (160, 8, 0.2, (128, 32, 4)),  # the defaults
    (30, 8, 0.2, (30, 0, 0)),  # 6 cyclic epochs are less than a cycle: no cyclic phase
    (100, 3, 0.57, (46, 54, 18)),  # float arithmetic: 56.99999... - (56.99999... % 3), not 57
])
def test_phase_lengths_follow_the_reference_arithmetic(epochs, cycle, rate, expected):
    assert phase_epochs(epochs, cycle, rate) == expected


def test_the_cyclic_rate_per_iteration(digits, tmp_path):
    run = make(BASE, digits, tmp_path)
    lr_at, ipe = run.lr_function(), run.ipe
    pretrain, cyclic, tickets = run.phases
    assert (pretrain, cyclic, tickets) == (4, 2, 2)
    start = pretrain * ipe
    assert lr_at(0) == 0.05 and lr_at(2 * ipe) == pytest.approx(0.005) and lr_at(start - 1) == pytest.approx(5e-4)
    lr_1, lr_2 = 0.001, 0.01
    for step in range(start, 6 * ipe):
        e, j = divmod(step - start, ipe)
        tau = ((e % 1) + j / ipe) / 1
        expected = lr_1 * (1 - 2 * tau) + lr_2 * 2 * tau if tau < 0.5 else lr_1 * (2 * tau - 1) + lr_2 * (2 - 2 * tau)
        assert lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step
    assert lr_at(start) == pytest.approx(lr_1) and lr_at(start + ipe // 2) == pytest.approx(lr_2, rel=0.06)
    flat = make(cfg(cyclic_lr=False), digits, tmp_path).lr_function()
    assert flat(start + 3) == lr_at(start - 1)  # without the cyclic rate: the last pre-train rate


def _toy(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g), "n": torch.tensor(seed)}


def test_caa_is_the_running_uniform_average_and_cima_its_recurrence():
    models = [_toy(s) for s in range(5)]
    running = models[0]
    for k, ticket in enumerate(models[1:], start=1):
        running = superpose(running, ticket, k, "caa")
        uniform = average(models[:k + 1])
        torch.testing.assert_close(running["w"], uniform["w"], rtol=1e-6, atol=1e-7)
        assert running["n"] == 0  # integer entries: from the first partner
    cima, expected = models[0], models[0]["w"].clone()
    for k, ticket in enumerate(models[1:], start=1):
        cima = superpose(cima, ticket, k, "cima", 0.3)
        expected = 0.7 * expected + 0.3 * ticket["w"]
        torch.testing.assert_close(cima["w"], expected, rtol=1e-6, atol=1e-7)
    pruned, mask = reprune(models[1], ["w"], 0.25)
    assert int(torch.count_nonzero(pruned["w"])) == mask.num_kept() == 3
    assert torch.equal(pruned["b"], models[1]["b"])


def test_a_run_takes_tickets_superposes_them_at_the_final_density_and_leaves_training_alone(digits, tmp_path):
    run = make(BASE, digits, tmp_path / "a")
    result = run.run()
    pretrain, _, tickets = run.phases
    path, ipe = tmp_path / "a", run.ipe
    for k in range(1, tickets + 1):
        mask = Mask.load(path / f"superposed_{k}_mask.pt")
        weights = load_torch(path / f"superposed_{k}.pt")
        total = mask.num_total()
        assert mask.num_kept() == round(0.2 * total)  # exactly the final density
        assert all(torch.count_nonzero(weights[n][~mask[n]]) == 0 for n in mask)
    previous = load_torch(path / "pretrain_end.pt")
    assert not torch.equal(previous["fc1.weight"], load_torch(path / "superposed_1.pt")["fc1.weight"])
    kinds = [(e["kind"], e["cycle"]) for e in read_json(path / "summary.json")["superposition"]]
    assert kinds == [("pretrain", 0), ("ticket", 1), ("superposed", 1), ("ticket", 2), ("superposed", 2)]
    assert result["row"]["variant"] == "caa:rigl" and result["row"]["level"] == tickets
    assert result["final_test_accuracy"] == read_json(path / "summary.json")["superposition"][-1]["test"]
    masks = [r for r in read_metrics(path / "metrics.jsonl") if r["split"] == "mask"]
    cyclic = [r for r in masks if pretrain * ipe <= r["step"] < 6 * ipe]
    assert [r["step"] for r in cyclic] == [pretrain * ipe, pretrain * ipe, (pretrain + 1) * ipe]  # regular + 2 re-explorations
    assert [r["death_rate"] for r in cyclic[1:]] == [0.5, 0.5]
    # the same training without the superposition callback ends with the same weights
    plain = make(BASE, digits, tmp_path / "b")
    plain.train_phase(plain.path, plain.fresh_initial_weights, run.initial_mask(), plain.config.train,
                      order_seed=plain.config.order_seed, extra={}, callbacks=plain.callbacks(superpose=False),
                      lr_at=plain.lr_function())
    a, b = load_torch(path / "final.pt"), load_torch(tmp_path / "b" / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


_Killed = killing(SupTicketsRun, lambda out: True)


def test_a_run_killed_in_the_cyclic_phase_resumes_bit_identical(digits, tmp_path):
    make(BASE, digits, tmp_path / "a").run()
    killed = make(BASE, digits, tmp_path / "b", _Killed)
    killed.kill_at = 5 * killed.ipe + 3  # after the first ticket's superposition, inside the second cycle
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert (tmp_path / "b" / "superposed_1.pt").exists() and not (tmp_path / "b" / "superposed_2.pt").exists()
    make(BASE, digits, tmp_path / "b").run()
    for name in ("final.pt", "superposed_1.pt", "superposed_2.pt", "ticket_2.pt"):
        a, b = (load_torch(tmp_path / r / name) for r in "ab")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert read_metrics(tmp_path / "a" / "metrics.jsonl") == read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert read_json(tmp_path / "a" / "superposed" / "summary.json")["superposition"] == \
        read_json(tmp_path / "b" / "superposed" / "summary.json")["superposition"]


def test_the_command_report_and_bad_settings(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--model.hidden", "32", "--prune.scope", "erk", "--dst.init_density", "0.2",
              "--dst.update_every", "10it", "--train.steps", "4ep", "--suptickets.cycle", "1",
              "--suptickets.cycle_rate", "0.5", "--progress", "none", "--runs-dir", str(tmp_path)]
    assert main(["suptickets", *common, "--suptickets.superposition", "cima"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--format", "json", "--out", str(tmp_path / "figs")]) == 0
    captured = capsys.readouterr()
    (record,) = json.loads(captured.out)
    assert record["mode"] == "cima:rigl" and record["level"] == 2 and record["density_pct"] == pytest.approx(20, abs=0.3)
    assert (tmp_path / "figs" / "cycle_accuracy.png").exists() and (tmp_path / "figs" / "mask_dynamics.png").exists()
    for args, message in ((["--train.steps", "4ep10it"], "whole epochs"),
                          (["--suptickets.cycle_rate", "0.1"], "leave no cycle of 1 epochs"),
                          (["--suptickets.base", "granet", "--dst.init_density", "0.5", "--dst.final_density", "0.2",
                            "--dst.prune_end", "3ep"], "ends after the pre-train phase")):
        assert main(["suptickets", *common, *args]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ConfigError, match="suptickets.base"):
        merge(BASE, {"suptickets": {"base": "lottery"}})


def test_tickets_are_taken_before_the_next_cycles_re_exploration(digits, tmp_path):
    run = make(BASE, digits, tmp_path)
    run.run()
    pretrain, _, tickets = run.phases
    taken = {pretrain * run.ipe: "pretrain_end.pt", (pretrain + 1) * run.ipe: "ticket_1.pt"}
    for step, name in taken.items():
        weights = load_torch(tmp_path / name)
        explored = Mask.from_packed(load_torch(tmp_path / "masks" / f"step_{step:07d}_explore.pt"))
        dropped = sum(int(torch.count_nonzero(weights[k][~explored[k]])) for k in explored)
        assert dropped > 0, name  # weights the re-exploration at this step removed are still in the ticket
    last = load_torch(tmp_path / f"ticket_{tickets}.pt")  # the run's end: no re-exploration after it
    assert not (tmp_path / "masks" / f"step_{(pretrain + tickets) * run.ipe:07d}_explore.pt").exists()
    assert all(torch.equal(last[k], v) for k, v in load_torch(tmp_path / "final.pt").items())
