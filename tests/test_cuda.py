"""CUDA smoke test: runs where a GPU is present, skips otherwise."""

import pytest
import torch

from ticketlab.config import ModelConfig, TrainConfig
from ticketlab.data import DataBundle, Split
from ticketlab.models import build_model
from ticketlab.sparsity import MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Trainer
from killing import KillAt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def cifar_shaped(n_train: int, n_test: int, device: torch.device) -> DataBundle:
    """Random CIFAR-shaped images and labels on ``device`` (seed 0), without a validation split."""
    n = n_train + n_test
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)
    return DataBundle(Split(x[:n_train], y[:n_train], torch.arange(n_train)), None,
                      Split(x[n_train:], y[n_train:], torch.arange(n_test)), 10, (3, 32, 32), y[:n_train].clone())


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_masked_resnet20_trains_on_cuda(amp):
    device = torch.device("cuda")
    data = cifar_shaped(384, 128, device)
    model = build_model(ModelConfig(name="resnet20"), (3, 32, 32), 10, seed=0).to(device)
    enforcer = MaskEnforcer(model, prune(model, 0.1))
    cfg = TrainConfig(steps=Steps(2), batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, amp=amp)
    trainer = Trainer(model, data, cfg, order_seed=0, enforcer=enforcer, progress=False)
    assert trainer.accel.channels_last
    summary = trainer.fit()
    assert summary["final"]["test"]["loss"] == summary["final"]["test"]["loss"]  # not NaN
    params = dict(model.named_parameters())
    for name, keep in enforcer.mask.items():
        assert torch.count_nonzero(params[name][~keep]) == 0


def test_fp16_run_resumes_bit_identical_on_cuda(tmp_path):
    """The gradient scaler's state is checkpointed, so a killed fp16 run ends like an uninterrupted one."""
    device = torch.device("cuda")
    data = cifar_shaped(192, 64, device)
    cfg = TrainConfig(steps=Steps(3), batch_size=32, lr=0.1, momentum=0.9, amp="fp16", checkpoint_every=Steps(1))

    def trainer(out, callbacks=()):
        model = build_model(ModelConfig(name="resnet20"), (3, 32, 32), 10, seed=0).to(device)
        return Trainer(model, data, cfg, order_seed=0, out_dir=out, callbacks=callbacks, progress=False), model

    straight, a = trainer(tmp_path / "a")
    straight.fit()
    killed, _ = trainer(tmp_path / "b", [KillAt(8)])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed, b = trainer(tmp_path / "b")
    resumed.fit()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
