"""Data: sources (registry), file readers, label noise, splits, batch order and batched augmentation.

Every data set lives in memory as tensors on the training device, normalised once; batches are slices
of `epoch_permutation`. See `load_data` for the order in which splits, subsets and noise are applied.
"""

from ticketlab.data import cifar, imagefolder, svhn  # noqa: F401  (importing registers the sources)
from ticketlab.data.augment import PadCropFlip, make_augment
from ticketlab.seeds import step_generator  # noqa: F401  (augmentation draws: one generator per step)
from ticketlab.data.bundle import DataBundle, Split, load_data
from ticketlab.data.order import epoch_permutation, examples_seen, iters_per_epoch
from ticketlab.data.idx import read_idx
from ticketlab.data.noise import NOISE_KINDS, apply_label_noise, random_relabel_indices
from ticketlab.data.sources import DATASETS, RawData, register_dataset, resolve_root

__all__ = ["DATASETS", "register_dataset", "RawData", "Split", "DataBundle", "load_data", "resolve_root",
           "epoch_permutation", "iters_per_epoch", "examples_seen", "apply_label_noise", "read_idx", "NOISE_KINDS",
           "random_relabel_indices", "PadCropFlip", "make_augment", "step_generator"]
