"""The steady C heap a run command sets, and the environment's say over it."""

import ctypes
import subprocess
import sys

import pytest

from ticketlab import heap
from ticketlab.cli import main


def glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


def test_a_glibc_tunable_in_the_environment_leaves_the_heap_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(ctypes, "CDLL", lambda name: calls.append(name))
    for name in heap.TUNABLES:
        monkeypatch.setenv(name, "131072")
        assert heap.steady_heap() is False
        monkeypatch.delenv(name)
    assert calls == []  # mallopt never reached


@pytest.mark.skipif(not glibc(), reason="mallopt is glibc's")
def test_the_thresholds_are_set_in_a_process_of_its_own():
    code = "from ticketlab import heap; print(heap.steady_heap())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": ""}).stdout.strip()
    assert out == "True"


def test_a_run_command_sets_the_steady_heap(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(heap, "steady_heap", lambda: calls.append(True) or True)
    assert main(["train", "--preset", "digits_mlp", "--model.hidden", "8", "--train.steps", "1it",
                 "--runs-dir", str(tmp_path), "--progress", "none"]) == 0
    assert calls == [True]
