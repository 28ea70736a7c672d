"""What a killed process leaves behind (temporary files of atomic writes, a finished phase's checkpoint,
the temporary files of the decoded-data cache and of an image folder's) is removed when the same run starts again and by
`ticketlab runs clean`, which prints what it freed; nothing a run still needs is touched."""

import shutil
from pathlib import Path

import pytest
import torch

from ticketlab.cli import main
from ticketlab.data.cache import cache_folder, decoded

LOTTERY = ["lottery", "--preset", "digits_mlp", "--train.steps", "10", "--levels", "1", "--progress", "none",
           "--threads", "1"]


def finished(runs, capsys, command=LOTTERY, *extra):
    assert main([*command, *extra, "--runs-dir", str(runs)]) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1].split("run directory: ")[1])


def plant(run):
    """A killed process's leftovers in ``run``: two temporary files and a stale checkpoint."""
    planted = [run / ".summary.json.k1ll3d.tmp", run / "level_1" / ".checkpoint.pt.x9y8z7.tmp",
               run / "level_0" / "checkpoint.pt"]
    for path in planted[:2]:
        path.write_bytes(b"\0" * 5000)
    shutil.copy(run / "level_0" / "final.pt", planted[2])  # killed between its summary and the unlink
    return planted


def kept(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_the_next_start_of_a_run_removes_its_leftovers(tmp_path, capsys):
    run = finished(tmp_path, capsys)
    before = kept(run)
    planted = plant(run)
    assert main([*LOTTERY, "--runs-dir", str(tmp_path)]) == 0
    assert not any(p.exists() for p in planted)
    after = kept(run)
    assert {k: v for k, v in after.items() if k in before} == before  # results untouched
    assert (run / "level_0" / "final.pt").is_file()


def test_runs_clean_removes_leftovers_of_every_run_and_says_what_it_freed(tmp_path, capsys):
    train = ["train", *LOTTERY[1:5], "--progress", "none", "--threads", "1"]
    runs = [finished(tmp_path / "runs", capsys, train, "--seed", str(seed)) for seed in (0, 1)]
    other = finished(tmp_path / "other", capsys, train)  # another --runs-dir (not below it): not cleaned
    planted = []
    for run in (*runs, other):
        planted += [run / ".final.pt.k1ll3d.tmp", run / "checkpoint.pt"]
        planted[-2].write_bytes(b"\0" * 5000)
        shutil.copy(run / "final.pt", planted[-1])
    cache_tmp = cache_folder() / ".mnist-0123.pt.abcdef.tmp"
    cache_tmp.parent.mkdir(parents=True, exist_ok=True)
    cache_tmp.write_bytes(b"\0" * 3000)
    assert main(["runs", "clean", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert not any(p.exists() for p in planted[:4]) and all(p.exists() for p in planted[4:])
    assert not cache_tmp.exists() and (runs[0] / "final.pt").is_file()
    assert f"removed {planted[0]} (0.0 MB)" in out and f"removed {cache_tmp}" in out
    assert "in 5 file(s) or folder(s)" in out
    assert main(["runs", "clean", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "freed 0.0 MB in 0 file(s)" in capsys.readouterr().out


def test_decoding_removes_the_cache_temporary_files_of_a_killed_write(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"data")
    leftover = cache_folder() / ".toy-ffff.pt.killed.tmp"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\0" * 100)
    tensors = decoded("toy", [source], lambda: {"x": torch.arange(3)})
    assert torch.equal(tensors["x"], torch.arange(3)) and not leftover.exists()
    assert [p.name for p in cache_folder().glob("toy-*.pt")]  # the new entry was written


def test_killed_image_folder_cache_writes_go_at_the_next_load_and_with_runs_clean(tmp_path, capsys, monkeypatch):
    pytest.importorskip("PIL")
    import filelock

    import ticketlab.data.cache as cache
    from ticketlab.data import imagefolder
    from test_data_images import write_tree

    root = tmp_path / "images"
    write_tree(root)
    killed, other = root / "..ticketlab-cache-0123.pt.k1ll3d.tmp", root / ".notes.txt.tmp"
    killed.write_bytes(b"\0" * 4000)
    other.write_bytes(b"not the cache's")  # kept: the data folder is the user's
    runs = tmp_path / "runs"
    args = ["train", "--preset", "digits_mlp", "--data.dataset", "imagefolder", "--data.root", str(root),
            "--data.val_size", "0", "--train.steps", "2it", "--train.batch_size", "4", "--progress", "none", "--threads", "1",
            "--runs-dir", str(runs)]
    written = []

    def save_holding_the_lock(value, path):
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(str(root / imagefolder.LOCK), timeout=0).acquire()
        written.append(path)
        save(value, path)

    save = cache.save_torch
    monkeypatch.setattr(cache, "save_torch", save_holding_the_lock)
    assert main(args) == 0
    assert written and not killed.exists() and other.exists() and len(list(root.glob(".ticketlab-cache-*.pt"))) == 1
    killed.write_bytes(b"\0" * 4000)  # a later write killed
    with filelock.FileLock(str(root / imagefolder.LOCK)):  # a write under way: nothing is removed
        assert imagefolder.clean_leftovers(root) == [] and killed.exists()
    capsys.readouterr()
    assert main(["runs", "clean", "--runs-dir", str(runs)]) == 0
    assert not killed.exists() and other.exists() and f"removed {killed}" in capsys.readouterr().out
