"""PrAC: forgetting counts, the early-bird trigger, the critical set, scaled schedules, and resumable rounds."""

from types import SimpleNamespace

import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import TrainConfig, convert, merge
from ticketlab.io import load_torch, read_json
from ticketlab.data import examples_seen
from ticketlab.methods.prac import PracRun, PracRunConfig, scaled_schedule
from ticketlab.methods.prac.record import NEVER_LEARNED, EarlyBird, critical_set, forgetting_counts
from ticketlab.presets import get_preset
from ticketlab.sparsity import Mask
from ticketlab.steps import Steps
from ticketlab.train import read_metrics
from experiments import load_for, make_experiment
from killing import killing


def reference_counts(sequence):
    """The reference's state machine, one example at a time (unseen epochs, -1, skipped)."""
    seen = [v for v in sequence if v >= 0]
    if not seen:
        return -1
    learned, count, ever = False, 0, False
    for v in seen:
        if v == 1:
            if not ever:
                count = 0
            learned, ever = True, True
        elif learned:
            count, learned = count + 1, False
    return count if ever else NEVER_LEARNED


def test_forgetting_counts_follow_the_reference_state_machine():
    sequences = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [-1, -1, -1, -1], [0, 1, 0, 1], [-1, 1, -1, 0],
                 [1, 0, 0, 1], [0, 0, 1, 1]]
    record = torch.tensor(sequences, dtype=torch.int8).T  # epochs x examples
    assert forgetting_counts(record).tolist() == [reference_counts(s) for s in sequences] == \
        [0, NEVER_LEARNED, 2, -1, 1, 1, 1, 0]
    g = torch.Generator().manual_seed(0)
    random = torch.randint(-1, 2, (9, 300), generator=g, dtype=torch.int8)
    assert forgetting_counts(random).tolist() == [reference_counts(random[:, i].tolist()) for i in range(300)]


class ScriptedMasks:
    """Candidate masks whose successive distances (over 100 weights) are the given sequence."""

    def __init__(self, distances):
        self.masks, current = [], torch.zeros(100, dtype=torch.bool)
        self.masks.append(Mask({"w": current.clone()}))
        for d in distances:
            current = current.clone()
            flip = int(round(d * 100))
            current[:flip] = ~current[:flip]
            self.masks.append(Mask({"w": current.clone()}))
        self.calls = 0

    def __call__(self, weights):
        self.calls += 1
        return self.masks[self.calls - 1]


def drive(distances, eps=0.1, queue=3):
    bird = EarlyBird(ScriptedMasks(distances), remaining=100, eps=eps, queue=queue)
    stopped = []
    for epoch in range(len(distances) + 1):
        state = SimpleNamespace(step=(epoch + 1) * 10, iters_per_epoch=10, model=torch.nn.Linear(1, 1),
                                add_summary=lambda **kw: None, request_stop=lambda e=epoch: stopped.append(e))
        bird.on_epoch_end(state)
        if stopped:
            break
    return bird.fired, stopped


def test_the_early_bird_fires_where_a_hand_computation_says():
    # distances from epoch 1 on: recording starts at 0.5; the FIFO (3, ones) holds 1,1,.5 / 1,.5,.3 / .5,.3,.05 /
    # .3,.05,.05 / .05,.05,.05 -> its max first falls below 0.1 after the fifth distance, at epoch 5
    assert drive([0.5, 0.3, 0.05, 0.05, 0.05, 0.05]) == (5, [5])
    assert drive([0.05, 0.05, 0.05, 0.05]) == (None, [])  # never above eps: recording never starts
    assert drive([0.5, 0.2, 0.15, 0.12, 0.11, 0.2]) == (None, [])  # never below
    assert drive([0.5, 0.1, 0.1, 0.1, 0.1]) == (None, [])  # equal to eps is not below it


def test_the_critical_set_is_the_union_of_both_criteria():
    counts = torch.tensor([0, 3, -1, NEVER_LEARNED, 0, 1])
    disagree = torch.tensor([True, False, False, False, False, False])
    assert critical_set(counts, 0, disagree=disagree).tolist() == [0, 1, 3, 5]
    assert critical_set(counts, 1).tolist() == [1, 3]
    assert critical_set(counts, keep=3).tolist() == [1, 3, 5]  # the most forgotten; -1 never chosen
    assert critical_set(counts, keep=5).tolist() == [0, 1, 3, 4, 5]  # ties at 0: the lower index


@pytest.mark.parametrize("rho, epochs, milestones", [(1.0, 182, (91, 136)), (0.3531, 64, (32, 48)),
                                                     (0.5, 91, (45, 68)), (0.004, 1, (1, 1))])
def test_scaled_schedules_truncate_as_the_reference(rho, epochs, milestones):
    train = TrainConfig(steps=Steps(182), schedule="multistep", milestones=(Steps(91), Steps(136)))
    scaled = scaled_schedule(train, rho)
    assert scaled.steps == Steps(epochs) and tuple(m.ep for m in scaled.milestones) == milestones
    assert examples_seen(10, 4, 0, 6) == 4 + 4 + 2 + 4 + 4 + 2


BASE = merge(convert(get_preset("digits_mlp"), PracRunConfig), {
    "model": {"hidden": "32"}, "train": {"steps": "6ep", "schedule": "multistep", "milestones": "3ep,5ep",
                                         "eval_every": "1ep", "checkpoint_every": "5it"},
    "prac": {"eb_eps": 0.02, "evaluate": "last"}})


@pytest.fixture(scope="module")
def digits():
    return load_for(BASE)


_Killed = killing(PracRun, lambda out: out.name == "level_0")


def test_rounds_train_on_their_critical_sets_and_a_killed_round_resumes_bit_identical(digits, tmp_path):
    a = make_experiment(PracRun, BASE, digits, tmp_path / "a")
    a.run(2)
    n = len(digits.train)
    for level in (1, 2):
        critical = load_torch(tmp_path / "a" / f"level_{level - 1}" / "critical.pt")
        summary = read_json(tmp_path / "a" / f"level_{level}" / "summary.json")
        assert summary["subset_size"] == len(critical) < n
        assert summary["epochs"] == max(1, int(6 * len(critical) / n))
        record = load_torch(tmp_path / "a" / f"level_{level}" / "record.pt")
        seen = (record >= 0).any(0)
        assert torch.equal(torch.nonzero(seen).flatten(), critical)  # only the critical set trained
    assert (tmp_path / "a" / "level_2" / "evaluate" / "summary.json").exists()
    killed = make_experiment(_Killed, BASE, digits, tmp_path / "b")
    killed.kill_at = 33  # mid-round 0 (checkpoints every 5 steps): its record and early-bird state resume
    with pytest.raises(KeyboardInterrupt):
        killed.run(2)
    make_experiment(PracRun, BASE, digits, tmp_path / "b").run(2)
    for name in ("level_1/final.pt", "level_2/final.pt", "level_2/evaluate/final.pt"):
        x, y = (load_torch(tmp_path / r / name) for r in "ab")
        assert all(torch.equal(x[k], y[k]) for k in x), name
    for name in ("level_0/record.pt", "level_0/critical.pt", "level_1/record.pt", "level_1/critical.pt",
                 "level_2/mask.pt"):
        assert torch.equal(*(torch.as_tensor(load_torch(tmp_path / r / name)) if not name.endswith("mask.pt")
                             else torch.cat([v.flatten() for v in Mask.load(tmp_path / r / name).values()])
                             for r in "ab")), name
    assert read_metrics(tmp_path / "a" / "level_1" / "metrics.jsonl") == \
        read_metrics(tmp_path / "b" / "level_1" / "metrics.jsonl")


def test_the_command_and_its_cost_in_the_report(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--model.hidden", "32", "--train.steps", "4ep", "--train.schedule",
              "multistep", "--train.milestones", "2ep", "--progress", "none", "--runs-dir", str(tmp_path)]
    assert main(["prac", *common, "--levels", "2"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--format", "csv", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "evaluate" in out and "prac" in out
    assert main(["prac", *common, "--train.steps", "4ep3it"]) == 2
    assert "whole epochs" in capsys.readouterr().err


def test_round_0_trains_from_the_initialisation_and_keeps_the_rewind_point(digits, tmp_path):
    from ticketlab.methods.experiment import masked
    from ticketlab.methods.lottery import Lottery, LotteryRunConfig

    config = merge(BASE, {"lottery": {"rewind": "7it"}, "prac": {"early_bird": False}})
    run = make_experiment(PracRun, config, digits, tmp_path / "prac")
    run.run(1)
    level_0 = read_json(tmp_path / "prac" / "level_0" / "summary.json")
    assert level_0["steps"] == 6 * run.ipe  # the full schedule from step 0, not from the rewind step
    rewind = load_torch(tmp_path / "prac" / "level_0" / "rewind.pt")
    initial = run.initial_weights()
    assert not torch.equal(rewind["fc1.weight"], initial["fc1.weight"])
    # the same weights as a lottery run's pre-phase of 7 steps on the same data order
    lottery = make_experiment(Lottery, convert(config, LotteryRunConfig), digits, tmp_path / "lottery")
    expected = lottery.rewind_weights()
    assert all(torch.equal(rewind[k], expected[k]) for k in expected)
    start = load_torch(tmp_path / "prac" / "level_1" / "start.pt")
    wanted = masked(rewind, Mask.load(tmp_path / "prac" / "level_1" / "mask.pt"))
    assert all(torch.equal(start[k], wanted[k]) for k in wanted)


def test_bad_prac_settings_are_refused_before_any_work(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--progress", "none", "--runs-dir", str(tmp_path)]
    for args, message in ((["--prac.queue", "0"], "prac.queue=0 is out of range"),
                          (["--prac.queue", "5000"], "prac.queue=5000 is out of range"),
                          (["--prac.warmup", "-1"], "prac.warmup=-1 is out of range"),
                          (["--prac.threshold", "-2"], "prac.threshold=-2 is out of range")):
        assert main(["prac", *common, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
