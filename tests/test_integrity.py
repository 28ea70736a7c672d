"""Files are verified against the checksum recorded when they were written: a damaged file gives one line
that names it and a fix that works (the tests follow it), or falls back to an earlier good state; never a
different result. Damaged metrics history is put back from the checkpoint."""

import json
import logging
import re
import shutil
import warnings

import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import DataConfig, ModelConfig, TrainConfig
from ticketlab.data import load_data
from ticketlab.errors import CheckpointError
from ticketlab.io import DamagedFileError, atomic_write_bytes, checksum_path, load_torch, read_json, write_json
from ticketlab.models import build_model
from ticketlab.steps import Steps
from ticketlab.train import Trainer, read_metrics
from killing import KillAt


def flip_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def strip_checksums(folder):
    for record in folder.rglob("*.sha256"):
        record.unlink()


def warned(caplog, pattern=None):
    """The ``ticketlab`` logger's warnings (the CLI prints them bare), or whether one matches ``pattern``."""
    said = [r.getMessage() for r in caplog.records if r.name == "ticketlab" and r.levelno == logging.WARNING]
    return said if pattern is None else any(re.search(pattern, line) for line in said)


# -- the record ----------------------------------------------------------------------------------------


def test_a_flipped_byte_is_one_line_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"accuracy": 0.9612})
    assert json.loads(checksum_path(path).read_text())["file"] == "summary.json"
    path.write_text(path.read_text().replace("0.9612", "0.9613"))  # still valid JSON, a different result
    with pytest.raises(DamagedFileError) as info:
        read_json(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path} is damaged") and "delete it" in message
    checksum_path(path).write_text("{not json")
    with pytest.raises(DamagedFileError, match="checksum record .* is damaged; delete that record"):
        read_json(path)
    checksum_path(path).unlink()  # as that advice says: the file then loads unchecked
    assert read_json(path) == {"accuracy": 0.9613}


def test_files_without_a_record_load_and_gain_one_when_next_written(tmp_path):
    path = tmp_path / "init.pt"
    torch.save({"w": torch.arange(4.0)}, path)  # as an older version wrote it
    assert torch.equal(load_torch(path)["w"], torch.arange(4.0)) and not checksum_path(path).exists()
    atomic_write_bytes(path, b"new")
    assert checksum_path(path).exists()


@pytest.mark.parametrize("first_write", [True, False])
def test_a_kill_between_the_file_and_its_record_never_makes_an_intact_file_look_damaged(tmp_path, monkeypatch,
                                                                                       first_write):
    import ticketlab.io as io_module

    path = tmp_path / "data.json"
    if not first_write:
        write_json(path, {"v": 1})
    real = io_module._replace_with
    calls = []

    def killed_on_second_write(target, data):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(target, data)

    monkeypatch.setattr(io_module, "_replace_with", killed_on_second_write)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"v": 2})
    monkeypatch.setattr(io_module, "_replace_with", real)
    if first_write:  # the record is written first: no file, rather than a file that loads unchecked
        assert not path.exists()
    else:  # the old file, accepted by the new record as an earlier version
        assert read_json(path) == {"v": 1}
    write_json(path, {"v": 3})
    flip_byte(path)
    with pytest.raises(DamagedFileError):
        read_json(path)


def test_checked_reads_work_without_hashlib_file_digest(tmp_path, monkeypatch):
    """Python 3.10 has no hashlib.file_digest: files are still verified, with the same digests."""
    import hashlib

    from ticketlab.io import sha256_file

    path = tmp_path / "w.pt"
    weights = {"w": torch.arange(300000.0)}  # several chunks
    torch.save(weights, tmp_path / "reference.pt")
    with open(tmp_path / "reference.pt", "rb") as handle:
        with_file_digest = sha256_file(handle)
    monkeypatch.delattr(hashlib, "file_digest", raising=False)
    with open(tmp_path / "reference.pt", "rb") as handle:
        assert sha256_file(handle) == with_file_digest == hashlib.sha256(handle.seek(0) or handle.read()).hexdigest()
    atomic_write_bytes(path, (tmp_path / "reference.pt").read_bytes())
    assert torch.equal(load_torch(path)["w"], weights["w"])
    flip_byte(path, 0.9)
    with pytest.raises(DamagedFileError, match="do not match its checksum"):
        load_torch(path)


def _failing_load(monkeypatch, exc):
    import ticketlab.io as io_module

    def load(*args, **kwargs):
        raise exc

    monkeypatch.setattr(io_module.torch, "load", load)


@pytest.mark.parametrize("exc", [MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"),
                                 RuntimeError("MPS backend out of memory")])
@pytest.mark.parametrize("recorded", [True, False])
def test_running_out_of_memory_while_loading_is_not_damage(tmp_path, monkeypatch, exc, recorded):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, path) if not recorded else atomic_write_bytes(path, b"any bytes")
    _failing_load(monkeypatch, exc)
    with pytest.raises(type(exc)) as info:
        load_torch(path)
    assert info.value is exc and not isinstance(info.value, CheckpointError)


def test_an_intact_file_that_fails_to_load_names_the_cause_and_is_not_called_damaged(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    atomic_write_bytes(path, b"bytes its record vouches for")
    _failing_load(monkeypatch, RuntimeError("Attempting to deserialize object on a CUDA device\nmore"))
    with pytest.raises(CheckpointError) as info:
        load_torch(path, map_location="cuda")
    assert not isinstance(info.value, DamagedFileError)
    assert str(info.value) == (f"{path} is intact (it matches its checksum) but loading it failed: RuntimeError: "
                               "Attempting to deserialize object on a CUDA device")


def test_a_file_that_cannot_be_opened_is_one_line_and_not_damaged(tmp_path, monkeypatch):
    import ticketlab.io as io_module

    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, path)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io_module, "open", refused, raising=False)
    with pytest.raises(CheckpointError) as info:
        load_torch(path)
    assert not isinstance(info.value, DamagedFileError)
    assert str(info.value) == f"cannot read {path} (Permission denied); check that it is a readable file"


def test_a_cut_file_without_a_record_is_damaged_wherever_it_is_cut(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"w": torch.arange(1000.0)}, full)
    data = full.read_bytes()
    path = tmp_path / "cut.pt"
    for cut in range(0, len(data), 97):  # torch raises RuntimeError, EOFError, ValueError or OSError(EINVAL)
        path.write_bytes(data[:cut])
        with pytest.raises(DamagedFileError, match="not a readable tensor file"):
            load_torch(path)


# -- the trainer: checkpoints and metrics --------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(dataset="digits", val_size=180), noise_seed=0)


def _trainer(data, out, callbacks=()):
    cfg = TrainConfig(steps=Steps(2), batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9,
                      eval_every=Steps(0, 5), checkpoint_every=Steps(0, 6))
    model = build_model(ModelConfig(name="mlp", hidden=(32,)), data.input_shape, data.num_classes, seed=0)
    return Trainer(model, data, cfg, order_seed=3, out_dir=out, callbacks=callbacks, progress=False)


def _same_result(a, b):
    wa, wb = load_torch(a / "final.pt"), load_torch(b / "final.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert read_metrics(a / "metrics.jsonl") == read_metrics(b / "metrics.jsonl")


@pytest.fixture(scope="module")
def straight(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    _trainer(digits, out).fit()
    return out


def _killed(digits, out, at):
    with pytest.raises(KeyboardInterrupt):
        _trainer(digits, out, [KillAt(at)]).fit()


def test_a_damaged_checkpoint_resumes_from_the_one_before_it(digits, straight, tmp_path, caplog):
    _killed(digits, tmp_path, 20)  # checkpoints at 12 (previous) and 18
    flip_byte(tmp_path / "checkpoint.pt")
    _trainer(digits, tmp_path).fit()
    assert warned(caplog, r"checkpoint.pt is damaged; resuming from the checkpoint before it "
                          r"\(checkpoint.prev.pt, step 12\)")
    _same_result(straight, tmp_path)
    assert not list(tmp_path.glob("checkpoint*"))  # both go at the end, with their records


def test_a_damaged_only_checkpoint_is_one_line_whose_advice_trains_the_phase_again(digits, straight, tmp_path):
    _killed(digits, tmp_path, 8)  # one checkpoint (6)
    flip_byte(tmp_path / "checkpoint.pt", 0.9)
    with pytest.raises(DamagedFileError) as info:
        _trainer(digits, tmp_path).fit()
    message = str(info.value)
    assert "\n" not in message and "checkpoint.pt is damaged" in message and "delete it" in message
    (tmp_path / "checkpoint.pt").unlink()  # the advice
    _trainer(digits, tmp_path).fit()
    _same_result(straight, tmp_path)


def test_both_checkpoints_damaged_is_one_line_naming_both(digits, tmp_path):
    _killed(digits, tmp_path, 20)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        flip_byte(tmp_path / name)
    with pytest.raises(CheckpointError, match="checkpoint.pt and checkpoint.prev.pt beside it are both damaged; "
                                              "delete both"):
        _trainer(digits, tmp_path).fit()


def test_an_intact_checkpoint_that_runs_out_of_memory_is_not_replaced_by_the_one_before_it(digits, tmp_path,
                                                                                           monkeypatch, caplog):
    _killed(digits, tmp_path, 20)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("checkpoint*")}
    _failing_load(monkeypatch, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _trainer(digits, tmp_path).fit()
    assert warned(caplog) == []  # no "resuming from the checkpoint before it"
    assert {p.name: p.read_bytes() for p in tmp_path.glob("checkpoint*")} == before


def test_a_run_without_checksums_still_resumes_and_records_them(digits, straight, tmp_path, caplog):
    _killed(digits, tmp_path, 20)
    strip_checksums(tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del ckpt["metrics"]  # an older checkpoint counted the metric lines only
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    (tmp_path / "checkpoint.prev.pt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is reported damaged
        _trainer(digits, tmp_path).fit()
    assert warned(caplog) == []
    _same_result(straight, tmp_path)
    assert checksum_path(tmp_path / "final.pt").exists() and checksum_path(tmp_path / "summary.json").exists()


@pytest.mark.parametrize("damage", ["garbage", "dropped_line", "edited_value"])
def test_damaged_metrics_of_a_partial_run_are_put_back_from_the_checkpoint(digits, straight, tmp_path, damage,
                                                                           caplog):
    _killed(digits, tmp_path, 20)
    path = tmp_path / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "garbage":
        lines[2] = b"\x00\xff\xfe binary \x89PNG\n"
    elif damage == "dropped_line":
        del lines[1]
    else:
        lines[0] = lines[0].replace(b'"accuracy": 0.', b'"accuracy": 1.')
    path.write_bytes(b"".join(lines))
    _trainer(digits, tmp_path).fit()
    assert warned(caplog, "did not match the .* records of its checkpoint .* rewritten")
    _same_result(straight, tmp_path)  # all of the history, none twice


def test_damaged_metrics_with_an_older_checkpoint_are_reported_not_silently_cut(digits, tmp_path, caplog):
    _killed(digits, tmp_path, 20)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del ckpt["metrics"]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    strip_checksums(tmp_path)
    path = tmp_path / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + [b"\x00\xff garbage\n"] + lines[3:]))
    _trainer(digits, tmp_path).fit()
    assert warned(caplog, f"holds only 2 readable lines of the {ckpt['metrics_lines']} its checkpoint covers")


def test_reading_damaged_metrics_is_one_line_and_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = [{"step": 0, "split": "test", "accuracy": 0.5}, {"step": 5, "split": "test", "accuracy": 0.7}]
    text = "".join(json.dumps(r) + "\n" for r in good)
    path.write_text(text + '{"step": 10, "spl')  # killed mid-line
    assert read_metrics(path) == good
    for bad in (b"\x00\xff\xfe\n", b"[1, 2]\n", b"17\n"):
        path.write_bytes(text.encode() + bad + text.encode())
        with pytest.raises(DamagedFileError) as info:
            read_metrics(path)
        assert "\n" not in str(info.value) and "line 3" in str(info.value)
        assert read_metrics(path, strict=False) == good


# -- every file of a lottery run, damaged and then fixed as the message says -----------------------------

LOTTERY = ["lottery", "--preset", "digits_mlp", "--train.steps", "1ep", "--model.hidden", "24",
           "--train.checkpoint_every", "5it", "--threads", "1", "--progress", "none"]


def _lottery(runs, levels, capsys):
    code = main([*LOTTERY, "--levels", str(levels), "--runs-dir", str(runs)])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def lottery_runs(tmp_path_factory):
    """A finished level 0-1 lottery, and the same extended to level 2 (the reference)."""
    base = tmp_path_factory.mktemp("lottery_base")
    assert main([*LOTTERY, "--levels", "1", "--runs-dir", str(base)]) == 0
    reference = tmp_path_factory.mktemp("lottery_reference") / "runs"
    shutil.copytree(base, reference)
    assert main([*LOTTERY, "--levels", "2", "--runs-dir", str(reference)]) == 0
    return base, reference


def _level_2(runs):
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run, json.loads((run / "level_2" / "summary.json").read_text())


def _same_lottery(runs, reference):
    (run, summary), (ref, expected) = _level_2(runs), _level_2(reference)
    assert summary["final_test_accuracy"] == expected["final_test_accuracy"]
    assert (run / "level_2" / "final.pt").read_bytes() == (ref / "level_2" / "final.pt").read_bytes()


# every file that extending the lottery reads, with the fix its message gives
DAMAGED = ["config.json", "manifest.json", "data.pt", "init.pt", "level_1/mask.pt", "level_1/final.pt",
           "level_1/summary.json", "level_0/summary.json"]


@pytest.mark.parametrize("name", DAMAGED)
def test_every_damaged_file_is_one_line_and_deleting_it_as_advised_gives_the_same_result(
        lottery_runs, tmp_path, capsys, name):
    base, reference = lottery_runs
    runs = tmp_path / "runs"
    shutil.copytree(base, runs)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    flip_byte(run / name)
    code, err = _lottery(runs, 2, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{run / name} is damaged" in err and "; delete it and " in err, err
    assert not (run / "level_2" / "summary.json").exists()
    (run / name).unlink()  # what the message says
    code, err = _lottery(runs, 2, capsys)
    assert code == 0, err
    _same_lottery(runs, reference)


def test_a_damaged_final_pt_of_a_finished_level_trains_that_level_again_once_deleted(lottery_runs, tmp_path,
                                                                                    capsys):
    """The advice of a damaged final.pt is true: deleting it trains that level again, to the same weights."""
    base, reference = lottery_runs
    runs = tmp_path / "runs"
    shutil.copytree(base, runs)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    original = (run / "level_1" / "final.pt").read_bytes()
    flip_byte(run / "level_1" / "final.pt")
    assert _lottery(runs, 2, capsys)[0] == 2
    (run / "level_1" / "final.pt").unlink()
    assert _lottery(runs, 1, capsys)[0] == 0  # the same command as the one that trained it
    assert (run / "level_1" / "final.pt").read_bytes() == original


def test_a_damaged_best_pt_read_by_another_command_is_made_again_by_the_runs_command(lottery_runs, tmp_path,
                                                                                      capsys):
    base, _ = lottery_runs
    runs = tmp_path / "runs"
    shutil.copytree(base, runs)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    best = run / "level_1" / "best.pt"
    original = best.read_bytes()
    flip_byte(best)
    export = ["export", str(run), "--checkpoint", "best", "--out", str(tmp_path / "ticket.safetensors")]
    assert main(export) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{best} is damaged" in err
    assert "delete it and run the command that made the run again" in err
    best.unlink()
    assert _lottery(runs, 1, capsys)[0] == 0  # the lottery command trains level 1 again
    assert best.read_bytes() == original and main(export) == 0


def test_a_damaged_start_pt_of_a_level_that_resumes_is_made_again_once_deleted(lottery_runs, tmp_path, capsys):
    base, reference = lottery_runs
    runs = tmp_path / "runs"
    shutil.copytree(base, runs)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    (run / "level_1" / "summary.json").unlink()  # level 1 trains again when the command is repeated
    flip_byte(run / "level_1" / "start.pt")
    code, err = _lottery(runs, 2, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{run / 'level_1' / 'start.pt'} is damaged" in err
    (run / "level_1" / "start.pt").unlink()
    assert _lottery(runs, 2, capsys)[0] == 0
    _same_lottery(runs, reference)


def test_an_old_lottery_without_checksums_extends_to_the_same_result(lottery_runs, tmp_path, capsys):
    base, reference = lottery_runs
    runs = tmp_path / "runs"
    shutil.copytree(base, runs)
    strip_checksums(runs)
    code, err = _lottery(runs, 2, capsys)
    assert code == 0, err
    _same_lottery(runs, reference)


def test_a_damaged_decoded_data_cache_is_decoded_again(tmp_path, monkeypatch):
    import ticketlab.data.cache as cache

    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path))
    source = tmp_path / "source.bin"
    source.write_bytes(b"raw")
    decode = lambda: {"x": torch.arange(1000)}  # noqa: E731
    cache.decoded("toy", [source], decode)
    (cached,) = (tmp_path / ".decoded").glob("toy-*.pt")
    flip_byte(cached, 0.8)
    with pytest.warns(UserWarning, match="is damaged; decoding toy again"):
        assert torch.equal(cache.decoded("toy", [source], decode)["x"], torch.arange(1000))
    assert torch.equal(cache.decoded("toy", [source], lambda: pytest.fail("decoded again"))["x"], torch.arange(1000))


def test_a_damaged_side_file_names_the_file_to_delete_with_it(tmp_path, capsys):
    """rst's prune.json is written beside pruned.pt: the advice deletes both, which makes both again."""
    flags = ["rst", "--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "1ep", "--rst.layer-ratios",
             "0-1:0.9", "--rst.pick_pruned", "rand", "--runs-dir", str(tmp_path), "--progress", "none"]
    flags += ["--rst.reg_granularity", "0.05", "--rst.update_reg_interval", "1", "--rst.stabilize_reg_interval", "10it",
              "--rst.lr_prune", "0.05", "--rst.test_interval", "20it", "--rst.save_interval", "5it"]
    assert main(flags) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    expected = read_json(run / "summary.json")
    (run / "summary.json").unlink()  # as if killed before the run's own summary
    flip_byte(run / "cycle_1" / "prune.json")
    capsys.readouterr()
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{run / 'cycle_1' / 'prune.json'} is damaged" in err and f"delete it and {run / 'cycle_1' / 'pruned.pt'}" in err
    (run / "cycle_1" / "prune.json").unlink()
    (run / "cycle_1" / "pruned.pt").unlink()
    assert main(flags) == 0
    assert read_json(run / "summary.json") == expected


def test_a_new_file_never_exists_without_its_checksum_record(tmp_path, monkeypatch):
    """A new file's record is written before it (the file written first, a kill between left a file that
    loaded unchecked, damage included); a file from before checksums keeps being written first."""
    import ticketlab.io as tio

    order, replace = [], tio._replace_with

    def recording(path, data):
        order.append(path.name)
        replace(path, data)

    monkeypatch.setattr(tio, "_replace_with", recording)
    new = tmp_path / "new.pt"
    atomic_write_bytes(new, b"first")
    assert order == ["new.pt.sha256", "new.pt"]
    old = tmp_path / "old.pt"
    old.write_bytes(b"unrecorded")
    order.clear()
    atomic_write_bytes(old, b"second")
    assert order == ["old.pt", "old.pt.sha256"]
