from ticketlab.train.progress import Progress


def test_progress_modes(capsys):
    lines = Progress(10, 0, "run", enabled="lines")
    assert lines.bar is None
    lines.report(5, {"test": {"loss": 0.5, "accuracy": 0.9}})
    assert "[run] step 5/10 | test acc 90.00" in capsys.readouterr().err
    bar = Progress(10, 0, "run", enabled=True)
    assert bar.bar is not None
    bar.update()
    bar.close()
    quiet = Progress(10, 0, "run", enabled=False)
    quiet.report(5, {"test": {"loss": 0.5, "accuracy": 0.9}})
    assert quiet.bar is None and "step" not in capsys.readouterr().err


def test_a_phase_names_its_place_and_the_overall_eta(capsys, monkeypatch):
    from ticketlab.status import phase
    from ticketlab.train import progress as progress_module

    now = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    with phase("level 2 of 4", 2, 5):
        lines = Progress(100, 0, "run/level_2", enabled="lines")
    now[0] = 110.0
    # 50 steps in 10 s; left: 50 of this phase and 100 for each of the 2 phases after it -> 250 / 5 per s
    lines.report(50, {"test": {"loss": 0.5, "accuracy": 0.9}})
    assert capsys.readouterr().err.strip() == \
        "[run/level_2 (level 2 of 4)] step 50/100 | test acc 90.00 | overall ETA 0:50"
    outside = Progress(100, 0, "run", enabled="lines")  # no phase: no overall ETA
    assert outside.phase is None and outside.overall_eta(50) is None


def test_status_resumed_and_notes(capsys):
    from ticketlab.status import note, output_mode

    lines = Progress(10, 0, "run/level_1", enabled="lines")
    lines.status(0, "evaluating the initial model")
    lines.resume_at(4)
    err = capsys.readouterr().err.splitlines()
    assert err == ["[run/level_1] step 0/10 | evaluating the initial model", "resuming run/level_1 from step 4 of 10"]
    quiet = Progress(10, 0, "run", enabled=False)
    quiet.status(0, "evaluating the initial model")
    quiet.resume_at(4)
    with output_mode(False):
        note("decoding cifar10")
    assert capsys.readouterr().err == ""
    bar = Progress(10, 0, "run", enabled="bar")
    note("decoding cifar10")  # written above the open bar
    bar.close()
    assert "decoding cifar10" in capsys.readouterr().err


def test_commands_say_level_k_of_n_resumed_and_already_finished(tmp_path, capsys, monkeypatch):
    import importlib

    from killing import killing
    from ticketlab.cli import main

    common = ["lottery", "--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "2ep",
              "--train.eval_every", "1ep", "--train.checkpoint_every", "1ep", "--threads", "1",
              "--progress", "lines", "--runs-dir", str(tmp_path)]
    module = importlib.import_module("ticketlab.methods.lottery")  # the package's `lottery` is the function
    killed = killing(module.Lottery, lambda out: out.name == "level_1")
    killed.kill_at = 30  # after the checkpoint at the end of epoch 1 (20 steps of 64 of the 1257 examples)
    with monkeypatch.context() as patch:
        patch.setattr(module, "Lottery", killed)
        assert main([*common, "--levels", "1"]) == 130  # interrupted
    err = capsys.readouterr().err.splitlines()
    level_0 = [line for line in err if "(level 0 of 1)" in line]
    assert level_0[0].endswith("step 0/40 | evaluating the initial model") and "val acc" in level_0[1]
    assert "overall ETA" in level_0[-1]
    assert main([*common, "--levels", "2"]) == 0
    err = capsys.readouterr().err
    assert ": level 0 already finished" in err and "from step 20 of 40" in err and "(level 2 of 2)" in err
    resumed = next(line for line in err.splitlines() if line.startswith("resuming "))
    assert resumed.endswith("/level_1 (level 1 of 2) from step 20 of 40")
    assert main([*common, "--levels", "2"]) == 0
    assert "already finished (levels 0-2)" in capsys.readouterr().err
    assert main([*common, "--levels", "2", "--progress", "none"]) == 0
    assert "already finished" not in capsys.readouterr().err


def test_a_data_set_decoding_for_its_cache_says_so_once(tmp_path, monkeypatch, capsys):
    import torch

    from ticketlab.data.cache import decoded
    from ticketlab.status import output_mode

    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "home"))
    source = tmp_path / "train.bin"
    source.write_bytes(b"\0" * 64)
    with output_mode("lines"):
        decoded("toy", [source], lambda: {"x": torch.zeros(2)})
        assert capsys.readouterr().err.startswith("decoding toy (once: later runs read the decoded copy in ")
        decoded("toy", [source], lambda: {"x": torch.zeros(2)})  # read from the cache: nothing to say
    assert capsys.readouterr().err == ""
