"""Common corruptions of image batches, after Hendrycks & Dietterich (ImageNet-C, CIFAR-10-C), on tensors.

Each corruption maps a batch of images in ``[0, 1]`` (B, C, H, W) and a severity 1..5 to a corrupted batch
in ``[0, 1]``, drawing any randomness from the given CPU generator, so a (corruption, severity, seed) gives
the same images on every run and device. The parameters are CIFAR-10-C's where that code has them; the
blur, haze and JPEG are tensor re-implementations in the same spirit (a disk kernel, multi-octave
low-frequency noise, 8x8 DCT quantisation with the standard luminance table), not byte-exact copies, so
the published ``.npy`` files (`load_published`) remain the reference for CIFAR-10-C / CIFAR-100-C.

`corrupt` works on a `DataBundle`'s normalised test inputs: it maps them back to pixels with the bundle's
mean and std, corrupts, clips and normalises again; labels never change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ticketlab.errors import ConfigError, DataError

Corruption = Callable[[Tensor, int, torch.Generator], Tensor]
CORRUPTIONS: Dict[str, Corruption] = {}


def corruption(fn: Corruption) -> Corruption:
    CORRUPTIONS[fn.__name__] = fn
    return fn


def _level(values: Sequence, severity: int):
    if not 1 <= severity <= 5:
        raise ConfigError(f"corruption severity must be 1..5, got {severity}")
    return values[severity - 1]


def _randn(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


def _rand(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.rand(x.shape, generator=generator).to(x.device, x.dtype)


@corruption
def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    return x + _randn(x, generator) * _level((0.04, 0.06, 0.08, 0.09, 0.10), severity)


@corruption
def shot_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    photons = _level((500, 250, 100, 75, 50), severity)
    return torch.poisson((x.clamp(0, 1) * photons).cpu(), generator=generator).to(x.device, x.dtype) / photons


@corruption
def impulse_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    amount = _level((0.01, 0.02, 0.03, 0.05, 0.07), severity)
    draw = _rand(x, generator)
    salt = _rand(x, generator) < 0.5
    hit = draw < amount
    return torch.where(hit & salt, torch.ones_like(x), torch.where(hit, torch.zeros_like(x), x))


def _disk(radius: float, device) -> Tensor:
    size = 2 * max(1, math.ceil(radius)) + 1
    r = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    d = (r[:, None] ** 2 + r[None, :] ** 2).sqrt()
    kernel = (radius + 0.5 - d).clamp(0, 1)  # an anti-aliased disk: grows smoothly with the radius
    return kernel / kernel.sum()


def _filter(x: Tensor, kernel: Tensor) -> Tensor:
    c = x.shape[1]
    k = kernel.to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    pad = kernel.shape[-1] // 2
    return F.conv2d(F.pad(x, (pad,) * 4, mode="replicate"), k, groups=c)


@corruption
def defocus_blur(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    scale = x.shape[-1] / 32
    return _filter(x, _disk(_level((0.3, 0.4, 0.5, 1.0, 1.5), severity) * 2 * scale, x.device))


@corruption
def contrast(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    c = _level((0.75, 0.5, 0.4, 0.3, 0.15), severity)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


@corruption
def brightness(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    return x + _level((0.05, 0.1, 0.15, 0.2, 0.3), severity)


def _haze(shape: Tuple[int, ...], generator: torch.Generator, decay: float) -> Tensor:
    """Multi-octave low-frequency noise (a plasma-like field) of ``shape`` (B, 1, H, W), values in [0, 1]."""
    b, _, h, w = shape
    field = torch.zeros(b, 1, h, w)
    amplitude, size = 1.0, 2
    while size <= max(h, w):
        coarse = torch.rand(b, 1, size, size, generator=generator)
        field += amplitude * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        amplitude, size = amplitude / decay, size * 2
    field -= field.amin(dim=(2, 3), keepdim=True)
    return field / field.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


@corruption
def fog(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    strength, decay = _level(((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)), severity)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    hazy = x + strength * _haze(x.shape, generator, decay).to(x.device, x.dtype)
    return hazy * peak / (peak + strength)


@corruption
def pixelate(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    h, w = x.shape[-2:]
    factor = _level((0.95, 0.9, 0.85, 0.75, 0.65), severity)
    small = F.interpolate(x, size=(max(1, int(h * factor)), max(1, int(w * factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="area")  # box filters both ways, as PIL.Image.BOX


_JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


def _dct_matrix(n: int = 8) -> Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


@corruption
def jpeg(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """8x8 block DCT of every channel, quantised with the standard luminance table at the severity's quality."""
    quality = _level((80, 65, 58, 50, 40), severity)
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = ((_JPEG_LUMA * scale + 50) // 100).clamp(min=1).to(x.device, x.dtype)
    b, c, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    padded = F.pad(x, (0, pw, 0, ph), mode="replicate") * 255 - 128
    blocks = padded.unfold(2, 8, 8).unfold(3, 8, 8)  # B, C, H/8, W/8, 8, 8
    d = _dct_matrix().to(x.device, x.dtype)
    coefficients = d @ blocks @ d.T
    restored = d.T @ (torch.round(coefficients / table) * table) @ d
    out = restored.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h + ph, w + pw)[..., :h, :w]
    return (out + 128) / 255


def corrupt_pixels(x: Tensor, name: str, severity: int, seed: int, batch_size: int = 1024) -> Tensor:
    """Corrupt images in ``[0, 1]`` with ``name`` at ``severity``, batch by batch, each batch seeded from
    (seed, corruption, severity, batch index); clipped to ``[0, 1]``."""
    from ticketlab import seeds

    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose from: {', '.join(CORRUPTIONS)}")
    if x.dim() != 4:
        raise ConfigError(f"corruptions need image data (B, C, H, W); this data set's inputs are {tuple(x.shape[1:])}")
    out = torch.empty_like(x)
    for index, start in enumerate(range(0, len(x), batch_size)):
        generator = seeds.generator(seed, f"corrupt:{name}:{severity}", index)
        out[start:start + batch_size] = CORRUPTIONS[name](x[start:start + batch_size], severity, generator).clamp(0, 1)
    return out


def corrupt(x: Tensor, mean: Sequence[float], std: Sequence[float], name: str, severity: int, seed: int) -> Tensor:
    """`corrupt_pixels` on normalised inputs: ``x * std + mean`` back to pixels, corrupted, normalised again."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (corrupt_pixels(x * s + m, name, severity, seed) - m) / s


def load_published(folder: Path, name: str, severity: int) -> Tuple[Tensor, Tensor]:
    """CIFAR-10-C / CIFAR-100-C as published: ``folder/<name>.npy`` (N x 5 images, uint8 H x W x C, the five
    severities one after another) and ``folder/labels.npy``. Returns (images in [0, 1] as B, C, H, W; labels)."""
    folder = Path(folder)
    images, labels = folder / f"{name}.npy", folder / "labels.npy"
    if not images.is_file() or not labels.is_file():
        raise DataError(f"{images} or {labels} is missing; put the published CIFAR-C files there")
    try:
        x = np.load(images, mmap_mode="r", allow_pickle=False)
        y = np.load(labels, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{images} is not a plain .npy array ({exc}); use the published files") from None
    if x.ndim != 4 or x.shape[0] != y.shape[0] or x.shape[0] % 5:
        raise DataError(f"{images}: expected 5 severities of N images (5N, H, W, C) and 5N labels, "
                        f"got {x.shape} and {y.shape}")
    n = x.shape[0] // 5
    part = slice((severity - 1) * n, severity * n)
    pixels = torch.from_numpy(np.array(x[part])).permute(0, 3, 1, 2).float() / 255
    return pixels, torch.from_numpy(np.asarray(y[part])).long()


__all__ = ["CORRUPTIONS", "corrupt", "corrupt_pixels", "load_published"]
