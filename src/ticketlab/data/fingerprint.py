"""What a run's data is, in a few hex digits, so that other data can never reuse its results.

The data root is not part of a run's hash (moving the files must not lose the run), so the run records a
fingerprint of the content instead: a blake2b digest of each of the decoded training images, training
labels, test images and test labels of the source, before splits, noise and normalisation (those follow
from the config). It costs one pass over the decoded bytes (well under a second for CIFAR-10), taken when
a run first asks for it (`Deferred`). A streamed image folder, whose pixels are never all in memory, is
fingerprinted by its file list: every file's path below the root, label and size.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, Iterator, Mapping, Optional

import torch

Fingerprint = Dict[str, str]
PARTS = ("train_images", "train_labels", "test_images", "test_labels")
NAMES = {"train_images": "training images", "train_labels": "training labels", "test_images": "test images",
         "test_labels": "test labels", "files": "image files"}


def tensor_digest(tensor: torch.Tensor) -> str:
    """blake2b of a tensor's dtype, shape and bytes (16 hex digits)."""
    t = tensor.detach().cpu().contiguous()
    digest = hashlib.blake2b(f"{t.dtype}{tuple(t.shape)}".encode(), digest_size=8)
    digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def raw_fingerprint(raw) -> Fingerprint:
    """The fingerprint of a source's `RawData`."""
    return dict(zip(PARTS, map(tensor_digest, (raw.train_x, raw.train_y, raw.test_x, raw.test_y))))


class Deferred(Mapping):
    """A fingerprint taken on first use: runs check theirs when they open, while export, reports and
    evaluation never look (a pass over Tiny-ImageNet's decoded pixels is 1.2 GB). ``take`` (and the tensors
    it holds) is dropped once it has run."""

    def __init__(self, take: Callable[[], Fingerprint]):
        self._take: Optional[Callable[[], Fingerprint]] = take
        self._value: Optional[Fingerprint] = None

    def _taken(self) -> Fingerprint:
        if self._take is not None:
            self._value, self._take = self._take(), None
        return self._value

    def __getitem__(self, part: str) -> str:
        return self._taken()[part]

    def __iter__(self) -> Iterator[str]:
        return iter(self._taken())

    def __len__(self) -> int:
        return len(self._taken())

    def __repr__(self) -> str:
        return repr(self._value) if self._take is None else "Deferred(not taken yet)"


def differing(recorded: Fingerprint, now: Fingerprint) -> str:
    """The parts that differ, in words ("training images and test labels")."""
    return " and ".join(NAMES[p] for p in NAMES if recorded.get(p) != now.get(p)) or "data"


__all__ = ["Fingerprint", "Deferred", "tensor_digest", "raw_fingerprint", "differing"]
