import math

import pytest
import torch

from ticketlab.config import DataConfig, ModelConfig, TrainConfig
from ticketlab.data import load_data
from ticketlab.models import build_model
from ticketlab.sparsity import MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Callback, Trainer, lr_schedule, read_metrics
from killing import KillAt


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(dataset="digits", val_size=180), noise_seed=0)


def _model(data, seed=0):
    return build_model(ModelConfig(name="mlp", hidden=(32,)), data.input_shape, data.num_classes, seed=seed)


def _cfg(**kw):
    base = dict(steps=Steps(3), batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                eval_every=Steps(1), checkpoint_every=Steps(1))
    base.update(kw)
    return TrainConfig(**base)


def _sparse_trainer(data, cfg, out_dir, callbacks=()):
    model = _model(data)
    enforcer = MaskEnforcer(model, prune(model, 0.3, criterion="magnitude"))
    return Trainer(model, data, cfg, order_seed=5, out_dir=out_dir, enforcer=enforcer, callbacks=callbacks,
                   progress=False), model


def test_killed_run_resumes_bit_identical(digits, tmp_path):
    cfg = _cfg()
    straight, model_a = _sparse_trainer(digits, cfg, tmp_path / "a")
    summary_a = straight.fit()

    killed, _ = _sparse_trainer(digits, cfg, tmp_path / "b", callbacks=[KillAt(straight.ipe + 7)])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "summary.json").exists()
    resumed, model_b = _sparse_trainer(digits, cfg, tmp_path / "b")
    summary_b = resumed.fit()

    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), name
    assert read_metrics(tmp_path / "a" / "metrics.jsonl") == read_metrics(tmp_path / "b" / "metrics.jsonl")
    drop = ("train_seconds",)
    assert {k: v for k, v in summary_a.items() if k not in drop} == {k: v for k, v in summary_b.items() if k not in drop}
    assert not (tmp_path / "b" / "checkpoint.pt").exists()


def test_finished_run_does_no_work(digits, tmp_path):
    trainer, _ = _sparse_trainer(digits, _cfg(steps=Steps(1)), tmp_path)
    first = trainer.fit()
    stamp = (tmp_path / "metrics.jsonl").stat().st_mtime_ns

    class Forbidden(Callback):
        def on_train_start(self, state):
            raise AssertionError("training started again")

    again, _ = _sparse_trainer(digits, _cfg(steps=Steps(1)), tmp_path, callbacks=[Forbidden()])
    assert again.fit() == first
    assert (tmp_path / "metrics.jsonl").stat().st_mtime_ns == stamp


def test_the_progress_bar_is_closed_however_fit_ends(digits, tmp_path):
    """An open bar sends every later status line through tqdm: a killed fit, a finished one and an
    already finished phase all leave none open."""
    from ticketlab import status

    def trainer(callbacks=()):
        return Trainer(_model(digits), digits, _cfg(), order_seed=5, out_dir=tmp_path, callbacks=callbacks,
                       progress="bar")

    before = status.open_bars[0]
    with pytest.raises(KeyboardInterrupt):
        trainer([KillAt(2)]).fit()
    assert status.open_bars[0] == before
    first = trainer().fit()
    assert status.open_bars[0] == before
    assert trainer().fit() == first and status.open_bars[0] == before


def test_pruned_weights_stay_zero_through_training(digits, tmp_path):
    trainer, model = _sparse_trainer(digits, _cfg(optimizer="adam", lr=1e-3), tmp_path)
    trainer.fit()
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    for name, keep in trainer.enforcer.mask.items():
        assert torch.count_nonzero(final[name][~keep.cpu()]) == 0
        assert torch.count_nonzero(final[name][keep.cpu()]) > 0.9 * keep.sum()
    assert trainer.density() == pytest.approx(0.3, abs=1e-3)


def test_metrics_log_every_evaluation(digits, tmp_path):
    trainer, _ = _sparse_trainer(digits, _cfg(steps=Steps(2), eval_every=Steps(0, 10)), tmp_path)
    summary = trainer.fit()
    records = read_metrics(tmp_path / "metrics.jsonl")
    ipe = trainer.ipe
    eval_steps = sorted({r["step"] for r in records})
    assert eval_steps == sorted({0, *range(10, 2 * ipe, 10), 2 * ipe})
    assert {r["split"] for r in records if r["step"] == 0} == {"val", "test"}
    assert {r["split"] for r in records if r["step"] == 10} == {"train", "val", "test"}
    last_test = [r for r in records if r["split"] == "test"][-1]
    assert summary["final_test_accuracy"] == last_test["accuracy"]
    assert all(set(r) >= {"step", "epoch", "split", "loss", "accuracy", "density"} for r in records)
    best = max((r for r in records if r["split"] == "val"), key=lambda r: (r["accuracy"], -r["step"]))
    assert summary["best_val"]["step"] == best["step"]
    assert (tmp_path / "best.pt").exists()


def test_step_order_and_dense_gradients_in_after_backward(digits):
    model = _model(digits)
    enforcer = MaskEnforcer(model, prune(model, 0.5))
    events = []

    class Recorder(Callback):
        def on_train_start(self, state):
            events.append("start")

        def loss_term(self, state):
            events.append("loss")
            return None

        def after_backward(self, state):
            pruned = ~enforcer.mask["fc1.weight"]
            events.append(("backward", bool(model.fc1.weight.grad[pruned].abs().sum() > 0)))

        def after_step(self, state):
            pruned = ~enforcer.mask["fc1.weight"]
            events.append(("step", state.step, bool(model.fc1.weight[pruned].abs().sum() == 0)))

        def on_epoch_end(self, state):
            events.append("epoch")

    Trainer(model, digits, _cfg(steps=Steps(0, 2)), order_seed=0, enforcer=enforcer, callbacks=[Recorder()],
            progress=False).fit()
    assert events == ["start", "loss", ("backward", True), ("step", 1, True), "loss", ("backward", True),
                      ("step", 2, True)]


def test_lr_schedules():
    ipe = 10
    multistep = lr_schedule(_cfg(schedule="multistep", milestones=(Steps(1), Steps(2)), lr=0.1), ipe)
    assert [multistep(s) for s in (0, 9, 10, 19, 20)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    warm = lr_schedule(_cfg(warmup=Steps(0, 4), lr=0.2), ipe)
    assert [warm(s) for s in (0, 1, 4, 9)] == pytest.approx([0.0, 0.05, 0.2, 0.2])
    cosine = lr_schedule(_cfg(schedule="cosine", lr=1.0, steps=Steps(2)), ipe)
    assert cosine(0) == 1.0 and cosine(10) == pytest.approx(0.5) and cosine(20) == pytest.approx(0.0)
    piecewise = lr_schedule(_cfg(schedule="piecewise", piecewise="1:0.1,2:0.01"), ipe)
    # before the first key the last value applies (DLTH's rule); keys are epochs
    assert [piecewise(s) for s in (0, 10, 19, 20, 35)] == pytest.approx([0.01, 0.1, 0.1, 0.01, 0.01])


def test_start_step_continues_schedule_and_order(digits):
    """A trainer started at step s (a rewind point) uses the schedule and batch order from s on."""
    cfg = _cfg(steps=Steps(0, 6), schedule="multistep", milestones=(Steps(0, 3),), eval_every=Steps(0, 100))
    seen = []

    class Lr(Callback):
        def after_backward(self, state):
            seen.append((state.step, state.optimizer.param_groups[0]["lr"], state.index[:3].tolist()))

    full = []
    Trainer(_model(digits), digits, cfg, order_seed=1, callbacks=[Lr()], progress=False).fit()
    full, seen[:] = list(seen), []
    Trainer(_model(digits), digits, cfg, order_seed=1, callbacks=[Lr()], start_step=4, progress=False).fit()
    assert seen == full[4:]
    assert math.isclose(full[3][1], 0.005) and math.isclose(full[2][1], 0.05)


def test_cyclic_triangular_schedule_matches_sup_tickets_formula():
    ipe, lr1, lr2 = 10, 0.001, 0.005
    lr_at = lr_schedule(_cfg(schedule="cyclic", lr=lr1, cycle_lr=lr2, cycle=Steps(2)), ipe)
    for step in range(0, 60):
        tau = (step % 20) / 20
        expected = lr1 * (1 - 2 * tau) + lr2 * 2 * tau if tau < 0.5 else lr1 * (2 * tau - 1) + lr2 * (2 - 2 * tau)
        assert lr_at(step) == pytest.approx(expected, rel=1e-12)
    assert lr_at(0) == pytest.approx(lr1) and lr_at(10) == pytest.approx(lr2) and lr_at(20) == pytest.approx(lr1)


def test_label_smoothing_is_the_training_loss(digits):
    seen = []

    class Loss(Callback):
        def after_backward(self, state):
            expected = torch.nn.functional.cross_entropy(state.logits, state.y, label_smoothing=0.1)
            seen.append(torch.equal(state.loss, expected))

    Trainer(_model(digits), digits, _cfg(steps=Steps(0, 3), label_smoothing=0.1), order_seed=0, callbacks=[Loss()],
            progress=False).fit()
    assert seen == [True, True, True]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_cpu_optimizers_are_fused_and_match_the_unfused_update(name):
    """The trainer builds fused optimizers on the CPU (faster); the update is torch's same formula."""
    from ticketlab.train import build_optimizer
    cfg = TrainConfig(optimizer=name, lr=0.05, momentum=0.9 if name == "sgd" else 0.0, weight_decay=1e-3)
    torch.manual_seed(0)
    fused_model = torch.nn.Linear(8, 4)
    plain_model = torch.nn.Linear(8, 4)
    plain_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(fused_model.parameters(), cfg)
    assert fused.defaults["fused"] is True
    hyper = {k: fused.defaults[k] for k in ("lr", "weight_decay", "momentum") if k in fused.defaults}
    plain = type(fused)(plain_model.parameters(), **hyper)
    assert not plain.defaults["fused"]
    for step in range(5):
        x = torch.randn(16, 8)
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps,max_held", [(1, 1 << 20), (4, 1 << 20), (256, 23), (256, 1 << 20)])
def test_running_stats_match_step_by_step_counting(steps, max_held):
    """Batched counting (every few steps, or once enough logits are held) equals counting each step;
    the loss is the data loss of the held logits (cross-entropy by default)."""
    from ticketlab.train.trainer import RunningStats
    g = torch.Generator().manual_seed(0)
    stats = RunningStats(torch.device("cpu"), steps=steps, max_held=max_held)
    correct, loss_sum, count = 0, 0.0, 0
    for i, n in enumerate([2, 5, 5, 3, 1, 5, 5, 5, 2]):  # a small first batch: the buffers grow
        logits = torch.randn(n, 4, generator=g, requires_grad=True)
        labels = torch.randint(0, 4, (n,), generator=g)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        stats.add(logits, labels)
        correct += int((logits.argmax(1) == labels).sum())
        loss_sum += loss.detach().item() * n
        count += n
        if i == 4:  # an evaluation in the middle reads and resets
            assert stats.read() == pytest.approx({"loss": loss_sum / count, "accuracy": correct / count})
            stats.reset()
            correct, loss_sum, count = 0, 0.0, 0
    assert stats._filled <= steps
    state = stats.state()  # the batches not yet counted travel in it, uncounted
    assert state[2] == count and state[5] == stats._filled
    restored = RunningStats(torch.device("cpu"))
    restored.load(state)
    assert restored.read() == pytest.approx({"loss": loss_sum / count, "accuracy": correct / count})
    assert restored.read() == stats.read()  # exactly: counted in the same groups
    flushed = stats.state()
    assert flushed[1:3] == [correct, count] and flushed[0] == pytest.approx(loss_sum, rel=1e-6)
    older = RunningStats(torch.device("cpu"))
    older.load(flushed[:3])  # a checkpoint written before held batches were saved
    assert older.read() == stats.read()


def test_resume_at_a_partial_batch_logs_the_same_training_loss(tmp_path):
    """The running statistics are sized for the configured batch, so a run resumed where the next batch
    is an epoch's short last one groups (and rounds) its steps exactly as the uninterrupted run."""
    from ticketlab.data import DataBundle, Split

    g = torch.Generator().manual_seed(0)
    n = 64 * 5 + 1  # six batches an epoch, the last of one example
    x, y = torch.randn(n + 100, 20, generator=g), torch.randint(0, 10, (n + 100,), generator=g)
    index = torch.arange(n + 100)
    data = DataBundle(Split(x[:n], y[:n], index[:n]), None, Split(x[n:], y[n:], index[n:] - n), 10, (20,),
                      y[:n].clone())
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=64, steps=Steps(0, 24),
                      eval_every=Steps(0, 24), checkpoint_every=Steps(0, 5))

    def trainer(out, callbacks=()):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        return Trainer(model, data, cfg, order_seed=1, out_dir=out, callbacks=callbacks, progress=False)

    trainer(tmp_path / "a").fit()
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b", [KillAt(7)]).fit()  # the checkpoint at step 5 is followed by the 1-example batch
    trainer(tmp_path / "b").fit()
    assert read_metrics(tmp_path / "a" / "metrics.jsonl") == read_metrics(tmp_path / "b" / "metrics.jsonl")


def test_fused_only_for_float32_and_float64_cpu_parameters_without_sparse_gradients():
    from ticketlab.train import build_optimizer
    from ticketlab.train.optim import has_sparse_gradients
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9)
    fused = lambda module, **kw: bool(build_optimizer(module.parameters(), cfg, **kw).defaults["fused"])  # noqa: E731
    assert fused(torch.nn.Linear(3, 2)) and fused(torch.nn.Linear(3, 2).double())
    assert not fused(torch.nn.Linear(3, 2).to(torch.bfloat16))  # torch 2.13's fused CPU SGD mis-updates halves
    assert not fused(torch.nn.Linear(3, 2).half())
    sparse = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 2))
    assert has_sparse_gradients(sparse) and not has_sparse_gradients(torch.nn.Embedding(10, 4))
    assert not fused(sparse, allow_fused=False)


def test_cpu_evaluation_batches_fit_the_cache_and_do_not_change_the_result():
    from ticketlab.config import ModelConfig
    from ticketlab.models import build_model
    from ticketlab.train.evaluate import CPU_TARGET_BYTES, eval_batch_size, evaluate

    resnet = build_model(ModelConfig(name="resnet20"), (3, 32, 32), 10, seed=0)
    lenet = build_model(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10, seed=0)
    # ResNet-20's largest activation is 16 x 32 x 32 floats (64 KiB) an example; LeNet's is its input
    assert eval_batch_size(resnet, torch.zeros(8, 3, 32, 32)) == CPU_TARGET_BYTES // (16 * 32 * 32 * 4) == 64
    assert eval_batch_size(lenet, torch.zeros(8, 1, 28, 28)) == 1024
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    auto, fixed = evaluate(lenet, x, y), evaluate(lenet, x, y, batch_size=7)
    assert auto["accuracy"] == fixed["accuracy"] and abs(auto["loss"] - fixed["loss"]) < 1e-6
