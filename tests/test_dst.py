"""Dynamic sparse training: the topology update's exact counts and choices, the schedules, the variants in
training, resume after an update, and the command."""

import json
import math

import pytest
import torch

from ticketlab.cli import main
from ticketlab.config import convert, merge
from ticketlab.io import load_torch
from ticketlab.methods.dst import DSTRun, DSTRunConfig
from ticketlab.methods.dst.callback import RigL
from ticketlab.methods.dst.schedules import DeathRate, GradualDensity, UpdateSteps
from ticketlab.methods.dst.topology import drop_and_grow, drop_count, prune_to
from ticketlab.presets import get_preset
from ticketlab.sparsity import Mask
from ticketlab.train import Callback, read_metrics
from experiments import load_for, make_experiment
from killing import killing

BASE = merge(convert(get_preset("digits_mlp"), DSTRunConfig), {
    "method": "rigl", "model": {"hidden": "32,32"}, "prune": {"scope": "erk"},
    "train": {"steps": "4ep", "eval_every": "2ep", "checkpoint_every": "10it"},
    "dst": {"init_density": 0.2, "update_every": "10it"}})


@pytest.fixture(scope="module")
def digits():
    return load_for(BASE)


def make(config, data, path, cls=DSTRun):
    return make_experiment(cls, config, data, path)


def cfg(variant="rigl", **dst):
    return merge(BASE, {"method": variant, "dst": dst})


# -- one layer's update --------------------------------------------------------------------------------


def brute_force_update(keep, weight, score, rate):
    """The specification, element by element: drop the r active of smallest |w| (higher index first among
    equals), grow r of the then-inactive by largest score (lower index first among equals)."""
    flat_keep, w, s = keep.flatten().tolist(), weight.flatten().abs().tolist(), score.flatten().tolist()
    active = [i for i, k in enumerate(flat_keep) if k]
    r = math.ceil(round(rate * len(active), 9))
    dropped = sorted(active, key=lambda i: (w[i], -i))[:r]
    survivors = set(active) - set(dropped)
    candidates = [i for i in range(len(flat_keep)) if i not in survivors]
    grown = sorted(candidates, key=lambda i: (-s[i], i))[:r]
    out = torch.zeros(len(flat_keep), dtype=torch.bool)
    out[list(survivors | set(grown))] = True
    return out.view_as(keep)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 1.0])
def test_rigl_update_grows_exactly_the_inactive_positions_of_largest_gradient(seed, rate):
    g = torch.Generator().manual_seed(seed)
    shape = (7, 9) if seed % 2 else (5, 3, 2, 2)
    keep = torch.rand(shape, generator=g) < 0.3
    weight = torch.randn(shape, generator=g)
    grad = torch.randn(shape, generator=g).abs()
    if seed >= 3:  # ties: equal magnitudes and many zero gradients (dead units)
        weight = torch.round(weight * 2) / 2
        grad = torch.where(torch.rand(shape, generator=g) < 0.5, torch.zeros_like(grad), torch.round(grad))
    new, moved = drop_and_grow(keep, weight, grad, rate)
    assert torch.equal(new, brute_force_update(keep, weight, grad, rate))
    assert int(new.sum()) == int(keep.sum()) and moved == int((new != keep).sum())


def test_drop_counts_and_dense_layers():
    assert drop_count(0.3, 10) == 3 and drop_count(0.31, 10) == 4 and drop_count(0.3, 0) == 0
    assert drop_count(0.07, 100) == 7  # 0.07 * 100 = 7.000000000000001
    dense = torch.ones(4, 4, dtype=torch.bool)
    assert drop_and_grow(dense, torch.randn(4, 4), torch.rand(4, 4), 0.5) == (dense, 0)


def test_set_grows_uniformly_and_reproducibly():
    """Chi-square over many updates of one layer whose dropped weights are fixed: every candidate position
    (inactive, or just dropped) must be grown equally often."""
    from ticketlab import seeds

    n, keep = 20, torch.zeros(20, dtype=torch.bool)
    keep[:5] = True
    weight = torch.arange(1.0, 21.0)  # the two smallest active weights (positions 0, 1) are dropped
    counts = torch.zeros(n)
    draws = 3000
    for step in range(draws):
        score = torch.rand(n, generator=seeds.generator(7, "set-grow:w", step))
        new, _ = drop_and_grow(keep, weight, score, 0.4)
        assert new[2:5].all() and int(new.sum()) == 5
        counts += (new & ~torch.tensor([False, False, True, True, True] + [False] * 15)).float()
    candidates = [0, 1] + list(range(5, 20))
    expected = draws * 2 / len(candidates)
    chi2 = float(sum((counts[i] - expected) ** 2 / expected for i in candidates))
    assert chi2 < 39.25  # the 0.999 quantile of chi-square with 16 degrees of freedom
    assert counts[2:5].sum() == 0
    again = torch.rand(n, generator=seeds.generator(7, "set-grow:w", 11))
    assert torch.equal(again, torch.rand(n, generator=seeds.generator(7, "set-grow:w", 11)))


# -- schedules --------------------------------------------------------------------------------------------


def test_update_steps_and_death_rate():
    steps = UpdateSteps(every=10, total=45, stop=30)
    assert [s for s in range(50) if s in steps] == [10, 20, 30] and steps.count() == 3
    assert [s for s in range(50) if s in UpdateSteps(10, 40)] == [10, 20, 30]  # never at the last step
    cosine = DeathRate(0.5, 100, "cosine", 0.005)
    assert cosine(0) == 0.5 and cosine(50) == pytest.approx(0.2525) and cosine(100) == pytest.approx(0.005)
    assert DeathRate(0.3, 100, "constant")(77) == 0.3


def test_gradual_density_reaches_the_final_density_exactly_or_as_the_reference_does():
    exact = GradualDensity(0.5, 0.05, every=10, start=0, end=100)
    densities = {s: exact.density_at(s) for s in range(0, 130, 10)}
    assert densities[0] is None and densities[110] is None and densities[100] == 0.05
    for s in range(10, 101, 10):
        i = s // 10
        assert densities[s] == pytest.approx(0.05 + 0.45 * (1 - i / 10) ** 3)
    assert exact.kept(1000, 0.05) == 50
    reference = GradualDensity(0.5, 0.05, every=10, start=0, end=100, reference=True)
    assert reference.density_at(0) == 0.5 and reference.density_at(100) is None
    assert reference.density_at(90) == pytest.approx(0.05 + 0.45 / 1000)
    assert reference.kept(1000, reference.density_at(90)) == int(1000 * (0.05 + 0.45 / 1000)) - 1 == 49


def test_prune_to_is_nested_global_or_layerwise_with_the_classifier_rule():
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(50, 20, generator=g) < 0.6, "b": torch.ones(10, 50, dtype=torch.bool)}
    weights = {k: torch.randn(m.shape, generator=g) for k, m in masks.items()}
    kept = GradualDensity(1, 0.1, 1, 0, 1).kept
    out = prune_to(masks, weights, kept, 0.3, "global")
    assert sum(int(m.sum()) for m in out.values()) == round(0.3 * 1500)
    assert all(not (out[k] & ~masks[k]).any() for k in masks)  # nothing regrows
    scores = torch.cat([weights[k].abs().masked_fill(~masks[k], -1).flatten() for k in masks])
    threshold = scores.sort(descending=True).values[round(0.3 * 1500) - 1]
    assert all(bool((weights[k].abs()[out[k]] >= threshold).all()) for k in masks)
    layer = prune_to(masks, weights, kept, 0.1, "layer", output="b")
    assert int(layer["b"].sum()) == 0.2 * 500  # the classifier held at 0.2 ...
    assert int(layer["a"].sum()) == round((0.1 * 1500 - 0.2 * 500) / 1000 * 1000)  # ... the rest pays for it


# -- in training ----------------------------------------------------------------------------------------


class Checks(Callback):
    """After the DST callback's after_step: counts, regrown weights at 0 with zero momentum."""

    def __init__(self):
        self.before, self.seen = None, []

    def after_backward(self, state):
        self.before = {k: v.clone() for k, v in state.trainer.enforcer.mask.items()}

    def after_step(self, state):
        mask, params = state.trainer.enforcer.mask, dict(state.model.named_parameters())
        for name, keep in mask.items():
            grown = keep & ~self.before[name]
            if grown.any():
                momentum = state.optimizer.state[params[name]]["momentum_buffer"]
                self.seen.append((state.step, name, int(keep.sum()) == int(self.before[name].sum()),
                                  bool((params[name][grown] == 0).all()), bool((momentum[grown] == 0).all())))


@pytest.mark.parametrize("variant", ["rigl", "set"])
def test_every_update_keeps_each_layers_count_and_starts_grown_weights_at_zero(digits, tmp_path, variant):
    run = make(cfg(variant), digits, tmp_path)
    checks = Checks()
    run.train_phase(tmp_path, run.fresh_initial_weights, run.initial_mask(), run.config.train,
                    order_seed=1, extra={}, callbacks=[run.callback(), checks])
    steps = sorted({s for s, *_ in checks.seen})
    assert steps == list(range(10, 4 * run.ipe, 10))
    assert all(same and zero_w and zero_m for _, _, same, zero_w, zero_m in checks.seen)


def test_the_variants_train_as_specified(digits, tmp_path):
    static = make(cfg("static"), digits, tmp_path / "static").run()
    rigl = make(cfg("rigl"), digits, tmp_path / "rigl").run()
    granet_config = cfg("granet", init_density=0.5, final_density=0.1, prune_end="2ep")
    granet = make(granet_config, digits, tmp_path / "granet").run()
    gmp = make(cfg("gmp", final_density=0.1, prune_end="2ep"), digits, tmp_path / "gmp").run()
    assert static["topology_updates"] == 0 and static["explored"] == pytest.approx(static["density"])
    assert rigl["topology_updates"] == (4 * 20 - 1) // 10 and rigl["explored"] > 1.5 * rigl["density"]
    assert static["density"] == rigl["density"] == pytest.approx(0.2, abs=0.002)
    for summary, path in ((granet, tmp_path / "granet"), (gmp, tmp_path / "gmp")):
        total = sum(Mask.load(path / "mask_init.pt")[k].numel() for k in Mask.load(path / "mask_init.pt"))
        assert summary["density"] * total == round(0.1 * total)  # exactly the final density
        records = [r for r in read_metrics(path / "metrics.jsonl") if r["split"] == "mask"]
        schedule = make(cfg(summary["row"]["variant"], init_density=0.5 if path.name == "granet" else 0.2,
                            final_density=0.1, prune_end="2ep"), digits, path).gradual()
        for r in records[1:]:
            target = schedule.density_at(r["step"])
            if target is not None:
                assert sum(r["kept"].values()) == schedule.kept(total, target), r["step"]
    assert gmp["init_density"] == 1.0
    assert [r["step"] for r in read_metrics(tmp_path / "gmp" / "metrics.jsonl") if r["split"] == "mask"] == \
        [0] + list(range(10, 41, 10)) + [80]  # gmp changes the mask only inside its window; then the end


_Killed = killing(DSTRun, lambda out: True)


@pytest.mark.parametrize("variant", ["rigl", "set", "granet"])
def test_a_run_killed_right_after_a_topology_update_resumes_bit_identical(digits, tmp_path, variant):
    config = cfg(variant, **({"init_density": 0.5, "final_density": 0.1, "prune_end": "2ep"} if variant == "granet"
                             else {}))
    make(config, digits, tmp_path / "a").run()
    killed = make(config, digits, tmp_path / "b", _Killed)
    killed.kill_at = 31  # the update and the checkpoint at step 30 are written, then the kill
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert load_torch(tmp_path / "b" / "checkpoint.pt")["step"] == 30
    make(config, digits, tmp_path / "b").run()
    a, b = (load_torch(tmp_path / r / "final.pt") for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metrics(tmp_path / "a" / "metrics.jsonl") == read_metrics(tmp_path / "b" / "metrics.jsonl")
    masks = sorted(p.name for p in (tmp_path / "a" / "masks").glob("*.pt"))
    assert masks == sorted(p.name for p in (tmp_path / "b" / "masks").glob("*.pt")) and len(masks) > 5
    for name in masks:
        assert Mask.from_packed(load_torch(tmp_path / "a" / "masks" / name)) == \
            Mask.from_packed(load_torch(tmp_path / "b" / "masks" / name))


def test_saved_masks_are_the_logged_ones(digits, tmp_path):
    run = make(cfg("rigl"), digits, tmp_path)
    run.run()
    records = {r["step"]: r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "mask"}
    assert max(records) == 4 * run.ipe and not (tmp_path / "masks" / f"step_{4 * run.ipe:07d}.pt").exists()
    records.pop(4 * run.ipe)  # the end's record: the last update's mask, not saved again
    for step, record in records.items():
        mask = Mask.from_packed(load_torch(tmp_path / "masks" / f"step_{step:07d}.pt"))
        assert mask.digest() == record["digest"] and {k: int(v.sum()) for k, v in mask.items()} == record["kept"]


# -- the command ----------------------------------------------------------------------------------------


def test_the_command_report_and_bad_settings(tmp_path, capsys):
    common = ["--preset", "digits_mlp", "--model.hidden", "32", "--train.steps", "2ep", "--prune.scope", "erk",
              "--dst.init_density", "0.2", "--dst.update_every", "10it", "--progress", "none",
              "--runs-dir", str(tmp_path)]
    assert main(["dst", *common]) == 0 and main(["dst", *common, "--variant", "static"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--format", "json", "--no-plots"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["mode"] for r in records) == ["rigl", "static"]
    assert all(r["density_pct"] == pytest.approx(20.0, abs=0.3) for r in records)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "figs")]) == 0
    assert "mask_dynamics.png" in capsys.readouterr().out
    from ticketlab.analysis import collect
    from ticketlab.analysis.plots import plot_mask_dynamics

    fig = plot_mask_dynamics(collect([tmp_path]))
    density, explored = fig.axes
    lines = {line.get_label().split(" (")[0]: line for line in explored.lines}
    assert set(lines) == {"digits mlp rigl", "digits mlp static"}
    static = next(r for r in records if r["mode"] == "static")
    assert list(lines["digits mlp static"].get_ydata()) == pytest.approx([static["density_pct"]] * 2)  # start, end
    assert lines["digits mlp rigl"].get_ydata()[-1] > lines["digits mlp rigl"].get_ydata()[0]
    assert all(y == pytest.approx(20.0, abs=0.3) for line in density.lines for y in line.get_ydata())
    for args, message in ((["--variant", "granet"], "set --dst.final_density below it"),
                          (["--variant", "gmp", "--dst.final_density", "0.1", "--dst.prune_end", "9ep"],
                           "holds no update step"),
                          (["--prune.density", "0.1"], "--dst.init_density"),
                          (["--dst.final_density", "0.1"], "applies to granet and gmp"),
                          (["--dst.death_rate", "1.5"], "dst.death_rate=1.5 is out of range"),
                          (["--dst.update_every", "2ep"], "would never update its mask"),
                          (["--lottery.rewind", "3it"], "is a field of `ticketlab lottery`")):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(["dst", *common, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_rigl_records_dense_gradients_only_for_update_steps(digits, tmp_path):
    run = make(cfg("rigl"), digits, tmp_path)
    cb = run.callback()
    assert isinstance(cb, RigL) and cb.growth == "gradient"
    seen = []

    class Spy(Callback):
        def after_step(self, state):
            seen.append(cb.grads is not None)

    run.train_phase(tmp_path, run.fresh_initial_weights, run.initial_mask(), run.config.train, order_seed=1,
                    extra={}, callbacks=[Spy(), cb])  # the spy runs before the update clears them
    assert [i + 1 for i, held in enumerate(seen) if held] == list(range(10, 4 * run.ipe, 10))


def test_granet_drops_and_grows_only_from_where_its_pruning_starts(digits, tmp_path):
    config = cfg("granet", init_density=0.5, final_density=0.1, prune_start="1ep", prune_end="3ep")
    run = make(config, digits, tmp_path)
    run.run()
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "mask"]
    assert [r["step"] for r in records if 0 < r["step"] < run.ipe] == []  # no update before prune_start
    moving = [r for r in records if r["moved"]]
    assert moving and min(r["step"] for r in moving) >= run.ipe
