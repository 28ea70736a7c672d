"""Batched pad-and-random-crop plus horizontal flip, on tensors on the training device.

The whole batch is augmented by one gather: pad once, then read every example through its own flat
index grid (rows shifted by the crop offset, columns shifted and mirrored where flipped). The random draws are made on a CPU
`torch.Generator` and only the small index grids move to the device, so a given (seed, step) gives the
same augmentation on every device.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ticketlab.seeds import step_generator


class PadCropFlip:
    """Random ``pad``-pixel translation (zero-padded crop) and, with ``flip``, a mirror with p = 0.5.

    Per example: the image is padded by ``pad`` on every side with ``fill`` (one value or one per channel),
    an HxW window is cut at a uniformly drawn offset in [0, 2*pad]^2, and the window is mirrored left-right
    with probability 1/2 -- the distribution of torchvision's ``RandomCrop(H, padding=pad)`` followed by
    ``RandomHorizontalFlip()``. On normalised data, pass ``fill = -mean/std`` per channel (what a black raw
    pixel becomes) to match padding the raw images before ``Normalize``, as the seed repositories do.
    """

    def __init__(self, pad: int = 4, flip: bool = True, fill: Union[float, Sequence[float]] = 0.0):
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad, self.flip = int(pad), bool(flip)
        self.fill = torch.tensor(fill, dtype=torch.float64).reshape(-1)

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
        """The CPU draws for one batch: row offsets, column offsets (each in [0, 2*pad]), flip flags."""
        offsets = torch.randint(0, 2 * self.pad + 1, (2, batch), generator=generator)
        flips = torch.rand(batch, generator=generator) < 0.5 if self.flip else torch.zeros(batch, dtype=torch.bool)
        return offsets[0], offsets[1], flips

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"PadCropFlip needs a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        if len(self.fill) not in (1, c):
            raise ValueError(f"fill has {len(self.fill)} values for {c} channels")
        dy, dx, flips = self.draw(b, generator)
        p, device = self.pad, x.device
        padded = self.fill.to(device, x.dtype).view(1, -1, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = x
        cols = torch.arange(w).expand(b, w)
        cols = torch.where(flips[:, None], w - 1 - cols, cols) + dx[:, None]  # crop, then mirror
        rows = torch.arange(h)[None, :] + dy[:, None]
        rows, cols = rows.to(device), cols.to(device)  # (B, H) and (B, W): the only transfers
        flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        return padded.view(b, c, -1).gather(2, flat).view(b, c, h, w)


def default_pad(height: int, width: int) -> int:
    """size/8: 4 for 32x32 (every seed's CIFAR setting), 8 for 64x64 (DLTH's Tiny-ImageNet), 1 for 8x8."""
    return max(1, min(height, width) // 8)


def make_augment(input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 seed: int) -> Optional[Callable[[Tensor, int], Tensor]]:
    """``(x, step) -> augmented x`` for normalised images of ``input_shape`` (C, H, W), deterministic in
    (seed, step); None when the inputs are not images of at least 8x8."""
    if len(input_shape) != 3 or input_shape[1] < 8 or input_shape[2] < 8:
        return None
    channels = input_shape[0]
    mean = list(mean) * (channels if len(mean) == 1 else 1)
    std = list(std) * (channels if len(std) == 1 else 1)
    # where a black raw pixel lands after normalisation, computed in float32 exactly as the normaliser does
    fill = ((0.0 - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)).tolist()
    transform = PadCropFlip(pad=default_pad(input_shape[1], input_shape[2]), flip=True, fill=fill)

    def augment(x: Tensor, step: int) -> Tensor:
        return transform(x, step_generator(seed, step))

    return augment
