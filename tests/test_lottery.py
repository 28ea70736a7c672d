import pytest
import torch

from ticketlab.config import convert, merge
from ticketlab.data import load_data
from ticketlab.io import load_torch
from ticketlab.methods.branches import BranchConfig, parse_levels, run_branch, branch_dir, check_levels
from ticketlab.methods.experiment import config_model_factory, masked
from ticketlab.methods.lottery import Lottery, LotteryRunConfig
from ticketlab.presets import get_preset
from ticketlab.sparsity import Mask, prunable_parameters
from ticketlab.train import Callback, read_metrics
from ticketlab.errors import ConfigError
from experiments import load_for, make_experiment
from killing import killing

BASE = merge(convert(get_preset("digits_mlp"), LotteryRunConfig), {"method": "lottery", "model": {"hidden": "48"},
                                        "train": {"steps": "2ep", "eval_every": "1ep"}})


@pytest.fixture(scope="module")
def digits():
    return load_for(BASE)


def make(config, data, path, cls=Lottery):
    return make_experiment(cls, config, data, path)


def prunable_count(lottery):
    return sum(p.numel() for p in prunable_parameters(lottery.make_model(0)).values())


def cfg(**sections):
    return merge(BASE, sections)


def test_rewind_to_init_is_exact_and_counts_follow_the_rule(digits, tmp_path):
    lottery = make(cfg(), digits, tmp_path)
    lottery.run(4)
    init = load_torch(tmp_path / "init.pt")
    n = prunable_count(lottery)
    previous = None
    for k in range(5):
        mask = Mask.load(tmp_path / f"level_{k}" / "mask.pt")
        assert mask.num_kept() == int(0.8 ** k * n + 0.5)
        if previous is not None:
            assert mask.issubset(previous)
        previous = mask
        start = load_torch(tmp_path / f"level_{k}" / "start.pt")
        for name, value in start.items():
            keep = mask[name] if name in mask else torch.ones_like(value, dtype=torch.bool)
            assert torch.equal(value[keep], init[name][keep]), (k, name)
            assert torch.count_nonzero(value[~keep]) == 0
        final = load_torch(tmp_path / f"level_{k}" / "final.pt")
        for name, keep in mask.items():
            assert torch.count_nonzero(final[name][~keep]) == 0


def test_late_rewinding_uses_the_pretrain_weights_and_resumes_schedule(digits, tmp_path):
    lottery = make(cfg(lottery={"rewind": "7it"}), digits, tmp_path)
    summaries = lottery.run(2)
    rewind = load_torch(tmp_path / "pretrain" / "final.pt")
    assert not all(torch.equal(rewind[k], v) for k, v in load_torch(tmp_path / "init.pt").items())
    for k in range(3):
        mask = Mask.load(tmp_path / f"level_{k}" / "mask.pt")
        start = load_torch(tmp_path / f"level_{k}" / "start.pt")
        assert all(torch.equal(start[name], v) for name, v in masked(rewind, mask).items())
        assert summaries[k]["start_step"] == 7
        assert read_metrics(tmp_path / f"level_{k}" / "metrics.jsonl")[0]["step"] == 7


@pytest.mark.parametrize("mode", ["lr-rewind", "finetune"])
def test_lr_rewind_and_finetune_start_from_previous_final_weights(digits, tmp_path, mode):
    lottery = make(cfg(lottery={"retrain": mode, "finetune_lr": 0.01, "finetune_steps": "1ep"}), digits, tmp_path)
    summaries = lottery.run(2)
    for k in (1, 2):
        mask = Mask.load(tmp_path / f"level_{k}" / "mask.pt")
        start = load_torch(tmp_path / f"level_{k}" / "start.pt")
        previous = load_torch(tmp_path / f"level_{k - 1}" / "final.pt")
        assert all(torch.equal(start[name], v) for name, v in masked(previous, mask).items())
    if mode == "finetune":
        assert summaries[1]["steps"] == lottery.ipe and summaries[0]["steps"] == 2 * lottery.ipe
    else:
        assert summaries[1]["steps"] == summaries[0]["steps"] == 2 * lottery.ipe


def test_scratch_starts_from_a_new_initialisation_each_level(digits, tmp_path):
    lottery = make(cfg(lottery={"retrain": "scratch"}), digits, tmp_path)
    lottery.run(2)
    init = load_torch(tmp_path / "init.pt")
    starts = [load_torch(tmp_path / f"level_{k}" / "start.pt") for k in (1, 2)]
    mask = Mask.load(tmp_path / "level_1" / "mask.pt")
    w = "fc1.weight"
    assert not torch.equal(starts[0][w][mask[w]], init[w][mask[w]])
    assert not torch.equal(starts[0][w], starts[1][w])


def test_random_and_gradient_criteria_are_reproducible(digits, tmp_path):
    for criterion in ("random", "gradient"):
        config = cfg(prune={"criterion": criterion})
        a, b = make(config, digits, tmp_path / f"{criterion}a"), make(config, digits, tmp_path / f"{criterion}b")
        a.run(2), b.run(2)
        for k in (1, 2):
            assert Mask.load(a.path / f"level_{k}" / "mask.pt") == Mask.load(b.path / f"level_{k}" / "mask.pt")
        other = make(merge(config, {"seed": 1}), digits, tmp_path / f"{criterion}c")
        other.run(1)
        assert Mask.load(other.path / "level_1" / "mask.pt") != Mask.load(a.path / "level_1" / "mask.pt")


def test_output_layer_at_half_rate(digits, tmp_path):
    lottery = make(cfg(prune={"scope": "layer", "output_rate": 0.5}), digits, tmp_path)
    lottery.run(3)
    for k in range(1, 4):
        mask = Mask.load(tmp_path / f"level_{k}" / "mask.pt")
        n_out = mask["fc2.weight"].numel()
        n_hidden = mask["fc1.weight"].numel()
        assert int(mask["fc2.weight"].sum()) == int(0.9 ** k * n_out + 0.5)
        assert int(mask["fc1.weight"].sum()) == int(0.8 ** k * n_hidden + 0.5)


_KillingLottery = killing(Lottery, lambda out: out.name == "level_2")


def test_killed_lottery_resumes_bit_identical(digits, tmp_path):
    config = cfg(train={"momentum": 0.9, "checkpoint_every": "1ep"})
    make(config, digits, tmp_path / "a").run(3)
    killed = make(config, digits, tmp_path / "b", _KillingLottery)
    killed.kill_at = killed.ipe + 3
    with pytest.raises(KeyboardInterrupt):
        killed.run(3)
    assert (tmp_path / "b" / "level_2" / "checkpoint.pt").exists()
    make(config, digits, tmp_path / "b").run(3)
    for k in range(4):
        a, b = (load_torch(tmp_path / run / f"level_{k}" / "final.pt") for run in "ab")
        assert all(torch.equal(a[name], b[name]) for name in a), k
        assert read_metrics(tmp_path / "a" / f"level_{k}" / "metrics.jsonl") == \
            read_metrics(tmp_path / "b" / f"level_{k}" / "metrics.jsonl")


def test_raising_levels_trains_only_new_levels(digits, tmp_path):
    lottery = make(cfg(), digits, tmp_path)
    lottery.run(1)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    lottery.run(2)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert (tmp_path / "level_2" / "summary.json").exists()


def test_a_level_whose_weights_were_deleted_is_not_called_finished_and_trains_again(digits, tmp_path, capsys):
    lottery = make(cfg(), digits, tmp_path)
    lottery.run(1)
    for name in ("final.pt", "final.pt.sha256"):
        (tmp_path / "level_1" / name).unlink()
    lottery.progress = "lines"
    capsys.readouterr()
    lottery.run(1)
    err = capsys.readouterr().err
    assert f"{tmp_path.name}: level 0 already finished" in err and "levels 0-1" not in err
    assert (tmp_path / "level_1" / "final.pt").exists() and (tmp_path / "level_1" / "summary.json").exists()


def test_opening_checks_settings_on_one_model_and_a_finished_run_not_at_all(tmp_path, monkeypatch):
    import sys

    from ticketlab.methods import RunContext

    experiment = sys.modules["ticketlab.methods.experiment"]
    built, build = [], experiment.build_model
    monkeypatch.setattr(experiment, "build_model", lambda *args, **kwargs: built.append(1) or build(*args, **kwargs))
    ctx = RunContext(tmp_path, "cpu", progress=False)
    lottery = Lottery.open(cfg(), ctx, levels=0)
    assert len(built) == 1  # the initial model, pruned once to check the first pruning's settings
    lottery.run(0)
    del built[:]
    Lottery.open(cfg(), ctx, levels=0).run(0)  # a no-op rerun: nothing is built, nothing pruned
    assert built == [] and not (lottery.level_dir(1) / "mask.pt").exists()
    Lottery.open(cfg(), ctx, levels=1)  # level 1 is not finished: the settings are checked again
    assert len(built) == 1


# -- branches ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trunk(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("trunk")
    lottery = make(cfg(), digits, path)
    lottery.run(3)
    return lottery


def test_reinit_branch_same_mask_new_weights(trunk):
    run_branch(trunk, BranchConfig(name="reinit"), 2)
    out = branch_dir(trunk, BranchConfig(name="reinit"), 2)
    assert Mask.load(out / "mask.pt") == Mask.load(trunk.level_dir(2) / "mask.pt")
    start, ticket = load_torch(out / "start.pt"), load_torch(trunk.level_dir(2) / "start.pt")
    assert not torch.equal(start["fc1.weight"], ticket["fc1.weight"])
    assert torch.count_nonzero(start["fc1.weight"]) == int(Mask.load(out / "mask.pt")["fc1.weight"].sum())


@pytest.mark.parametrize("layerwise", [True, False])
def test_random_prune_branch_keeps_counts(trunk, layerwise):
    branch = BranchConfig(name="random-prune", layerwise=layerwise)
    run_branch(trunk, branch, 3)
    mask = Mask.load(branch_dir(trunk, branch, 3) / "mask.pt")
    ticket = Mask.load(trunk.level_dir(3) / "mask.pt")
    assert mask.num_kept() == ticket.num_kept() and mask != ticket
    if layerwise:
        assert all(int(mask[k].sum()) == int(ticket[k].sum()) for k in ticket.keys())


def test_retrain_branch_regains_pruned_weights_from_zero(trunk):
    branch = BranchConfig(name="retrain", regain="1ep", steps="3ep")
    summary = run_branch(trunk, branch, 2)
    out = branch_dir(trunk, branch, 2)
    ticket = Mask.load(trunk.level_dir(2) / "mask.pt")
    final = load_torch(out / "final.pt")
    assert summary["density"] == 1.0 and summary["steps"] == 3 * trunk.ipe
    assert torch.count_nonzero(final["fc1.weight"][~ticket["fc1.weight"]]) > 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["density"] for r in records if r["split"] == "test" and r["step"] < trunk.ipe][-1] < 1.0
    assert [r["density"] for r in records if r["split"] == "test"][-1] == 1.0


def test_oneshot_branch_prunes_the_dense_model_once(trunk):
    summary = run_branch(trunk, BranchConfig(name="oneshot"), 3)
    mask = Mask.load(branch_dir(trunk, BranchConfig(name="oneshot"), 3) / "mask.pt")
    assert mask.num_kept() == int(0.8 ** 3 * prunable_count(trunk) + 0.5)
    expected = trunk.prune_to(3, load_torch(trunk.level_dir(0) / "final.pt"), None)
    assert mask == expected and summary["branch"] == "oneshot"


def test_branch_levels_must_be_finished(trunk):
    assert parse_levels("1,3-5") == [1, 3, 4, 5]
    with pytest.raises(ConfigError, match="not finished"):
        check_levels(trunk, [2, 9])
    with pytest.raises(ConfigError, match="1,3-5"):
        parse_levels("one")


class _LabelSpy(Lottery):
    seen = None

    def fit(self, out, weights, mask, cfg, start_step, extra, callbacks=(), **kwargs):
        seen = self.seen

        class Spy(Callback):
            def after_backward(self, state):
                seen.setdefault(out.name, []).append((state.index.clone(), state.y.clone()))

        return super().fit(out, weights, mask, cfg, start_step, extra, [*callbacks, Spy()], **kwargs)


def test_label_noise_applies_to_every_phase(tmp_path):
    config = cfg(data={"noise": "symmetric", "noise_rate": 0.3}, lottery={"rewind": "5it"})
    data = load_data(config.data, noise_seed=config.noise_seed)
    assert (data.train.y != data.clean_train_y).float().mean() > 0.2
    lottery = make(config, data, tmp_path, _LabelSpy)
    lottery.seen = {}
    lottery.run(1)
    run_branch(lottery, BranchConfig(name="reinit"), 1)
    assert set(lottery.seen) == {"pretrain", "level_0", "level_1", f"branch_reinit_{branch_dir(lottery, BranchConfig(), 1).name.split('_')[-1]}"}
    for batches in lottery.seen.values():
        for index, y in batches:
            assert torch.equal(y, data.train.y[index])


def test_pre_phase_follows_the_full_schedule(digits, tmp_path):
    """The rewind point comes from the dense run's own schedule, not one squeezed into the pre-phase."""
    from ticketlab.train import lr_schedule

    class LrSpy(Lottery):
        seen = {}

        def fit(self, out, weights, mask, cfg, start_step, extra, callbacks=(), **kwargs):
            seen = self.seen.setdefault(out.name, [])

            class Spy(Callback):
                def after_backward(self, state):
                    seen.append((state.step, state.optimizer.param_groups[0]["lr"]))

            return super().fit(out, weights, mask, cfg, start_step, extra, [*callbacks, Spy()], **kwargs)

    config = cfg(lottery={"rewind": "1ep"})
    assert config.train.schedule == "cosine"
    lottery = make(config, digits, tmp_path, LrSpy)
    lottery.run(0)
    lr_at = lr_schedule(config.train, lottery.ipe)
    pre, level0 = LrSpy.seen["pretrain"], LrSpy.seen["level_0"]
    assert [s for s, _ in pre] == list(range(lottery.ipe)) and level0[0][0] == lottery.ipe
    assert all(lr == lr_at(step) for step, lr in pre + level0)


def test_train_and_lottery_score_gradients_on_the_same_kind_of_augmented_batch(tmp_path):
    """One scoring batch for every method: the seeded first batch of an epoch, augmented as in training."""
    from ticketlab.config import RunConfig
    from ticketlab.data import epoch_permutation
    from ticketlab.methods.experiment import SCORING_STEP, scoring_batch
    from ticketlab.methods.train import TrainRun
    from ticketlab.sparsity import prune

    config = cfg(data={"augment": True}, prune={"criterion": "gradient", "density": 0.5})
    data = load_data(config.data, noise_seed=config.noise_seed, augment_seed=config.augment_seed)
    x, y = scoring_batch(data, 5, 64)
    index = epoch_permutation(len(data.train), 5, 0)[:64]
    assert torch.equal(x, data.augment(data.train.x[index], SCORING_STEP)) and not torch.equal(x, data.train.x[index])
    train = convert(config, RunConfig)
    run = TrainRun(train, data, config_model_factory(train, data), tmp_path, torch.device("cpu"), progress=False)
    model = run.make_model(train.init_seed)
    batch = scoring_batch(data, train.prune_seed, train.train.batch_size)
    generator = torch.Generator().manual_seed(train.prune_seed)
    expected = prune(model, 0.5, criterion="gradient", batch=batch, generator=generator)
    assert run.initial_mask() == expected
    lottery = make(config, data, tmp_path / "lottery")
    level_batch = scoring_batch(data, lottery.prune_seed("score1"), config.train.batch_size, SCORING_STEP + 1)
    weights = lottery.initial_weights()
    assert lottery.prune_to(1, weights, None) == prune(
        lottery.model_with(weights), 0.8, criterion="gradient", batch=level_batch,
        generator=torch.Generator().manual_seed(lottery.prune_seed("prune1")))
