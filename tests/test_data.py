import gzip
import pathlib

import numpy as np
import pytest
import torch

from ticketlab.config import DataConfig
from ticketlab.data import (DATASETS, RawData, epoch_permutation, iters_per_epoch, load_data, read_idx,
                            register_dataset, resolve_root)
from ticketlab.errors import ConfigError, DataError

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx_bytes(array: np.ndarray, code: int, big_endian_dtype: str) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(big_endian_dtype).tobytes()


def write_idx_folder(folder: pathlib.Path, n_train=50, n_test=20, gz=True):
    rng = np.random.default_rng(0)
    arrays = {NAMES[0]: rng.integers(0, 256, (n_train, 28, 28)), NAMES[1]: np.arange(n_train) % 10,
              NAMES[2]: rng.integers(0, 256, (n_test, 28, 28)), NAMES[3]: np.arange(n_test) % 10}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array, 0x08, "u1")
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.fixture
def private_registry(monkeypatch):
    """Sources registered in a test vanish afterwards."""
    from ticketlab.data import sources

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    monkeypatch.setattr(sources, "_FOLDERS", dict(sources._FOLDERS))


# -- IDX ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_raw_and_gz(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    ints = np.array([-5, 70000, 3], dtype=np.int32)
    for name, array, code, dt in [("a", images, 0x08, "u1"), ("b", ints, 0x0C, ">i4")]:
        data = idx_bytes(array, code, dt)
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(path)
        assert out.shape == array.shape and torch.equal(out, torch.from_numpy(array))
    assert read_idx(tmp_path / ("a" + (".gz" if gz else ""))).dtype == torch.uint8


def test_read_idx_rejects_wrong_magic_and_truncation(tmp_path):
    good = idx_bytes(np.zeros((4, 5), dtype=np.uint8), 0x08, "u1")
    cases = {"magic": b"\x01\x02" + good[2:], "type": good[:2] + b"\x07" + good[3:],
             "short": good[:-3], "header": good[:6], "empty": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=name):
            read_idx(tmp_path / name)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")


# -- data root and IDX sources -----------------------------------------------------------------------


def test_resolve_root(monkeypatch, tmp_path):
    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path))
    assert resolve_root("mnist", None) == tmp_path / "mnist"
    assert resolve_root("fashion_mnist", None) == tmp_path / "fashion-mnist"
    assert resolve_root("mnist", "/some/where") == pathlib.Path("/some/where")
    assert resolve_root("digits", None) is None and resolve_root("mnist1d", None) is None
    monkeypatch.delenv("TICKETLAB_DATA")
    assert resolve_root("mnist", None) == pathlib.Path.home() / ".cache/ticketlab/data/mnist"


def test_missing_mnist_folder_names_folder_and_files(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="mnist", root=str(folder)), noise_seed=0)
    message = str(err.value)
    assert str(folder) in message and all(n in message for n in NAMES)
    assert "--data.root" in message and "--data.download" in message and "\n" not in message


def test_partly_missing_folder_names_only_missing_files(tmp_path):
    write_idx_folder(tmp_path)
    (tmp_path / (NAMES[2] + ".gz")).unlink()
    with pytest.raises(DataError, match=NAMES[2]) as err:
        load_data(DataConfig(dataset="fashion_mnist", root=str(tmp_path)), noise_seed=0)
    assert NAMES[0] not in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_folder_is_normalised_once(tmp_path, gz):
    arrays = write_idx_folder(tmp_path, gz=gz)
    b = load_data(DataConfig(dataset="mnist", root=str(tmp_path), val_size=10), noise_seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (40, 10, 20) and b.input_shape == (1, 28, 28)
    raw = torch.from_numpy(arrays[NAMES[0]]).float().unsqueeze(1)
    expected = (raw[b.train.index] / 255.0 - 0.1307) / 0.3081
    assert b.train.x.dtype == torch.float32 and torch.allclose(b.train.x, expected, atol=1e-6)
    assert torch.equal(b.test.y, torch.from_numpy(arrays[NAMES[3]]).long())


# -- offline sources ---------------------------------------------------------------------------------


def test_digits_sizes_and_fixed_test_split():
    a = load_data(DataConfig(dataset="digits"), noise_seed=0)
    b = load_data(DataConfig(dataset="digits", split_seed=7, val_size=100), noise_seed=0)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 360 and a.num_classes == 10
    assert a.input_shape == (1, 8, 8)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)  # independent of split_seed
    assert set(a.train.y.tolist()) == set(range(10))
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-3  # train stats


def test_mnist1d_sizes():
    b = load_data(DataConfig(dataset="mnist1d"), noise_seed=0)
    assert (len(b.train), len(b.test), b.input_shape, b.num_classes) == (4000, 1000, (1, 40), 10)
    assert abs(float(b.train.x.mean())) < 1e-4 and abs(float(b.train.x.std()) - 1) < 1e-3


# -- splits, subset, noise ---------------------------------------------------------------------------


def test_val_split_disjoint_exact_and_seeded():
    raw = DATASETS.get("digits")(None, False)
    b = load_data(DataConfig(dataset="digits", val_size=300), noise_seed=0)
    train, val = set(b.train.index.tolist()), set(b.val.index.tolist())
    assert len(b.val) == 300 and len(b.train) == 1437 - 300
    assert not train & val and train | val == set(range(1437))
    assert torch.equal(b.val.y, raw.train_y[b.val.index]) and torch.equal(b.train.y, raw.train_y[b.train.index])
    again = load_data(DataConfig(dataset="digits", val_size=300), noise_seed=5)
    other = load_data(DataConfig(dataset="digits", val_size=300, split_seed=1), noise_seed=0)
    assert torch.equal(again.val.index, b.val.index) and not torch.equal(other.val.index, b.val.index)
    assert load_data(DataConfig(dataset="digits"), noise_seed=0).val is None
    with pytest.raises(ConfigError, match="val_size"):
        load_data(DataConfig(dataset="digits", val_size=1437), noise_seed=0)


def test_subset_size_exact_and_outside_val():
    b = load_data(DataConfig(dataset="digits", val_size=137, subset=0.25), noise_seed=0)
    assert len(b.train) == 325 and len(b.val) == 137
    assert not set(b.train.index.tolist()) & set(b.val.index.tolist())
    full = load_data(DataConfig(dataset="digits", val_size=137), noise_seed=0)
    assert torch.equal(full.val.index, b.val.index)  # the subset does not move the validation split
    assert len(load_data(DataConfig(dataset="digits", subset=1e-6), noise_seed=0).train) == 1


def test_noise_touches_train_only_and_state_recreates_run():
    raw = DATASETS.get("digits")(None, False)
    cfg = DataConfig(dataset="digits", val_size=200, noise="symmetric", noise_rate=0.4)
    b = load_data(cfg, noise_seed=3)
    assert torch.equal(b.clean_train_y, raw.train_y[b.train.index])
    assert torch.equal(b.val.y, raw.train_y[b.val.index]) and torch.equal(b.test.y, raw.test_y)
    assert torch.equal(b.noisy, b.train.y != b.clean_train_y) and 0.3 < b.noisy.float().mean() < 0.5
    assert not torch.equal(load_data(cfg, noise_seed=4).train.y, b.train.y)
    state = {k: v.clone() for k, v in b.state().items()}
    assert set(state) == {"train_index", "val_index", "train_labels"}
    again = load_data(cfg, noise_seed=99, state=state)  # the saved labels win over a new seed
    assert torch.equal(again.train.y, b.train.y) and torch.equal(again.val.index, b.val.index)
    assert torch.equal(again.train.x, b.train.x)


def test_asymmetric_on_dataset_without_class_map_is_config_error():
    with pytest.raises(ConfigError, match="digits.*cifar10"):
        load_data(DataConfig(dataset="digits", noise="asymmetric", noise_rate=0.2), noise_seed=0)


def test_user_registered_source_with_class_map(private_registry):
    @register_dataset(name="toy")
    def toy(root, download):
        x = torch.arange(400, dtype=torch.float32).view(100, 1, 4)
        y = torch.arange(100) % 4
        return RawData(x, y, x[:8], y[:8], num_classes=4, mean=(2.0,), std=(4.0,), scale=1.0,
                       class_map={0: 1, 1: 0})

    b = load_data(DataConfig(dataset="toy", noise="asymmetric", noise_rate=0.2), noise_seed=0)
    assert int(b.noisy.sum()) == 10 and set(b.train.y[b.noisy].tolist()) <= {0, 1}
    assert torch.equal(b.test.x, (torch.arange(32.0).view(8, 1, 4) - 2) / 4)
    with pytest.raises(ConfigError, match="did you mean"):
        load_data(DataConfig(dataset="tyo"), noise_seed=0)


# -- batch order -------------------------------------------------------------------------------------


def test_epoch_permutation_deterministic_and_varies():
    p = epoch_permutation(1000, seed=4, epoch=2, device="cpu")
    assert torch.equal(p.sort().values, torch.arange(1000))
    assert torch.equal(p, epoch_permutation(1000, 4, 2, "cpu"))
    assert not torch.equal(p, epoch_permutation(1000, 4, 3, "cpu"))
    assert not torch.equal(p, epoch_permutation(1000, 5, 2, "cpu"))


def test_iters_per_epoch():
    assert [iters_per_epoch(n, 128) for n in (1, 128, 129, 50000)] == [1, 1, 2, 391]


# -- real data (slow) --------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_mnist_label_counts(mnist_root):
    b = load_data(DataConfig(dataset="mnist", root=str(mnist_root)), noise_seed=0)
    assert torch.bincount(b.train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(b.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert b.input_shape == (1, 28, 28) and abs(float(b.train.x.mean())) < 1e-3


@pytest.mark.slow
def test_real_fashion_mnist_label_counts(fashion_mnist_root):
    b = load_data(DataConfig(dataset="fashion_mnist", root=str(fashion_mnist_root)), noise_seed=0)
    assert torch.bincount(b.train.y).tolist() == [6000] * 10 and torch.bincount(b.test.y).tolist() == [1000] * 10


def test_download_verifies_checksum(tmp_path):
    """The download path, offline: a file:// mirror stands in for the official server."""
    import hashlib

    from ticketlab.data.idx import load_idx_folder

    arrays = write_idx_folder(tmp_path / "mirror")
    md5 = {n: hashlib.md5(gzip.decompress((tmp_path / "mirror" / f"{n}.gz").read_bytes())).hexdigest()
           for n in NAMES}
    mirrors = ("file:///nonexistent/", (tmp_path / "mirror").as_uri() + "/")
    bad = dict(md5, **{NAMES[1]: "0" * 32})
    with pytest.raises(DataError, match=f"{NAMES[1]}.*checksum"):
        load_idx_folder("mnist", tmp_path / "bad", True, mirrors, bad)
    assert not (tmp_path / "bad" / f"{NAMES[1]}.gz").exists()  # a file that fails the check is not kept
    with pytest.raises(DataError, match="missing"):
        load_idx_folder("mnist", tmp_path / "off", False, mirrors, md5)  # never downloads unasked
    t = load_idx_folder("mnist", tmp_path / "dl", True, mirrors, md5)
    assert torch.equal(t["train_y"], torch.from_numpy(arrays[NAMES[1]]).long())
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(f"{n}.gz" for n in NAMES)


def test_idx_files_are_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import ticketlab.data.idx as idx

    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "data"))
    folder = tmp_path / "mnist"
    arrays = write_idx_folder(folder)
    cfg = DataConfig(dataset="mnist", root=str(folder), val_size=10)
    first = load_data(cfg, noise_seed=0)
    cached = list((tmp_path / "data" / ".decoded").glob("mnist-*.pt"))
    assert len(cached) == 1
    calls = []
    monkeypatch.setattr(idx, "read_idx", lambda path: calls.append(path) or pytest.fail("decoded again"))
    second = load_data(cfg, noise_seed=0)
    assert not calls and torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)
    monkeypatch.setattr(idx, "read_idx", read_idx)
    # a replaced file (new labels) makes a new entry; the old one is removed
    labels = arrays[NAMES[3]].copy()
    labels[0] = (labels[0] + 1) % 10
    with gzip.open(folder / f"{NAMES[3]}.gz", "wb") as f:
        f.write(idx_bytes(labels, 0x08, ">u1"))
    third = load_data(cfg, noise_seed=0)
    assert int(third.test.y[0]) == int(labels[0]) != int(first.test.y[0])
    now = list((tmp_path / "data" / ".decoded").glob("mnist-*.pt"))
    assert len(now) == 1 and now != cached
    now[0].write_bytes(b"not a tensor file")  # a corrupt cache is decoded again, silently
    assert torch.equal(load_data(cfg, noise_seed=0).test.y, third.test.y)


def test_unreadable_or_unwritable_decoded_cache_falls_back_to_decoding(tmp_path, monkeypatch):
    import ticketlab.data.cache as cache

    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "data"))
    source = tmp_path / "a.bin"
    source.write_bytes(b"12345")
    decode = lambda: {"x": torch.arange(3)}  # noqa: E731
    assert torch.equal(cache.decoded("toy", [source], decode)["x"], torch.arange(3))  # written
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cache, "load_torch", denied)  # e.g. another user's .decoded
    assert torch.equal(cache.decoded("toy", [source], lambda: {"x": torch.arange(4)})["x"], torch.arange(4))
    monkeypatch.undo()
    monkeypatch.setenv("TICKETLAB_DATA", str(source))  # a file where the folder should be: cannot write
    with pytest.warns(UserWarning, match="could not write the decoded copy of toy"):
        assert torch.equal(cache.decoded("toy", [source], decode)["x"], torch.arange(3))


def test_digits_are_read_without_scikit_learn_yet_equal_its_loader():
    sklearn = pytest.importorskip("sklearn.datasets")
    from ticketlab.data.sources import _digits_table

    table, bunch = _digits_table(), sklearn.load_digits()
    assert np.array_equal(table[:, :-1], bunch.data) and np.array_equal(table[:, -1].astype(int), bunch.target)
