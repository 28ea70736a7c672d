"""Keep pruned weights at exactly zero during training.

Per step, in this order: ``loss.backward()`` -> (callbacks that want dense gradients) ->
``enforcer.mask_grads()`` -> ``optimizer.step()`` -> ``enforcer.after_step(optimizer)``. Masking the
gradients stops weight decay and momentum from feeding pruned entries; ``apply`` zeroes the weights
and every optimizer-state tensor shaped like its parameter (momentum, Adam moments, ...), so nothing
can leak back. Each is one ``torch._foreach_mul_`` over all masked tensors.

``after_step`` skips that second multiply when it cannot change anything: SGD, Adam and AdamW map a
weight that is 0, with gradient 0 and state 0, to 0 again (every term of their update is a product with
one of them; Adam divides by ``sqrt(v) + eps`` with ``eps > 0``). So once one full ``apply`` has run
with the current mask and optimizer, the invariant carries itself from step to step. A new mask, a
loaded mask or another optimizer makes the next ``after_step`` run the full ``apply`` again. Code that
writes weights between steps (outside ``set_mask``) or loads optimizer state into the same optimizer must
call ``apply(optimizer)`` itself (the trainer's resume reinstalls the mask, which does it).

An all-ones mask (a dense start that a method may prune later) costs nothing per step: every call
returns at once until `set_mask` installs a sparse mask.

From a bare PyTorch loop, `MaskedOptimizer` does the same around any optimizer.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
from torch import nn

from ticketlab.errors import CheckpointError
from ticketlab.sparsity.mask import Mask, resolve_parameters


class MaskEnforcer:
    """Owns the current mask of a model and keeps pruned weights, their gradients and optimizer
    state at exactly 0. Parameters without a mask entry are never touched."""

    def __init__(self, model: nn.Module, mask: Mask):
        self.model = model
        self._install(mask)
        self.apply()

    @property
    def mask(self) -> Mask:
        return self._mask

    def _install(self, mask: Mask) -> None:
        params = resolve_parameters(self.model, mask)
        for name, p in params.items():
            if mask[name].shape != p.shape:
                raise CheckpointError(f"mask entry {name!r} has shape {tuple(mask[name].shape)} but the parameter "
                                      f"has {tuple(p.shape)}; use a mask made for this model")
        self._mask = Mask({k: mask[k].to(p.device) for k, p in params.items()})
        self._params: List[nn.Parameter] = list(params.values())
        self._ids = frozenset(id(p) for p in self._params)
        self._bool: List[torch.Tensor] = [self._mask[k] for k in params]
        # all-ones (a dense start): nothing to zero, so no float masks and no work per step
        self._dense = all(bool(m.all()) for m in self._bool)
        self._float: List[torch.Tensor] = [] if self._dense else [
            m.to(p.dtype) for m, p in zip(self._bool, self._params)]
        self._cache = None  # (optimizer, state signature, held values, state tensors, their masks)
        self._settled = None  # the optimizer after whose step one full `apply` has run with this mask

    @property
    def dense(self) -> bool:
        """Whether the current mask keeps every weight."""
        return self._dense

    def set_mask(self, mask: Mask, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Switch to ``mask`` mid-training: newly pruned weights become 0; regrown weights (pruned
        before, kept now) start at exactly 0 with zeroed optimizer state. (Multiplying by the old mask,
        then by the new one, zeroes exactly the positions outside either, as one ``_foreach_mul_`` each.)"""
        if not self._dense:  # a dense mask keeps everything: nothing to zero for it
            _multiply(self._params, self._float)
            if optimizer is not None:
                _multiply(*self._state_lists(optimizer))
        self._install(mask)
        self.apply(optimizer)

    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights (call after backward, before the optimizer step)."""
        if self._dense:
            return
        grads = [p.grad for p in self._params]
        if all(g is not None for g in grads):
            _multiply(grads, self._float)
        else:
            pairs = [(g, m) for g, m in zip(grads, self._float) if g is not None]
            _multiply([g for g, _ in pairs], [m for _, m in pairs])

    def apply(self, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Zero pruned weights and, given ``optimizer``, their optimizer state (after the step)."""
        if self._dense:
            return
        _multiply(self._params, self._float)
        if optimizer is not None:
            _multiply(*self._state_lists(optimizer))

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Restore "pruned weights and their state are 0" after ``optimizer.step()``, doing only the
        work that can matter: the full `apply` once per mask and optimizer, then nothing for optimizers
        whose update keeps zeros at zero (see the module docstring)."""
        if self._settled is optimizer or self._dense:
            return
        self.apply(optimizer)
        self._settled = optimizer if keeps_zeros(optimizer) else None

    def _state_lists(self, optimizer):
        """Optimizer-state tensors shaped like their masked parameter, with masks; rebuilt only when
        the state's tensors change (first step, load_state_dict, ...)."""
        # walk the state dict instead of looking each parameter up: a lookup hashes the tensor in Python
        ids = self._ids
        held = [v for p, st in optimizer.state.items() if id(p) in ids for v in st.values()]
        signature = [id(v) for v in held]  # ``held`` stays cached, so these ids cannot be reused
        if self._cache is None or self._cache[0] is not optimizer or self._cache[1] != signature:
            tensors, masks = [], []
            for p, keep, keep_f in zip(self._params, self._bool, self._float):
                for v in _shaped_state(optimizer, p):
                    tensors.append(v)
                    same = v.dtype == keep_f.dtype and v.device == keep_f.device
                    masks.append(keep_f if same else keep.to(device=v.device, dtype=v.dtype))
            self._cache = (optimizer, signature, held, tensors, masks)
        return self._cache[3], self._cache[4]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The current mask (name -> bool tensor), to checkpoint beside model and optimizer."""
        return self._mask.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Restore a checkpointed mask (after loading the model): installs it and zeroes pruned weights."""
        self._install(Mask.from_state_dict(state))
        self.apply()


def _multiply(tensors: List[torch.Tensor], masks: List[torch.Tensor]) -> None:
    """``tensors[i] *= masks[i]`` in one ``_foreach_mul_``, not recorded by autograd. Toggles the grad
    mode directly: ``with torch.no_grad()`` costs more than the multiply on small models, every step."""
    if not tensors:
        return
    enabled = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        torch._foreach_mul_(tensors, masks)
    finally:
        torch._C._set_grad_enabled(enabled)


ZERO_KEEPING_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def keeps_zeros(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` leaves a weight at 0 when its gradient and state are 0. Only the exact
    torch classes qualify (a subclass may change the update); Adam-style updates need ``eps > 0``."""
    return type(optimizer) in ZERO_KEEPING_OPTIMIZERS and all(g.get("eps", 1.0) > 0 for g in optimizer.param_groups)


def _shaped_state(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> List[torch.Tensor]:
    """State tensors of ``p`` with ``p``'s shape (per-weight buffers, not step counters)."""
    return [v for v in optimizer.state.get(p, {}).values()
            if torch.is_tensor(v) and v.shape == p.shape and (v.is_floating_point() or v.is_complex())]


class MaskedOptimizer(torch.optim.Optimizer):
    """Wrap any torch optimizer so a user's own loop enforces the mask: gradients are masked before
    each step, weights and optimizer state after it.

    It is a `torch.optim.Optimizer` that shares the wrapped one's ``param_groups``, ``state`` and
    ``defaults`` (the same objects), so LR schedulers (``StepLR(opt, ...)``), ``GradScaler.step(opt)``,
    step hooks and frameworks that insist on an ``Optimizer`` (Lightning's ``configure_optimizers``)
    take it as it is. The wrapped optimizer stays reachable as ``.optimizer``."""

    def __init__(self, optimizer: torch.optim.Optimizer, enforcer_or_model: Union[MaskEnforcer, nn.Module],
                 mask: Optional[Mask] = None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"MaskedOptimizer wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        super().__init__([{"params": []}], dict(optimizer.defaults))  # the hooks; groups and state: the wrapped
        self.optimizer = optimizer
        if isinstance(enforcer_or_model, MaskEnforcer):
            if mask is not None:
                enforcer_or_model.set_mask(mask, optimizer)
            self.enforcer = enforcer_or_model
        else:
            if mask is None:
                raise TypeError("MaskedOptimizer(optimizer, model, mask): pass the mask with a model")
            self.enforcer = MaskEnforcer(enforcer_or_model, mask)
        self.enforcer.apply(optimizer)

    # the wrapped optimizer's own objects, even after its load_state_dict replaces them
    param_groups = property(lambda self: self._shared("param_groups"), lambda self, v: self._share("param_groups", v))
    state = property(lambda self: self._shared("state"), lambda self, v: self._share("state", v))
    defaults = property(lambda self: self._shared("defaults"), lambda self, v: self._share("defaults", v))

    def _shared(self, name: str):
        inner = self.__dict__.get("optimizer")
        return getattr(inner, name) if inner is not None else self.__dict__["_own_" + name]

    def _share(self, name: str, value) -> None:
        inner = self.__dict__.get("optimizer")
        if inner is not None:
            setattr(inner, name, value)
        else:  # during Optimizer.__init__, before the wrapped optimizer is known
            self.__dict__["_own_" + name] = value

    def step(self, closure=None):
        if closure is None:
            self.enforcer.mask_grads()
            loss = self.optimizer.step()
        else:
            def masked_closure():
                with torch.enable_grad():
                    out = closure()
                self.enforcer.mask_grads()
                return out
            loss = self.optimizer.step(masked_closure)
        self.enforcer.apply(self.optimizer)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: Dict) -> None:
        if hasattr(self, "optimizer"):  # (Optimizer.__init__ calls it before the wrapped one is set)
            self.optimizer.add_param_group(param_group)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state) -> None:
        self.optimizer.load_state_dict(state)
        self.enforcer.apply(self.optimizer)

    def __getstate__(self):  # copies and pickles keep the wrapped optimizer and the enforcer
        return dict(self.__dict__)

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"MaskedOptimizer({self.optimizer!r}, {self.enforcer.mask!r})"
