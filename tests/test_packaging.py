"""What a `pip install ticketlab[...]` user meets: TOML configs without `tomllib` (Python 3.10 reads them
through `tomli`), one-line errors for missing optional packages naming their extra, and a README that
names only commands that ship."""

import ast
import re
import sys
from pathlib import Path

import pytest

import ticketlab
from ticketlab.errors import MissingDependencyError, TicketlabError
from ticketlab.extras import OPTIONAL, require
from ticketlab.fields import load_config_file, toml_module

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(ticketlab.__file__).parent


def _pyproject():
    return toml_module().loads((REPO / "pyproject.toml").read_text())


def _hide(monkeypatch, name):
    """Make ``name`` and its submodules unimportable, as if the package were not installed."""
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, name, None)


def test_toml_config_reads_without_tomllib_through_tomli(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib: the reader falls back to tomli (same API), declared for < 3.11."""
    import tomllib as real

    try:
        import tomli as stand_in
    except ImportError:
        stand_in = real  # tomli is tomllib's origin: the same loads(); stands in where tomli is not installed
    _hide(monkeypatch, "tomllib")
    monkeypatch.setitem(sys.modules, "tomli", stand_in)
    assert toml_module() is stand_in
    path = tmp_path / "c.toml"
    path.write_text('[train]\nlr = 0.05\nsteps = "2ep"\n')
    assert load_config_file(str(path)) == {"train": {"lr": 0.05, "steps": "2ep"}}
    _hide(monkeypatch, "tomli")
    with pytest.raises(ImportError):
        toml_module()


def test_pyproject_declares_tomli_for_python_3_10():
    project = _pyproject()["project"]
    assert project["requires-python"] == ">=3.10"
    assert 'tomli; python_version < "3.11"' in project["dependencies"]


def test_license_file_is_the_declared_mit_licence():
    assert _pyproject()["project"]["license"] == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the ticketlab authors" in text


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_a_missing_optional_package_names_its_extra(name, monkeypatch):
    package, extra = OPTIONAL[name]
    assert package in _pyproject()["project"]["optional-dependencies"][extra]
    _hide(monkeypatch, name)
    with pytest.raises(MissingDependencyError) as caught:
        require(f"{name}.sub", "doing this")
    message = str(caught.value)
    assert message == (f"doing this needs the '{extra}' extra ({package}): pip install ticketlab[{extra}] "
                       f"(or pip install {package})")
    assert isinstance(caught.value, TicketlabError) and isinstance(caught.value, ImportError)


def test_a_broken_optional_package_is_not_reported_as_missing(tmp_path, monkeypatch):
    """An installed package that fails on an import of its own is a real error, not a missing extra."""
    (tmp_path / "brokenextra").mkdir()
    (tmp_path / "brokenextra" / "__init__.py").write_text("import a_module_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(OPTIONAL, "brokenextra", ("brokenextra", "data"))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("brokenextra", "x")
    assert caught.type is ModuleNotFoundError and caught.value.name == "a_module_nobody_installed"


def test_mask_safetensors_without_the_io_extra_is_one_line(tmp_path, monkeypatch):
    import torch

    from ticketlab.sparsity import Mask

    mask = Mask({"w": torch.ones(3, dtype=torch.bool)})
    mask.save(tmp_path / "m.safetensors")
    _hide(monkeypatch, "safetensors")
    with pytest.raises(MissingDependencyError, match=r"^writing a \.safetensors mask needs the 'io' extra "
                                                     r"\(safetensors\): pip install ticketlab\[io\]"):
        mask.save(tmp_path / "n.safetensors")
    with pytest.raises(MissingDependencyError, match="reading a .safetensors mask needs the 'io' extra"):
        Mask.load(tmp_path / "m.safetensors")
    assert not (tmp_path / "n.safetensors").exists()


def test_every_optional_import_goes_through_require():
    """A plain `import PIL` anywhere would give a bare ModuleNotFoundError to a user without the extra."""
    direct = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "extras.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            direct += [f"{path.relative_to(PACKAGE)}:{node.lineno} {n}" for n in names if n.split(".")[0] in OPTIONAL]
    assert direct == []


def test_the_readme_names_only_commands_that_ship():
    from ticketlab.cli import TOOL_COMMANDS
    from ticketlab.method import METHODS

    readme = (REPO / "README.md").read_text()
    sections = readme.split("\n## ")
    shipped = "\n".join(s for s in sections if not s.startswith("Adding a method"))  # its example is `toy`
    commands = set(METHODS) | set(TOOL_COMMANDS)
    named = set(re.findall(r"`ticketlab ([a-z][\w-]*)", shipped))
    assert named - commands == set(), "the README names commands that do not exist"
    intro = readme.split("\n## ")[0]
    assert set(METHODS) <= set(re.findall(r"`(?:ticketlab )?(\w+)`", intro)), "the introduction misses a method"


def test_the_readme_install_section_names_every_extra():
    readme = (REPO / "README.md").read_text()
    install = readme.split("\n## Install")[1].split("\n## ")[0]
    assert "pip install ticketlab" in install and "download.pytorch.org/whl/cpu" in install
    for extra in _pyproject()["project"]["optional-dependencies"]:
        if extra != "dev":
            assert f"ticketlab[{extra}]" in install, extra
