"""Pruned weights, their gradients and optimizer state stay exactly zero during training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.sparsity import Mask, MaskedOptimizer, MaskEnforcer, prunable_parameters, prune

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=5e-4),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
    "sgd-fused": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4, fused=True),
    "adam-fused": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=5e-4, fused=True),
    "adamw-fused": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05, fused=True),
}
CHECK_AT = {1, 3, 10, 50, 200}


def setup(seed=0, density=0.3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    mask = prune(model, density, criterion="random", generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    data = [(torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(8)]
    return model, mask, data


def loss_on(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def shaped_state(opt, p):
    return [v for v in opt.state[p].values() if torch.is_tensor(v) and v.shape == p.shape]


def assert_pruned_zero(model, mask, opt):
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        p = params[name]
        assert bool((p[~keep] == 0).all()), name
        states = shaped_state(opt, p)
        assert states, "optimizer state was expected"
        for v in states:
            assert bool((v[~keep] == 0).all()), name


@pytest.mark.parametrize("finish", ["apply", "after_step"])
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_enforcer_keeps_zeros(opt_name, finish):
    """Both the full multiply after every step and `after_step` (which skips it once settled)."""
    model, mask, data = setup()
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    enforcer = MaskEnforcer(model, mask)
    opt = OPTIMIZERS[opt_name](model.parameters())
    for step in range(1, 201):
        opt.zero_grad(set_to_none=True)
        loss_on(model, data[step % len(data)]).backward()
        enforcer.mask_grads()
        opt.step()
        getattr(enforcer, finish)(opt)
        if step in CHECK_AT:
            assert_pruned_zero(model, mask, opt)
    params = dict(model.named_parameters())
    for name, keep in mask.items():  # kept weights did train
        assert not torch.equal(params[name][keep], start[name][keep])


def count_applies(enforcer, monkeypatch):
    calls = []
    full = enforcer.apply
    monkeypatch.setattr(enforcer, "apply", lambda optimizer=None: (calls.append(optimizer), full(optimizer)))
    return calls


def train_steps(model, enforcer, opt, data, steps):
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_on(model, data[step % len(data)]).backward()
        enforcer.mask_grads()
        opt.step()
        enforcer.after_step(opt)


def test_after_step_multiplies_once_per_mask_and_optimizer(monkeypatch):
    model, mask, data = setup(seed=3)
    enforcer = MaskEnforcer(model, mask)
    calls = count_applies(enforcer, monkeypatch)
    opt = OPTIMIZERS["sgd"](model.parameters())
    train_steps(model, enforcer, opt, data, 5)
    assert calls == [opt]  # the first step settles it; the rest skip
    other = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, enforcer, other, data, 3)
    assert calls == [opt, other]
    enforcer.load_state_dict(enforcer.state_dict())  # a loaded mask settles again
    train_steps(model, enforcer, other, data, 3)
    assert calls[-1] is other and len(calls) == 4  # load_state_dict's own apply() passes None
    assert_pruned_zero(model, mask, other)


class PerturbingSGD(torch.optim.SGD):
    """A subclass whose step moves every weight, pruned or not: the skip must not trust it."""

    def step(self, closure=None):
        out = super().step(closure)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(0.01)
        return out


def test_after_step_applies_every_step_for_optimizers_it_cannot_vouch_for(monkeypatch):
    from ticketlab.sparsity.enforce import keeps_zeros
    model, mask, data = setup(seed=4)
    enforcer = MaskEnforcer(model, mask)
    calls = count_applies(enforcer, monkeypatch)
    opt = PerturbingSGD(model.parameters(), lr=0.05, momentum=0.9)
    train_steps(model, enforcer, opt, data, 6)
    assert len(calls) == 6
    assert_pruned_zero(model, mask, opt)
    assert not keeps_zeros(torch.optim.Adam(model.parameters(), eps=0.0))  # 0 / (0 + 0) is not 0
    assert not keeps_zeros(torch.optim.RMSprop(model.parameters()))  # not on the vouched-for list
    assert keeps_zeros(torch.optim.AdamW(model.parameters(), fused=True))


def test_mask_change_without_optimizer_is_settled_by_the_next_step():
    """`set_mask` without the optimizer leaves momentum on newly pruned weights; the next `after_step`
    must clear it, or the momentum would move those weights off zero at the step after."""
    model, mask, data = setup(seed=5, density=0.6)
    enforcer = MaskEnforcer(model, mask)
    opt = OPTIMIZERS["sgd"](model.parameters())
    train_steps(model, enforcer, opt, data, 10)
    smaller = prune(model, 0.3, criterion="magnitude", mask=mask)
    enforcer.set_mask(smaller)
    params = dict(model.named_parameters())
    newly = {k: mask[k] & ~smaller[k] for k in smaller}
    assert any(bool((opt.state[params[k]]["momentum_buffer"][m] != 0).any()) for k, m in newly.items())
    train_steps(model, enforcer, opt, data, 10)
    assert_pruned_zero(model, smaller, opt)


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_masked_optimizer_keeps_zeros(opt_name):
    model, mask, data = setup(seed=1)
    opt = MaskedOptimizer(OPTIMIZERS[opt_name](model.parameters()), model, mask)
    for step in range(1, 201):
        opt.zero_grad()
        loss_on(model, data[step % len(data)]).backward()
        opt.step()
        if step in CHECK_AT:
            assert_pruned_zero(model, mask, opt.optimizer)
    assert opt.param_groups is opt.optimizer.param_groups


def test_masked_optimizer_with_closure_and_enforcer():
    model, mask, data = setup(seed=2)
    enforcer = MaskEnforcer(model, mask)
    opt = MaskedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), enforcer)
    for step in range(20):
        def closure():
            opt.zero_grad()
            loss = loss_on(model, data[step % len(data)])
            loss.backward()
            return loss
        assert torch.is_tensor(opt.step(closure))
    assert_pruned_zero(model, mask, opt.optimizer)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_negative_control_without_enforcement(opt_name):
    model, mask, data = setup()
    mask.apply_(model)
    opt = OPTIMIZERS[opt_name](model.parameters())
    for step in range(20):
        opt.zero_grad()
        loss_on(model, data[step % len(data)]).backward()
        opt.step()
    params = dict(model.named_parameters())
    assert all(bool((params[k][~m] != 0).any()) for k, m in mask.items())
    with pytest.raises(AssertionError):
        assert_pruned_zero(model, mask, opt)


def test_mask_grads_touches_masked_grads_only():
    model, mask, data = setup()
    enforcer = MaskEnforcer(model, mask)
    loss_on(model, data[0]).backward()
    dense = {k: p.grad.clone() for k, p in model.named_parameters()}
    enforcer.mask_grads()
    for k, p in model.named_parameters():
        if k in mask:
            assert torch.equal(p.grad, dense[k] * mask[k])
        else:
            assert torch.equal(p.grad, dense[k])


def test_set_mask_regrows_from_zero():
    model, mask_a, data = setup()
    enforcer = MaskEnforcer(model, mask_a)
    opt = OPTIMIZERS["sgd"](model.parameters())
    train_steps(model, enforcer, opt, data, 10)
    name = "2.weight"
    p = dict(model.named_parameters())[name]
    a = mask_a[name]
    regrow = ~a & (torch.rand(a.shape, generator=torch.Generator().manual_seed(9)) < 0.5)
    drop = a & (torch.rand(a.shape, generator=torch.Generator().manual_seed(10)) < 0.5)
    b = (a | regrow) & ~drop
    mask_b = Mask({**mask_a.state_dict(), name: b})
    with torch.no_grad():  # dirty the regrown entries as a leaky update would
        p[regrow] = 1.0
        opt.state[p]["momentum_buffer"][regrow] = 1.0
    assert bool((opt.state[p]["momentum_buffer"][drop] != 0).any())
    before = p.detach().clone()
    enforcer.set_mask(mask_b, opt)
    assert enforcer.mask == mask_b
    momentum = opt.state[p]["momentum_buffer"]
    assert bool((p[regrow] == 0).all()) and bool((momentum[regrow] == 0).all())
    assert bool((p[drop] == 0).all()) and bool((momentum[drop] == 0).all())
    assert torch.equal(p[a & b], before[a & b])
    train_steps(model, enforcer, opt, data, 5)
    assert bool((p[regrow] != 0).any())  # regrown weights train again
    assert bool((p[~b] == 0).all())
    assert_pruned_zero(model, mask_b, opt)


def test_state_cache_follows_optimizer_load():
    model, mask, data = setup()
    enforcer = MaskEnforcer(model, mask)
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, enforcer, opt, data, 3)
    state = opt.state_dict()
    for s in state["state"].values():
        s["exp_avg"] = torch.ones_like(s["exp_avg"])
    opt.load_state_dict(state)  # new state tensors: the cached lists must be rebuilt
    enforcer.apply(opt)
    assert_pruned_zero(model, mask, opt)


def test_state_dict_round_trip_keeps_loaded_weights():
    model, mask_a, _ = setup()
    enforcer = MaskEnforcer(model, mask_a)
    saved = {k: v.clone() for k, v in enforcer.state_dict().items()}
    other, mask_b, _ = setup(seed=5)
    dense = {k: v.clone() for k, v in other.state_dict().items()}
    enforcer.set_mask(mask_b)
    model.load_state_dict(dense)  # resume: weights first, then the enforcer's mask
    enforcer.load_state_dict(saved)
    assert enforcer.mask == mask_a
    params = dict(model.named_parameters())
    for k, keep in mask_a.items():
        assert torch.equal(params[k][keep], dense[k][keep])  # not treated as regrowth
        assert bool((params[k][~keep] == 0).all())


def test_partial_mask_and_wrapped_model():
    model, mask, _ = setup()
    partial = Mask({"0.weight": mask["0.weight"]})

    class Wrapper(nn.Module):  # names seen through a DDP-style ``module.`` prefix
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    before = {k: v.clone() for k, v in model.state_dict().items()}
    MaskEnforcer(Wrapper(model), partial)
    assert bool((model[0].weight[~partial["0.weight"]] == 0).all())
    assert torch.equal(model[2].weight, before["2.weight"])
    assert set(prunable_parameters(model)) == set(mask)
