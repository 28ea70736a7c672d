"""Image folders too large to hold in memory: decoded batch by batch in DataLoader worker processes.

`StreamingImages` stands where a split's tensor of images stands (``split.x``): it knows its files, its
transform and the normalisation, and decodes on demand. Indexing it (``x[index]``, ``x[a:b]``) decodes
those examples in this process; the trainer reads training batches through `train_batches` instead, a
``torch.utils.data.DataLoader`` whose workers decode the batches of the coming steps ahead of time, and
evaluation reads the splits through `eval_batches`.

The batch of step s holds the examples ``epoch_permutation(n, order_seed, epoch)[offset*bs:(offset+1)*bs]``,
as in memory, so both paths see the same examples in the same order. The training transform is the
ImageNet recipe: a random-resized crop (scale 0.08-1, aspect 3/4-4/3, ten tries, then the centre) to
``image_size`` and a horizontal flip, drawn from (augment seed, step, position in the batch), so a
resumed run decodes exactly the same pixels. Evaluation resizes the shorter side to ``image_size /
0.875`` and takes the centre crop. Decoding and resizing are Pillow's (libjpeg/libpng, resampling in C).
Under torchrun each rank decodes only its shard of every batch.
"""

from __future__ import annotations

import math
import pathlib
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ticketlab import distributed, seeds
from ticketlab.data.order import epoch_permutation, iters_per_epoch
from ticketlab.errors import DataError
from ticketlab.extras import require

EVAL_CROP = 0.875  # the centre crop is this fraction of the resized shorter side (224 of 256)


class StreamingImages:
    """The images of one split as files: ``len``, ``shape``, ``device``, and decoding on indexing."""

    def __init__(self, files: Sequence[pathlib.Path], image_size: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device, train: bool = False, augment_seed: int = 0,
                 workers: int = 4):
        self.files, self.image_size, self.train = [str(f) for f in files], image_size, train
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.device, self.augment_seed, self.workers = torch.device(device), augment_seed, workers

    # -- what the rest of ticketlab asks of a split's x --------------------------------------------------
    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), 3, self.image_size, self.image_size))

    def dim(self) -> int:
        return 4

    def __getitem__(self, index) -> Tensor:
        """Decoded, normalised images (evaluation transform; training transform at step 0 for a training
        split read this way, e.g. a gradient-scoring batch)."""
        positions = range(len(self.files))[index] if isinstance(index, slice) else \
            torch.as_tensor(index).flatten().tolist()
        return self.decode(positions, step=0).to(self.device)

    def subset(self, positions: Tensor) -> "StreamingImages":
        """The images at ``positions`` as a split of their own (a training subset), nothing decoded."""
        out = StreamingImages([], self.image_size, self.mean, self.std, self.device, self.train, self.augment_seed,
                              self.workers)
        out.files = [self.files[int(p)] for p in torch.as_tensor(positions).flatten().tolist()]
        return out

    def decode(self, positions: Sequence[int], step: int, first: int = 0) -> Tensor:
        """The examples at ``positions`` as a float32 batch; ``first``: the position in the global batch
        of the first of them (the random crops are drawn per global position)."""
        out = torch.empty((len(positions), 3, self.image_size, self.image_size), dtype=torch.float32)
        for i, p in enumerate(positions):
            generator = seeds.generator(self.augment_seed, f"stream-crop:{first + i}", step) if self.train else None
            out[i] = self._one(self.files[p], generator)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return out.sub_(mean).div_(std)

    def _one(self, path: str, generator: Optional[torch.Generator]) -> Tensor:
        Image = require("PIL.Image", "the imagefolder data set")

        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot decode image {path} ({exc}); remove or replace the file") from None
        size = self.image_size
        if generator is None:
            box = centre_box(rgb.size, size)
            flip = False
        else:
            box = random_resized_box(rgb.size, generator)
            flip = bool(torch.rand((), generator=generator) < 0.5)
        rgb = rgb.resize((size, size), Image.BILINEAR, box=box)
        if flip:
            rgb = rgb.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)

    # -- batches through DataLoader workers ------------------------------------------------------------
    def train_batches(self, order_seed: int, batch_size: int, start: int, end: int) -> Iterator[Tensor]:
        """The (sharded) training batches of steps ``start..end``, decoded ahead in worker processes."""
        return self._loader(_StepBatches(self, order_seed, batch_size, start, end))

    def eval_batches(self, batch_size: int) -> Iterator[Tensor]:
        """The split in order, ``batch_size`` at a time, decoded in worker processes."""
        return self._loader(_Chunks(self, batch_size))

    def _loader(self, dataset) -> Iterator[Tensor]:
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                            prefetch_factor=2 if self.workers else None, persistent_workers=False,
                            multiprocessing_context="spawn" if self.workers else None)
        return (batch.to(self.device) for batch in loader)


class _StepBatches(torch.utils.data.Dataset):
    """Item i: the decoded batch of step ``start + i`` (this rank's shard of it under torchrun)."""

    def __init__(self, images: StreamingImages, order_seed: int, batch_size: int, start: int, end: int):
        self.images, self.order_seed, self.batch_size, self.start, self.end = images, order_seed, batch_size, start, end
        self.ipe = iters_per_epoch(len(images), batch_size)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self._epoch: Tuple[int, Optional[Tensor]] = (-1, None)

    def __len__(self) -> int:
        return max(self.end - self.start, 0)

    def __getitem__(self, i: int) -> Tensor:
        step = self.start + i
        epoch, offset = divmod(step, self.ipe)
        if self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_permutation(len(self.images), self.order_seed, epoch))
        index = self._epoch[1][offset * self.batch_size:(offset + 1) * self.batch_size]
        lo, hi = distributed.shard_bounds(len(index), self.world, self.rank)
        return self.images.decode(index[lo:hi].tolist(), step, first=lo)


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, images: StreamingImages, batch_size: int):
        self.images, self.batch_size = images, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, i: int) -> Tensor:
        start = i * self.batch_size
        return self.images.decode(range(start, min(start + self.batch_size, len(self.images))), step=0)


def centre_box(size: Tuple[int, int], out: int) -> Tuple[float, float, float, float]:
    """The box of the evaluation crop in source pixels: the centre ``EVAL_CROP`` square of the shorter side."""
    width, height = size
    side = min(width, height) * EVAL_CROP
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def random_resized_box(size: Tuple[int, int], generator: torch.Generator, scale=(0.08, 1.0),
                       ratio=(3 / 4, 4 / 3)) -> Tuple[float, float, float, float]:
    """A crop of ``scale`` of the area and ``ratio`` of aspect (log-uniform), ten tries, else the centre
    at the nearest allowed aspect: the usual random-resized-crop."""
    width, height = size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=generator)))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(torch.rand((), generator=generator)))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            return (left, top, left + w, top + h)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


def stream_stats(files: Sequence[pathlib.Path], image_size: int, sample: int = 512) -> Tuple[List[float], List[float]]:
    """Per-channel mean and std of up to ``sample`` evenly spaced training images (evaluation transform)."""
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(sample, len(files)))})
    images = StreamingImages([files[i] for i in picks], image_size, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"))
    x = images.decode(range(len(picks)), step=0).double()
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-6).tolist()


__all__ = ["StreamingImages", "centre_box", "random_resized_box", "stream_stats", "EVAL_CROP"]
