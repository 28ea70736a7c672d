"""`ticketlab sweep`: study expansion, local and submitit executors, skipping finished runs, resuming a
killed sweep, the study table."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ticketlab.cli import main
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, read_json
from ticketlab.methods.experiment import Experiment
from ticketlab.sweep import read_record, study_dir, sweep_main
from ticketlab.sweep.study import load_study
from ticketlab.sweep.report import run_results, study_table
from killing import KillAt

STUDY = """
name = "tiny"
preset = "digits_mlp"
command = "lottery"
seeds = 3
[options]
levels = 1
[fields]
model.hidden = "24"
train.steps = "12it"
train.checkpoint_every = "4it"
[grid]
"prune.fraction" = [0.2, 0.5]
"""


MIXED = STUDY + """
[[method]]
name = "imp"
[[method]]
name = "rigl"
command = "dst"
variant = "rigl"
fields = { dst.init_density = 0.5 }
"""  # with 12 steps, never reaching dst.update_every (100it), the rigl runs refuse to start


def write(tmp_path, text=STUDY, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def sweep(path, runs, **kwargs):
    out = io.StringIO()
    code = sweep_main(str(path), str(runs), device="cpu", out=out, **kwargs)
    return code, out.getvalue()


def stamps(folder: Path):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and "studies" not in p.parts}


def test_a_study_expands_to_the_runs_the_commands_would_make(tmp_path, capsys):
    study = load_study(write(tmp_path, MIXED))
    assert study.axes == ("prune.fraction",) and len(study.runs) == 2 * 2 * 3
    assert {(r.label, r.cell, r.seed) for r in study.runs} == {
        (label, (("prune.fraction", f),), s) for label in ("imp", "rigl") for f in (0.2, 0.5) for s in range(3)}
    imp = next(r for r in study.runs if r.label == "imp" and r.cell[0][1] == 0.5 and r.seed == 2)
    assert imp.options["levels"] == 1
    rigl = next(r for r in study.runs if r.label == "rigl")
    assert rigl.options == {} and rigl.config.method == "rigl" and rigl.config.dst.init_density == 0.5
    # the same run typed by hand names the same run directory
    assert main(["lottery", "--preset", "digits_mlp", "--model.hidden", "24", "--train.steps", "12it",
                 "--train.checkpoint_every", "4it", "--prune.fraction", "0.5", "--seed", "2", "--levels", "1",
                 "--runs-dir", str(tmp_path), "--dry-run"]) == 0
    assert f"run directory: {imp.directory(tmp_path)}" in capsys.readouterr().out


@pytest.mark.parametrize("text,message", [
    ("unknown = 1\n" + STUDY, "unknown key(s) unknown"),
    (STUDY.replace("[0.2, 0.5]", "[]"), "non-empty list"),
    (STUDY.replace("levels = 1", "level = 1"), "has no option 'level'"),
    (STUDY.replace('command = "lottery"', 'command = "lotery"'), "unknown command 'lotery'"),
    (STUDY.replace('command = "lottery"', 'command = "branch"'), "writes into other runs"),
    (STUDY.replace("seeds = 3", "seeds = [1, 1]"), "repeats a seed"),
    (STUDY.replace('"prune.fraction"', '"prune.fractio"'), "prune.fractio"),
    (STUDY + '[[method]]\nname = "a"\n[[method]]\nname = "a"\n', "are named 'a'"),
    ("name = 'a b'\n", "letters, digits"),
    (STUDY.replace('command = "lottery"', "") + '[[method]]\ncommand = "lottery"\n', "there is none"),
])
def test_bad_study_files_get_one_line_errors_before_any_run(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("field, message", [('model.name = "mpl"', "unknown model 'mpl' (did you mean mlp"),
                                            ('data.dataset = "digit"', "unknown dataset 'digit' (did you mean digits")])
def test_a_misspelt_name_fails_the_plan_in_one_line(tmp_path, capsys, field, message):
    path = write(tmp_path, STUDY.replace('model.hidden = "24"', field))
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "method 'lottery'" in err


def test_a_grid_axis_the_command_ignores_is_refused(tmp_path):
    text = STUDY.replace('"prune.fraction" = [0.2, 0.5]', '"train.schedule" = ["constant", "constant"]')
    with pytest.raises(ConfigError, match="share one run directory"):
        sweep(write(tmp_path, text), tmp_path / "runs")


def test_two_methods_that_differ_only_in_levels_are_refused(tmp_path):
    text = STUDY + '[[method]]\nname = "short"\n[[method]]\nname = "long"\noptions = { levels = 3 }\n'
    with pytest.raises(ConfigError, match="differ only in their options"):
        sweep(write(tmp_path, text), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_local_pool_runs_the_study_then_a_rerun_does_no_work(tmp_path):
    path, runs = write(tmp_path), tmp_path / "runs"
    code, out = sweep(path, runs, dry_run=True)
    assert code == 0 and "6 runs, 0 finished, 6 to run" in out and not runs.exists()
    code, out = sweep(path, runs, workers=2)
    assert code == 0 and "[6/6]" in out and out.count(": done in") == 6
    record = read_record(study_dir(runs, "tiny"))
    assert len(record) == 6 and all(e["status"] == "done" for e in record.values())
    assert (study_dir(runs, "tiny") / "accuracy_vs_cost.png").stat().st_size > 0
    before = stamps(runs)
    code, out = sweep(path, runs, workers=2)
    assert code == 0 and "6 finished, 0 to run" in out and ": done in" not in out
    assert stamps(runs) == before
    rows = [line.split(",") for line in study_table(study_dir(runs, "tiny"), "csv").splitlines()]
    assert rows[0][7:10] == ["seeds", "iterations", "examples"]
    assert [r[:4] for r in rows[1:]] == [["lottery", f, "trunk", k] for f in ("0.2", "0.5") for k in "01"]
    assert all(r[7] == "3" for r in rows[1:])  # each the mean of 3 seeds
    assert [r[8] for r in rows[1:]] == ["12", "24", "12", "24"]  # level 1 costs both levels' iterations


def test_a_removed_run_is_run_again(tmp_path):
    path, runs = write(tmp_path), tmp_path / "runs"
    sweep(path, runs, workers=1)
    victim = sorted(p for p in runs.iterdir() if p.name.startswith("lottery"))[0]
    subprocess.run(["rm", "-r", str(victim)], check=True)
    code, out = sweep(path, runs, workers=1)
    assert code == 0 and "5 finished, 1 to run" in out and victim.is_dir()


def test_a_killed_sweep_repeats_no_finished_run_and_resumes_the_interrupted_one(tmp_path, monkeypatch):
    path = write(tmp_path, STUDY.replace("seeds = 3", "seeds = 2").replace("[0.2, 0.5]", "[0.5]"))
    runs, reference = tmp_path / "runs", tmp_path / "reference"
    sweep(path, reference, workers=1)
    original = Experiment.train_phase

    def killing_phase(self, out, *args, callbacks=(), **kwargs):  # the second run dies inside level 1
        if self.config.seed == 1 and out.name == "level_1":
            callbacks = [*callbacks, KillAt(9)]
        return original(self, out, *args, callbacks=callbacks, **kwargs)

    monkeypatch.setattr(Experiment, "train_phase", killing_phase)
    with pytest.raises(KeyboardInterrupt):
        sweep(path, runs, workers=1)
    monkeypatch.setattr(Experiment, "train_phase", original)
    record = read_record(study_dir(runs, "tiny"))
    first, second = sorted(record.values(), key=lambda e: e["seed"])
    assert first["status"] == "done" and second["status"] == "planned"
    assert (runs / second["run"] / "level_1" / "checkpoint.pt").exists()
    finished = stamps(runs / first["run"])
    code, out = sweep(path, runs, workers=1)
    assert code == 0 and "1 finished, 1 to run" in out
    assert stamps(runs / first["run"]) == finished
    for entry in (first, second):
        a = load_torch(reference / entry["run"] / "level_1" / "final.pt")
        b = load_torch(runs / entry["run"] / "level_1" / "final.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    code, out = sweep(write(tmp_path, MIXED.replace("seeds = 3", "seeds = 1")), tmp_path / "runs", workers=2)
    assert code == 1 and out.count(": done in") == 2 and out.count(": failed: ") == 2
    assert "would never update its mask" in out and "2 run(s) failed" in out


def test_submitit_local_executor_runs_the_study(tmp_path):
    pytest.importorskip("submitit")
    path, runs = write(tmp_path), tmp_path / "runs"
    result = subprocess.run([sys.executable, "-m", "ticketlab.cli", "sweep", str(path), "--runs-dir", str(runs),
                             "--executor", "submitit-local", "--device", "cpu"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 6 jobs" in result.stdout and result.stdout.count(": done in") == 6
    record = read_json(study_dir(runs, "tiny") / "study.json")
    assert [e["status"] for e in record["runs"]] == ["done"] * 6
    assert (study_dir(runs, "tiny") / "submitit").is_dir()
    again = subprocess.run([sys.executable, "-m", "ticketlab.cli", "sweep", str(path), "--runs-dir", str(runs),
                            "--executor", "submitit-local", "--device", "cpu"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 to run" in again.stdout and "submitted" not in again.stdout
    report = subprocess.run([sys.executable, "-m", "ticketlab.cli", "report", str(study_dir(runs, "tiny")),
                             "--format", "csv"], capture_output=True, text=True, timeout=300)
    rows = [r.split(",") for r in report.stdout.strip().splitlines()]
    assert rows[0][:4] == ["method", "prune.fraction", "branch", "level"]
    assert len(rows) == 1 + 4 and all(r[7] == "3" for r in rows[1:])


class FakeShapes:
    def of(self, run):
        return {"w": (10, 1)}, 100, 10  # one layer of 10 weights; 100 examples in batches of 10


def phase(folder, row=None, steps=0, start=0, trained=True):
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"steps": steps, "start_step": start, "density": 1.0, "final_test_accuracy": 0.5}
    if row is not None:
        summary["row"] = row
    (folder / "summary.json").write_text(json.dumps(summary))
    if trained:
        (folder / "metrics.jsonl").write_text("")


def test_a_result_costs_what_it_took_to_make_it(tmp_path):
    trunk = lambda level: {"branch": "trunk", "level": level, "density": 1.0}  # noqa: E731
    phase(tmp_path / "pretrain", steps=5)  # no row: shared by every result
    phase(tmp_path / "level_0", trunk(0), steps=10)
    phase(tmp_path / "level_1", trunk(1), steps=30, start=10)
    phase(tmp_path / "level_1" / "branch_reinit", {"branch": "reinit", "level": 1, "density": 1.0}, steps=7)
    phase(tmp_path / "level_1" / "pools_a" / "pools", {"branch": "pools", "level": 1, "density": 1.0})
    # a result that copies its run's steps without training (a Sup-tickets model, an RST run summary)
    phase(tmp_path / "result", {"branch": "superposed", "level": 1, "density": 1.0}, steps=30, trained=False)
    got = {(r["branch"], r["level"]): r["iterations"] for r in run_results(tmp_path, FakeShapes())}
    assert got == {("trunk", 0): 5 + 10, ("trunk", 1): 5 + 10 + 20,
                   ("reinit", 1): 5 + 10 + 7,  # its mask comes from level 0: level 1's training not needed
                   ("pools", 1): 5 + 10 + 20,  # it combines level 1's trained ticket
                   ("superposed", 1): 5 + 10}
    flops = {(r["branch"], r["level"]): r["flops"] for r in run_results(tmp_path, FakeShapes())}
    assert flops["trunk", 0] == 3 * 2 * 10 * 10 * (5 + 10)  # dense: 3 passes x 2 FLOPs x 10 weights x 10 examples
