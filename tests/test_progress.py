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
