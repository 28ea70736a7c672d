"""From a source to the tensors a run trains on: splits, subset, label noise, normalisation, batch order.

`load_data` does every step once, in this order: read the source -> carve the validation split from the
training set (seeded by ``split_seed``) -> keep a ``subset`` fraction of the rest (another stream of
``split_seed``) -> label noise on the training split only (``noise_seed``) -> normalise to float32 on the
target device. `DataBundle.state` holds the indices and noisy labels, so a run can be re-created exactly
with ``load_data(..., state=saved)`` even if the random streams change. ``DataBundle.augment`` (image data
with ``cfg.augment``) maps a batch and its step to the augmented batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.utils.data
from torch import Tensor

from ticketlab import distributed
from ticketlab.config import DataConfig
from ticketlab.data.augment import make_augment
from ticketlab.data.fingerprint import Deferred, raw_fingerprint
from ticketlab.data.noise import apply_label_noise
from ticketlab.data.sources import DATASETS, RawData, resolve_root
from ticketlab.errors import ConfigError, DataError
from ticketlab.seeds import stream_generator

Device = Union[str, torch.device]
Pairish = Union[Tuple[Tensor, Tensor], "torch.utils.data.TensorDataset"]  # (x, y) or a TensorDataset of the two


@dataclass
class Split:
    x: Tensor  # float32, normalised, on the target device
    y: Tensor  # int64 labels (noisy for the training split when noise is on)
    index: Tensor  # int64 index of each example in the source's train (or test) set

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    train: Split
    val: Optional[Split]  # None when val_size == 0
    test: Split
    num_classes: int
    input_shape: Tuple[int, ...]  # per example, e.g. (1, 28, 28)
    clean_train_y: Tensor  # training labels before noise
    # (x, step) -> augmented x, deterministic in (augment_seed, step); None: no augmentation
    augment: Optional[Callable[[Tensor, int], Tensor]] = None
    # per-channel (mean, std) that map pixels in [0, 1] to the inputs (corrupted-data evaluation); None: unknown
    normalisation: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
    name: str = ""  # the data set's name in configs, manifests and reports ("": a registered source's, or "user data")
    # digests of the source's content, recorded with a run (`ticketlab.data.fingerprint`, perhaps `Deferred`
    # until first read); None: unknown
    fingerprint: Optional[Mapping[str, str]] = None

    @classmethod
    def from_tensors(cls, train: Pairish, test: Pairish, *, val: Union[int, Pairish, None] = None, name: str = "user data",
                     num_classes: Optional[int] = None, seed: int = 0, device: Optional[Device] = None
                     ) -> "DataBundle":
        """A bundle from one's own tensors: ``train`` and ``test`` as ``(x, y)`` pairs or ``TensorDataset``s
        (inputs ``(N, ...)``, integer labels ``(N,)``). ``val``: a number of training examples carved off
        for validation (a permutation seeded by ``seed``; sorted, as `load_data` carves), or its own
        ``(x, y)`` / ``TensorDataset``; None: no validation split. Inputs are used as given (integer
        token ids stay integers, for an embedding); ``num_classes`` defaults to the largest label + 1."""
        train_x, train_y = _pair("train", train)
        test_x, test_y = _pair("test", test)
        train_index = torch.arange(len(train_y))
        val_split = None
        if isinstance(val, int) and not isinstance(val, bool):
            if not 0 <= val < len(train_y):
                raise DataError(f"val={val} must lie in [0, {len(train_y)}): the training set has {len(train_y)} "
                                "examples; pass fewer, or validation tensors")
            perm = torch.randperm(len(train_y), generator=stream_generator(seed, 0))
            val_index, train_index = perm[:val].sort().values, perm[val:].sort().values
            if val:
                val_split = Split(train_x[val_index], train_y[val_index], val_index)
        elif val is not None:
            val_x, val_y = _pair("val", val)
            val_split = Split(val_x, val_y, torch.arange(len(val_y)))
        splits = [("train", train_x), ("test", test_x)] + ([("val", val_split.x)] if val_split is not None else [])
        if any(tuple(x.shape[1:]) != tuple(train_x.shape[1:]) for _, x in splits):
            raise DataError("train, validation and test inputs differ in shape per example: "
                            + ", ".join(f"{n} {tuple(x.shape[1:])}" for n, x in splits))
        labels = [train_y, test_y] + ([val_split.y] if val_split is not None else [])
        largest = max(int(y.max()) for y in labels if len(y)) if any(len(y) for y in labels) else 0
        num_classes = largest + 1 if num_classes is None else num_classes
        if largest >= num_classes:
            raise DataError(f"labels reach {largest} but num_classes={num_classes}; raise num_classes or fix the labels")
        device = torch.device(device) if device is not None else train_x.device
        train_split = Split(train_x[train_index], train_y[train_index], train_index)
        bundle = cls(train=train_split, val=val_split, test=Split(test_x, test_y, torch.arange(len(test_y))),
                     num_classes=num_classes, input_shape=tuple(train_x.shape[1:]),
                     clean_train_y=train_y[train_index].clone(), name=name)
        return bundle.to(device)

    def to(self, device: Device) -> "DataBundle":
        """The same bundle with its in-memory splits on ``device``."""
        def move(split: Optional[Split]) -> Optional[Split]:
            return None if split is None else Split(split.x.to(device), split.y.to(device), split.index.to(device))

        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test),
                       clean_train_y=self.clean_train_y.to(device))

    @property
    def shapes(self) -> Dict[str, object]:
        """Sizes and shapes, as a run's manifest records them."""
        sizes = {split: len(getattr(self, split)) if getattr(self, split) is not None else 0
                 for split in ("train", "val", "test")}
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes, **sizes}

    @property
    def noisy(self) -> Tensor:
        """Which training labels the noise changed."""
        return self.train.y != self.clean_train_y

    def subset(self, indices: Tensor) -> "DataBundle":
        """The same bundle with the training split cut to ``indices`` (positions in the training split, in
        the order given); validation, test and augmentation unchanged. Example indices (``Split.index``)
        keep pointing into the source, so per-example records stay comparable across subsets."""
        indices = torch.as_tensor(indices, device=self.train.x.device)
        if indices.dtype == torch.bool and indices.shape == (len(self.train),):
            indices = indices.nonzero().squeeze(1)  # a boolean mask over the training split
        if indices.is_floating_point() or indices.dtype == torch.bool or indices.dim() != 1 or (
                len(indices) and (indices.min() < 0 or indices.max() >= len(self.train))):
            raise ValueError(f"subset indices must be integer positions in the training split [0, {len(self.train)}) "
                             f"or a boolean mask of its {len(self.train)} examples")
        indices = indices.long()
        x = self.train.x.subset(indices) if hasattr(self.train.x, "subset") else self.train.x[indices]  # a stream: files
        train = Split(x, self.train.y[indices], self.train.index[indices])
        return replace(self, train=train, clean_train_y=self.clean_train_y[indices])

    def state(self) -> Dict[str, Tensor]:
        """Small CPU tensors that pin the splits and noisy labels (saved with a run)."""
        val_index = self.val.index if self.val is not None else torch.empty(0, dtype=torch.int64)
        return {"train_index": self.train.index.cpu(), "val_index": val_index.cpu(),
                "train_labels": self.train.y.cpu()}


def load_data(cfg: DataConfig, *, noise_seed: int, device: Device = "cpu",
              state: Optional[Dict[str, Tensor]] = None, augment_seed: int = 0) -> DataBundle:
    """Load ``cfg.dataset`` and build its train / validation / test splits on ``device``.

    With ``state`` (from `DataBundle.state`), the saved indices and training labels are used instead of
    being drawn again. With ``cfg.augment`` and image inputs (C, H, W >= 8), ``augment`` is set to a
    batched pad-crop-flip seeded by (``augment_seed``, step); see `ticketlab.data.augment`.
    """
    if cfg.stream != "off":
        streamed = load_streamed(cfg, noise_seed=noise_seed, device=device, state=state, augment_seed=augment_seed)
        if streamed is not None:
            return streamed
    source = DATASETS.get(cfg.dataset)
    raw = distributed.rank0_first(lambda: source(resolve_root(cfg.dataset, cfg.root), cfg.download),
                                  f"load the {cfg.dataset} data")
    _check_raw(cfg.dataset, raw)
    if cfg.noise == "asymmetric" and raw.class_map is None:
        raise ConfigError(f"data.noise=asymmetric is not defined for data set {cfg.dataset!r} (it has no "
                          "class map); it is available for cifar10 and cifar100; use random, symmetric or "
                          "pairflip")
    if state is None:
        train_index, val_index = _split_indices(cfg, len(raw.train_y))
        clean = raw.train_y[train_index]
        labels = _noisy_labels(cfg, raw, clean, noise_seed)
    else:
        train_index, val_index, labels = _from_state(cfg.dataset, state, len(raw.train_y))
        clean = raw.train_y[train_index]
    norm = _normaliser(raw, device)
    val = None
    if len(val_index):
        val = Split(norm(raw.train_x[val_index]), raw.train_y[val_index].to(device), val_index.to(device))
    test_index = torch.arange(len(raw.test_y))
    return DataBundle(
        train=Split(norm(raw.train_x[train_index]), labels.to(device), train_index.to(device)),
        val=val,
        test=Split(norm(raw.test_x), raw.test_y.to(device), test_index.to(device)),
        num_classes=raw.num_classes,
        input_shape=tuple(raw.train_x.shape[1:]),
        clean_train_y=clean.to(device),
        augment=make_augment(raw.train_x.shape[1:], raw.mean, raw.std, augment_seed) if cfg.augment else None,
        normalisation=(tuple(raw.mean), tuple(raw.std)), name=cfg.dataset,
        fingerprint=Deferred(lambda: raw_fingerprint(raw)),
    )


def load_streamed(cfg: DataConfig, *, noise_seed: int, device: Device, state: Optional[Dict[str, Tensor]],
                  augment_seed: int) -> Optional[DataBundle]:
    """An image folder whose splits decode on demand (`ticketlab.data.stream`); None when
    ``--data.stream auto`` finds that the images fit in ``--data.memory_gb``. The splits, noise and batch
    order are drawn exactly as for the same folder in memory."""
    from ticketlab.data.imagefolder import files_fingerprint, streamed_images
    from ticketlab.data.stream import StreamingImages, stream_stats

    found = streamed_images(resolve_root(cfg.dataset, cfg.root), cfg.memory_gb if cfg.stream == "auto" else None)
    if found is None:
        return None
    classes, train, test = found
    if cfg.noise == "asymmetric":
        raise ConfigError("data.noise=asymmetric is not defined for imagefolder (it has no class map); use random, "
                          "symmetric or pairflip")
    all_y = torch.tensor([label for _, label in train], dtype=torch.int64)
    if state is None:
        train_index, val_index = _split_indices(cfg, len(train))
        clean = all_y[train_index]
        labels = apply_label_noise(clean, cfg.noise, cfg.noise_rate, len(classes), noise_seed, None)
    else:
        train_index, val_index, labels = _from_state(cfg.dataset, state, len(train))
        clean = all_y[train_index]
    size = cfg.image_size or 224
    files = [path for path, _ in train]
    mean, std = stream_stats([files[i] for i in train_index.tolist()], size)

    def images(paths, training: bool = False) -> StreamingImages:
        return StreamingImages(paths, size, mean, std, torch.device(device), train=training and cfg.augment,
                               augment_seed=augment_seed, workers=cfg.workers)

    val = None
    if len(val_index):
        val = Split(images([files[i] for i in val_index.tolist()]), all_y[val_index].to(device), val_index.to(device))
    test_y = torch.tensor([label for _, label in test], dtype=torch.int64)
    return DataBundle(
        train=Split(images([files[i] for i in train_index.tolist()], training=True), labels.to(device),
                    train_index.to(device)),
        val=val, test=Split(images([path for path, _ in test]), test_y.to(device), torch.arange(len(test)).to(device)),
        num_classes=len(classes), input_shape=(3, size, size), clean_train_y=clean.to(device), augment=None,
        normalisation=(tuple(mean), tuple(std)), name=cfg.dataset,
        fingerprint={"files": files_fingerprint(resolve_root(cfg.dataset, cfg.root), classes, train, test)})


def _pair(split: str, given) -> Tuple[Tensor, Tensor]:
    """``(x, y)`` of a ``(x, y)`` pair or a ``TensorDataset``, checked; labels as int64."""
    if isinstance(given, torch.utils.data.TensorDataset):
        given = given.tensors
    if not (isinstance(given, (tuple, list)) and len(given) == 2 and all(torch.is_tensor(t) for t in given)):
        raise DataError(f"{split} must be an (x, y) pair of tensors or a TensorDataset of two tensors; got "
                        f"{type(given).__name__}")
    x, y = given
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise DataError(f"{split}: inputs {tuple(x.shape)} and labels {tuple(y.shape)} do not match; give x of shape "
                        "(N, ...) and y of shape (N,)")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or (len(y) and int(y.min()) < 0):
        raise DataError(f"{split}: labels must be non-negative integers (class indices), got {y.dtype}")
    return x, y.long()


def _noisy_labels(cfg: DataConfig, raw: RawData, clean: Tensor, seed: int) -> Tensor:
    """Training labels after ``cfg.noise``; asymmetric noise follows ``raw.class_map_draw``."""
    if cfg.noise != "asymmetric" or raw.class_map_draw == "exact" or cfg.noise_rate == 0.0:
        return apply_label_noise(clean, cfg.noise, cfg.noise_rate, raw.num_classes, seed, raw.class_map)
    # "bernoulli": every example of a mapped class moves to its target with probability r, independently
    target = torch.arange(raw.num_classes)
    for source, dest in raw.class_map.items():
        target[source] = dest
    flip = torch.rand(len(clean), generator=stream_generator(seed, 5)) < cfg.noise_rate
    return torch.where(flip, target[clean], clean)


def _split_indices(cfg: DataConfig, n: int) -> Tuple[Tensor, Tensor]:
    """(train, val) indices into the source's training set, each sorted."""
    if cfg.val_size >= n:
        raise ConfigError(f"data.val_size={cfg.val_size} must be smaller than the {n} training examples "
                          f"of {cfg.dataset}; lower --data.val_size")
    perm = torch.randperm(n, generator=stream_generator(cfg.split_seed, 0))
    val_index, rest = perm[: cfg.val_size], perm[cfg.val_size:]
    if cfg.subset < 1.0:
        keep = max(1, round(cfg.subset * len(rest)))
        rest = rest[torch.randperm(len(rest), generator=stream_generator(cfg.split_seed, 1))[:keep]]
    return rest.sort().values, val_index.sort().values


def _from_state(name: str, state: Dict[str, Tensor], n: int) -> Tuple[Tensor, Tensor, Tensor]:
    try:
        train_index, val_index, labels = (state[k].cpu().long() for k in ("train_index", "val_index",
                                                                           "train_labels"))
    except KeyError as exc:
        raise DataError(f"saved data state lacks {exc}; re-create the run without it") from None
    every = torch.cat([train_index, val_index])
    if len(labels) != len(train_index) or (len(every) and (every.min() < 0 or every.max() >= n)):
        raise DataError(f"saved data state does not fit data set {name!r} ({n} training examples); "
                        "check --data.dataset and --data.root")
    return train_index, val_index, labels


def _check_raw(name: str, raw: RawData) -> None:
    """Catch a malformed source (e.g. a user's) early, with a message naming it."""
    for split in ("train", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
            raise DataError(f"data set {name!r}: {split} inputs {tuple(x.shape)} and labels {tuple(y.shape)} "
                            "do not match; a source must return x of shape (N, C, ...) and y of shape (N,)")
        if y.dtype != torch.int64 or (len(y) and (y.min() < 0 or y.max() >= raw.num_classes)):
            raise DataError(f"data set {name!r}: {split} labels must be int64 in [0, {raw.num_classes})")
    if tuple(raw.train_x.shape[1:]) != tuple(raw.test_x.shape[1:]):
        raise DataError(f"data set {name!r}: train and test examples differ in shape")
    if raw.class_map is not None and (raw.class_map_draw not in ("exact", "bernoulli") or any(
            not (0 <= k < raw.num_classes and 0 <= v < raw.num_classes) for k, v in raw.class_map.items())):
        raise DataError(f"data set {name!r}: class_map must map classes in [0, {raw.num_classes}) and "
                        "class_map_draw must be 'exact' or 'bernoulli'")
    if len(raw.mean) not in (1, raw.train_x.shape[1]) or len(raw.std) != len(raw.mean):
        raise DataError(f"data set {name!r}: mean/std need 1 or {raw.train_x.shape[1]} channel values")


def _normaliser(raw: RawData, device: Device):
    """x -> ((x / scale) - mean) / std as float32 on ``device`` (moved before converting: uint8 is small)."""
    extra = (1,) * (raw.train_x.dim() - 2)
    mean = torch.tensor(raw.mean, dtype=torch.float32, device=device).view(-1, *extra)
    std = torch.tensor(raw.std, dtype=torch.float32, device=device).view(-1, *extra)

    def norm(x: Tensor) -> Tensor:
        x = x.to(device, torch.float32, copy=True)  # one new tensor (never the source), then in place
        return x.div_(raw.scale).sub_(mean).div_(std).contiguous()

    return norm
