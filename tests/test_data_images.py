"""Image sources (CIFAR pickles, SVHN .mat, class-per-folder trees) on small files in the real formats."""

import hashlib
import io
import math
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from ticketlab.config import DataConfig
from ticketlab.data import DATASETS, load_data
from ticketlab.data import cifar, imagefolder, svhn
from ticketlab.data.cifar import CIFAR10_CLASS_MAP, CIFAR100_CLASS_MAP
from ticketlab.errors import DataError

CIFAR10_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_arrays(n, num_classes, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), (np.arange(n) % num_classes).tolist()


def write_pickle(path, data, labels, label_key):
    # like the official files: a dict with bytes keys, written with protocol 2
    batch = {b"batch_label": b"batch", label_key: labels, b"data": data, b"filenames": [b"x.png"] * len(data)}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar10(root, per_batch=20, n_test=10, subdir=True):
    folder = root / "cifar-10-batches-py" if subdir else root
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, name in enumerate(CIFAR10_NAMES):
        arrays[name] = cifar_arrays(n_test if name == "test_batch" else per_batch, 10, seed=i)
        write_pickle(folder / name, *arrays[name], b"labels")
    return arrays


def write_cifar100(root, n_train=200, n_test=50):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train": cifar_arrays(n_train, 100, 0), "test": cifar_arrays(n_test, 100, 1)}
    for name, (data, labels) in arrays.items():
        write_pickle(folder / name, data, labels, b"fine_labels")
    return arrays


def normalised(raw_uint8, mean, std):
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (torch.as_tensor(raw_uint8).float() / 255 - m) / s


# -- CIFAR ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subdir", [True, False])
def test_cifar10_reads_every_batch_in_order(tmp_path, subdir):
    arrays = write_cifar10(tmp_path, subdir=subdir)
    raw = DATASETS.get("cifar10")(tmp_path, False)
    train = np.concatenate([arrays[n][0] for n in CIFAR10_NAMES[:5]]).reshape(-1, 3, 32, 32)
    assert raw.train_x.dtype == torch.uint8 and torch.equal(raw.train_x, torch.from_numpy(train))
    assert raw.train_y.tolist() == sum((arrays[n][1] for n in CIFAR10_NAMES[:5]), [])
    assert torch.equal(raw.test_x, torch.from_numpy(arrays["test_batch"][0].reshape(-1, 3, 32, 32)))
    b = load_data(DataConfig(dataset="cifar10", root=str(tmp_path), val_size=10), noise_seed=0)
    assert (len(b.train), len(b.val), len(b.test), b.input_shape, b.num_classes) == (90, 10, 10, (3, 32, 32), 10)
    expected = normalised(train[b.train.index.numpy()], cifar.CIFAR10.mean, cifar.CIFAR10.std)
    assert torch.allclose(b.train.x, expected, atol=1e-5)


def test_cifar_pickle_naming_numpy_core_as_numpy_1_wrote_it(tmp_path):
    """The official files were pickled by Python 2 / NumPy 1 and name ``numpy.core.multiarray``."""
    arrays = write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    old = path.read_bytes()
    assert b"numpy._core.multiarray\n" in old or b"numpy.core.multiarray\n" in old
    path.write_bytes(old.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    raw = DATASETS.get("cifar10")(tmp_path, False)
    assert torch.equal(raw.test_x.view(-1, 3072), torch.from_numpy(arrays["test_batch"][0]))


def test_cifar10_channel_layout_is_red_green_blue_planes(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((1, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024 + 33], data[0, 2048 + 1023] = 10, 20, 30  # red plane, green (1,1), blue (31,31)
    for name in CIFAR10_NAMES:
        write_pickle(folder / name, data, [3], b"labels")
    x = DATASETS.get("cifar10")(tmp_path, False).test_x[0]
    assert (x[0] == 10).all() and x[1, 1, 1] == 20 and x[1].sum() == 20 and x[2, 31, 31] == 30 and x[2].sum() == 30


def test_cifar100_fine_labels(tmp_path):
    arrays = write_cifar100(tmp_path)
    b = load_data(DataConfig(dataset="cifar100", root=str(tmp_path)), noise_seed=0)
    assert b.num_classes == 100 and len(b.train) == 200 and len(b.test) == 50
    assert b.train.y.tolist() == arrays["train"][1] and b.test.y.tolist() == arrays["test"][1]
    expected = normalised(arrays["test"][0].reshape(-1, 3, 32, 32), cifar.CIFAR100.mean, cifar.CIFAR100.std)
    assert torch.allclose(b.test.x, expected, atol=1e-5)


def test_cifar_missing_files_name_folder_files_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path / "none")), noise_seed=0)
    message = str(err.value)
    assert "cifar-10-batches-py" in message and all(n in message for n in CIFAR10_NAMES)
    assert "--data.root" in message and "--data.download" in message and "\n" not in message
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as err:
        DATASETS.get("cifar10")(tmp_path, False)
    assert "data_batch_2" not in str(err.value)
    with pytest.raises(DataError, match="train, test"):
        DATASETS.get("cifar100")(tmp_path, False)


def test_cifar_corrupt_or_foreign_pickle_is_data_error(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    good = batch.read_bytes()
    cases = {"truncated": good[: len(good) // 2], "garbage": b"not a pickle at all",
             "wrong shape": pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
             "not a dict": pickle.dumps([1, 2, 3], protocol=2),
             "code": pickle.dumps({b"data": print, b"labels": []}, protocol=2)}  # a global outside the allow-list
    for name, payload in cases.items():
        batch.write_bytes(payload)
        with pytest.raises(DataError, match="data_batch_2"):
            DATASETS.get("cifar10")(tmp_path, False)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    batch.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load global .*system"):
        DATASETS.get("cifar10")(tmp_path, False)
    assert not marker.exists()  # the payload never ran


def _tar_gz(path, folder, arcname, extra=None):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
        if extra is not None:
            info = tarfile.TarInfo(extra)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_download_verifies_md5_and_extracts(tmp_path, monkeypatch):
    """Offline: a file:// URL stands in for the official server."""
    arrays = write_cifar10(tmp_path / "src")
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    md5 = _tar_gz(archive, tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    urls = ("file:///nonexistent/cifar-10-python.tar.gz", archive.as_uri())
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", (urls, "0" * 32))
    with pytest.raises(DataError, match="checksum"):
        DATASETS.get("cifar10")(tmp_path / "bad", True)
    assert not any((tmp_path / "bad").iterdir())  # nothing unverified is kept
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", (urls, None))
    with pytest.raises(DataError, match="checksum of cifar-10-python.tar.gz is unknown"):
        DATASETS.get("cifar10")(tmp_path / "unknown", True)
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", (urls, md5))
    with pytest.raises(DataError, match="missing"):
        DATASETS.get("cifar10")(tmp_path / "off", False)  # never downloads unasked
    raw = DATASETS.get("cifar10")(tmp_path / "dl", True)
    assert raw.test_y.tolist() == arrays["test_batch"][1]
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cifar-10-batches-py"]  # archive removed


def test_download_refuses_archive_with_path_traversal(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "evil.tar.gz"
    md5 = _tar_gz(archive, tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py", extra="../escaped")
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", ((archive.as_uri(),), md5))
    with pytest.raises(DataError, match="unsafe member '../escaped'"):
        DATASETS.get("cifar10")(tmp_path / "dl", True)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "dl" / "cifar-10-batches-py").exists()


def test_official_checksums_are_md5_strings():
    sums = [md5 for _, md5 in cifar.ARCHIVES.values()] + [md5 for _, md5 in svhn.FILES.values()]
    assert len(sums) == 4 and all(len(s) == 32 and int(s, 16) >= 0 for s in sums)


# -- asymmetric noise ----------------------------------------------------------------------------------


def test_cifar10_asymmetric_noise_exact_count_per_class(tmp_path):
    write_cifar10(tmp_path, per_batch=101)  # 505 examples, 50 or 51 per class
    b = load_data(DataConfig(dataset="cifar10", root=str(tmp_path), noise="asymmetric", noise_rate=0.3),
                  noise_seed=4)
    for c in range(10):
        members = b.clean_train_y == c
        moved = members & b.noisy
        if c in CIFAR10_CLASS_MAP:
            assert int(moved.sum()) == math.ceil(0.3 * int(members.sum()))
            assert (b.train.y[moved] == CIFAR10_CLASS_MAP[c]).all()
        else:
            assert not moved.any()
    assert CIFAR10_CLASS_MAP == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}


def test_cifar100_asymmetric_noise_is_per_example_within_blocks(tmp_path):
    write_cifar100(tmp_path, n_train=6000, n_test=10)
    r = 0.35
    b = load_data(DataConfig(dataset="cifar100", root=str(tmp_path), noise="asymmetric", noise_rate=r),
                  noise_seed=1)
    n, moved = len(b.train), int(b.noisy.sum())
    assert abs(moved - n * r) <= 4 * math.sqrt(n * r * (1 - r))  # Bernoulli(r) per example, not exact
    old, new = b.clean_train_y[b.noisy], b.train.y[b.noisy]
    assert torch.equal(old // 5, new // 5) and torch.equal(new, old - old % 5 + (old + 1) % 5)
    assert CIFAR100_CLASS_MAP[4] == 0 and CIFAR100_CLASS_MAP[97] == 98 and CIFAR100_CLASS_MAP[99] == 95
    again = load_data(DataConfig(dataset="cifar100", root=str(tmp_path), noise="asymmetric", noise_rate=r),
                      noise_seed=1)
    assert torch.equal(again.train.y, b.train.y)


# -- SVHN ----------------------------------------------------------------------------------------------


def write_svhn(root, n_train=30, n_test=12):
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 = digit 0
        savemat(root / name, {"X": x, "y": y})
        out[name] = (x, y)
    return out


def test_svhn_reads_mat_and_maps_label_10_to_0(tmp_path):
    arrays = write_svhn(tmp_path)
    raw = DATASETS.get("svhn")(tmp_path, False)
    x, y = arrays["train_32x32.mat"]
    assert raw.train_x.shape == (30, 3, 32, 32) and raw.train_x.dtype == torch.uint8
    assert torch.equal(raw.train_x[7, 2, 5, 9], torch.tensor(x[5, 9, 2, 7]))  # (H, W, C, N) -> (N, C, H, W)
    assert torch.equal(raw.train_x, torch.from_numpy(x).permute(3, 2, 0, 1))
    assert raw.train_y.tolist() == [int(v) % 10 for v in y.ravel()] and 0 in raw.train_y.tolist()
    b = load_data(DataConfig(dataset="svhn", root=str(tmp_path)), noise_seed=0)
    assert torch.allclose(b.test.x, normalised(raw.test_x, svhn.MEAN, svhn.STD), atol=1e-5)


def test_svhn_missing_and_corrupt_files(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="train_32x32.mat, test_32x32.mat.*--data.download"):
        DATASETS.get("svhn")(tmp_path, False)
    arrays = write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB garbage")
    with pytest.raises(DataError, match="test_32x32.mat"):
        DATASETS.get("svhn")(tmp_path, False)
    # download from a file:// mirror, checksum-verified
    mirror = tmp_path / "mirror"
    write_svhn(mirror)
    for name in svhn.FILES:
        md5 = hashlib.md5((mirror / name).read_bytes()).hexdigest()
        monkeypatch.setitem(svhn.FILES, name, (((mirror / name).as_uri(),), md5))
    raw = DATASETS.get("svhn")(tmp_path / "dl", True)
    assert torch.equal(raw.test_x, torch.from_numpy(arrays["test_32x32.mat"][0]).permute(3, 2, 0, 1))


# -- imagefolder ---------------------------------------------------------------------------------------


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_tree(root, classes=("cat", "ant", "bee"), per_class=3, eval_name="val", size=(12, 10)):
    rng = np.random.default_rng(0)
    images = {}
    for split, n in (("train", per_class), (eval_name, 2)):
        for c in classes:
            for i in range(n):
                array = rng.integers(0, 256, size + (3,), dtype=np.uint8)
                path = root / split / c / f"{i}.png"
                write_png(path, array)
                images[path] = array
    return images


def test_imagefolder_reads_sorted_classes_and_exact_pixels(tmp_path):
    images = write_tree(tmp_path)
    raw = DATASETS.get("imagefolder")(tmp_path, False)
    assert raw.num_classes == 3 and raw.train_x.shape == (9, 3, 12, 10) and raw.test_x.shape == (6, 3, 12, 10)
    assert raw.train_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3  # ant, bee, cat
    assert torch.equal(raw.train_x[3], torch.from_numpy(images[tmp_path / "train/bee/0.png"]).permute(2, 0, 1))
    assert torch.equal(raw.test_x[5], torch.from_numpy(images[tmp_path / "val/cat/1.png"]).permute(2, 0, 1))
    x = raw.train_x.double() / 255
    assert np.allclose(raw.mean, x.mean((0, 2, 3))) and np.allclose(raw.std, x.std((0, 2, 3), unbiased=False))


def test_imagefolder_second_load_comes_from_cache(tmp_path, monkeypatch):
    from PIL import Image

    write_tree(tmp_path)
    first = load_data(DataConfig(dataset="imagefolder", root=str(tmp_path)), noise_seed=0)
    caches = list(tmp_path.glob(".ticketlab-cache-*.pt"))
    assert len(caches) == 1

    def no_open(*args, **kwargs):
        raise AssertionError("an image was opened although the cache exists")

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", no_open)
        second = load_data(DataConfig(dataset="imagefolder", root=str(tmp_path)), noise_seed=0)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)
    write_png(tmp_path / "train/ant/new.png", np.zeros((12, 10, 3), np.uint8))  # the tree changed
    third = DATASETS.get("imagefolder")(tmp_path, False)
    assert len(third.train_y) == 10
    new_caches = list(tmp_path.glob(".ticketlab-cache-*.pt"))
    assert len(new_caches) == 1 and new_caches != caches  # the stale cache is replaced
    new_caches[0].write_bytes(b"corrupt")  # a broken cache is rebuilt, not fatal, and said to be
    with pytest.warns(UserWarning, match=f"{new_caches[0]} is damaged; decoding 16 images under {tmp_path} again"):
        assert torch.equal(DATASETS.get("imagefolder")(tmp_path, False).train_x, third.train_x)


def test_imagefolder_test_folder_grey_and_resized_images(tmp_path):
    write_tree(tmp_path, classes=("a", "b"), eval_name="test")
    write_png(tmp_path / "train/b/grey.png", np.full((12, 10), 77, np.uint8))  # mode L -> RGB
    write_png(tmp_path / "test/a/big.png", np.full((24, 20, 3), 200, np.uint8))  # resized to 12x10
    raw = DATASETS.get("imagefolder")(tmp_path, False)
    assert raw.train_x.shape[1:] == raw.test_x.shape[1:] == (3, 12, 10)
    assert (raw.train_x[-1] == 77).all() and (raw.test_x[2] == 200).all()


def test_imagefolder_size_is_the_most_common_not_the_first_image_s(tmp_path):
    write_tree(tmp_path, classes=("b", "c"))
    write_png(tmp_path / "train/a/0.png", np.full((2, 2, 3), 9, np.uint8))  # sorted first: class a, 2x2
    raw = DATASETS.get("imagefolder")(tmp_path, False)
    assert raw.train_x.shape[1:] == raw.test_x.shape[1:] == (3, 12, 10)
    assert (raw.train_x[0] == 9).all()  # the odd image resized up to the others


def test_whether_a_folder_fits_in_memory_is_judged_by_the_most_common_size(tmp_path):
    write_tree(tmp_path, classes=("b", "c"))  # 6 training images of 12x10: 2160 bytes decoded
    write_png(tmp_path / "train/a/0.png", np.full((2, 2, 3), 9, np.uint8))  # listed first: 7 x 12 bytes at its size
    assert imagefolder.streamed_images(tmp_path, memory_gb=2520 / 2**30) is None  # 7 x 360 bytes fit
    assert imagefolder.streamed_images(tmp_path, memory_gb=2000 / 2**30) is not None


def test_imagefolder_tiny_imagenet_layout(tmp_path):
    for wnid in ("n02", "n01"):
        for i in range(2):
            write_png(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.PNG",  # upper case, as Tiny's .JPEG
                      np.full((8, 8, 3), i, np.uint8))
    write_png(tmp_path / "val/images/val_0.png", np.full((8, 8, 3), 5, np.uint8))
    write_png(tmp_path / "val/images/val_1.png", np.full((8, 8, 3), 6, np.uint8))
    (tmp_path / "val/val_annotations.txt").write_text("val_0.png\tn02\t0\t0\t8\t8\nval_1.png\tn01\t0\t0\t8\t8\n")
    raw = DATASETS.get("imagefolder")(tmp_path, False)
    assert raw.num_classes == 2 and raw.test_y.tolist() == [1, 0] and raw.test_x[0].max() == 5


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="--data.root"):
        load_data(DataConfig(dataset="imagefolder"), noise_seed=0)
    with pytest.raises(DataError, match="no train/ folder"):
        DATASETS.get("imagefolder")(tmp_path, False)
    write_tree(tmp_path, classes=("a",))
    write_png(tmp_path / "val/zebra/0.png", np.zeros((12, 10, 3), np.uint8))
    with pytest.raises(DataError, match="zebra"):
        DATASETS.get("imagefolder")(tmp_path, False)
    (tmp_path / "val/zebra/0.png").unlink()
    (tmp_path / "val/zebra").rmdir()
    (tmp_path / "train/a/1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="1.png"):
        DATASETS.get("imagefolder")(tmp_path, False)


def test_imagefolder_is_registered_without_default_folder():
    from ticketlab.data import resolve_root

    assert resolve_root("imagefolder", None) is None and imagefolder.CACHE_VERSION == 1
    assert resolve_root("cifar10", None).name == "cifar10" and resolve_root("svhn", None).name == "svhn"
    assert resolve_root("cifar100", None).name == "cifar100"


def test_cifar_and_svhn_are_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    write_cifar10(tmp_path / "c10")
    write_svhn(tmp_path / "svhn")
    first = {name: DATASETS.get(name)(tmp_path / folder, False) for name, folder in (("cifar10", "c10"),
                                                                                     ("svhn", "svhn"))}
    monkeypatch.setattr(cifar, "read_batch", lambda *a: pytest.fail("CIFAR decoded again"))
    monkeypatch.setattr(svhn, "read_mat", lambda *a: pytest.fail("SVHN decoded again"))
    for name, folder in (("cifar10", "c10"), ("svhn", "svhn")):
        again = DATASETS.get(name)(tmp_path / folder, False)
        assert torch.equal(again.train_x, first[name].train_x) and torch.equal(again.test_y, first[name].test_y)
