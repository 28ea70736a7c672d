"""`ticketlab runs list` and `runs show` on runs kept in sub-folders of the runs folder (`make demo` writes
`runs/demo`), for a lottery run and a single training, and `runs show` into a closed pipe."""

import json
import re
import subprocess
import sys

import pytest

from ticketlab.cli import main

FAST = ["--preset", "digits_mlp", "--train.steps", "2ep", "--threads", "1", "--progress", "none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/demo/ with a two-level lottery run (and a reinit branch on level 1), runs/other/ with a train run."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["lottery", *FAST, "--levels", "1", "--runs-dir", str(root / "demo")]) == 0
    assert main(["branch", *FAST, "--levels", "1", "--branch", "reinit", "--runs-dir", str(root / "demo")]) == 0
    assert main(["train", *FAST, "--seed", "3", "--runs-dir", str(root / "other")]) == 0
    return root


def _rows(out):
    """The table's rows as {run: {column: cell}}, cut at the columns of its dashed rule."""
    header, rule, *rows = out.strip().splitlines()
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    cut = [[line[a:b + 1].strip() if i < len(spans) - 1 else line[a:].strip() for i, (a, b) in enumerate(spans)]
           for line in [header, *rows]]
    return {cells[0]: dict(zip(cut[0], cells)) for cells in cut[1:]}


def test_runs_list_finds_runs_below_the_runs_folder_with_seed_levels_and_accuracy(runs, capsys):
    capsys.readouterr()
    assert main(["runs", "list", "--runs-dir", str(runs)]) == 0
    rows = _rows(capsys.readouterr().out)
    (lottery,) = [r for name, r in rows.items() if name.startswith("demo/lottery_")]
    (train,) = [r for name, r in rows.items() if name.startswith("other/train_")]
    assert lottery["status"] == "levels 0-1 done"
    assert len(rows) == 2  # the lottery run's level folders are not runs of their own
    assert (lottery["seed"], lottery["levels"], train["seed"], train["levels"]) == ("0", "2", "3", "1")
    summary = json.loads(next((runs / "demo").glob("lottery_*/level_1/summary.json")).read_text())
    assert lottery["test %"] == f"{100 * summary['final_test_accuracy']:.2f}"
    assert float(train["test %"]) > 50


def test_runs_list_of_an_empty_folder_says_so(tmp_path, capsys):
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    assert "no runs in" in capsys.readouterr().out


def test_runs_show_lists_a_lottery_runs_levels_and_branches(runs, capsys):
    capsys.readouterr()
    name = next((runs / "demo").glob("lottery_*")).name
    assert main(["runs", "show", name.split("_")[1][:6], "--runs-dir", str(runs)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "summary" not in shown and shown["status"] == "levels 0-1 done"
    phases = [(p["phase"], p["level"], p["branch"]) for p in shown["phases"]]
    assert phases[:2] == [("level_0", 0, "trunk"), ("level_1", 1, "trunk")]
    assert phases[2][1:] == (1, "reinit") and phases[2][0].startswith("level_1/branch_reinit")
    assert all(0 < p["final_test_accuracy"] <= 1 for p in shown["phases"])
    assert shown["phases"][1]["density"] == pytest.approx(0.8)


def test_runs_show_by_path_below_the_runs_folder(runs, capsys):
    capsys.readouterr()
    name = next((runs / "other").glob("train_*")).name
    assert main(["runs", "show", f"other/{name[:10]}", "--runs-dir", str(runs)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["summary"]["final_test_accuracy"] == shown["phases"][0]["final_test_accuracy"]


def test_runs_show_into_a_closed_pipe_ends_quietly(runs):
    name = next((runs / "demo").glob("lottery_*")).name
    process = subprocess.Popen([sys.executable, "-m", "ticketlab", "runs", "show", name, "--runs-dir", str(runs)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before the command writes: its first write meets a closed pipe
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0 and err == "", err
