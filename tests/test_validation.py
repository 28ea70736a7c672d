"""Bad numbers, names and files are refused in one line (exit 2) before any work and before the run
directory exists."""

import json

import pytest

from ticketlab.cli import main
from ticketlab.config import RunConfig, TrainConfig, load_config_file, parse_piecewise
from ticketlab.errors import ConfigError
from ticketlab.fields import MAX_NESTING, Interval, option
from ticketlab.steps import Steps


def refused(capsys, tmp_path, command, *args):
    """Run ``ticketlab COMMAND ARGS --dry-run``; return its one-line error (exit 2, no runs folder)."""
    runs = tmp_path / "runs"
    code = main([command, *args, "--runs-dir", str(runs), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 2, out
    assert err.startswith("ticketlab: error: ") and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()
    return err


# -- numbers: finite and in range (item 6) -----------------------------------------------------------------


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--train.gamma", "nan"], "train.gamma='nan' is not a finite number"),
    ("train", ["--train.schedule", "cyclic", "--train.cycle", "2ep", "--train.cycle-lr", "nan"],
     "train.cycle_lr='nan' is not a finite number"),
    ("train", ["--train.cycle-lr", "nan"], "train.cycle_lr='nan' is not a finite number"),
    ("train", ["--train.schedule", "piecewise", "--train.piecewise", "0:nan"], "train.piecewise entry '0:nan'"),
    ("train", ["--train.piecewise", "0:0.1,5:nan"], "train.piecewise entry '5:nan'"),  # checked whatever the schedule
    ("rst", ["--rst.lr-ft-mini", "0:nan"], "rst.lr_ft_mini entry '0:nan'"),
    ("train", ["--train.lr", "inf"], "train.lr='inf' is not a finite number"),
    ("train", ["--train.lr=-inf"], "train.lr='-inf' is not a finite number"),
    ("train", ["--train.lr", "1e400"], "train.lr='1e400' is not a finite number"),
    ("train", ["--train.weight-decay", "inf"], "train.weight_decay='inf' is not a finite number"),
    ("lottery", ["--lottery.finetune-lr", "inf"], "lottery.finetune_lr='inf' is not a finite number"),
    ("rst", ["--rst.lr-prune", "inf"], "rst.lr_prune='inf' is not a finite number"),
    ("train", ["--train.gamma", "-1"], "train.gamma=-1.0 is out of range; it must lie in (0, inf)"),
    ("train", ["--train.schedule", "piecewise", "--train.piecewise", "0:0.1,10:-0.01"], "'10:-0.01' is negative"),
    ("train", ["--train.schedule", "piecewise", "--train.piecewise=-1:0.1"], "'-1:0.1' is negative"),
    ("rst", ["--rst.lr-ft-mini", "0:-1"], "rst.lr_ft_mini entry '0:-1' is negative"),
    ("train", ["--train.cycle-lr", "-0.5"], "train.cycle_lr=-0.5 is out of range"),
    ("train", ["--data.memory-gb", "nan"], "data.memory_gb='nan' is not a finite number"),
    ("train", ["--prune.erk-power", "inf"], "prune.erk_power='inf' is not a finite number"),
    ("train", ["--model.hidden", "32,0"], "model.hidden entry=0 is out of range"),
    ("rst", ["--rst.stage-ratios", "0,nan"], "rst.stage_ratios='nan' is not a finite number"),
    ("dst", ["--dst.death-rate", "nan"], "dst.death_rate='nan' is not a finite number"),
    ("pools", ["--pools.alphas", "0.5,inf"], "pools.alphas='inf' is not a finite number"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(capsys, tmp_path, command, args, message):
    assert message in refused(capsys, tmp_path, command, *args)


@pytest.mark.parametrize("flag, what", [("--preset", "preset name"), ("--config", "file")])
def test_empty_preset_and_config_names_are_refused(capsys, tmp_path, flag, what):
    for value in ("", "  "):
        err = refused(capsys, tmp_path, "train", flag, value)
        assert f"{flag} was given an empty name; pass a {what}" in err


@pytest.mark.parametrize("suffix, text, message", [
    (".json", '{"train": {"lr": NaN}}', "train.lr=nan is not a finite number"),
    (".json", '{"train": {"weight_decay": Infinity}}', "train.weight_decay=inf is not a finite number"),
    (".toml", "[train]\nlr = inf\n", "train.lr=inf is not a finite number"),
    (".toml", "[train]\ngamma = nan\n", "train.gamma=nan is not a finite number"),
    (".toml", "[train]\nbatch_size = -3\n", "train.batch_size=-3 is out of range"),
    (".json", '[{"train": {"lr": 0.1}}]', "must hold a table of fields"),
    (".json", "3", "must hold a table of fields"),
])
def test_config_files_with_bad_numbers_or_shapes_are_refused(capsys, tmp_path, suffix, text, message):
    path = tmp_path / f"config{suffix}"
    path.write_text(text)
    assert message in refused(capsys, tmp_path, "train", "--config", str(path))


def test_the_python_api_checks_the_same_ranges():
    with pytest.raises(ConfigError, match="train.lr=nan is not a finite number"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"train.gamma=0.0 is out of range; it must lie in \(0, inf\)"):
        TrainConfig(gamma=0.0)
    with pytest.raises(ConfigError, match="seed=18446744073709551616 does not fit in 64 bits"):
        RunConfig(seed=2**64)
    assert RunConfig(seed=2**64 - 1).seed == 2**64 - 1  # the largest seed torch takes
    with pytest.raises(ConfigError, match="train.piecewise entry '0:inf'"):
        parse_piecewise("0:inf")


def test_declared_intervals():
    closed_open = Interval.parse("[0, inf)")
    closed_open.check("x", 0)
    with pytest.raises(ConfigError, match=r"x=-1 is out of range; it must lie in \[0, inf\)"):
        closed_open.check("x", -1)
    with pytest.raises(ConfigError, match=r"y=0.0 is out of range; it must lie in \(0, 1\]"):
        Interval.parse("(0, 1]").check("y", 0.0)
    with pytest.raises(ValueError, match="not an interval"):
        option(0, "help", within="0 to 1")


# -- integers, seeds and durations: ASCII digits, 64 bits (item 8) -----------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--seed", "²"], "seed must be an integer (ASCII digits); got '²'"),
    (["--seed", "٣"], "seed must be an integer (ASCII digits); got '٣'"),  # Arabic-Indic: int() would take it
    (["--data.split-seed", "1²"], "data.split_seed must be an integer"),
    (["--model.hidden", "32,²"], "model.hidden must be an integer"),
    (["--train.batch-size", "６４"], "train.batch_size must be an integer"),  # full-width digits
    (["--train.lr", "١.٥"], "train.lr must be a number (ASCII digits)"),
    (["--train.steps", "²"], "train.steps: not a duration: '²'"),
    (["--train.steps", "3²ep"], "train.steps: not a duration"),
    (["--train.eval-every", "٣it"], "train.eval_every: not a duration"),
    (["--train.steps", "9" * 5000], "train.steps: not a duration"),
    (["--train.steps", "99999999999999999999it"], "train.steps: steps must be below 2**63"),
    (["--seed", str(2**64)], "seed=18446744073709551616 does not fit in 64 bits"),
    (["--seed", "9" * 5000], "does not fit in 64 bits"),
    (["--model.init-seed", str(2**70)], "model.init_seed=1180591620717411303424 does not fit in 64 bits"),
    (["--prune.seed", str(-(2**63) - 1)], "prune.seed=-9223372036854775809 does not fit in 64 bits"),
])
def test_non_ascii_digits_and_oversized_integers_are_refused(capsys, tmp_path, args, message):
    assert message in refused(capsys, tmp_path, "train", *args)


def test_steps_parse_ascii_only():
    assert Steps.parse("12") == Steps(0, 12) and Steps.parse(" 2ep3it ") == Steps(2, 3)
    for text in ("²", "١٢it", "1²ep"):
        with pytest.raises(ConfigError, match="not a duration"):
            Steps.parse(text)


def _nested(depth, kind):
    if kind == "json":
        return '{"train": ' + "[" * depth + "]" * depth + "}"
    return "x = " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize("kind", ["json", "toml"])
@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 100_000])
def test_deeply_nested_config_files_get_one_line(capsys, tmp_path, kind, depth):
    path = tmp_path / f"deep.{kind}"
    path.write_text(_nested(depth, kind))
    with pytest.raises(ConfigError, match=f"nests tables or lists more than {MAX_NESTING} deep"):
        load_config_file(str(path))
    assert "nests tables or lists" in refused(capsys, tmp_path, "train", "--config", str(path))
    study = tmp_path / f"study_{kind}.toml"
    study.write_text(_nested(depth, "toml"))
    assert main(["sweep", str(study), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 2
    assert "nests tables or lists" in capsys.readouterr().err


def test_a_config_file_at_the_nesting_bound_still_loads(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"train": {"lr": 0.1}, "note": [[[1]]]}))
    assert load_config_file(str(path))["train"] == {"lr": 0.1}


# -- method settings checked before training (item 7) -------------------------------------------------------


def test_an_erk_power_that_overflows_fails_before_level_0_trains(capsys, tmp_path):
    runs = tmp_path / "runs"
    code = main(["lottery", "--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "2it", "--levels", "1",
                 "--prune.scope", "erk", "--prune.erk-power", "1e308", "--runs-dir", str(runs), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "ERK power 1e+308 makes the layer scores overflow or vanish" in err and "--prune.erk_power" in err
    assert not runs.exists()  # nothing trained, no run directory


@pytest.mark.parametrize("power", [1e308, 1000.0])  # scores above 1 overflow; below 1 they vanish
def test_erk_allocation_refuses_powers_it_cannot_compute(power):
    from ticketlab.sparsity.distributions import layer_densities

    shapes = {"a": (1, 2), "b": (300, 64), "c": (10, 300)}
    with pytest.raises(ConfigError, match="makes the layer scores overflow or vanish"):
        layer_densities(shapes, 0.5, "erk", power=power)
    assert layer_densities(shapes, 0.5, "erk", power=2.0)["b"] < 1.0


# -- sizes, threads and files (item 8) ---------------------------------------------------------------------

TINY = ["--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "2it", "--progress", "none"]


def run_refused(capsys, tmp_path, *args):
    """A real (not dry) run refused in one line before its run directory exists."""
    runs = tmp_path / "runs"
    code = main([*args, "--runs-dir", str(runs), "--progress", "none"])  # no "decoding ..." note
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ticketlab: error: ") and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()
    return err


def test_a_model_too_large_for_memory_is_refused_before_it_is_allocated(capsys, tmp_path, monkeypatch):
    import ticketlab.resources

    monkeypatch.setattr(ticketlab.resources, "available_memory", lambda: 8 << 30)
    err = run_refused(capsys, tmp_path, "train", *TINY, "--model.hidden", "100000000")
    assert "a model of 7,500,000,010 parameters (trained) needs about 111.8 GiB but 8.0 GiB" in err
    assert "--model.hidden" in err
    assert "needs about" in run_refused(capsys, tmp_path, "rst", *TINY, "--model.hidden", "100000000")


def test_a_batch_larger_than_the_training_split_is_refused(capsys, tmp_path):
    err = run_refused(capsys, tmp_path, "train", *TINY, "--train.batch-size", "1000000000000")
    assert "train.batch_size=1000000000000 is larger than the 1257 training examples; give at most 1257" in err
    err = run_refused(capsys, tmp_path, "rst", *TINY, "--rst.layer-ratios", "0-1:0.5", "--rst.batch-size-prune",
                      "1258")
    assert "rst.batch_size_prune=1258 is larger than the 1257 training examples" in err


def test_thread_counts_beyond_the_machine_are_refused(capsys, tmp_path):
    from ticketlab.resources import cpu_count

    for args in (["--threads", "100000", "--dry-run"], ["--threads", str(cpu_count() + 1)], ["--threads", "0"]):
        err = run_refused(capsys, tmp_path, "train", *TINY, *args)
        assert "--threads" in err
    err = run_refused(capsys, tmp_path, "train", *TINY, "--threads", "100000")
    assert f"this machine has {cpu_count()} CPUs" in err
    assert "is not an integer" in run_refused(capsys, tmp_path, "train", *TINY, "--threads", "٣")
    assert main(["sweep", "missing.toml", "--threads", "100000", "--dry-run"]) == 2
    assert "this machine has" in capsys.readouterr().err


def _idx(dims, payload=b""):
    import struct

    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


@pytest.mark.parametrize("dims, message", [
    ((65536,) * 4, "holds 0 data bytes but its header (65536, 65536, 65536, 65536) needs 18446744073709551616"),
    ((2**32 - 1,) * 3, "holds 0 data bytes"),
    ((0,) * 100, "claims 100 dimensions"),
])
def test_idx_headers_whose_dimensions_overflow_get_one_line(capsys, tmp_path, dims, message):
    from ticketlab.data.idx import IDX_FILES, read_idx
    from ticketlab.errors import DataError

    folder = tmp_path / "mnist"
    folder.mkdir()
    for role, name in IDX_FILES.items():
        (folder / name).write_bytes(_idx(dims) if role == "train_x" else _idx((3,), b"\0\1\2"))
    with pytest.raises(DataError, match="replace"):
        read_idx(folder / IDX_FILES["train_x"])
    err = run_refused(capsys, tmp_path, "train", "--data.dataset", "mnist", "--data.root", str(folder))
    assert message in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("finished")
    assert main(["train", *TINY, "--runs-dir", str(runs)]) == 0
    return next(runs.iterdir())


@pytest.fixture
def damaged(finished_run, tmp_path):
    """A copy of a finished run with one file replaced: ``damaged(name, text) -> (runs dir, run dir)``."""
    import shutil

    def make(name, text):
        run = tmp_path / "runs" / finished_run.name
        shutil.copytree(finished_run, run)
        (run / name).write_text(text)
        (run / f"{name}.sha256").unlink(missing_ok=True)  # a file of the wrong shape that no checksum catches
        return run.parent, run

    return make


def one_line_error(capsys, args):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ticketlab: error: ") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("name, text, message", [
    ("summary.json", "[1, 2]", "summary.json holds a list, not a summary (a JSON object)"),
    ("summary.json", '"done"', "summary.json holds a str, not a summary"),
    ("summary.json", '{"row": 3}', "is not a summary ticketlab wrote (no steps, density, final"),
    ("summary.json", '{"steps": 2, "density": 1, "final": {}, "final_test_accuracy": "x"}',
     "final_test_accuracy is 'x', not a number"),
    ("summary.json", '{"steps": 2, "density": 1, "final": {}, "final_test_accuracy": 0.5, "weights": "final.pt"}',
     "weights is not a list of file names"),
    ("manifest.json", "[]", "manifest.json holds a list, not a manifest"),
    ("config.json", "[1, 2]", "config.json holds a different config"),
])
def test_run_files_of_the_wrong_shape_get_one_line(capsys, damaged, finished_run, name, text, message):
    runs, run = damaged(name, text)
    err = one_line_error(capsys, ["train", *TINY, "--runs-dir", str(runs)])
    assert message in err
    assert main(["runs", "list", "--runs-dir", str(runs)]) == 0  # listed (as unreadable), no traceback
    assert run.name in capsys.readouterr().out
    if name == "summary.json":  # the advice, the same as for damaged bytes, works
        assert err.strip().endswith("; delete it and run the command that made the run again, which makes it again")
        (run / name).unlink()
        assert main(["train", *TINY, "--runs-dir", str(runs)]) == 0
        made, original = (json.loads((folder / name).read_text()) for folder in (run, finished_run))
        assert made["final"] == original["final"]  # trained again to the same result


@pytest.mark.parametrize("line", ["[1, 2]", "3", '"text"', "null", '{"loss": 1.0}'])
def test_metrics_lines_that_are_not_records_get_one_line(capsys, damaged, line):
    runs, run = damaged("metrics.jsonl", line + "\n")
    err = one_line_error(capsys, ["report", str(run), "--out", str(runs / "plots")])
    assert "metrics.jsonl line 1 is not a metrics record" in err


def test_report_plot_paths_in_missing_folders_create_nothing(capsys, finished_run, tmp_path):
    missing = tmp_path / "missing"
    for flag, value in (("--plot", missing / "sub" / "acc.png"), ("--curves", missing / "curves"),
                        ("--out", missing / "sub")):
        err = one_line_error(capsys, ["report", str(finished_run), flag, str(value)])
        assert f"{flag} " in err and "does not exist; create it first" in err
    assert not missing.exists()
    assert main(["report", str(finished_run), "--out", str(tmp_path / "plots")]) == 0  # its parent exists
    assert (tmp_path / "plots" / "accuracy_vs_density.png").is_file()
    assert "does not exist" in one_line_error(capsys, ["export", str(finished_run), "--out", str(missing / "t.st")])
    assert not missing.exists()


# -- found by tests/test_fuzz_cli.py ------------------------------------------------------------------------


def test_a_study_planning_too_many_runs_is_refused_at_once(capsys, tmp_path):
    study = tmp_path / "study.toml"
    for text in (f'command = "train"\nseeds = {2**70}\n',
                 'command = "train"\nseeds = 1000\n[grid]\n"train.lr" = [' + ", ".join(["0.1"] * 200) + "]\n"):
        study.write_text(text)
        err = one_line_error(capsys, ["sweep", str(study), "--runs-dir", str(tmp_path / "runs"), "--dry-run"])
        assert "seeds" in err or "more than 100000" in err
    assert not (tmp_path / "runs").exists()


def test_line_breaks_in_what_was_typed_stay_on_the_error_line(capsys, tmp_path):
    assert "'a\\nb'" in refused(capsys, tmp_path, "train", "--train.lr", "a\nb")
    assert "x\\ny" in refused(capsys, tmp_path, "train", "--dry-run", "x\ny")  # an unrecognized argument
    assert "\\u2028" in refused(capsys, tmp_path, "train", "--preset", "a\u2028b")


def test_an_empty_class_folder_is_an_error_not_a_class(tmp_path):
    import numpy as np
    from PIL import Image

    from ticketlab.data import DATASETS
    from ticketlab.errors import DataError

    for split in ("train", "val"):
        for name in ("ant", "bee"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / name / "0.png")
    (tmp_path / "train" / "cat" / "notes").mkdir(parents=True)  # a class folder without images
    (tmp_path / "train" / "cat" / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder\(s\) cat in .* hold no images"):
        DATASETS.get("imagefolder")(tmp_path, False)
    (tmp_path / "train" / "cat" / "notes" / "readme.txt").unlink()
    (tmp_path / "train" / "cat" / "notes").rmdir()
    (tmp_path / "train" / "cat").rmdir()
    assert DATASETS.get("imagefolder")(tmp_path, False).num_classes == 2
