import json
from types import SimpleNamespace

import pytest
import torch

from ticketlab.cli import main
from ticketlab.errors import ConfigError
from ticketlab.config import convert, merge
from ticketlab.io import load_torch, read_json
from ticketlab.methods.experiment import masked
from ticketlab.methods.rst import RSTRun, RSTRunConfig
from ticketlab.methods.rst.ratios import choose_pruned, cumulative_ratio, pruned_count
from ticketlab.methods.rst.reg import GrowingPenalty, expected_updates, phase_bound
from ticketlab.presets import get_preset
from ticketlab.sparsity import Mask, prunable_parameters
from ticketlab.steps import Steps
from ticketlab.train import Trainer, read_metrics
from experiments import load_for, make_experiment
from killing import killing

TINY_REG = {"reg_granularity": 0.05, "update_reg_interval": 1, "stabilize_reg_interval": "10it", "lr_prune": 0.05,
            "test_interval": "20it", "save_interval": "5it"}
BASE = merge(convert(get_preset("digits_mlp"), RSTRunConfig), {"method": "rst", "model": {"hidden": "32"},
                                        "train": {"steps": "1ep", "eval_every": "1ep"},
                                        "rst": {"layer_ratios": "0-1:0.7", "pick_pruned": "rand", **TINY_REG}})


@pytest.fixture(scope="module")
def digits():
    return load_for(BASE)


def make(config, data, path, cls=RSTRun):
    return make_experiment(cls, config, data, path)


def cfg(method="rst", **rst):
    return merge(BASE, {"method": method, "rst": rst})


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def penalty_for(net, ratios, **kwargs):
    w = {k: p.detach() for k, p in prunable_parameters(net).items()}
    mask = choose_pruned(w, ratios, "rand", generator=torch.Generator().manual_seed(0))
    cb = GrowingPenalty(mask, **kwargs)
    cb.build(net)
    return cb, mask


# -- the coefficient schedule --------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["x", "x^2", "x^3"])
def test_float32_coefficient_first_exceeds_one_at_the_10000th_update(schedule):
    assert expected_updates(1e-4, 1.0, schedule) == 10000  # the estimate the phase's bound is made from
    net = tiny_net()
    cb, mask = penalty_for(net, {"0.weight": 0.5, "2.weight": 0.0}, granularity=1e-4, ceiling=1.0, interval=5,
                           schedule=schedule)
    state = SimpleNamespace(step=0, model=net)
    for t in range(0, 5 * 9999, 5):
        state.step = t
        cb.update(state)
    lam = cb.lambdas["0.weight"]
    assert cb.phase == "update_reg" and float(lam.max()) <= 1.0
    assert float(cb.counters["0.weight"].max()) == pytest.approx(0.99995357, abs=1e-8)
    state.step = 5 * 9999
    cb.update(state)
    power = {"x": 1, "x^2": 2, "x^3": 3}[schedule]
    assert cb.phase == "stabilize_reg" and cb.switch_step == 49995
    assert float(cb.counters["0.weight"].max()) == pytest.approx(1.0000535, abs=1e-7)
    assert float(lam.max()) == pytest.approx(1.0000535 ** power, abs=1e-6) and float(lam.max()) > 1.0
    assert torch.count_nonzero(lam[mask["0.weight"]]) == 0  # kept weights: coefficient 0
    assert torch.equal(lam[~mask["0.weight"]], torch.full_like(lam[~mask["0.weight"]], float(lam.max())))
    assert torch.count_nonzero(cb.lambdas["2.weight"]) == 0


def test_layers_without_pruned_weights_finish_at_the_first_update_and_the_granularity_guard():
    net = tiny_net()
    cb, _ = penalty_for(net, {"0.weight": 0.0, "2.weight": 0.0}, granularity=0.1, ceiling=1.0, interval=4)
    cb.update(SimpleNamespace(step=0, model=net))
    assert cb.switch_step == 0
    cb, _ = penalty_for(net, {"0.weight": 0.5, "2.weight": 0.0}, granularity=0.5, ceiling=1.0, interval=1)
    for t in (0, 1):  # 0.5 + 0.5 = 1.0 is not above the ceiling: still growing
        cb.update(SimpleNamespace(step=t, model=net))
    assert cb.phase == "update_reg" and float(cb.lambdas["0.weight"].max()) == 1.0
    cb.update(SimpleNamespace(step=2, model=net))
    assert cb.switch_step == 2
    assert phase_bound(0.05, 1.0, "x", 3, 7) >= 57 + 7 + 1  # the trainer's bound lies past the real end
    with pytest.raises(ConfigError, match="float32 resolution"):
        expected_updates(1e-9, 1.0)
    with pytest.raises(ConfigError, match="raise the granularity"):
        expected_updates(1e-7, 1.0)


# -- the penalty gradient ------------------------------------------------------------------------------


def test_penalty_gradient_is_lambda_times_w_and_weight_decay_comes_on_top():
    net, x, y = tiny_net(1), torch.randn(8, 6), torch.randint(0, 3, (8,))
    cb, _ = penalty_for(net, {"0.weight": 0.6, "2.weight": 0.4}, granularity=0.3, ceiling=1.0, interval=1)
    for t in range(2):
        cb.update(SimpleNamespace(step=t, model=net))
    params = prunable_parameters(net)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    penalty = sum((cb.lambdas[k] * p ** 2).sum() / 2 for k, p in params.items())
    expected = torch.autograd.grad(loss + penalty, list(params.values()))
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    cb.penalise()
    for (name, p), g in zip(params.items(), expected):
        assert torch.allclose(p.grad, g, rtol=1e-6, atol=1e-8), name
        assert torch.count_nonzero(cb.lambdas[name]) > 0
    # weight decay is applied by SGD on top of the penalised gradient
    lr, wd = 0.1, 0.01
    before = {k: p.detach().clone() for k, p in params.items()}
    grads = {k: p.grad.clone() for k, p in params.items()}
    torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd).step()
    for k, p in params.items():
        assert torch.allclose(p.detach(), before[k] - lr * (grads[k] + wd * before[k]), rtol=0, atol=1e-7)
    # block_loss_grad: the gradient is the penalty's alone
    cb.block_loss_grad = True
    torch.nn.functional.cross_entropy(net(x), y).backward()
    cb.penalise()
    for k, p in params.items():
        assert torch.equal(p.grad, cb.lambdas[k] * p.detach())


# -- the method ------------------------------------------------------------------------------------------


def test_rst_phase_lengths_milestones_and_summary(digits, tmp_path):
    config = cfg(update_reg_interval=3, stabilize_reg_interval="7it", pick_pruned="min")
    run = make(config, digits, tmp_path)
    summary = run.run()
    reg = read_json(tmp_path / "cycle_1" / "reg" / "summary.json")
    assert reg["steps"] == 65 and reg["switch_step"] == 57  # 20 updates of 0.05 (float32), interval 3, then 7 + 1
    info = summary["cycles"][0]
    assert (info["switch_step"], info["reg_steps"]) == (57, 65)
    for name in ("init.pt", "cycle_1/reg/update_done.pt", "cycle_1/pruned.pt", "cycle_1/mask.pt",
                 "level_1/final.pt", "level_1/best.pt"):
        assert (tmp_path / name).is_file(), name
    init, mask = load_torch(tmp_path / "init.pt"), Mask.load(tmp_path / "cycle_1" / "mask.pt")
    assert mask == choose_pruned({k: init[k] for k in mask}, {k: 0.7 for k in mask}, "min")  # min |w| of the init
    pruned, reg_end = load_torch(tmp_path / "cycle_1" / "pruned.pt"), load_torch(tmp_path / "cycle_1/reg/final.pt")
    assert all(torch.equal(pruned[k], v) for k, v in masked(reg_end, mask).items())
    assert summary["mode"] == "rst" and summary["level"] == 1 and summary["density"] == pytest.approx(mask.density())
    assert summary["last_n"] == 1 and summary["best_test_accuracy"] is not None
    assert make(config, digits, tmp_path).run() == summary  # finished: nothing runs again


def test_regularisation_pushes_the_pruned_set_to_zero_so_pruning_costs_little(digits, tmp_path):
    config = cfg(layer_ratios="0-1:0.5", reg_granularity=1.0, reg_upper_limit=20.0, stabilize_reg_interval="150it")
    run = make(config, digits, tmp_path / "rst")
    run.pruned(1)
    info = read_json(tmp_path / "rst" / "cycle_1" / "prune.json")
    with_phase = info["after"]["train"]["loss"] - info["before"]["train"]["loss"]
    # the same set pruned from the same start after the same training without the penalty
    mask = run.mask(1)
    plain_cfg = load_plain_config(run, info["reg_steps"])
    Trainer(run.model_with(run.start(1)), digits, plain_cfg, order_seed=config.derived_seed("reg1"),
            out_dir=tmp_path / "plain", progress=False).fit()
    plain = load_torch(tmp_path / "plain" / "final.pt")
    without_phase = run.losses(masked(plain, mask))["train"]["loss"] - run.losses(plain)["train"]["loss"]
    print(f"largest pruned |w| after regularisation {info['pruned_max_abs']:.4g}; train-loss change from pruning: "
          f"{with_phase:+.4f} with the phase, {without_phase:+.4f} without")
    assert info["pruned_max_abs"] < 0.02
    assert abs(with_phase) < 0.05 * abs(without_phase) and without_phase > 0.5


def load_plain_config(run, total):
    from dataclasses import replace

    rst = run.rst
    return replace(run.config.train, optimizer="sgd", lr=rst.lr_prune, batch_size=rst.batch_size_prune,
                   steps=Steps(0, total), schedule="constant", eval_every=Steps(0, total))


def test_rst_iter_masks_are_nested_with_exact_counts_and_cumulative_ratios(digits, tmp_path):
    config = cfg("rst-iter", num_cycles=5, pick_pruned="iter_rand", reg_granularity=0.5, stabilize_reg_interval="2it",
                 weight_delete=True)
    run = make(config, digits, tmp_path)
    run.run()
    previous = None
    for c in range(1, 6):
        mask = Mask.load(tmp_path / f"cycle_{c}" / "mask.pt")
        layers = read_json(tmp_path / f"cycle_{c}" / "ratios.json")
        for name, keep in mask.items():
            ratio = cumulative_ratio(0.7, c, 5)
            assert layers[name]["ratio"] == ratio
            assert int((~keep).sum()) == pruned_count(ratio, keep.numel()) == layers[name]["pruned"]
        if previous is not None:
            assert mask.issubset(previous) and mask != previous
            reg_end = load_torch(tmp_path / f"cycle_{c}" / "reg" / "final.pt")  # weight_delete: stays 0
            assert all(torch.count_nonzero(reg_end[k][~previous[k]]) == 0 for k in previous)
        previous = mask
    assert [round(cumulative_ratio(0.7, c, 5), 3) for c in range(1, 6)] == [0.214, 0.382, 0.514, 0.618, 0.7]
    assert (tmp_path / "level_5" / "summary.json").is_file() and not (tmp_path / "level_1").exists()


_KillingRun = killing(RSTRun, lambda out: out.parent.name == "cycle_2" and out.name == "reg")


def test_killed_rst_iter_resumes_bit_identical(digits, tmp_path):
    config = cfg("rst-iter", num_cycles=2, iter_finetune=True, steps_mini="5it")
    make(config, digits, tmp_path / "a").run()
    killed = make(config, digits, tmp_path / "b", _KillingRun)
    killed.kill_at = 13  # mid-growth (20 updates of 0.05); the last checkpoint is at step 10
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    ckpt = load_torch(tmp_path / "b" / "cycle_2" / "reg" / "checkpoint.pt")
    assert ckpt["step"] == 10 and ckpt["callbacks"]["GrowingPenalty"]["switch_step"] is None
    make(config, digits, tmp_path / "b").run()
    for phase in ("cycle_1/reg", "cycle_1/train", "cycle_2/reg", "level_2"):
        a, b = (load_torch(tmp_path / run / phase / "final.pt") for run in "ab")
        assert all(torch.equal(a[k], b[k]) for k in a), phase
        assert read_metrics(tmp_path / "a" / phase / "metrics.jsonl") == \
            read_metrics(tmp_path / "b" / phase / "metrics.jsonl"), phase


def test_l1_baselines(digits, tmp_path):
    at_init = make(cfg("l1", pick_pruned="min"), digits, tmp_path / "l1")
    at_init.run()
    init, mask = load_torch(tmp_path / "l1" / "init.pt"), at_init.mask(1)
    assert mask == choose_pruned({k: init[k] for k in mask}, {k: 0.7 for k in mask}, "min")
    start = load_torch(tmp_path / "l1" / "cycle_1" / "pruned.pt")
    assert all(torch.equal(start[k], v) for k, v in masked(init, mask).items())
    assert not (tmp_path / "l1" / "cycle_1" / "reg").exists()
    # the same random mask as RST with the same seed: the "trained from scratch" baseline
    scratch = make(cfg("l1"), digits, tmp_path / "scratch")
    assert scratch.mask(1) == make(cfg("rst"), digits, tmp_path / "rst").mask(1)

    lth = make(cfg("l1-lth", num_cycles=2, steps_mini="4it", pick_pruned="min"), digits, tmp_path / "lth")
    lth.run()
    m1, m2 = lth.mask(1), lth.mask(2)
    trained = load_torch(tmp_path / "lth" / "cycle_2" / "train" / "final.pt")
    assert m2.issubset(m1) and m2 == choose_pruned({k: trained[k] for k in m2},
                                                   {k: 0.7 for k in m2}, "min", previous=m1)
    ticket = load_torch(tmp_path / "lth" / "cycle_2" / "pruned.pt")
    assert all(torch.equal(ticket[k], v) for k, v in masked(load_torch(tmp_path / "lth" / "init.pt"), m2).items())

    it = make(cfg("l1-iter", num_cycles=2, steps_mini="4it", pick_pruned="min"), digits, tmp_path / "iter")
    it.run()
    assert (tmp_path / "iter" / "cycle_1" / "train").is_dir() and not (tmp_path / "iter" / "cycle_2" / "train").exists()
    tuned = load_torch(tmp_path / "iter" / "cycle_1" / "train" / "final.pt")
    assert it.mask(2) == choose_pruned({k: tuned[k] for k in m2}, {k: 0.7 for k in m2}, "min", previous=it.mask(1))


def test_cli_rst_variants_and_report(tmp_path, capsys):
    flags = ["--preset", "digits_mlp", "--model.hidden", "32", "--train.steps", "1ep", "--rst.layer-ratios", "0-1:0.9",
             "--rst.pick_pruned", "rand", "--runs-dir", str(tmp_path), "--progress", "none"]
    flags += [x for k, v in TINY_REG.items() for x in (f"--rst.{k}", str(v))]
    assert main(["rst", *flags]) == 0
    assert main(["rst", "--variant", "l1", *flags]) == 0
    out = capsys.readouterr().out
    assert "digits mlp l1" in out and "9.97" in out and "run directory:" in out
    assert main(["report", str(tmp_path), "--format", "json", "--no-plots"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["mode"] for r in records) == ["l1", "rst"]
    assert all(r["level"] == 1 and r["density_pct"] == pytest.approx(10.0, abs=0.2) for r in records)
    assert main(["rst", "--variant", "rst-iter", *flags]) == 2
    assert "num_cycles" in capsys.readouterr().err
    assert main(["rst", "--preset", "cifar100_resnet56_rst_iter", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"method": "rst-iter"' in out and "rst-iter_" in out and '"stage_ratios": [' in out


def _files(folder):
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("weight_delete", [False, True])
@pytest.mark.parametrize("iter_finetune", [False, True])
def test_rst_iter_finishes_for_every_flag_combination_and_a_rerun_is_a_no_op(digits, tmp_path, weight_delete,
                                                                            iter_finetune):
    """Without weight_delete or iter_finetune the intermediate cycles hand on unpruned weights; the run's
    summary still reads every cycle's prune.json (it was missing, so such runs never finished)."""
    config = cfg("rst-iter", num_cycles=2, reg_granularity=0.5, stabilize_reg_interval="2it",
                 weight_delete=weight_delete, iter_finetune=iter_finetune, steps_mini="3it" if iter_finetune else "0it")
    summary = make(config, digits, tmp_path).run()
    assert [c["cycle"] for c in summary["cycles"]] == [1, 2]
    assert all((tmp_path / f"cycle_{c}" / "prune.json").is_file() for c in (1, 2))
    assert (tmp_path / "cycle_1" / "train").is_dir() == iter_finetune and not (tmp_path / "cycle_2" / "train").exists()
    assert read_json(tmp_path / "summary.json") == summary
    before = _files(tmp_path)
    assert make(config, digits, tmp_path).run() == summary
    assert _files(tmp_path) == before  # nothing trained, written or replaced again
