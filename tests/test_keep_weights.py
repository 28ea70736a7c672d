"""`--train.keep-weights final`: a finished phase keeps only ``final.pt`` (no ``start.pt``, no ``best.pt``),
with results identical to keeping everything; what needs the dropped files makes them again or refuses in
one line."""

import pytest
import torch

from ticketlab.cli import main
from ticketlab.io import load_torch, read_json

COMMON = ["--preset", "digits_mlp", "--model.hidden", "32", "--train.steps", "2ep", "--threads", "1",
          "--progress", "none"]


def _run_dir(runs):
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def _phase_files(run):
    return {p.relative_to(run).as_posix() for p in run.rglob("*.pt")}


@pytest.fixture(scope="module")
def trunks(tmp_path_factory):
    """The same two-level lottery run with every weights file kept and with final weights only, each
    with a reorder branch on level 1."""
    out = {}
    for keep in ("all", "final"):
        runs = tmp_path_factory.mktemp(keep)
        args = [*COMMON, "--levels", "2", "--train.keep-weights", keep, "--runs-dir", str(runs)]
        assert main(["lottery", *args]) == 0
        assert main(["branch", *args[:-4], "--levels", "1", "--branch", "reorder", "--train.keep-weights", keep,
                     "--runs-dir", str(runs)]) == 0
        out[keep] = (runs, args)
    return out


def test_final_only_keeps_one_weights_file_per_phase_and_the_same_results(trunks):
    full, slim = (_run_dir(trunks[k][0]) for k in ("all", "final"))
    assert full.name == slim.name  # the setting is outside the run's identity
    dropped = {f for f in _phase_files(full) if f.endswith(("/start.pt", "/best.pt"))}
    assert {"level_1/start.pt", "level_1/best.pt", "level_2/best.pt"} <= dropped
    assert _phase_files(slim) == _phase_files(full) - dropped
    for folder in [slim / f"level_{k}" for k in range(3)] + list(slim.glob("level_1/branch_reorder_*")):
        twin = full / folder.relative_to(slim)
        assert read_json(folder / "summary.json")["weights"] == ["final.pt"]
        assert read_json(twin / "summary.json")["weights"] == ["final.pt", "best.pt"]
        for name, tensor in load_torch(twin / "final.pt").items():
            assert torch.equal(load_torch(folder / "final.pt")[name], tensor), (folder, name)
        for key in ("final_test_accuracy", "best_val", "test_accuracy_at_best_val"):
            assert read_json(folder / "summary.json")[key] == read_json(twin / "summary.json")[key]


def test_a_rerun_of_a_final_only_run_trains_nothing_and_a_new_branch_remakes_the_start_weights(trunks, capsys):
    runs, args = trunks["final"]
    run = _run_dir(runs)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix in (".pt", ".json")}
    assert main(["lottery", *args]) == 0
    assert {p: p.read_bytes() for p in before} == before
    # a branch made from a level without start.pt: the start weights are made again, the same as kept ones
    assert main(["branch", *args, "--levels", "2", "--branch", "reorder"]) == 0
    full_runs, full_args = trunks["all"]
    assert main(["branch", *full_args, "--levels", "2", "--branch", "reorder"]) == 0
    (slim_branch,) = run.glob("level_2/branch_reorder_*")
    (full_branch,) = _run_dir(full_runs).glob("level_2/branch_reorder_*")
    for name, tensor in load_torch(full_branch / "final.pt").items():
        assert torch.equal(load_torch(slim_branch / "final.pt")[name], tensor), name


def test_commands_that_need_best_weights_refuse_in_one_line(trunks, tmp_path, capsys):
    runs, args = trunks["final"]
    run = _run_dir(runs)
    capsys.readouterr()
    for argv in (["export", str(run), "--checkpoint", "best", "--out", str(tmp_path / "t.safetensors")],
                 ["lmc", *args, "--levels", "1", "--lmc.checkpoint", "best"],
                 ["eval", str(run), "--checkpoint", "best", "--corruptions", "gaussian_noise"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--train.keep-weights final" in err and "checkpoint final" in err
    assert main(["export", str(run), "--checkpoint", "final", "--out", str(tmp_path / "t.safetensors")]) == 0


def test_prac_with_disagreement_refuses_final_only_before_any_work(tmp_path, capsys):
    argv = ["prac", *COMMON, "--levels", "1", "--train.keep-weights", "final", "--runs-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--prac.disagreement false" in err
    assert not any(tmp_path.iterdir())
