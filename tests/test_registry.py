"""A registry whose built-ins load lazily: a user's entry meets the built-in names when it is registered,
and a built-in import that fails is tried again instead of leaving the registry without them."""

import sys
import textwrap
import types

import pytest

from ticketlab.registry import Registry

BUILTINS = """
import registry_home_for_test as home
if home.FAIL:
    raise ImportError("a missing dependency")
home.REG.register("built-in a", name="a")
home.REG.register("built-in b", name="b")
"""


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry whose built-ins come from a module that fails while ``home.FAIL`` is set."""
    (tmp_path / "registry_builtins_for_test.py").write_text(textwrap.dedent(BUILTINS))
    monkeypatch.syspath_prepend(str(tmp_path))
    home = types.SimpleNamespace(REG=Registry("thing", builtins="registry_builtins_for_test"), FAIL=False)
    monkeypatch.setitem(sys.modules, "registry_home_for_test", home)
    monkeypatch.delitem(sys.modules, "registry_builtins_for_test", raising=False)
    yield home
    sys.modules.pop("registry_builtins_for_test", None)


def test_a_user_entry_with_a_built_in_name_is_refused_or_replaces_it(registry):
    with pytest.raises(ValueError, match="thing 'a' is already registered; pass replace=True"):
        registry.REG.register("mine", name="a")  # before any lookup: the built-ins load first
    registry.REG.register("mine", name="a", replace=True)
    assert registry.REG.get("a") == "mine" and registry.REG.get("b") == "built-in b"


def test_a_failed_built_in_import_is_tried_again(registry):
    registry.FAIL = True
    with pytest.raises(ImportError, match="a missing dependency"):
        registry.REG.get("a")
    registry.FAIL = False
    assert registry.REG.names() == ["a", "b"]
