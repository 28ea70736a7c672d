"""CUDA smoke test: runs where a GPU is present, skips otherwise."""

import pytest
import torch

from ticketlab.config import ModelConfig, TrainConfig
from ticketlab.data import DataBundle, Split
from ticketlab.models import build_model
from ticketlab.sparsity import MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_masked_resnet20_trains_on_cuda(amp):
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (512,), generator=g).to(device)
    data = DataBundle(Split(x[:384], y[:384], torch.arange(384)), None, Split(x[384:], y[384:], torch.arange(128)),
                      10, (3, 32, 32), y[:384].clone())
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
