"""GPU paths: mixed precision, channels_last and torch.compile, used only where they help.

On CPU every feature is off and the loop runs plain float32. On CUDA: autocast in bf16 or fp16 (fp16
with a gradient scaler), channels_last for models with 2-D convolutions, and ``torch.compile`` when asked.
The uncompiled module stays the one that is checkpointed, masked and evaluated by name.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional

import torch

from ticketlab.config import TrainConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


def autocast_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype ``--train.amp`` gives on ``device``: None (float32) off CUDA; bf16 falls back to
    fp16 on GPUs without bf16."""
    dtype = _DTYPES.get(amp) if torch.device(device).type == "cuda" else None
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return torch.float16
    return dtype


def precision(amp: str, device: torch.device) -> str:
    """The precision a run trains in: "fp32", "bf16" or "fp16" (recorded in its manifest)."""
    return _NAMES[autocast_dtype(amp, device)]


class Accelerator:
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
        cuda = device.type == "cuda"
        self.dtype: Optional[torch.dtype] = autocast_dtype(cfg.amp, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype is torch.float16 else None
        has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        self.channels_last = cuda and cfg.channels_last and has_conv
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward: Callable = torch.compile(model) if (cfg.compile and cuda) else model

    def autocast(self) -> ContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def prepare_batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Make gradients true-valued before callbacks and masking see them (fp16 only)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
