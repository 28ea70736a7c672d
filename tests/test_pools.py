"""Lottery Pools, linear mode connectivity and corrupted-data scoring on a finished lottery trunk."""

import json

import pytest
import torch

from ticketlab.analysis import collect
from ticketlab.analysis.robustness import parse_severities
from ticketlab.cli import main
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, read_json
from ticketlab.methods.lmc import error_barrier
from ticketlab.methods.pools import Pools, PoolsConfig, candidate_order, resparsify
from ticketlab.sparsity import Mask


def test_candidate_order_is_the_target_then_its_neighbours_denser_first():
    assert candidate_order(3, range(6)) == [3, 2, 4, 1, 5, 0]
    assert candidate_order(0, range(5)) == [0, 1, 2, 3, 4]
    assert candidate_order(5, range(6)) == [5, 4, 3, 2, 1, 0]
    assert candidate_order(2, [0, 2, 3]) == [2, 3, 0]  # unfinished levels are skipped


def test_resparsify_keeps_the_targets_exact_count_by_magnitude_or_its_own_mask():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(6, 5, generator=g), "b": torch.randn(5, 4, generator=g), "bias": torch.randn(4)}
    target = Mask({"a": torch.rand(6, 5, generator=g) < 0.3, "b": torch.ones(5, 4, dtype=torch.bool)})
    out, mask = resparsify(weights, target)
    assert mask.num_kept() == target.num_kept() and torch.equal(mask["b"], target["b"])  # dense layers stay
    kept = weights["a"].abs()[mask["a"]]
    assert int(mask["a"].sum()) == int(target["a"].sum()) and kept.min() >= weights["a"].abs()[~mask["a"]].max()
    assert torch.count_nonzero(out["a"][~mask["a"]]) == 0 and torch.equal(out["bias"], weights["bias"])
    same, own = resparsify(weights, target, fresh=False)
    assert own == target and torch.count_nonzero(same["a"][~target["a"]]) == 0
    dense = Mask({"a": torch.ones(6, 5, dtype=torch.bool)})
    assert resparsify(weights, dense)[0]["a"] is weights["a"]  # level 0: nothing to re-sparsify


class ScriptedPools(Pools):
    """The search logic alone: tickets are one-number models, validation accuracy a known function of it."""

    def __post_init__(self):
        self.scored = []

    def ticket(self, level):
        return {"w": torch.tensor([float(level)])}, Mask({"w": torch.ones(1, dtype=torch.bool)})

    def score(self, weights, bn=True):
        w = float(weights["w"])
        self.scored.append(w)
        val = {0.0: 0.5, 1.0: 0.6}.get(w, 1.0 - abs(w - 1.6))  # best near 1.6; the target (1.0) at 0.6
        return {"val": val, "test": val, "weights": {"w": weights["w"].clone()}}


def test_the_greedy_search_accepts_only_strict_improvements_and_keeps_a_rejected_candidate_out():
    pools = ScriptedPools(lottery=None, cfg=PoolsConfig(search_num=4, alphas=(0.25, 0.5, 0.75)), levels=[0, 1, 2, 3])
    found = pools.search(1)  # candidates in the order 0, 2, 3
    history = found["history"]
    assert [h["level"] for h in history] == [0, 2, 3]
    assert history[0]["accepted"] is False  # towards 0: every mix is worse than 0.6
    assert history[1]["accepted"] and history[1]["alpha"] == 0.5  # 1 -> 1.5 (val 0.9); 1.75 scores 0.85
    assert history[2]["accepted"] is False  # from 1.5 the best mix, 1.875, scores 0.725 < 0.9
    assert float(found["weights"]["w"]) == 1.5 and found["val"] == pytest.approx(0.9)
    rejected = ScriptedPools(lottery=None, cfg=PoolsConfig(search_num=2, alphas=(0.5,)), levels=[0, 1])
    found = rejected.search(1)
    assert found["history"][0]["accepted"] is False and float(found["weights"]["w"]) == 1.0  # untouched
    assert found["test"] == found["ticket"]["test"]


def test_error_barrier():
    assert error_barrier([0.1, 0.3, 0.2], [0, 0.5, 1]) == pytest.approx(0.15)
    assert error_barrier([0.1, 0.05, 0.2], [0, 0.5, 1]) == 0.0  # the ends themselves: no barrier below 0


def test_parse_corruptions_names_the_problem():
    from ticketlab.analysis.robustness import parse_corruptions

    assert parse_corruptions("all")[0] == "gaussian_noise" and parse_corruptions("fog, jpeg") == ["fog", "jpeg"]
    for text, message in ((",", "names none"), ("fog,smoke", "unknown corruption(s) smoke")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_corruptions(text)


def test_parse_severities():
    assert parse_severities("1-5") == [1, 2, 3, 4, 5] and parse_severities("1,3") == [1, 3]
    with pytest.raises(ConfigError, match="1..5"):
        parse_severities("0-6")


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    common = ["--preset", "digits_mlp", "--model.hidden", "32", "--train.steps", "2ep", "--progress", "none",
              "--runs-dir", str(runs)]
    assert main(["lottery", *common, "--levels", "3"]) == 0
    return runs, common


def test_pools_on_a_trunk_writes_rows_at_the_tickets_exact_density(trunk, capsys):
    runs, common = trunk
    assert main(["pools", *common, "--pools.alphas", "0.3,0.6"]) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    for level in range(4):
        ticket = Mask.load(run / f"level_{level}" / "mask.pt")
        (folder,) = run.glob(f"level_{level}/pools_*")
        for kind in ("pools", "swa", "ema"):
            summary = read_json(folder / kind / "summary.json")
            mask = Mask.load(folder / kind / "mask.pt")
            assert mask.num_kept() == ticket.num_kept() and summary["row"]["branch"] == kind
            weights = load_torch(folder / kind / "final.pt")
            assert all(torch.count_nonzero(weights[k][~mask[k]]) == 0 for k in mask)
        search = read_json(folder / "pools" / "search.json")
        assert [c["level"] for c in search] == candidate_order(level, range(4))[1:3]
    rows = collect([run])
    assert {r.branch for r in rows} == {"trunk", "pools", "swa", "ema"} and len(rows) == 16
    capsys.readouterr()
    assert main(["pools", *common, "--levels", "7"]) == 2
    assert "not finished" in capsys.readouterr().err


def test_lmc_adjacent_and_instability_and_corrupted_scores(trunk, capsys):
    runs, common = trunk
    assert main(["lmc", *common, "--lmc.points", "3", "--levels", "1"]) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    (result,) = run.glob("level_1/lmc_*/adjacent.json")
    path = read_json(result)
    assert path["pair"] == ["level_1", "level_2"] and path["alphas"] == [0.0, 0.5, 1.0]
    final = read_json(run / "level_1" / "summary.json")["final_test_accuracy"]
    assert path["test_accuracy"][0] == pytest.approx(final)  # alpha 0 is the level's own model (no BatchNorm)
    assert (run / "report" / "lmc_adjacent.png").exists()
    capsys.readouterr()
    assert main(["lmc", *common, "--lmc.pairs", "instability", "--levels", "2"]) == 2
    assert "ticketlab branch --branch reorder --levels 2" in capsys.readouterr().err
    assert main(["branch", *common, "--branch", "reorder", "--levels", "2"]) == 0
    (branch,) = run.glob("level_2/branch_reorder_*")
    assert torch.equal(load_torch(branch / "start.pt")["fc1.weight"], load_torch(run / "level_2" / "start.pt")["fc1.weight"])
    assert not torch.equal(load_torch(branch / "final.pt")["fc1.weight"], load_torch(run / "level_2" / "final.pt")["fc1.weight"])
    assert main(["lmc", *common, "--lmc.pairs", "instability", "--levels", "2", "--lmc.points", "3"]) == 0
    (unstable,) = run.glob("level_2/lmc_*/instability.json")
    assert read_json(unstable)["error_barrier"] >= 0
    capsys.readouterr()
    assert main(["eval", str(run), "--corruptions", "gaussian_noise,contrast", "--severity", "1,5"]) == 0
    scores = read_json(run / "level_1" / "corruptions.json")
    assert set(scores["corruptions"]) == {"gaussian_noise", "contrast"} and set(scores["corruptions"]["contrast"]) == {"1", "5"}
    assert scores["corruptions"]["contrast"]["5"] <= scores["clean"] + 0.05
    capsys.readouterr()
    assert main(["report", str(run), "--format", "json", "--no-plots"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert all(r["corrupted_test_pct"] is not None for r in records)
    assert main(["eval", str(run), "--corruptions", "snow"]) == 2
    assert "unknown corruption(s) snow" in capsys.readouterr().err
