"""Help and argument errors of every command: `--help` works alone and describes every flag (with the
choices of fields that have fixed ones), `--version`, close-match hints, names and config files checked
before any work."""

import argparse
import json
import re
import subprocess
import sys

import pytest

from ticketlab.cli import TOOL_COMMANDS, build_parser, choices_of, main
from ticketlab.config import iter_fields
from ticketlab.method import METHODS, RESERVED_COMMANDS
from ticketlab.method_help import METHOD_HELP
from ticketlab.version import __version__


def subcommands():
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices


COMMANDS = sorted(subcommands())


def test_every_registered_method_and_cli_command_is_a_command():
    assert set(METHODS) <= set(COMMANDS) and set(RESERVED_COMMANDS) == set(TOOL_COMMANDS) <= set(COMMANDS)


def test_the_builtin_help_table_matches_the_registry():
    """`ticketlab --help` lists the built-in methods from a table (no method imports); it must name every
    built-in method, in the registry's order, with the line it registers."""
    builtin = [n for n in METHODS.ordered() if METHODS.get(n).run.__module__.startswith("ticketlab.methods")]
    assert list(METHOD_HELP) == builtin
    assert METHOD_HELP == {n: METHODS.get(n).help for n in builtin}


def _help_lines(out: str):
    """The option rows of a help text: flag (and metavar) followed by its description."""
    return [line for line in out.splitlines() if re.match(r"\s+-", line)]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_exits_0_and_describes_every_flag(command, capsys):
    code = main([command, "--help"])
    out = capsys.readouterr().out
    assert code == 0, out
    parser = subcommands()[command]
    lines = _help_lines(out)
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help text"
        flag = action.option_strings[0]
        (line, *_) = [ln for ln in lines if re.search(rf"(^|[\s,]){re.escape(flag)}([\s,]|$)", ln)] or [None]
        assert line is not None, f"{command} --help does not show {flag}"
        assert "CFG:" not in line and "BR:" not in line and "LITERAL" not in line and "OPTIONAL" not in line, line
    for action in parser._actions:  # positionals: described, with their choices
        if not action.option_strings and action.dest != "command":
            assert action.help, f"{command} {action.dest} has no help text"
    assert "CFG:" not in out and "OPTIONAL" not in out and "LITERAL" not in out


@pytest.mark.parametrize("command", sorted(METHODS))
def test_run_command_help_lists_the_choices_of_every_fixed_choice_field(command, capsys):
    assert main([command, "--help"]) == 0
    lines = {line.split()[0]: line for line in _help_lines(capsys.readouterr().out)}
    method = METHODS.get(command)
    for dotted, tp, _ in iter_fields(method.config):
        for choice in [c for c in choices_of(tp) if c]:
            assert choice in lines[f"--{dotted}"].split("one of:")[-1], (dotted, choice)
    for flag in [f for f in method.flags if f.field]:
        tp = {d: t for d, t, _ in iter_fields(method.config)}[flag.field]
        assert all(c in lines[flag.name] for c in choices_of(tp) if c), flag.name


def test_branch_help_needs_no_levels_but_a_run_does(tmp_path, capsys):
    assert main(["branch", "--help"]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.strip().startswith("--branch NAME")]
    assert "reorder" in row and "(same as --branch.name)" in row
    assert main(["branch", "--preset", "digits_mlp", "--runs-dir", str(tmp_path)]) == 2
    assert "needs --levels" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ticketlab {__version__}"


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\b", out, re.M), command


def test_the_light_top_level_parser_says_what_the_full_one_says():
    assert build_parser(methods=False).format_help() == build_parser().format_help()


def test_top_level_help_and_version_do_not_import_torch():
    """`ticketlab --help` and `--version` answer from the command table: no method module, no torch."""
    code = ("import sys; from ticketlab.cli import main; codes = [main(['--help']), main(['--version'])]; "
            "assert codes == [0, 0], codes; print(sorted(m for m in sys.modules if m == 'torch' "
            "or m.startswith('ticketlab.methods')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "lottery" in result.stdout and f"ticketlab {__version__}" in result.stdout


def test_a_command_still_finds_the_builtin_methods_and_presets(capsys):
    """The registries import the built-in methods on their first lookup (`import ticketlab` does not)."""
    code = ("import sys, ticketlab; assert 'torch' not in sys.modules; from ticketlab.presets import get_preset; "
            "print(type(get_preset('mnist1d_cnn_rst')).command); from ticketlab.method import METHODS; "
            "print(sorted(METHODS) == sorted(%r)); print(ticketlab.lottery.__module__, ticketlab.sparsity.Mask)"
            % list(METHOD_HELP))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["rst", "True"] and "ticketlab.methods.lottery" in result.stdout


def test_every_public_name_resolves():
    import ticketlab

    for name in ticketlab.__all__:
        assert getattr(ticketlab, name) is not None, name
    with pytest.raises(AttributeError):
        ticketlab.no_such_name


@pytest.mark.parametrize("args, hint", [
    (["--lr", "0.1"], "did you mean --train.lr?"),
    (["--batch-size", "64"], "did you mean --train.batch_size?"),
    (["--train.lrr", "0.1"], "did you mean --train.lr?"),
    (["--data.val-sise", "5"], "did you mean --data.val-size?"),
])
def test_unknown_flag_suggests_the_field(args, hint, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("field, value, hint", [
    ("--model.name", "resnet21", "unknown model 'resnet21' (did you mean"),
    ("--data.dataset", "cifar11", "unknown dataset 'cifar11' (did you mean cifar10"),
])
def test_dry_run_refuses_unknown_model_and_data_names(field, value, hint, tmp_path, capsys):
    assert main(["lottery", field, value, "--dry-run", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_config_files_are_read_by_extension(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"lr": 0.25}}))
    (tmp_path / "c.toml").write_text("[train]\nlr = 0.125\n")
    (tmp_path / "c.yaml").write_text("train:\n  lr: 0.5\n")
    for name, lr in (("c.json", 0.25), ("c.toml", 0.125)):
        assert main(["train", "--config", str(tmp_path / name), "--dry-run", "--runs-dir", str(tmp_path)]) == 0
        assert json.loads(capsys.readouterr().out.split("\nrun directory")[0])["train"]["lr"] == lr
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "c.yaml is neither .toml nor .json" in err and len(err.strip().splitlines()) == 1
