"""Property-based fuzzing of the command line and of config and study files (hypothesis).

Argument lists are built from the run commands' real flag names with random and hostile values; config
files from the real section and field names with hostile values, as JSON and TOML, plus raw bytes. Every
input is run through ``main`` with ``--dry-run`` (no training) and must keep the contract: exit status 0 or
2, never a traceback, an error of exactly one line, and nothing created in the runs directory.
"""

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ticketlab.cli as cli  # noqa: E402
from ticketlab.config import iter_fields  # noqa: E402
from ticketlab.method import METHODS  # noqa: E402

PARSER = cli.build_parser()
COMMANDS = METHODS.ordered()
SKIPPED = {"-h", "--help", "--runs-dir", "--dry-run"}  # the test sets these itself
FLAGS = {name: sorted({s for a in PARSER._subparsers._group_actions[0].choices[name]._actions
                       for s in a.option_strings} - SKIPPED) for name in COMMANDS}
FIELDS = {name: [dotted for dotted, _, _ in iter_fields(METHODS.get(name).config)] for name in COMMANDS}
TYPES = {form: str(tp) for name in COMMANDS for dotted, tp, _ in iter_fields(METHODS.get(name).config)
         for form in (f"--{dotted}", f"--{dotted.replace('_', '-')}")}

HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "1e400", "-1e400", "1e-320", "-1", "-0", "0", "1",
           "²", "٣", "１２", "3²", "1,²", "⁴ep", "", " ", "\t", "0:nan", "0:-1", "0:inf,1:0.1", "-1:0.1", ":", "::",
           "9" * 25, "9" * 5000, str(2**64), str(2**63), str(-(2**63) - 1), "1_000", "+5", "0x10", "1e3", "4ep3it",
           "0ep0it", "99999999999999999999ep", "true", "false", "null", "None", "[1]", "{}", "a\nb", "a\rb",
           "\u2028", "\x00", "../..", "/", "digits_mlp", "erk", "rst-iter", "mlp", "resnet20", "1,2,3", "0.5",
           "2ep", "-", "--", "--seed", "'", '"', "\\", "é", "😀"]
VALUES = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=16),
                   st.integers(-(2**70), 2**70).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
DIGITS = st.sampled_from("²³¹⁴٣۳७１𝟙0123456789")  # other Unicode digits, which int() and float() partly take
NUMBERS = st.one_of(st.lists(DIGITS, min_size=1, max_size=4).map("".join), st.sampled_from(HOSTILE[:40]),
                    st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr))
BY_TYPE = {"int": NUMBERS, "float": NUMBERS,  # values aimed at the field's type (first match of its name)
           "Steps": st.tuples(st.lists(DIGITS, min_size=1, max_size=3).map("".join),
                              st.sampled_from(["", "ep", "it", "ep1it"])).map("".join),
           "Tuple": st.lists(NUMBERS, min_size=1, max_size=3).map(",".join)}


def values_for(flag):
    kind = TYPES.get(flag, "")
    aimed = next((strategy for name, strategy in BY_TYPE.items() if name in kind), None)
    return VALUES if aimed is None else st.one_of(aimed, VALUES)


def assert_contract(argv, runs: Path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)  # an unexpected exception propagates: the test fails with its traceback
    err = err.getvalue()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ticketlab: error: "), (argv, err)
    assert not runs.exists(), argv  # a dry run writes nothing, a refused one neither


@pytest.fixture(autouse=True)
def one_parser(monkeypatch):
    """The parser built once: ``main`` builds a new one per call, which would be most of the time here."""
    monkeypatch.setattr(cli, "build_parser", lambda methods=True: PARSER)


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(COMMANDS))
    argv = [command]
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 2, 3, 5]))):  # mostly one: its error is the one shown
        numeric = [f for f in FLAGS[command] if any(kind in TYPES.get(f, "") for kind in BY_TYPE)]
        flag = draw(st.one_of(st.sampled_from(numeric), st.sampled_from(FLAGS[command])))  # numbers half the time
        value = draw(values_for(flag))
        form = draw(st.sampled_from(["pair", "pair", "equals", "bare"]))
        argv += {"pair": [flag, value], "equals": [f"{flag}={value}"], "bare": [flag]}[form]
    return argv


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@FUZZ
@given(command_lines())
def test_fuzzed_command_lines_keep_the_contract(argv):
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        assert_contract([*argv, "--runs-dir", str(runs), "--dry-run"], runs)


# -- config and study files -------------------------------------------------------------------------------

SCALARS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.booleans(),
                    st.sampled_from(HOSTILE), st.text(max_size=8), st.none())


def trees(command):
    names = sorted({part for dotted in FIELDS[command] for part in dotted.split(".")} | {"x", ""})
    keys = st.one_of(st.sampled_from(names), st.text(max_size=6))
    leaves = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
    nested = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12)
    return st.dictionaries(keys, nested, max_size=5)


def deep_text(depth, kind):
    """Tables nested ``depth`` deep, written out directly (the writers here recurse)."""
    if kind == "json":
        return '{"train": ' * depth + "1" + "}" * depth
    return "train = " + "{a = " * (depth - 1) + "1" + "}" * (depth - 1) + "\n"


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps("None" if value is None else value, ensure_ascii=False)


def file_text(tree, kind):
    if kind == "json":
        return json.dumps(tree, ensure_ascii=False)
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in tree.items())


@st.composite
def config_files(draw):
    command = draw(st.sampled_from(COMMANDS))
    kind = draw(st.sampled_from(["json", "toml"]))
    shape = draw(st.sampled_from(["tree", "tree", "tree", "deep", "bytes", "scalar"]))
    if shape == "tree":
        content = file_text(draw(trees(command)), kind).encode()
    elif shape == "deep":
        content = deep_text(draw(st.integers(10, 3000)), kind).encode()
    elif shape == "scalar":
        content = json.dumps(draw(st.one_of(SCALARS, st.lists(SCALARS)))).encode()
    else:
        content = draw(st.binary(max_size=64))
    return command, kind, content


@FUZZ
@given(config_files())
def test_fuzzed_config_files_keep_the_contract(case):
    command, kind, content = case
    with tempfile.TemporaryDirectory() as tmp:
        path, runs = Path(tmp) / f"config.{kind}", Path(tmp) / "runs"
        path.write_bytes(content)
        assert_contract([command, "--config", str(path), "--runs-dir", str(runs), "--dry-run"], runs)


STUDY_KEYS = ["name", "command", "variant", "preset", "seeds", "fields", "options", "grid", "method"]


@st.composite
def study_files(draw):
    tree = {}
    for key in draw(st.lists(st.sampled_from(STUDY_KEYS), max_size=6, unique=True)):
        if key == "command":
            tree[key] = draw(st.sampled_from([*COMMANDS, "x", ""]))
        elif key == "preset":
            tree[key] = draw(st.sampled_from(["digits_mlp", "", "nope"]))
        elif key in ("fields", "grid", "options"):
            tree[key] = draw(trees("train"))
        elif key == "method":
            tree[key] = draw(st.lists(trees("lottery"), max_size=2))
        else:
            tree[key] = draw(SCALARS)
    return file_text(tree, "toml")


@settings(FUZZ, max_examples=100)
@given(study_files())
def test_fuzzed_study_files_keep_the_contract(text):
    with tempfile.TemporaryDirectory() as tmp:
        path, runs = Path(tmp) / "study.toml", Path(tmp) / "runs"
        path.write_text(text)
        assert_contract(["sweep", str(path), "--runs-dir", str(runs), "--dry-run"], runs)
