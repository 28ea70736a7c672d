import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ticketlab.cli import main


def run_cli(*args, runs_dir=None):
    argv = list(args) + (["--runs-dir", str(runs_dir)] if runs_dir is not None else [])
    return subprocess.run([sys.executable, "-m", "ticketlab.cli", *argv], capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli("train", "--preset", "digits_mlp", "--threads", "1", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    return runs, result


def test_digits_preset_reaches_95_percent(finished_run):
    runs, result = finished_run
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_accuracy"] >= 0.95, summary
    assert f"run directory: {run}" in result.stdout
    for name in ("config.json", "manifest.json", "metrics.jsonl", "final.pt", "best.pt", "data.pt", "summary.json"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["torch"] == torch.__version__ and manifest["threads"] == 1
    assert "test @ best val" in result.stdout


def test_second_identical_command_does_no_work(finished_run):
    runs, _ = finished_run
    before = _snapshot(runs)
    result = run_cli("train", "--preset", "digits_mlp", "--threads", "1", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    assert _snapshot(runs) == before
    assert "step" not in result.stderr  # no training progress lines


def test_runs_list_and_show(finished_run, capsys):
    runs, _ = finished_run
    assert main(["runs", "list", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "done" in out
    name = next(p.name for p in runs.iterdir() if p.is_dir())
    assert main(["runs", "show", name.split("_")[-1][:6], "--runs-dir", str(runs)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "done" and shown["config"]["data"]["dataset"] == "digits"


def test_dry_run_prints_config_and_directory(tmp_path, capsys):
    assert main(["train", "--preset", "mnist_lenet_300_100", "--train.lr", "0.05", "--dry-run",
                 "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"lr": 0.05' in out and f"run directory: {tmp_path}/train_" in out
    assert list(tmp_path.iterdir()) == []


def test_help_lists_every_field_with_preset_values(capsys):
    assert main(["train", "--preset", "mnist_lenet_300_100_lth", "--help"]) == 0
    out = capsys.readouterr().out
    from ticketlab.config import iter_fields

    for dotted, _, _ in iter_fields():
        if dotted != "method":
            assert f"--{dotted}" in out, dotted
    assert "0.0012" in out and "adam" in out


BAD_INPUT = [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--train.lrr", "0.1"], "unrecognized arguments: --train.lrr 0.1 (did you mean --train.lr?)"),
    (["--train.lr", "fast"], "train.lr must be a number"),
    (["--prune.density", "0"], "prune.density=0.0 is out of range"),
    (["--prune.density", "1.5"], "prune.density=1.5 is out of range"),
    (["--data.dataset", "mnist", "--data.root", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--rst.lr_prune", "0.5"], "--rst.lr_prune is a field of `ticketlab rst`, not of `ticketlab train`"),
    (["--lottery.retrain", "scratch"], "`ticketlab lottery` or `ticketlab branch`"),
    (["--levels", "3"], "--levels is an option of `ticketlab lottery` or `ticketlab branch`"),
    (["--variant", "l1"], "--variant is an option of `ticketlab rst` or `ticketlab dst`"),
    (["--model.name", "nope"], "unknown model 'nope'"),  # a dense run builds its model before writing
    (["--model.hidden", "0"], "model.hidden"),
]


def _exit_code_and_stderr(argv, capsys):
    """Run the CLI in this process (main returns the exit status, argparse's errors included)."""
    return main(argv), capsys.readouterr().err


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_exits_2_with_one_line(args, message, finished_run, capsys):
    runs, _ = finished_run
    before = _snapshot(runs)
    code, err = _exit_code_and_stderr(["train", *args, "--runs-dir", str(runs)], capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert _snapshot(runs) == before


def test_bad_input_exit_status_from_a_real_process(finished_run):
    """The in-process tests above see main's return value; this one sees what a shell sees."""
    runs, _ = finished_run
    result = run_cli("train", "--rst.lr_prune", "0.5", runs_dir=runs)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "ticketlab: error: --rst.lr_prune is a field of `ticketlab rst`, not of `ticketlab train`; "
        "run `ticketlab rst` to use it"]


def test_a_config_file_section_of_another_command_is_refused(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 0.01\n[rst]\nlr_prune = 0.5\n")
    code, err = _exit_code_and_stderr(["train", "--config", str(path), "--runs-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the 'rst' section belongs to `ticketlab rst`, not `ticketlab train`" in err
    assert not (tmp_path / "r").exists()


def test_help_shows_only_the_core_sections_and_the_commands_own(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--train.lr" in out and "--prune.density" in out
    assert not any(f"--{section}." in out for section in ("lottery", "branch", "rst"))
    assert main(["branch", "--help"]) == 0  # --levels is required to run, not to ask for help
    out = capsys.readouterr().out
    assert "--lottery.retrain" in out and "--branch.regain" in out and "--levels" in out and "--rst." not in out
    assert main(["rst", "--preset", "mnist1d_cnn_rst", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--rst.lr_prune" in out and "--variant" in out and "--lottery." not in out


def test_a_method_preset_gives_another_command_its_core_sections_only(tmp_path, capsys):
    assert main(["lottery", "--preset", "cifar100_resnet56_rst", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "uses its core sections, not its rst section" in captured.err
    printed = json.loads(captured.out[:captured.out.rindex("}") + 1])
    assert "rst" not in printed and printed["method"] == "lottery" and printed["model"]["name"] == "resnet56"
    from ticketlab.config import convert, merge
    from ticketlab.methods.lottery import LotteryRunConfig
    from ticketlab.presets import get_preset

    expected = merge(convert(get_preset("cifar100_resnet56_rst"), LotteryRunConfig), {"method": "lottery"})
    assert f"run directory: {tmp_path / expected.run_name}" in captured.out
    assert main(["branch", "--preset", "digits_mlp", "--runs-dir", str(tmp_path)]) == 2
    assert "`ticketlab branch` needs --levels" in capsys.readouterr().err


def test_corrupt_checkpoint_exits_2_and_keeps_the_run(tmp_path):
    args = ["train", "--preset", "digits_mlp", "--train.steps", "2ep", "--train.checkpoint_every", "1ep",
            "--threads", "1", "--progress", "none", "--runs-dir", str(tmp_path)]
    assert main(args) == 0
    (run,) = list(tmp_path.iterdir())
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    (run / "checkpoint.pt").write_bytes(b"\x00garbage")
    before = _snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "ticketlab.cli", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert "checkpoint.pt is damaged" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_the_checkpoint_interval_changes_no_result(tmp_path, capsys):
    """Not in the hash, so it must not change a digit: the held batches travel with each checkpoint."""
    common = ["train", "--preset", "digits_mlp", "--train.steps", "3ep", "--threads", "1", "--progress", "none"]
    runs = {}
    for every in ("1ep", "7it"):
        assert main([*common, "--train.checkpoint_every", every, "--runs-dir", str(tmp_path / every)]) == 0
        (runs[every],) = list((tmp_path / every).iterdir())
    capsys.readouterr()
    assert (runs["1ep"] / "metrics.jsonl").read_bytes() == (runs["7it"] / "metrics.jsonl").read_bytes()
    final = [torch.load(runs[k] / "final.pt", weights_only=True) for k in runs]
    assert all(torch.equal(final[0][name], final[1][name]) for name in final[0])


def test_lottery_branch_and_report_from_the_command_line(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--train.steps", "3ep", "--model.hidden", "48", "--threads", "1",
              "--progress", "none", "--runs-dir", str(tmp_path)]
    assert main(["branch", *common, "--levels", "1", "--branch", "reinit"]) == 2
    assert "no lottery trunk" in capsys.readouterr().err
    assert main(["lottery", *common, "--levels", "2"]) == 0
    out = capsys.readouterr().out
    (run,) = list(tmp_path.iterdir())
    assert f"run directory: {run}" in out and "trunk" in out
    assert sorted(p.name for p in (run / "report").iterdir()) == ["accuracy_vs_density.png",
                                                                   "training_curves.png"]  # previews
    assert main(["branch", *common, "--levels", "3", "--branch", "reinit"]) == 2
    assert "not finished" in capsys.readouterr().err
    assert main(["branch", *common, "--levels", "1-2", "--branch", "reinit"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--format", "csv", "--no-plots"]) == 0
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["branch"], r["level"]) for r in rows] == [("trunk", "0"), ("trunk", "1"), ("trunk", "2"),
                                                         ("reinit", "1"), ("reinit", "2")]
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "accuracy_vs_density.png").stat().st_size > 10_000
    assert (run / "report" / "accuracy_vs_density.svg").exists()


def test_sparse_train_with_erk_and_explicit_layer_densities(tmp_path):
    from ticketlab.sparsity import Mask

    common = ["train", "--preset", "digits_mlp", "--train.steps", "1ep", "--progress", "none", "--runs-dir",
              str(tmp_path)]
    assert main([*common, "--prune.density", "0.2", "--prune.scope", "erk", "--prune.criterion", "random"]) == 0
    assert main([*common, "--prune.layer_density", "fc1.*:0.5,fc3.*:0.25"]) == 0
    masks = {Mask.load(p).report()[-1]["kept"]: Mask.load(p) for p in tmp_path.glob("*/mask.pt")}
    assert len(masks) == 2
    explicit = next(m for m in masks.values() if m["fc2.weight"].all())
    assert int(explicit["fc1.weight"].sum()) == 64 * 100 // 2 and int(explicit["fc3.weight"].sum()) == 250


def test_runs_list_shows_finished_levels_from_the_summaries_rows(tmp_path, capsys):
    from ticketlab.runs import report_row, run_status

    config = ticketlab_lottery_config()
    for level, folder in enumerate(("a", "b")):  # the status knows rows, not folder names
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.jsonl").write_text("")
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"row": report_row(config, variant="rewind", level=0,
                                                                                 density=1.0)}))
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "summary.json").write_text("{}")  # an internal phase: no row, not a level
    assert run_status(tmp_path) == "levels 0-0 done, partial"
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"row": report_row(config, variant="rewind", level=1,
                                                                                 density=0.8)}))
    assert run_status(tmp_path) == "levels 0-1 done"


def ticketlab_lottery_config():
    from ticketlab.methods.lottery import LotteryRunConfig

    return LotteryRunConfig(method="lottery")


def test_runs_rm_refuses_directories_it_did_not_make(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text('{"name": "app"}')
    assert main(["runs", "rm", str(project)]) == 2
    assert "not a ticketlab run directory" in capsys.readouterr().err
    assert (project / "src").is_dir()
    runs = tmp_path / "runs"
    assert main(["train", "--preset", "digits_mlp", "--train.steps", "1ep", "--progress", "none",
                 "--runs-dir", str(runs)]) == 0
    (run,) = list(runs.iterdir())
    assert main(["runs", "rm", run.name[:8], "--runs-dir", str(runs)]) == 2  # no prefixes for rm
    assert run.is_dir()
    assert main(["runs", "rm", run.name, "--runs-dir", str(runs)]) == 0
    assert not run.exists()


def test_filesystem_errors_are_one_line(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["train", "--preset", "digits_mlp", "--train.steps", "1ep", "--runs-dir", str(not_a_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(not_a_dir) in err[0]


@pytest.mark.parametrize("args, message", [
    (["lottery", "--rewind", "3ep", "--train.steps", "2ep"], "lies after the end of training"),
    (["lottery", "--model.name", "mnist1d_cnn", "--model.hidden", "10"], "does not apply"),
    (["train", "--prune.layer_density", "conv*:0.5"], "conv*"),
])
def test_bad_method_settings_write_nothing(tmp_path, capsys, args, message):
    command, *rest = args
    assert main([command, "--preset", "digits_mlp", "--progress", "none", "--runs-dir", str(tmp_path), *rest]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_branch_settings_write_nothing_and_changed_data_is_refused(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--train.steps", "2ep", "--progress", "none", "--runs-dir", str(tmp_path)]
    assert main(["lottery", *common, "--levels", "1"]) == 0
    assert main(["branch", *common, "--levels", "1", "--branch", "retrain", "--branch.regain", "9ep"]) == 2
    assert "branch.regain" in capsys.readouterr().err
    (run,) = list(tmp_path.iterdir())
    assert not list(run.glob("level_1/branch_*"))
    state = torch.load(run / "data.pt", weights_only=True)
    state["train_labels"] = (state["train_labels"] + 1) % 10
    torch.save(state, run / "data.pt")
    (run / "data.pt.sha256").unlink()  # a data.pt of other data, not a damaged one
    assert main(["lottery", *common, "--levels", "2"]) == 2
    assert "changed since the run started" in capsys.readouterr().err
    assert not (run / "level_2").exists()


def test_lottery_prune_seed_changes_random_masks(tmp_path):
    from ticketlab.sparsity import Mask

    common = ["lottery", "--preset", "digits_mlp", "--train.steps", "1ep", "--prune.criterion", "random",
              "--levels", "1", "--progress", "none", "--runs-dir", str(tmp_path)]
    assert main([*common, "--prune.seed", "1"]) == 0 and main([*common, "--prune.seed", "2"]) == 0
    masks = [Mask.load(p) for p in sorted(tmp_path.glob("*/level_1/mask.pt"))]
    assert len(masks) == 2 and masks[0] != masks[1]


def test_runs_from_before_report_rows_gain_them_when_their_command_runs_again(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--train.steps", "1ep", "--model.hidden", "16", "--progress", "none",
              "--runs-dir", str(tmp_path)]
    assert main(["lottery", *common, "--levels", "1"]) == 0
    (run,) = tmp_path.iterdir()
    for path in run.glob("level_*/summary.json"):  # as an older version wrote them
        summary = json.loads(path.read_text())
        del summary["row"]
        path.write_text(json.dumps(summary))
        path.with_name("summary.json.sha256").unlink()
    weights = {p: p.read_bytes() for p in run.glob("level_*/final.pt")}
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--no-plots"]) == 2
    assert "from before report rows: run their command again" in capsys.readouterr().err
    assert main(["lottery", *common, "--levels", "1"]) == 0  # trains nothing, adds the rows
    assert {p: p.read_bytes() for p in run.glob("level_*/final.pt")} == weights
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--format", "csv", "--no-plots"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # header and levels 0, 1


def test_an_old_runs_config_file_is_accepted_and_a_bad_flag_after_a_foreign_preset_is_one_line(tmp_path, capsys):
    old = {"seed": 3, "train": {"lr": 0.02}, "rst": {"lr_prune": 0.001}, "lottery": {"retrain": "rewind"}}
    (tmp_path / "old.json").write_text(json.dumps(old))  # other commands' sections, at their defaults
    assert main(["train", "--config", str(tmp_path / "old.json"), "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert '"lr": 0.02' in printed and '"rst"' not in printed
    assert main(["train", "--preset", "mnist1d_cnn_rst", "--train.lr", "abc", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lr must be a number" in err[0]


def test_a_run_from_before_plugins_with_another_commands_field_can_still_be_listed_and_removed(tmp_path, capsys):
    """`ticketlab train --rst.lr_prune 0.5` was accepted (and hashed) before; such a directory cannot be
    read as a train run now, but `runs list` shows it and `runs rm` removes it."""
    run = tmp_path / "train_0123456789ab"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "train", "data": {"dataset": "digits"},
                                                 "model": {"name": "mlp"}, "rst": {"lr_prune": 0.5}}))
    (run / "manifest.json").write_text(json.dumps({"ticketlab": "0.1.0"}))
    (run / "summary.json").write_text(json.dumps({"final_test_accuracy": 0.5}))
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train_0123456789ab" in out and "digits" in out and "config not readable here" in out
    assert main(["runs", "rm", run.name, "--runs-dir", str(tmp_path)]) == 0 and not run.exists()


def test_a_rerun_with_nothing_to_do_draws_no_plot_and_a_new_level_redraws(tmp_path):
    flags = ["lottery", "--preset", "digits_mlp", "--runs-dir", str(tmp_path), "--progress", "none"]
    assert main([*flags, "--levels", "1"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.name.startswith("lottery_")]
    stamps = {p: p.stat().st_mtime_ns for p in (run / "report").iterdir()}
    assert any(p.suffix == ".png" for p in stamps)
    assert main([*flags, "--levels", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (run / "report").iterdir()} == stamps
    assert main([*flags, "--levels", "2"]) == 0
    assert all((run / "report" / p.name).stat().st_mtime_ns > t for p, t in stamps.items() if p.suffix == ".png")


def test_the_command_leaves_its_objects_out_of_the_last_collection(monkeypatch):
    import gc

    from ticketlab import cli

    monkeypatch.setattr(cli, "main", lambda: 3)
    gc.unfreeze()
    try:
        assert cli.entry() == 3  # the exit status passes through
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on collecting
