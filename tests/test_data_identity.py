"""A run's data is part of its identity: other data of the same data set (another --data.root with other
pixels) is refused with one line instead of returning the first run's results, while the same data moved
to another folder still finds its run."""

import json
import shutil

import numpy as np
import pytest

from ticketlab.cli import main
from ticketlab.data.fingerprint import differing

from test_data import idx_bytes, NAMES

COMMON = ["train", "--preset", "digits_mlp", "--data.val_size", "0", "--train.steps", "10", "--train.batch_size", "4",
          "--progress", "none", "--threads", "1"]


def write_idx(folder, seed):
    """An MNIST-format folder whose labels are the same for every ``seed`` and whose pixels are not."""
    rng = np.random.default_rng(seed)
    arrays = {NAMES[0]: rng.integers(0, 256, (40, 28, 28)), NAMES[1]: np.arange(40) % 10,
              NAMES[2]: rng.integers(0, 256, (20, 28, 28)), NAMES[3]: np.arange(20) % 10}
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_bytes(array, 0x08, "u1"))
    return folder


def run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def run_path(out):
    return out.strip().splitlines()[-1].split("run directory: ")[1]


@pytest.fixture
def first(tmp_path, capsys):
    """One finished run on an IDX folder: (its command's arguments, its run directory)."""
    args = [*COMMON, "--data.dataset", "mnist", "--runs-dir", str(tmp_path / "runs")]
    code, out, _ = run([*args, "--data.root", str(write_idx(tmp_path / "a", seed=1))], capsys)
    assert code == 0
    return args, tmp_path / "runs" / run_path(out).split("/")[-1]


def test_other_pixels_with_the_same_labels_are_refused_with_one_line(tmp_path, first, capsys):
    args, path = first
    metrics = (path / "metrics.jsonl").read_bytes()
    code, out, err = run([*args, "--data.root", str(write_idx(tmp_path / "b", seed=2))], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "trained on other data: the training images and test images loaded now differ" in err
    assert "--data.tag" in err and "accuracy" not in out
    assert (path / "metrics.jsonl").read_bytes() == metrics  # the run is kept as it was
    code, out, _ = run([*args, "--data.root", str(tmp_path / "b"), "--data.tag", "b"], capsys)
    assert code == 0 and run_path(out) != str(path)  # the way out the message names: a separate run


def test_the_same_data_in_another_folder_finds_its_run(tmp_path, first, capsys):
    args, path = first
    metrics = (path / "metrics.jsonl").read_bytes()
    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "mnist")
    shutil.rmtree(tmp_path / "a")
    code, out, _ = run([*args, "--data.root", str(tmp_path / "moved" / "mnist")], capsys)
    assert code == 0 and run_path(out) == str(path)
    assert (path / "metrics.jsonl").read_bytes() == metrics  # returned, not trained again


def test_a_run_without_a_recorded_fingerprint_gains_one_and_keeps_working(tmp_path, first, capsys):
    args, path = first
    manifest = json.loads((path / "manifest.json").read_text())
    recorded = manifest.pop("data_fingerprint")
    (path / "manifest.json").write_text(json.dumps(manifest))  # a run from before fingerprints (and checksums)
    (path / "manifest.json.sha256").unlink()
    assert run([*args, "--data.root", str(tmp_path / "a")], capsys)[0] == 0
    assert json.loads((path / "manifest.json").read_text())["data_fingerprint"] == recorded
    code, _, err = run([*args, "--data.root", str(write_idx(tmp_path / "b", seed=2))], capsys)
    assert code == 2 and "other data" in err


def test_other_image_folders_with_the_same_class_counts_are_refused(tmp_path, capsys):
    pytest.importorskip("PIL")
    from test_data_images import write_png

    for name, seed in (("a", 1), ("b", 2)):
        rng = np.random.default_rng(seed)
        for split in ("train", "val"):
            for c in ("ant", "bee"):
                for i in range(3):
                    write_png(tmp_path / name / split / c / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    args = [*COMMON, "--data.dataset", "imagefolder", "--runs-dir", str(tmp_path / "runs")]
    assert run([*args, "--data.root", str(tmp_path / "a")], capsys)[0] == 0
    code, _, err = run([*args, "--data.root", str(tmp_path / "b")], capsys)
    assert code == 2 and "the training images and test images loaded now differ" in err


def test_differing_names_the_parts():
    recorded = {"train_images": "1", "train_labels": "2", "test_images": "3", "test_labels": "4"}
    assert differing(recorded, {**recorded, "train_labels": "x"}) == "training labels"
    assert differing(recorded, {**recorded, "test_images": "x", "test_labels": "y"}) == "test images and test labels"


def test_the_fingerprint_is_taken_when_first_read_once_and_has_not_changed(monkeypatch):
    from ticketlab.config import DataConfig
    from ticketlab.data import fingerprint, load_data

    passes = []
    digest = fingerprint.tensor_digest
    monkeypatch.setattr(fingerprint, "tensor_digest", lambda t: passes.append(1) or digest(t))
    data = load_data(DataConfig(dataset="digits"), noise_seed=0)
    assert passes == []  # loading alone (export, reports, evaluation) makes no pass over the pixels
    pinned = {"train_images": "065795a1ecfe3da6", "train_labels": "fe52d9a4054ced69",
              "test_images": "9656983b4c1f80c2", "test_labels": "e6470c829824e8f1"}  # as recorded by earlier runs
    assert data.fingerprint == pinned and dict(data.fingerprint) == pinned and len(passes) == 4
    assert data.to("cpu").fingerprint == pinned and len(passes) == 4  # taken once, shared by copies
