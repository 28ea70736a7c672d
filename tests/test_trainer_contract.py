"""The trainer's contract with methods (v2): stopping, per-step learning rates, mask changes on a dense
start, callback state by name, callback metrics and summary entries, continuing an optimizer."""

import pytest
import torch

from ticketlab.config import DataConfig, ModelConfig, TrainConfig
from ticketlab.data import load_data
from ticketlab.errors import CheckpointError
from ticketlab.models import build_model
from ticketlab.sparsity import Mask
from ticketlab.steps import Steps
from ticketlab.train import Callback, Trainer, read_metrics
from killing import KillAt


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(dataset="digits", val_size=180), noise_seed=0)


def _cfg(**kw):
    base = dict(steps=Steps(3), batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                eval_every=Steps(0, 10), checkpoint_every=Steps(0, 5))
    base.update(kw)
    return TrainConfig(**base)


def _trainer(data, out, callbacks=(), cfg=None, **kw):
    model = build_model(ModelConfig(name="mlp", hidden=(32,)), data.input_shape, data.num_classes, seed=0)
    return Trainer(model, data, cfg or _cfg(), order_seed=3, out_dir=out, callbacks=callbacks, progress=False, **kw)


def _same_run(a, b):
    wa, wb = (torch.load(p / "final.pt", weights_only=True) for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert read_metrics(a / "metrics.jsonl") == read_metrics(b / "metrics.jsonl")


class StopAt(Callback):
    def __init__(self, at):
        self.at = at

    def after_step(self, state):
        if state.step == self.at:
            state.request_stop()


def test_a_callback_ends_the_phase_at_its_step_and_a_killed_run_resumes_to_the_same_stop(digits, tmp_path):
    straight = _trainer(digits, tmp_path / "a", [StopAt(23)])
    summary = straight.fit()
    assert (summary["steps"], summary["stopped_at"]) == (23, 23) and straight.total == 3 * straight.ipe
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert records[-1]["step"] == 23 and {r["split"] for r in records if r["step"] == 23} == {"train", "val", "test"}
    assert summary["final_test_accuracy"] == [r for r in records if r["split"] == "test"][-1]["accuracy"]

    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path / "b", [StopAt(23), KillAt(17)]).fit()  # checkpoint at 15, killed at 17
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 15
    resumed = _trainer(digits, tmp_path / "b", [StopAt(23)]).fit()
    assert resumed["stopped_at"] == 23
    _same_run(tmp_path / "a", tmp_path / "b")
    assert _trainer(digits, tmp_path / "c").fit()["stopped_at"] is None


def test_no_checkpoint_is_written_at_the_stop_step(digits, tmp_path):
    """Killed between the stop and the summary, the run replays from an earlier checkpoint to the same stop."""
    class Snapshot(Callback):
        def on_train_end(self, state):
            raise KeyboardInterrupt  # as if killed right after the loop ended

    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path, [StopAt(20), Snapshot()]).fit()  # 20 is a checkpoint step (every 5)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 15
    assert _trainer(digits, tmp_path, [StopAt(20)]).fit()["stopped_at"] == 20


def test_a_per_step_learning_rate_function_is_followed_exactly(digits):
    seen = []

    class Spy(Callback):
        def after_backward(self, state):
            seen.append((state.step, state.optimizer.param_groups[0]["lr"]))

    lr_at = lambda step: 0.01 * (step % 7 + 1) / 3  # noqa: E731
    trainer = _trainer(digits, None, [Spy()], cfg=_cfg(steps=Steps(0, 30), schedule="cosine"), lr_at=lr_at,
                       start_step=4)
    trainer.fit()
    assert [s for s, _ in seen] == list(range(4, 30))
    assert all(lr == lr_at(step) for step, lr in seen)


class PruneThenRegrow(Callback):
    """On a dense start: at step ``prune_at`` keep the larger half of fc1 by magnitude; at ``regrow_at`` give
    back every other pruned position. Checks the enforcer's promises right after each change."""

    def __init__(self, prune_at, regrow_at, checks):
        self.prune_at, self.regrow_at, self.checks = prune_at, regrow_at, checks

    def after_step(self, state):
        enforcer, w = state.trainer.enforcer, state.model.fc1.weight
        if state.step == self.prune_at:
            assert enforcer.dense
            keep = w.detach().abs() >= w.detach().abs().flatten().median()
            enforcer.set_mask(Mask({**enforcer.mask, "fc1.weight": keep}), state.optimizer)
            self.checks.append(("pruned", bool((w[~keep] == 0).all())))
        if state.step == self.regrow_at:
            old = enforcer.mask["fc1.weight"]
            flat = (~old).flatten().nonzero().flatten()[::2]
            grow = torch.zeros_like(old).flatten()
            grow[flat] = True
            new = old | grow.view_as(old)
            enforcer.set_mask(Mask({**enforcer.mask, "fc1.weight": new}), state.optimizer)
            regrown = new & ~old
            momentum = state.optimizer.state[w]["momentum_buffer"]
            self.checks.append(("regrown at 0", bool((w[regrown] == 0).all()),
                                bool((momentum[regrown] == 0).all()), int(regrown.sum())))


def test_a_mask_changed_by_a_callback_on_a_dense_start_resumes_bit_identical(digits, tmp_path):
    checks = []
    cfg = _cfg(checkpoint_every=Steps(0, 1))
    a = _trainer(digits, tmp_path / "a", [PruneThenRegrow(12, 30, checks)], cfg=cfg)
    a.fit()
    assert checks[0] == ("pruned", True) and checks[1][:3] == ("regrown at 0", True, True) and checks[1][3] > 0
    density = a.density()
    assert 0.5 < density < 1.0
    with pytest.raises(KeyboardInterrupt):  # killed right after the pruning step's checkpoint
        _trainer(digits, tmp_path / "b", [PruneThenRegrow(12, 30, []), KillAt(13)], cfg=cfg).fit()
    b = _trainer(digits, tmp_path / "b", [PruneThenRegrow(12, 30, [])], cfg=cfg)
    b.fit()
    _same_run(tmp_path / "a", tmp_path / "b")
    assert b.density() == density and b.enforcer.mask == a.enforcer.mask
    with pytest.raises(KeyboardInterrupt):  # and right after the regrowth
        _trainer(digits, tmp_path / "c", [PruneThenRegrow(12, 30, []), KillAt(31)], cfg=cfg).fit()
    _trainer(digits, tmp_path / "c", [PruneThenRegrow(12, 30, [])], cfg=cfg).fit()
    _same_run(tmp_path / "a", tmp_path / "c")


def test_after_backward_sees_dense_gradients_and_after_step_sees_pruned_weights_at_zero(digits):
    events = []

    class Watch(Callback):
        def after_backward(self, state):
            pruned = ~state.trainer.enforcer.mask["fc1.weight"]
            if pruned.any():
                events.append(("grad", bool(state.model.fc1.weight.grad[pruned].abs().sum() > 0)))

        def after_step(self, state):
            pruned = ~state.trainer.enforcer.mask["fc1.weight"]
            if pruned.any():
                events.append(("weight", bool((state.model.fc1.weight[pruned] == 0).all())))

    _trainer(digits, None, [PruneThenRegrow(2, 10**6, []), Watch()], cfg=_cfg(steps=Steps(0, 5))).fit()
    # pruned after step 2; steps 3, 4 and 5 each see dense gradients, then zeroed pruned weights
    assert events == [("weight", True)] + [("grad", True), ("weight", True)] * 3


class Counter(Callback):
    def __init__(self, name, step=1):
        self.name, self.count, self.step = name, 0, step

    def after_step(self, state):
        self.count += self.step

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_callback_state_is_restored_by_name(digits, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path, [Counter("ones", 1), Counter("tens", 10), KillAt(12)]).fit()
    ones, tens = Counter("ones", 1), Counter("tens", 10)
    _trainer(digits, tmp_path, [tens, ones]).fit()  # another order: each gets its own state back
    total = 3 * _trainer(digits, None).ipe
    assert (ones.count, tens.count) == (total, 10 * total)


@pytest.mark.parametrize("callbacks, message", [
    (lambda: [Counter("ones")], r"callbacks \['ones', 'tens'\] but this phase has \['ones'\]"),
    (lambda: [Counter("ones"), Counter("tens"), Counter("more")], "but this phase has"),
])
def test_a_missing_or_extra_stateful_callback_on_resume_is_a_one_line_error(digits, tmp_path, callbacks, message):
    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path, [Counter("ones"), Counter("tens"), KillAt(12)]).fit()
    with pytest.raises(CheckpointError, match=message) as err:
        _trainer(digits, tmp_path, callbacks()).fit()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="distinct names"):
        _trainer(digits, None, [Counter("x"), Counter("x")])


def test_callbacks_log_metrics_and_add_to_the_summary_across_a_resume(digits, tmp_path):
    class Logger(Callback):
        def on_epoch_end(self, state):
            state.log("probe", norm=float(state.model.fc1.weight.detach().norm()))
            state.add_summary(**{f"norm_epoch_{state.step // state.iters_per_epoch}": 1.0})

    straight = _trainer(digits, tmp_path / "a", [Logger()]).fit()
    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path / "b", [Logger(), KillAt(30)], cfg=_cfg(checkpoint_every=Steps(0, 25))).fit()
    resumed = _trainer(digits, tmp_path / "b", [Logger()], cfg=_cfg(checkpoint_every=Steps(0, 25))).fit()
    probes = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["split"] == "probe"]
    assert [r["epoch"] for r in probes] == [1.0, 2.0, 3.0] and all(r["norm"] > 0 for r in probes)
    assert probes == [r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if r["split"] == "probe"]
    assert {k for k in straight if k.startswith("norm_epoch")} == {"norm_epoch_1", "norm_epoch_2", "norm_epoch_3"}
    assert {k: v for k, v in resumed.items() if k.startswith("norm")} == \
        {k: v for k, v in straight.items() if k.startswith("norm")}


def test_a_phase_can_continue_another_phases_optimizer_state(digits):
    first = _trainer(digits, None, cfg=_cfg(steps=Steps(0, 10)))
    first.fit()
    state = first.optimizer.state_dict()
    second = _trainer(digits, None, cfg=_cfg(steps=Steps(0, 1)), optimizer_state=state)
    second.model.load_state_dict(first.model.state_dict())
    seen = {}

    class Momentum(Callback):
        def after_backward(self, s):
            seen["buffer"] = s.optimizer.state[s.model.fc1.weight]["momentum_buffer"].clone()

    second.callbacks.append(Momentum())
    second.fit()
    assert torch.equal(seen["buffer"], first.optimizer.state[first.model.fc1.weight]["momentum_buffer"])


def test_continuing_an_optimizer_keeps_this_phases_hyperparameters_and_refuses_another_kind(digits):
    first = _trainer(digits, None, cfg=_cfg(steps=Steps(0, 3)))
    first.fit()
    second = _trainer(digits, None, cfg=_cfg(steps=Steps(0, 1), momentum=0.5, weight_decay=0.0, nesterov=True),
                      optimizer_state=first.optimizer.state_dict())
    second.fit()
    group = second.optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.5, 0.0, True)
    adam = _trainer(digits, None, cfg=_cfg(steps=Steps(0, 1), optimizer="adam", momentum=0.0),
                    optimizer_state=first.optimizer.state_dict())
    with pytest.raises(CheckpointError, match=r"does not fit this phase's optimizer \(Adam\)"):
        adam.fit()


def test_a_stop_requested_at_the_start_of_a_resumed_run_ends_it_there(digits, tmp_path):
    class StopAtStart(Callback):
        def on_train_start(self, state):
            state.request_stop()

    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path, [KillAt(12)]).fit()
    summary = _trainer(digits, tmp_path, [StopAtStart()]).fit()
    assert (summary["steps"], summary["stopped_at"]) == (10, 10) and summary["final_test_accuracy"] is not None
    assert _trainer(digits, None, [StopAt(3 * 20)]).fit()["stopped_at"] is None  # the stop falls on the last step


def test_checkpoints_of_the_earlier_format_resume(digits, tmp_path):
    """Before states were keyed by name a checkpoint held one state per callback, stateless ones too, and a
    dense run no mask: such a checkpoint still resumes."""
    class Stateless(Callback):
        pass

    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, tmp_path, [Counter("ones"), Stateless(), KillAt(12)]).fit()
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ckpt["callbacks"], ckpt["mask"] = [ckpt["callbacks"]["ones"], {}], {}
    del ckpt["summary_extra"], ckpt["metrics"]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    for newer in ("checkpoint.pt.sha256", "checkpoint.prev.pt", "checkpoint.prev.pt.sha256"):  # not made then
        (tmp_path / newer).unlink()
    ones = Counter("ones")
    _trainer(digits, tmp_path, [ones, Stateless()]).fit()
    assert ones.count == 3 * 20
