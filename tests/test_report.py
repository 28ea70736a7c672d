"""`ticketlab report`: rows from run directories, averages over seeds, tables and plots."""

import csv
import io
import json
import math
import statistics
from pathlib import Path

import pytest

from ticketlab.analysis import aggregate, collect, render, report_main
from ticketlab.analysis.plots import (branch_name, density_ticks, format_percent, mode_name, output_files,
                                      plot_accuracy_vs_density, plot_training_curves)
from ticketlab.analysis.report import plots_current
from ticketlab.analysis.aggregate import AggRow
from ticketlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ticketlab.errors import TicketlabError
from ticketlab.methods.lottery import LotteryRunConfig
from ticketlab.runs import report_row

EPOCHS = (0.0, 1.0, 2.0)
# experiment A (no noise): seed -> per level (final test, test at best val); levels 0..2 at 100, 80, 64 %
A_TRUNK = {0: [(0.98, 0.975), (0.97, 0.965), (0.96, 0.955)], 1: [(0.96, 0.965), (0.95, 0.945), (0.94, 0.95)]}
A_REINIT = {0: {1: 0.90, 2: 0.85}, 1: {1: 0.88, 2: 0.80}}
B_TRUNK = {3: [(0.80, 0.82), (0.70, 0.75)]}  # experiment B: symmetric noise 20%, one seed


def write_phase(folder: Path, level: int, density: float, final: float, best: float, row=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"level": level, "density": density, "final_test_accuracy": final, "test_accuracy_at_best_val": best,
               "final": {"test": {"accuracy": final, "loss": 0.1}}, "best_val": None, "steps": 300}
    if row is not None:
        summary["row"] = row
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [{"step": 100 * i, "epoch": e, "split": split, "loss": 1.0, "accuracy": final * (i + 1) / len(EPOCHS),
              "density": density} for i, e in enumerate(EPOCHS) for split in ("val", "test")]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def write_run(runs: Path, seed: int, trunk, reinit=None, noise="none", rate=0.0, lr=0.1, unfinished=False,
              method="lottery", dataset="mnist") -> Path:
    """A run directory as the methods write it: config.json, and a summary with its report row per phase.
    The data root differs per seed: it does not change results, so it must not split replicates."""
    cls = LotteryRunConfig if method == "lottery" else RunConfig
    config = cls(method=method, seed=seed, model=ModelConfig(name="lenet_300_100"), train=TrainConfig(lr=lr),
                 data=DataConfig(dataset=dataset, noise=noise, noise_rate=rate, root=f"/data/elsewhere/{seed}"))
    run = runs / config.run_name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    if method != "lottery":
        write_phase(run, 0, 1.0, *trunk[0], row=report_row(config, variant=method, level=0, density=1.0))
        return run
    for level, (final, best) in enumerate(trunk):
        density = 0.8 ** level
        write_phase(run / f"level_{level}", level, density, final, best,
                    row=report_row(config, variant="rewind", level=level, density=density))
        if reinit and level in reinit:
            branch = run / f"level_{level}" / f"branch_reinit_{seed:04d}abcd{level}"
            write_phase(branch, level, density, reinit[level], reinit[level] - 0.01,
                        row=report_row(config, variant="rewind", level=level, density=density, branch="reinit"))
    if unfinished:
        (run / f"level_{len(trunk)}").mkdir()
        (run / f"level_{len(trunk)}" / "metrics.jsonl").write_text("")
    return run


@pytest.fixture
def runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    write_run(runs, 0, A_TRUNK[0], A_REINIT[0])
    write_run(runs, 1, A_TRUNK[1], A_REINIT[1], unfinished=True)
    write_run(runs, 3, B_TRUNK[3], noise="symmetric", rate=0.2)
    (runs / "notes").mkdir()  # not a run: ignored
    return runs


LABEL_A = "mnist lenet_300_100 rewind noise 0%"
LABEL_B = "mnist lenet_300_100 rewind noise symmetric 20%"


def test_collect_rows_grouping_and_skipped(runs):
    rows = collect([runs])
    assert len(rows) == 3 + 2 + 3 + 2 + 2
    assert [p.name for p in rows.skipped] == ["level_3"]
    a = [r for r in rows if r.label == LABEL_A]
    b = [r for r in rows if r.label == LABEL_B]
    assert len(a) == 10 and len(b) == 2
    assert len({r.experiment for r in a}) == 1 and a[0].experiment != b[0].experiment
    assert {r.seed for r in a} == {0, 1} and {r.mode for r in rows} == {"rewind"}
    assert {(r.branch, r.level) for r in a} == {("trunk", 0), ("trunk", 1), ("trunk", 2), ("reinit", 1), ("reinit", 2)}
    assert (b[0].noise, b[0].noise_rate, b[0].steps) == ("symmetric", 0.2, 300)
    seed1_level2 = next(r for r in a if r.seed == 1 and r.level == 2 and r.branch == "trunk")
    assert (seed1_level2.final_test, seed1_level2.best_val_test) == (0.94, 0.95)
    assert seed1_level2.density == 0.8 ** 2
    # a run dir given directly, twice, is read once
    a0 = next(p for p in runs.glob("lottery_*") if json.loads((p / "config.json").read_text())["seed"] == 0)
    assert len(collect([a0, str(a0), runs / ".." / runs.name / a0.name])) == 5


def test_aggregate_means_stds_and_order(runs):
    agg = aggregate(collect([runs]))
    assert [(a.label, a.branch, a.level) for a in agg] == [
        (LABEL_A, "trunk", 0), (LABEL_A, "trunk", 1), (LABEL_A, "trunk", 2),
        (LABEL_A, "reinit", 1), (LABEL_A, "reinit", 2), (LABEL_B, "trunk", 0), (LABEL_B, "trunk", 1)]
    for a in agg[:3]:
        finals = [A_TRUNK[s][a.level][0] for s in (0, 1)]
        bests = [A_TRUNK[s][a.level][1] for s in (0, 1)]
        assert (a.n, a.seeds) == (2, (0, 1))
        assert a.final_test == pytest.approx(statistics.fmean(finals), abs=1e-12)
        assert a.final_test_std == pytest.approx(statistics.stdev(finals), abs=1e-12)
        assert a.best_val_test == pytest.approx(statistics.fmean(bests), abs=1e-12)
        assert a.best_val_test_std == pytest.approx(statistics.stdev(bests), abs=1e-12)
        assert (a.density, a.density_std) == (0.8 ** a.level, 0.0)
    assert agg[0].final_test_std == pytest.approx(0.02 / math.sqrt(2), abs=1e-12)
    assert agg[4].final_test == pytest.approx(0.825) and agg[4].final_test_std == pytest.approx(0.05 / math.sqrt(2))
    assert (agg[5].n, agg[5].final_test, agg[5].final_test_std, agg[5].seeds) == (1, 0.80, 0.0, (3,))


def test_render_formats(runs):
    agg = aggregate(collect([runs]))
    text = render(agg, "terminal")
    assert text.splitlines()[0].split()[:4] == ["experiment", "level", "density", "%"]
    first = text.splitlines()[2]
    assert "100.00" in first and "97.00 ± 1.41" in first and "97.00 ± 0.71" in first and first.endswith("2")
    assert "64.00" in text.splitlines()[4]
    md = render(agg, "md").splitlines()
    assert len(md) == 2 + 7 and all(line.startswith("|") and line.endswith("|") for line in md)
    assert [c.strip() for c in md[0].strip("|").split("|")] == [
        "experiment", "level", "density %", "mode", "branch", "final test %", "test @ best val %", "n"]
    records = list(csv.DictReader(io.StringIO(render(agg, "csv"))))
    assert len(records) == 7 and records[3]["branch"] == "reinit" and records[3]["level"] == "1"
    assert float(records[0]["final_test_pct"]) == pytest.approx(97.0)
    assert float(records[0]["final_test_pct_std"]) == pytest.approx(100 * 0.02 / math.sqrt(2), abs=1e-5)
    assert float(records[2]["density_pct"]) == pytest.approx(64.0) and records[0]["seeds"] == "0,1"
    data = json.loads(render(agg, "json"))
    assert [d["n"] for d in data] == [2, 2, 2, 2, 2, 1, 1]
    assert data[6]["experiment"] == LABEL_B and data[6]["noise_rate"] == 0.2
    assert data[6]["final_test_pct"] == pytest.approx(70.0) and data[6]["final_test_pct_std"] == 0.0
    with pytest.raises(TicketlabError, match="choose one of"):
        render(agg, "html")


def test_density_and_percent_formatting():
    row = AggRow("k", "x", "trunk", 10, "rewind", "none", 0.0, "mnist", "lenet", 2, (0, 1),
                 0.8 ** 10, 0.0, 0.97854, 0.0012, None, None)
    line = render([row], "terminal").splitlines()[2]
    assert "10.74" in line and "97.85 ± 0.12" in line and line.split()[-2:] == ["-", "2"]
    assert [format_percent(d) for d in (1.0, 0.512, 0.8 ** 10, 0.055, 0.00115)] == [
        "100%", "51.2%", "10.7%", "5.5%", "0.115%"]
    densities = [0.8 ** k for k in range(21)]
    ticks = density_ticks(densities)
    assert ticks[0] == 1.0 and 2 < len(ticks) <= 9 and all(t in {round(d, 12) for d in densities} for t in ticks)
    assert density_ticks([1.0, 0.8, 0.64]) == [1.0, 0.8, 0.64]


def test_labels_unique_when_other_fields_differ(tmp_path):
    write_run(tmp_path, 0, A_TRUNK[0])
    write_run(tmp_path, 0, A_TRUNK[1], lr=0.05)
    write_run(tmp_path, 0, [(0.9, 0.91)], method="train")
    labels = {r.label for r in collect([tmp_path])}
    assert labels == {"mnist lenet_300_100 rewind (train.lr=0.1)", "mnist lenet_300_100 rewind (train.lr=0.05)",
                      "mnist lenet_300_100 train"}
    train_row = next(r for r in collect([tmp_path]) if r.mode == "train")
    assert (train_row.level, train_row.branch, train_row.final_test, train_row.density) == (0, "trunk", 0.9, 1.0)


def test_report_main_text_plots_and_errors(runs, tmp_path, capsys):
    from ticketlab.logs import show_messages

    show_messages()  # as the command line does: the notes of csv/json reach stderr
    text = report_main([str(runs)], out_dir=runs / "report")
    assert "97.00 ± 1.41" in text and "skipped 1 unfinished" in text and "mean ± std" in text
    # one data set: one accuracy figure; two experiments: training curves of each, the most levels first
    curves = ["training_curves_mnist_lenet_300_100_rewind_noise_0",
              "training_curves_mnist_lenet_300_100_rewind_noise_symmetric_20"]
    for stem in ("accuracy_vs_density", *curves):
        for suffix in (".png", ".svg"):
            assert (runs / "report" / f"{stem}{suffix}").stat().st_size > 5000
    assert sorted(p.name for p in (runs / "report").glob("*.png")) == sorted(
        f"{stem}.png" for stem in ("accuracy_vs_density", *curves))
    assert str(runs / "report" / f"{curves[1]}.svg") in text
    out = report_main([str(runs)], fmt="csv", plot=str(tmp_path / "figs" / "dd.svg"))
    assert len(list(csv.DictReader(io.StringIO(out)))) == 7  # notes went to stderr
    assert "skipped 1 unfinished" in capsys.readouterr().err
    assert output_files(tmp_path / "figs" / "dd.svg") == [tmp_path / "figs" / "dd.png", tmp_path / "figs" / "dd.svg"]
    assert all(p.exists() for p in output_files(tmp_path / "figs" / "dd"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TicketlabError, match=r"no finished runs under .*empty; run `ticketlab lottery` first") as e:
        report_main([str(tmp_path / "empty")])
    assert "\n" not in str(e.value)
    with pytest.raises(TicketlabError, match="not a directory"):
        report_main([str(tmp_path / "missing")])


def test_accuracy_vs_density_figure(runs, tmp_path):
    import matplotlib.image

    fig = plot_accuracy_vs_density(aggregate(collect([runs])), tmp_path / "acc")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    left, right = ax.get_xlim()
    assert left > 100 > 64 > right
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["100%", "80%", "64%"]
    assert ax.get_legend() is None  # outside the axes, on the figure: never over a data point
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "IMP, rewind to init, noise 0% (n=2)", "IMP, rewind to init, noise 0%: random reinit branch (n=2)",
        "IMP, rewind to init, noise symmetric 20% (n=1)"]
    assert legend.get_title().get_text().startswith("mean ± std over n seeds")
    assert ax.get_title() == "mnist lenet_300_100: final test accuracy vs density"
    assert "%" in ax.get_ylabel() and "density" in ax.get_xlabel()
    trunk, reinit = ax.containers[0], ax.containers[1]
    assert trunk.has_yerr and list(trunk.lines[0].get_ydata()) == pytest.approx([97.0, 96.0, 95.0])
    # trunk and branch drawn side by side at the same density, each within a few percent of it
    trunk_x, reinit_x = trunk.lines[0].get_xdata(), reinit.lines[0].get_xdata()
    assert list(trunk_x) == pytest.approx([100.0, 80.0, 64.0], rel=0.05)
    assert list(reinit_x) == pytest.approx([80.0, 64.0], rel=0.05)
    assert all(t < r for t, r in zip(trunk_x[1:], reinit_x)) or all(t > r for t, r in zip(trunk_x[1:], reinit_x))
    # the error measure is the std over seeds, or (asked for) its standard error; the legend says which
    def bar_height(figure):
        return [top[1] - bottom[1] for bottom, top in figure.axes[0].containers[0].lines[2][0].get_segments()]

    sem = plot_accuracy_vs_density(aggregate(collect([runs])), error="sem")
    assert bar_height(sem) == pytest.approx([h / math.sqrt(2) for h in bar_height(fig)])
    assert sem.legends[0].get_title().get_text().startswith("mean ± standard error over n seeds")
    image = matplotlib.image.imread(tmp_path / "acc.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.std() > 0.01
    assert (tmp_path / "acc.png").stat().st_size > 10_000
    assert "<svg" in (tmp_path / "acc.svg").read_text()[:2000]


def test_training_curves_figure(runs):
    fig = plot_training_curves([runs])
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # levels 0..2 of the first experiment, averaged over its two seeds
    assert [list(line.get_xdata()) for line in ax.lines] == [list(EPOCHS)] * 3
    assert list(ax.lines[2].get_ydata()) == pytest.approx([100 * 0.95 * (i + 1) / 3 for i in range(3)])
    assert len({line.get_color() for line in ax.lines}) == 3
    assert all(line.get_marker() == "o" for line in ax.lines)  # the evaluations are marked
    assert ax.get_xlabel() == "epoch" and "IMP, rewind to init, noise 0%" in fig.get_suptitle()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["level 0 (100%)", "level 1 (80%)", "level 2 (64%)"]


def test_training_curves_many_levels_use_a_colorbar(tmp_path):
    run = write_run(tmp_path, 0, [(0.9 - 0.01 * k, 0.9) for k in range(12)])
    fig = plot_training_curves(collect([run]), tmp_path / "curves.png")
    assert len(fig.axes[0].lines) == 12 and fig.axes[0].get_legend() is None
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "level"  # the colorbar
    assert [p.name for p in sorted(tmp_path.glob("curves.*"))] == ["curves.png", "curves.svg"]


def test_training_curves_average_the_seeds_of_the_first_experiment(runs, tmp_path):
    fig = plot_training_curves(collect([runs]), tmp_path / "curves")
    ax = fig.axes[0]
    assert "mean of 2 seeds" in ax.get_title() and "mnist lenet_300_100, IMP, rewind to init" in fig.get_suptitle()
    assert [line.get_label() for line in ax.lines] == ["level 0 (100%)", "level 1 (80%)", "level 2 (64%)"]
    for line, level in zip(ax.lines, range(3)):
        finals = [A_TRUNK[seed][level][0] for seed in (0, 1)]
        assert list(line.get_xdata()) == list(EPOCHS)
        assert line.get_ydata()[-1] == pytest.approx(100 * sum(finals) / 2)
        assert line.get_ydata()[0] == pytest.approx(100 * sum(finals) / 2 / len(EPOCHS))
    assert len(ax.collections) == 3  # one shaded seed range per level
    assert (tmp_path / "curves.png").exists()
    one_seed = plot_training_curves([r for r in collect([runs]) if r.seed == 3])
    assert "seed 3" in one_seed.axes[0].get_title() and not one_seed.axes[0].collections
    noisy = next(r.experiment for r in collect([runs]) if r.seed == 3)
    assert "noise symmetric 20%" in plot_training_curves(collect([runs]), experiment=noisy).get_suptitle()
    with pytest.raises(TicketlabError, match="choose one of"):
        plot_training_curves(collect([runs]), experiment="nope")


def test_one_figure_per_data_set_and_model(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, 0, A_TRUNK[0], A_REINIT[0])
    write_run(runs, 1, A_TRUNK[1])
    write_run(runs, 0, B_TRUNK[3], dataset="fashion_mnist")
    report_main([str(runs)], out_dir=tmp_path / "out")
    figures = sorted(p.name for p in (tmp_path / "out").glob("accuracy_vs_density*.png"))
    assert figures == ["accuracy_vs_density_fashion_mnist_lenet_300_100.png",
                       "accuracy_vs_density_mnist_lenet_300_100.png"]
    agg = aggregate(collect([runs]))
    with pytest.raises(TicketlabError, match="one figure per data set and model"):
        plot_accuracy_vs_density(agg)
    fashion = plot_accuracy_vs_density([a for a in agg if a.dataset == "fashion_mnist"])
    assert fashion.axes[0].get_title().startswith("fashion_mnist lenet_300_100:")
    assert len(fashion.axes[0].containers) == 1


def test_one_seed_shows_no_spread(tmp_path):
    write_run(tmp_path, 0, A_TRUNK[0], A_REINIT[0])
    agg = aggregate(collect([tmp_path]))
    text = report_main([str(tmp_path)])
    assert "±" not in text and "97.50" in text.splitlines()[2]  # (0.98 + 0.97) / 2 is not shown: one seed
    fig = plot_accuracy_vs_density(agg)
    assert not any(c.has_yerr for c in fig.axes[0].containers)
    assert fig.legends[0].get_title().get_text() == "one seed per point: no error bars"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["IMP, rewind to init (n=1)",
                                                                 "random reinit branch (n=1)"]
    # no seeds, no sideways offset: the points sit on their densities
    assert list(fig.axes[0].containers[0].lines[0].get_xdata()) == pytest.approx([100.0, 80.0, 64.0])


def test_readable_names():
    assert mode_name("rewind", "0it") == "IMP, rewind to init"
    assert mode_name("rewind", "2ep") == "IMP, rewind to epoch 2"
    assert mode_name("rewind", "500it") == "IMP, rewind to iteration 500"
    assert mode_name("lr-rewind", "0it") == "IMP, learning-rate rewinding"
    assert mode_name("rigl") == "rigl"
    assert branch_name("reinit") == "random reinit branch"
    assert branch_name("reinit (branch.seed=1)") == "random reinit branch (branch.seed=1)"


def test_training_curves_y_axis_from_the_data(runs):
    fig = plot_training_curves(collect([runs]))
    ax = fig.axes[0]
    later = [y for line in ax.lines for y in line.get_ydata()[1:]]
    low, high = ax.get_ylim()
    assert max(line.get_ydata()[0] for line in ax.lines) < low <= min(later) <= max(later) <= high
    assert high - max(later) < 0.2 * (max(later) - min(later))  # the endings use the height of the axes
    assert "epoch 0 (untrained): 31-32%, below the axis" in ax.get_title()


def test_training_curves_default_to_the_lottery_not_a_single_training(tmp_path):
    write_run(tmp_path, 0, [(0.9, 0.91)], method="train", dataset="fashion_mnist")  # first in report order
    write_run(tmp_path, 0, A_TRUNK[0])
    fig = plot_training_curves(collect([tmp_path]))
    assert len(fig.axes[0].lines) == 3 and "mnist lenet_300_100, IMP" in fig.get_suptitle()


def test_report_plots_current_with_several_figures(runs, tmp_path):
    out = tmp_path / "out"
    assert not plots_current(runs, out)
    report_main([str(runs)], out_dir=out)
    assert len(list(out.glob("*.png"))) == 3 and plots_current(runs, out)
    summary = next(runs.rglob("summary.json"))
    summary.write_text(summary.read_text())  # a result newer than the figures
    assert not plots_current(runs, out)


def test_a_redrawn_preview_keeps_an_existing_svg_current_and_makes_none(tmp_path):
    from matplotlib.figure import Figure

    from ticketlab.analysis.plots import save_figure

    stem = tmp_path / "acc"
    assert save_figure(Figure(), stem, svg=None) == [tmp_path / "acc.png"]
    assert not (tmp_path / "acc.svg").exists()
    assert save_figure(Figure(), stem) == [tmp_path / "acc.png", tmp_path / "acc.svg"]
    (tmp_path / "acc.svg").write_text("stale")
    assert save_figure(Figure(), stem, svg=None) == [tmp_path / "acc.png", tmp_path / "acc.svg"]
    assert (tmp_path / "acc.svg").read_text() != "stale"
    assert save_figure(Figure(), tmp_path / "other", svg=False) == [tmp_path / "other.png"]
