"""Any class-per-folder image tree (e.g. Tiny-ImageNet), decoded once and cached as a tensor file.

Layout under ``--data.root``::

    train/<class>/**/*.png|jpg|...      classes = the sub-folders of train/, sorted by name
    val/<class>/**/*.png|jpg|...        the test split (``test/<class>/`` when there is no val/)

Tiny-ImageNet's own layout also works: ``train/<wnid>/images/*.JPEG`` (images anywhere below the class
folder) and ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (file name, tab, class).

Images are decoded with Pillow and converted to RGB; an image whose size differs from the most common size
of the training images (read from every header first) is resized to it (bilinear). The decoded uint8 tensors, the class names and the per-channel mean/std
of the training images go to ``.ticketlab-cache-<key>.pt`` in the root, where ``key`` hashes the file list
and sizes, so later loads read one file and open no images. Older caches of the same root are removed,
and writes take ``.ticketlab-cache.lock`` there, as `ticketlab.data.cache` does for its own.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ticketlab.data.cache import clean_cache, read_or_make
from ticketlab.data.sources import RawData, register_dataset
from ticketlab.errors import DataError
from ticketlab.extras import require

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
CACHE_PREFIX, CACHE_VERSION = ".ticketlab-cache-", 1
ENTRIES, LOCK = f"{CACHE_PREFIX}*.pt", ".ticketlab-cache.lock"  # a root's caches; held while writing one
LEFTOVERS = f".{ENTRIES}.*.tmp"  # what a killed write of one leaves
SIZE_SAMPLE = 256  # image headers read to estimate the decoded size of a folder that may be streamed
LAYOUT = "expected train/<class>/ and val/<class>/ (or test/<class>/) folders of images"

Listing = List[Tuple[pathlib.Path, int]]  # (file, class index)


def _images_below(folder: pathlib.Path) -> List[pathlib.Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def list_images(root: pathlib.Path) -> Tuple[List[str], Listing, Listing]:
    """Class names and the (file, label) lists of the train and test splits, in a fixed order."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"imagefolder: no train/ folder in {root}; {LAYOUT}; check --data.root")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {train_dir} has no class folders; {LAYOUT}")
    index = {name: i for i, name in enumerate(classes)}
    train = [(p, i) for i, name in enumerate(classes) for p in _images_below(train_dir / name)]
    empty = [name for i, name in enumerate(classes) if not any(label == i for _, label in train)]
    if empty:  # a class without examples would still be an output of the model and count in the class total
        raise DataError(f"imagefolder: class folder(s) {', '.join(empty)} in {train_dir} hold no images "
                        f"({', '.join(sorted(EXTENSIONS))}); add images or remove the folder(s)")
    eval_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if eval_dir is None:
        raise DataError(f"imagefolder: no val/ or test/ folder in {root}; {LAYOUT}")
    annotations = eval_dir / "val_annotations.txt"
    if annotations.is_file() and (eval_dir / "images").is_dir():
        test = _tiny_imagenet_val(eval_dir, annotations, index)
    else:
        test = []
        for folder in sorted(d for d in eval_dir.iterdir() if d.is_dir()):
            if folder.name not in index:
                raise DataError(f"imagefolder: class folder {folder} has no counterpart in {train_dir}; "
                                "every test class must also be a training class")
            test += [(p, index[folder.name]) for p in _images_below(folder)]
    for items, folder in ((train, train_dir), (test, eval_dir)):
        if not items:
            raise DataError(f"imagefolder: no images ({', '.join(sorted(EXTENSIONS))}) in {folder}; {LAYOUT}")
    return classes, train, test


def _tiny_imagenet_val(folder: pathlib.Path, annotations: pathlib.Path, index: Dict[str, int]) -> Listing:
    items = []
    for n, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{annotations} line {n}: expected '<file>\\t<class>' with a class of train/; "
                            "replace the file with the original")
        items.append((folder / "images" / fields[0], index[fields[1]]))
    return sorted(items)


def cache_key(root: pathlib.Path, classes: Sequence[str], train: Listing, test: Listing) -> str:
    """The cache's key: a `listing_digest` that changes with the cache format."""
    return listing_digest(root, classes, train, test, f"v{CACHE_VERSION}")


def files_fingerprint(root: pathlib.Path, classes: Sequence[str], train: Listing, test: Listing) -> str:
    """A streamed folder's data fingerprint: a `listing_digest` that a new cache format leaves alone (it is
    the key of format 1, which fingerprints were first taken from; pinned so existing runs keep theirs)."""
    return listing_digest(root, classes, train, test, "v1")


def listing_digest(root: pathlib.Path, classes: Sequence[str], train: Listing, test: Listing, salt: str) -> str:
    """Hash of ``salt``, the class names, every file's relative path, label and size (not of the pixels)."""
    digest = hashlib.sha256(f"{salt}\n{chr(0).join(classes)}\n".encode())
    for split, items in (("train", train), ("test", test)):
        for path, label in items:
            try:
                size = path.stat().st_size
            except OSError:
                raise DataError(f"imagefolder: {path} is listed but cannot be read; check the folder") from None
            digest.update(f"{split}\0{path.relative_to(root).as_posix()}\0{label}\0{size}\n".encode())
    return digest.hexdigest()[:20]


def _decode(items: Listing, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Decode every file to RGB uint8 (N, 3, H, W) of ``size`` (width, height; default: the most common
    size, `common_size`)."""
    Image = require("PIL.Image", "the imagefolder data set")

    def read(path: pathlib.Path, size=None) -> np.ndarray:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot decode image {path} ({exc}); remove or replace the file") from None
        if size is not None and rgb.size != size:
            rgb = rgb.resize(size, Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        size = size or common_size(pool.map(lambda item: _header_size(Image, item[0]), items))
        out = np.empty((len(items), size[1], size[0], 3), dtype=np.uint8)
        for i, array in enumerate(pool.map(lambda item: read(item[0], size), items)):
            out[i] = array
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _header_size(Image, path: pathlib.Path) -> Tuple[int, int]:
    """(width, height) of an image from its header (nothing decoded)."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path} ({exc}); remove or replace the file") from None


def common_size(sizes: Iterable[Tuple[int, int]]) -> Tuple[int, int]:
    """The most common (width, height), the larger on a tie: every image is resized to it, so one odd
    image (a 2x2 thumbnail listed first) cannot set the size of the data set."""
    counts = collections.Counter(sizes)
    return max(counts, key=lambda wh: (counts[wh], wh[0] * wh[1], wh))


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W) / 255, in float64, without a float copy."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in x.split(chunk):
        part = part.double().div_(255.0)
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    return mean, (squares / count - mean.square()).clamp_min(0).sqrt()


def _valid_cache(cache, classes: Sequence[str]) -> bool:
    fields = ("train_x", "train_y", "test_x", "test_y", "mean", "std", "classes", "version")
    return isinstance(cache, dict) and all(k in cache for k in fields) and cache["version"] == CACHE_VERSION \
        and list(cache["classes"]) == list(classes)


def _decode_all(classes: Sequence[str], train: Listing, test: Listing) -> dict:
    train_x = _decode(train)
    test_x = _decode(test, size=(train_x.shape[3], train_x.shape[2]))
    mean, std = channel_stats(train_x)
    return {"version": CACHE_VERSION, "classes": list(classes), "train_x": train_x, "test_x": test_x,
            "train_y": torch.tensor([label for _, label in train], dtype=torch.int64),
            "test_y": torch.tensor([label for _, label in test], dtype=torch.int64), "mean": mean, "std": std}


def clean_leftovers(root: pathlib.Path) -> List[Tuple[pathlib.Path, int]]:
    """Remove the temporary files of killed cache writes in ``root`` (unless a write is under way)."""
    return clean_cache(root, LEFTOVERS, LOCK)


def streamed_images(root: Optional[pathlib.Path], memory_gb: Optional[float]):
    """``(classes, train listing, test listing)`` for streaming, or None when ``memory_gb`` is given and the
    decoded training images would fit in it (then hold them in memory): all at the most common size of
    up to `SIZE_SAMPLE` of them, read from their headers."""
    if root is None or not root.is_dir():
        raise DataError(f"imagefolder needs --data.root FOLDER; {LAYOUT}")
    classes, train, test = list_images(root)
    if memory_gb is not None:
        Image = require("PIL.Image", "the imagefolder data set")
        sample = train[::max(1, len(train) // SIZE_SAMPLE)]  # spread over the classes
        width, height = common_size(_header_size(Image, path) for path, _ in sample)
        if len(train) * 3 * width * height <= memory_gb * 2**30:
            return None
    return classes, train, test


@register_dataset
def imagefolder(root: Optional[pathlib.Path], download: bool) -> RawData:
    """A class-per-folder image tree under --data.root (train/ and val/ or test/), e.g. Tiny-ImageNet."""
    if root is None:
        raise DataError(f"imagefolder needs --data.root FOLDER; {LAYOUT}")
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder; {LAYOUT}; check --data.root "
                        "(--data.download is not available for imagefolder)")
    classes, train, test = list_images(root)
    path = root / f"{CACHE_PREFIX}{cache_key(root, classes, train, test)}.pt"
    cache = read_or_make(path, f"{len(train) + len(test)} images under {root}",
                         lambda: _decode_all(classes, train, test), older=ENTRIES, lock=LOCK,
                         valid=lambda found: _valid_cache(found, classes))
    return RawData(cache["train_x"], cache["train_y"], cache["test_x"], cache["test_y"],
                   num_classes=len(classes), mean=tuple(cache["mean"].tolist()),
                   std=tuple(cache["std"].tolist()), scale=255.0)
