"""Streamed image folders: decoded in DataLoader workers, the same examples as in memory, exact resume."""

import numpy as np
import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import DataConfig
from ticketlab.data import load_data
from ticketlab.data.stream import StreamingImages, centre_box, random_resized_box
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch
from ticketlab.methods.experiment import Experiment
from ticketlab.train import Callback
from killing import KillAt

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 12 training and 3 test images of 14x10 pixels, each class a colour plus noise."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 3)):
        for c, name in enumerate(("ant", "bee", "cat")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(60 + 70 * c, 40, (10, 14, 3)), 0, 255).astype(np.uint8)
                PIL.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def flags(root, *extra):
    return ["train", "--data.dataset", "imagefolder", "--data.root", str(root), "--data.val_size", "6",
            "--model.name", "mlp", "--model.hidden", "16", "--train.batch_size", "8", "--train.steps", "4ep",
            "--train.eval_every", "2ep", "--train.checkpoint_every", "3it", "--threads", "1", "--device", "cpu",
            "--progress", "none", *extra]


STREAM = ["--data.stream", "on", "--data.image_size", "8", "--data.workers", "0", "--data.augment", "true"]


class RecordIndex(Callback):
    def __init__(self, seen):
        self.seen = seen

    def after_step(self, state):
        self.seen.append(state.index.tolist())


def recording(monkeypatch, seen, kill_at=None):
    original = Experiment.train_phase

    def train_phase(self, out, *args, callbacks=(), **kwargs):
        extra = [RecordIndex(seen)] + ([KillAt(kill_at)] if kill_at is not None else [])
        return original(self, out, *args, callbacks=[*callbacks, *extra], **kwargs)

    monkeypatch.setattr(Experiment, "train_phase", train_phase)
    return original


def final(runs):
    (path,) = [p for p in runs.iterdir() if p.name.startswith("train_")]
    return load_torch(path / "final.pt")


def test_a_stream_sees_the_examples_in_memory_would_in_the_same_order(tree, tmp_path, monkeypatch):
    memory, streamed = [], []
    original = recording(monkeypatch, memory)
    assert main(flags(tree, "--runs-dir", str(tmp_path / "memory"))) == 0
    monkeypatch.setattr(Experiment, "train_phase", original)
    recording(monkeypatch, streamed)
    assert main(flags(tree, *STREAM, "--runs-dir", str(tmp_path / "stream"))) == 0
    assert len(memory) == len(streamed) == 4 * 4 and memory == streamed  # 30 training images: 4 batches an epoch
    data = load_data(DataConfig(dataset="imagefolder", root=str(tree), val_size=6, stream="on", image_size=8,
                                workers=0), noise_seed=0)
    assert isinstance(data.train.x, StreamingImages) and data.input_shape == (3, 8, 8)
    in_memory = load_data(DataConfig(dataset="imagefolder", root=str(tree), val_size=6), noise_seed=0)
    assert torch.equal(data.train.index, in_memory.train.index) and torch.equal(data.train.y, in_memory.train.y)
    assert torch.equal(data.test.y, in_memory.test.y)


def test_a_killed_streamed_run_resumes_bit_identically(tree, tmp_path, monkeypatch):
    assert main(flags(tree, *STREAM, "--runs-dir", str(tmp_path / "a"))) == 0
    original = recording(monkeypatch, [], kill_at=7)
    assert main(flags(tree, *STREAM, "--runs-dir", str(tmp_path / "b"))) == 130
    monkeypatch.setattr(Experiment, "train_phase", original)
    assert main(flags(tree, *STREAM, "--runs-dir", str(tmp_path / "b"))) == 0
    a, b = final(tmp_path / "a"), final(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_worker_processes_decode_the_same_batches(tree, tmp_path):
    assert main(flags(tree, *STREAM, "--runs-dir", str(tmp_path / "inline"))) == 0
    workers = [f if f != "0" else "2" for f in STREAM]
    assert main(flags(tree, *workers, "--train.eval_every", "4ep", "--runs-dir", str(tmp_path / "workers"))) == 0
    a, b = final(tmp_path / "inline"), final(tmp_path / "workers")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_auto_streams_above_the_memory_budget(tree):
    base = dict(dataset="imagefolder", root=str(tree), stream="auto", image_size=8, workers=0)
    small = load_data(DataConfig(**base, memory_gb=1e-6), noise_seed=0)  # 36 x 3 x 14 x 10 bytes > 1 KiB
    large = load_data(DataConfig(**base, memory_gb=1.0), noise_seed=0)
    assert isinstance(small.train.x, StreamingImages) and isinstance(large.train.x, torch.Tensor)


def test_stream_settings_are_checked(capsys, tree, tmp_path):
    with pytest.raises(ConfigError, match="imagefolder"):
        DataConfig(dataset="mnist", stream="on").validate()
    with pytest.raises(ConfigError, match="image_size"):
        DataConfig(dataset="imagefolder", image_size=64).validate()
    assert main(flags(tree, "--data.image_size", "8", "--runs-dir", str(tmp_path))) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_crops_stay_inside_the_image_and_repeat_from_their_seed():
    for size in [(14, 10), (10, 40), (300, 200), (1, 1)]:
        for seed in range(20):
            box = random_resized_box(size, torch.Generator().manual_seed(seed))
            assert 0 <= box[0] < box[2] <= size[0] and 0 <= box[1] < box[3] <= size[1], (size, box)
            assert box == random_resized_box(size, torch.Generator().manual_seed(seed))
    assert centre_box((200, 100), 8) == (56.25, 6.25, 143.75, 93.75)  # the centre 87.5% of the shorter side


def test_two_ranks_each_decoding_their_shard_train_what_one_process_trains(tree, tmp_path):
    import os
    import subprocess
    import sys

    finals = []
    for ranks in (1, 2):
        runs = tmp_path / str(ranks)
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--standalone",
                   "-m", "ticketlab", *flags(tree, *STREAM, "--runs-dir", str(runs))]
        done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        finals.append(final(runs))
    assert max(float((finals[0][k] - finals[1][k]).abs().max()) for k in finals[0]) < 1e-5


def test_a_new_imagefolder_cache_format_keeps_the_fingerprints_of_streamed_runs(tree, monkeypatch):
    """The fingerprint is the digest of the file list that cache format 1 used as its key."""
    import hashlib

    from ticketlab.data import imagefolder

    cfg = DataConfig(dataset="imagefolder", root=str(tree), stream="on", image_size=8, val_size=6)
    fingerprint = load_data(cfg, noise_seed=0).fingerprint
    classes, train, test = imagefolder.list_images(tree)
    digest = hashlib.sha256(b"v1\nant\0bee\0cat\n")
    for split, items in (("train", train), ("test", test)):
        for path, label in items:
            digest.update(f"{split}\0{path.relative_to(tree).as_posix()}\0{label}\0{path.stat().st_size}\n".encode())
    assert fingerprint == {"files": digest.hexdigest()[:20]}
    monkeypatch.setattr(imagefolder, "CACHE_VERSION", imagefolder.CACHE_VERSION + 1)
    assert load_data(cfg, noise_seed=0).fingerprint == fingerprint
    assert imagefolder.cache_key(tree, classes, train, test) != fingerprint["files"]  # the cache itself moves on
