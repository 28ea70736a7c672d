"""Trackers get every metric a run logs; messages go through `logging`, quiet in a library, shown by the CLI."""

import json
import logging

import pytest

import ticketlab
from ticketlab.config import merge
from ticketlab.train import read_metrics


class Recording(ticketlab.Tracker):
    def __init__(self):
        self.records, self.closed = [], False

    def log(self, record, *, phase, folder):
        self.records.append((phase, folder, dict(record)))

    def close(self):
        self.closed = True


def _tiny(steps="2ep"):
    return merge(ticketlab.get_preset("digits_mlp"), {"train": {"steps": steps}, "model": {"hidden": "16"},
                                                      "data": {"val_size": 100}})


def test_a_tracker_gets_every_record_of_every_phase(tmp_path):
    tracker = Recording()
    ctx = ticketlab.RunContext(runs_dir=tmp_path, progress=False, trackers=[tracker])
    path, tickets = ticketlab.run_lottery(_tiny(), 1, ctx)
    for level in (0, 1):
        folder = path / f"level_{level}"
        sent = [r for phase, where, r in tracker.records if where == folder]
        assert sent == read_metrics(folder / "metrics.jsonl") and sent
        assert {phase for phase, where, _ in tracker.records if where == folder} == {f"{path.name}/level_{level}"}
    assert {r["split"] for _, _, r in tracker.records} == {"train", "val", "test"}
    tracker.records.clear()
    ticketlab.run_lottery(_tiny(), 1, ctx)  # finished: nothing trains, nothing is sent
    assert tracker.records == []


def test_scalars_are_tagged_by_split():
    from ticketlab.train.trackers import scalars

    record = {"step": 10, "epoch": 1.0, "split": "val", "loss": 0.5, "accuracy": 0.9, "density": 1.0, "note": "x"}
    assert scalars(record) == {"val/loss": 0.5, "val/accuracy": 0.9, "val/density": 1.0}


def test_log_flag_names_unknown_trackers_and_missing_packages(tmp_path, capsys):
    from ticketlab.cli import main

    base = ["train", "--preset", "digits_mlp", "--runs-dir", str(tmp_path)]
    assert main(base + ["--log", "mlflow"]) == 2
    assert "--log mlflow: unknown tracker; choose from tensorboard, wandb" in capsys.readouterr().err
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert main(base + ["--log", "tensorboard"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == ("ticketlab: error: --log tensorboard needs the tensorboard package: pip install "
                       "'ticketlab[tensorboard]'")
        assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before any work


def test_tensorboard_event_files_hold_the_logged_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ticketlab.cli import main

    assert main(["train", "--preset", "digits_mlp", "--train.steps", "2ep", "--data.val_size", "100",
                 "--runs-dir", str(tmp_path), "--log", "tensorboard", "--progress", "none"]) == 0
    (run,) = tmp_path.iterdir()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    records = read_metrics(run / "metrics.jsonl")
    for split in ("train", "val", "test"):
        for name in ("loss", "accuracy"):
            logged = [(r["step"], r[name]) for r in records if r["split"] == split]
            written = [(e.step, e.value) for e in events.Scalars(f"{split}/{name}")]
            assert written == [(step, pytest.approx(value)) for step, value in logged] and written


def test_wandb_offline_run_per_phase(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = ticketlab.WandbTracker(project="ticketlab-test", mode="offline")
    ctx = ticketlab.RunContext(runs_dir=tmp_path, progress=False, trackers=[tracker])
    run, _ = ticketlab.run_train(_tiny("1ep"), ctx)
    tracker.close()
    assert list((run.path / "wandb").glob("offline-run-*"))


def test_the_library_is_quiet_unless_logging_asks(tmp_path, capsys, caplog):
    ctx = ticketlab.RunContext(runs_dir=tmp_path, progress=None)  # automatic: plain lines off a terminal
    logger = logging.getLogger("ticketlab")
    handlers, level = list(logger.handlers), logger.level
    for handler in handlers:  # as in a fresh process: no CLI handler
        if type(handler).__name__ == "_StderrHandler":
            logger.removeHandler(handler)
    try:
        logger.setLevel(logging.NOTSET)
        with caplog.at_level(logging.WARNING, logger="ticketlab"):
            ticketlab.run_train(_tiny("1ep"), ctx)
        assert capsys.readouterr().err == ""
        with caplog.at_level(logging.INFO, logger="ticketlab"):
            ticketlab.run_train(merge(_tiny("1ep"), {"seed": 1}), ctx)
        lines = [r.getMessage() for r in caplog.records if r.name == "ticketlab"]
        assert any(line.startswith("[train_") and "test acc" in line for line in lines)
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_the_cli_prints_progress_lines_as_before(tmp_path, capsys):
    from ticketlab.cli import main

    assert main(["train", "--preset", "digits_mlp", "--train.steps", "1ep", "--runs-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "] step 0/" in err and "test acc" in err
    manifest = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    assert "--log" not in manifest["command"]
