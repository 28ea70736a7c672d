"""One process at a time per run directory: a second command on a run stops with one line naming the
holder, `runs rm` refuses a run in use, a run removed under its trainer stops it without being written
again, and a removal cut short leaves no half run in the listing."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ticketlab import runlock
from ticketlab.cli import main
from ticketlab.config import merge
from ticketlab.errors import CheckpointError
from ticketlab.methods import RunContext
from ticketlab.methods.lottery import Lottery, lottery_config
from ticketlab.presets import get_preset
from ticketlab.runs import find_runs
from ticketlab.train import Callback

SRC = Path(__file__).resolve().parents[1] / "src"
TRAIN = ["train", "--preset", "digits_mlp", "--train.steps", "40", "--progress", "none", "--threads", "1"]
HOLD = ("import sys\nfrom ticketlab import runlock\nrunlock.hold(sys.argv[1])\nprint('held', flush=True)\n"
        "sys.stdin.read()")


def child_env():
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def holder():
    """``start(run)``: a separate process that holds ``run``'s lock until ``stop()`` or the test's end."""
    started = []

    def start(run):
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, env=child_env())
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    def stop():
        for process in started:
            process.stdin.close()
            process.wait(timeout=120)
        started.clear()

    start.stop = stop
    yield start
    stop()


def run_dir(runs, capsys, args=TRAIN):
    assert main([*args, "--runs-dir", str(runs), "--dry-run"]) == 0
    return Path(capsys.readouterr().out.strip().splitlines()[-1].split("run directory: ")[1])


def metric_lines(run):
    return (run / "metrics.jsonl").read_text().splitlines()


def test_a_second_process_on_a_run_exits_2_naming_the_holder(tmp_path, holder, capsys):
    run = run_dir(tmp_path, capsys)
    process = holder(run)
    assert main([*TRAIN, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"in use by process {process.pid} on " in err and "wait for it" in err
    assert not (run / "metrics.jsonl").exists()  # nothing trained
    holder.stop()
    assert main([*TRAIN, "--runs-dir", str(tmp_path)]) == 0
    lines = metric_lines(run)
    assert lines and len(set(lines)) == len(lines)


@pytest.mark.slow
def test_two_identical_commands_at_once_train_the_run_once(tmp_path, capsys):
    assert main([*TRAIN, "--runs-dir", str(tmp_path / "alone")]) == 0
    expected = metric_lines(run_dir(tmp_path / "alone", capsys))
    command = [sys.executable, "-m", "ticketlab", *TRAIN, "--train.steps", "40", "--runs-dir", str(tmp_path / "both")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
                 for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    for code, err in outcomes:  # the later one stops at once, or starts after the first finished and returns
        assert code == 0 or (code == 2 and "is in use by" in err and len(err.strip().splitlines()) == 1), err
    assert metric_lines(run_dir(tmp_path / "both", capsys)) == expected  # no line twice, none lost


def looked_up(monkeypatch):
    """The runs whose holder `runlock.holder` was asked for (each ask may wait up to a second)."""
    asked, real = [], runlock.holder
    monkeypatch.setattr(runlock, "holder", lambda run, *args: asked.append(Path(run)) or real(run, *args))
    return asked


def test_runs_rm_refuses_a_run_in_use(tmp_path, holder, capsys, monkeypatch):
    assert main([*TRAIN, "--runs-dir", str(tmp_path)]) == 0
    run = run_dir(tmp_path, capsys)
    process = holder(run)
    asked = looked_up(monkeypatch)
    assert main(["runs", "rm", str(run), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"process {process.pid}" in err and "nothing removed" in err
    assert asked == [run]  # once, for the line printed
    assert (run / "config.json").is_file()
    holder.stop()
    assert main(["runs", "rm", str(run), "--runs-dir", str(tmp_path)]) == 0
    assert not run.exists()


class RemoveRunAt(Callback):
    """Deletes the whole run directory after step ``at`` (a user's `rm -r` while the run trains)."""

    def __init__(self, run, at):
        self.run, self.at = run, at

    def after_step(self, state):
        if state.step == self.at and self.run.exists():
            shutil.rmtree(self.run)


class RemovedLottery(Lottery):
    def train_phase(self, out, *args, callbacks=(), **kwargs):
        return super().train_phase(out, *args, callbacks=[*callbacks, RemoveRunAt(self.path, 3)], **kwargs)


def test_a_run_removed_while_training_stops_without_recreating_it(tmp_path):
    config = lottery_config(merge(get_preset("digits_mlp"), {"train": {"steps": "40"}}))
    with runlock.session():
        lottery = RemovedLottery.open(config, RunContext(tmp_path, "cpu", progress=False))
        with pytest.raises(CheckpointError, match="was removed while this process was training it"):
            lottery.run(2)
    assert not lottery.path.exists()  # no init.pt, level_* or checkpoint written into a folder without a config
    with runlock.holding(lottery.path, "unexpected"):  # the session let the lock go
        pass


def test_a_removal_cut_short_leaves_no_half_run_and_clean_finishes_it(tmp_path, capsys, monkeypatch):
    assert main([*TRAIN, "--runs-dir", str(tmp_path)]) == 0
    run = run_dir(tmp_path, capsys)
    real_rmtree = shutil.rmtree

    def interrupted(path, *args, **kwargs):  # a writer's new file, or a busy disk, stops it after one file
        (Path(path) / "metrics.jsonl").unlink()
        raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))

    monkeypatch.setattr("ticketlab.runs.shutil.rmtree", interrupted)
    assert main(["runs", "rm", str(run), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runs clean" in err and "Traceback" not in err
    assert find_runs(tmp_path) == [] and not run.exists()
    monkeypatch.setattr("ticketlab.runs.shutil.rmtree", real_rmtree)
    assert main(["runs", "clean", "--runs-dir", str(tmp_path)]) == 0
    assert "removed" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_runs_clean_skips_a_run_in_use(tmp_path, holder, capsys, monkeypatch):
    assert main([*TRAIN, "--runs-dir", str(tmp_path)]) == 0
    run = run_dir(tmp_path, capsys)
    planted = run / ".final.pt.abc123.tmp"
    planted.write_bytes(b"x" * 1000)
    holder(run)
    asked = looked_up(monkeypatch)
    assert main(["runs", "clean", "--runs-dir", str(tmp_path)]) == 0
    assert planted.exists() and f"skipped 1 run(s) in use: {run.name}" in capsys.readouterr().out
    assert asked == []  # the holder is not named, so not waited for


def lock_is_free(run: Path) -> bool:
    """Whether another process could take ``run``'s lock now (an OS file lock belongs to its open file, so a
    second one taken here is refused while this process still holds the run, as another process's would be)."""
    import filelock

    lock = filelock.FileLock(str(run / runlock.LOCK), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return False
    lock.release()
    return True


def test_the_python_api_lets_a_run_go_when_it_returns(tmp_path):
    from ticketlab.config import convert
    from ticketlab.methods.rst import RSTRunConfig, run_rst

    config = merge(convert(get_preset("digits_mlp"), RSTRunConfig), {
        "method": "rst", "model": {"hidden": "16"}, "train": {"steps": "1ep", "eval_every": "1ep"},
        "rst": {"layer_ratios": "0-1:0.7", "pick_pruned": "rand", "reg_granularity": 0.05, "update_reg_interval": 1,
                "stabilize_reg_interval": "10it", "lr_prune": 0.05, "test_interval": "20it", "save_interval": "5it"}})
    path, _ = run_rst(config, RunContext(tmp_path, "cpu", progress=False))
    assert (path / "config.json").is_file() and lock_is_free(path)  # `ticketlab runs rm` or another process may


def test_the_lock_holder_file_names_this_process(tmp_path):
    with runlock.session():
        runlock.hold(tmp_path / "some_run")
        info = json.loads((tmp_path / "some_run" / runlock.HOLDER).read_text())
        assert info["pid"] == os.getpid()
        assert runlock.holder(tmp_path / "some_run").startswith(f"process {os.getpid()} on ")
    assert not (tmp_path / "some_run" / runlock.HOLDER).exists()  # only while held


def test_releasing_a_run_moved_away_leaves_the_new_holder_s_file(tmp_path):
    run = tmp_path / "some_run"
    with runlock.session():
        runlock.hold(run)
        run.rename(tmp_path / "moved")  # removed (`runs rm` renames first), then made again by another process
        run.mkdir()
        (run / runlock.HOLDER).write_text('{"pid": 1, "host": "h", "command": "ticketlab train", "since": "now"}\n')
    assert runlock.holder(run, wait=0).startswith("process 1 on h")  # not deleted by the old holder's release


def test_threads_release_only_their_own_locks(tmp_path):
    """Two threads on the Python API: one's session ending does not let the other's run go, and a run
    one thread holds is in use for another."""
    import threading

    b_holds, a_left, checked = threading.Event(), threading.Event(), threading.Event()

    def a():
        with runlock.session():
            runlock.hold(tmp_path / "a")
            b_holds.wait(60)
        a_left.set()

    def b():
        with runlock.session():
            runlock.hold(tmp_path / "b")
            b_holds.set()
            checked.wait(60)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    try:
        assert a_left.wait(60)
        with pytest.raises(CheckpointError, match=f"in use by process {os.getpid()} on "):
            with runlock.holding(tmp_path / "b", "unexpected"):
                pass
        with runlock.session(), pytest.raises(CheckpointError, match="in use by"):
            runlock.hold(tmp_path / "b")
    finally:
        checked.set()
        for thread in threads:
            thread.join(60)
    for run in ("a", "b"):  # each session let its own go
        with runlock.holding(tmp_path / run, "unexpected"):
            pass


SWEEP = """
name = "locked"
preset = "digits_mlp"
command = "train"
seeds = 2
[fields]
model.hidden = "16"
train.steps = "10it"
"""


def test_a_sweep_does_not_train_a_run_another_process_is_training(tmp_path, holder):
    import io

    from ticketlab.sweep import sweep_main
    from ticketlab.sweep.study import load_study

    (tmp_path / "study.toml").write_text(SWEEP)
    runs = tmp_path / "runs"
    busy, free = (runs / r.config.run_name for r in load_study(tmp_path / "study.toml").runs)
    process = holder(busy)
    out = io.StringIO()
    assert sweep_main(str(tmp_path / "study.toml"), str(runs), workers=1, device="cpu", out=out) == 1
    assert f"failed: {busy} is in use by process {process.pid}" in out.getvalue()
    assert (free / "summary.json").is_file() and not (busy / "metrics.jsonl").exists()
    holder.stop()
    assert sweep_main(str(tmp_path / "study.toml"), str(runs), workers=1, device="cpu", out=io.StringIO()) == 0
    assert (busy / "summary.json").is_file()


def test_torchrun_on_a_run_in_use_stops_every_rank(tmp_path, holder, capsys):
    run = run_dir(tmp_path, capsys)
    process = holder(run)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    result = subprocess.run([*torchrun, "-m", "ticketlab", *TRAIN, "--device", "cpu", "--runs-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env=child_env())
    assert result.returncode != 0  # every rank ended (none waits in a collective for rank 0)
    assert f"is in use by process {process.pid}" in result.stderr  # rank 0's line
    assert result.stderr.count("ticketlab: error:") == 2  # one line from each rank (torchrun adds its report)
    assert not (run / "metrics.jsonl").exists()


def test_a_run_command_keeps_its_run_until_its_report_is_drawn(tmp_path, capsys, monkeypatch):
    """The method's own session ends when it returns; the command's encloses it, so a `runs rm` while
    the report and plots are drawn is refused (it removed the run under them, and the plots made a
    stray folder or failed on a missing file)."""
    import ticketlab.cli as cli

    tried = []
    draw = cli.report_table

    def report_while_removing(path):
        removal = subprocess.run([sys.executable, "-m", "ticketlab", "runs", "rm", str(path), "--runs-dir",
                                  str(tmp_path)], capture_output=True, text=True, env=child_env(), timeout=120)
        tried.append((removal.returncode, removal.stderr))
        return draw(path)

    monkeypatch.setattr(cli, "report_table", report_while_removing)
    lottery = ["lottery", *TRAIN[1:], "--levels", "0"]
    assert main([*lottery, "--runs-dir", str(tmp_path)]) == 0
    ((code, err),) = tried
    assert code == 2 and "nothing removed" in err
    run = run_dir(tmp_path, capsys, lottery)
    assert (run / "report").is_dir() and (run / "config.json").is_file()
    with runlock.holding(run, "unexpected"):  # and the command let it go at its end
        pass


def test_a_session_inside_another_leaves_its_locks_to_the_outer_one(tmp_path):
    with runlock.session():
        with runlock.session():
            runlock.hold(tmp_path / "run")
        assert tmp_path.joinpath("run").absolute() in runlock._held()
    with runlock.holding(tmp_path / "run", "unexpected"):
        pass
