"""Things that used to be quietly wrong: file modes, the precision a run trains in, weights pruning never
touches, and starting from pretrained weights."""

import json
import os
import shutil
import stat
import warnings

import pytest
import torch

import ticketlab
from ticketlab.cli import main
from ticketlab.config import merge
from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.io import atomic_write_bytes


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(old)


def test_written_files_honour_the_umask(tmp_path, umask):
    umask(0o022)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    umask(0o027)
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o640
    umask(0o002)
    run, _ = ticketlab.run_train(_tiny(), ticketlab.RunContext(runs_dir=tmp_path / "runs", progress=False))
    for name in ("config.json", "manifest.json", "summary.json", "final.pt", "data.pt"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == 0o664, name


def test_writes_leave_the_umask_alone_need_no_chmod_and_close_their_file_on_failure(tmp_path, umask, monkeypatch):
    """Setting the umask to read it would race other threads' new files; some mounts refuse chmod."""
    umask(0o027)

    def umask_set(*args):
        raise AssertionError("the umask was set")

    def chmod_refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    with monkeypatch.context() as patch:
        patch.setattr(os, "umask", umask_set)
        for name in ("chmod", "fchmod", "lchmod"):
            patch.setattr(os, name, chmod_refused, raising=False)
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x" and stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o640

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(tmp_path / "b.bin", b"y")
    assert len(os.listdir("/proc/self/fd")) == open_before and sorted(os.listdir(tmp_path)) == ["a.bin", "a.bin.sha256"]


def _tiny(**overrides):
    return merge(ticketlab.get_preset("digits_mlp"), {"train": {"steps": "3it"}, "model": {"hidden": "16"},
                                                      **overrides})


def test_the_precision_is_recorded_and_another_one_refused(tmp_path, monkeypatch, capsys):
    import ticketlab.methods.experiment as experiment

    config = _tiny(train={"steps": "3it", "amp": "bf16"})  # bf16 asks for CUDA autocast: on the CPU it is fp32
    ctx = ticketlab.RunContext(runs_dir=tmp_path, device="cpu", progress=False)
    run, _ = ticketlab.run_train(config, ctx)
    assert json.loads((run.path / "manifest.json").read_text())["precision"] == "fp32"
    monkeypatch.setattr(experiment, "precision", lambda amp, device: "bf16")  # as on a GPU with bf16
    with pytest.raises(CheckpointError, match="was trained in fp32 on cpu; this run would train in bf16"):
        ticketlab.run_train(config, ctx)
    args = ["train", "--preset", "digits_mlp", "--train.steps", "3it", "--model.hidden", "16", "--train.amp", "bf16",
            "--runs-dir", str(tmp_path), "--device", "cpu"]
    capsys.readouterr()  # the Python calls' messages (the amp note, when the CLI's handler is on)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ticketlab: error: ") and "\n" not in err and "--train.amp" in err
    assert (run.path / "summary.json").exists()  # the finished run is untouched


def test_amp_on_the_cpu_says_it_trains_in_fp32(tmp_path, capsys):
    args = ["train", "--preset", "digits_mlp", "--train.steps", "3it", "--model.hidden", "16", "--train.amp", "bf16",
            "--runs-dir", str(tmp_path), "--device", "cpu", "--progress", "none"]
    assert main(args) == 0
    assert "train.amp bf16 applies on CUDA only: this run trains in fp32 on cpu" in capsys.readouterr().err
    assert main([a for a in args if a not in ("--train.amp", "bf16")]) == 0
    assert "applies on CUDA only" not in capsys.readouterr().err


def test_precision_of_each_setting():
    from ticketlab.train.accel import precision

    assert [precision(amp, torch.device("cpu")) for amp in ("none", "bf16", "fp16")] == ["fp32"] * 3
    if torch.cuda.is_available():
        bf16 = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        assert [precision(a, torch.device("cuda")) for a in ("none", "bf16", "fp16")] == ["fp32", bf16, "fp16"]


class TokenNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, tokens):
        h = self.embed(tokens)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_weights_pruning_leaves_dense_are_named_once():
    from ticketlab.sparsity import UnprunableWeightsWarning, unprunable_parameters

    torch.manual_seed(0)
    model = TokenNet()
    assert unprunable_parameters(model) == {"embed.weight": "Embedding", "attn.in_proj_weight": "MultiheadAttention"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ticketlab.prune(model, 0.5)
        ticketlab.prune(model, 0.4)
    found = [w for w in caught if issubclass(w.category, UnprunableWeightsWarning)]
    assert len(found) == 1
    text = str(found[0].message)
    assert "embed.weight (Embedding)" in text and "attn.in_proj_weight (MultiheadAttention)" in text
    assert "--prune.modules embedding,attention" in text
    with warnings.catch_warnings(record=True) as caught:  # a plain MLP has nothing to say
        warnings.simplefilter("always")
        ticketlab.prune(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)), 0.5)
    assert not [w for w in caught if issubclass(w.category, UnprunableWeightsWarning)]


def test_embedding_and_attention_weights_are_pruned_when_opted_in(tmp_path):
    from ticketlab.data import DataBundle
    from ticketlab.sparsity import UnprunableWeightsWarning, opt_in_modules, prunable_parameters, unprunable_parameters

    torch.manual_seed(0)
    model = TokenNet()
    assert set(prunable_parameters(model)) == {"attn.out_proj.weight", "head.weight"}
    opted = opt_in_modules(TokenNet(), ["embedding", "attention"])
    assert set(prunable_parameters(opted)) == {"embed.weight", "attn.in_proj_weight", "attn.out_proj.weight",
                                               "head.weight"}
    assert unprunable_parameters(opted) == {}
    with pytest.raises(ConfigError, match="prune.modules: unknown conv; choose from embedding, attention"):
        ticketlab.PruneConfig(modules=("conv",))
    preset = ticketlab.get_preset("digits_mlp")
    assert merge(preset, {"prune": {"modules": ""}}).run_name == preset.run_name  # off: not in the hash
    assert merge(preset, {"prune": {"modules": "embedding"}}).run_name != preset.run_name

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 20, (200, 4), generator=g)
    labels = tokens[:, 0] % 3
    data = DataBundle.from_tensors((tokens[:160], labels[:160]), (tokens[160:], labels[160:]), name="tokens")
    train = ticketlab.TrainConfig(steps="2ep", batch_size=40, lr=0.05)
    with pytest.warns(UnprunableWeightsWarning, match=r"1 weight tensor\(s\) .*: attn.in_proj_weight"):
        _, tickets = ticketlab.lottery(model, data, levels=1, train=train, prune=ticketlab.PruneConfig(
            modules=("embedding",), scope="layer"), runs_dir=tmp_path)
    mask = tickets[1].mask
    assert "embed.weight" in mask and "attn.in_proj_weight" not in mask
    assert mask["embed.weight"].sum() == round(0.8 * 20 * 8)
    assert torch.count_nonzero(tickets[1].weights["embed.weight"][~mask["embed.weight"]]) == 0


def test_model_weights_start_a_run_and_name_it_by_content(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["lottery", "--levels", "0", "--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "2it",
            "--runs-dir", str(runs), "--progress", "none"]
    assert main(base) == 0
    (plain,) = runs.iterdir()
    trained = torch.load(plain / "level_0" / "final.pt", weights_only=True)
    torch.save(trained, tmp_path / "pretrained.pt")
    assert main(base + ["--model.weights", str(tmp_path / "pretrained.pt")]) == 0
    (started,) = set(runs.iterdir()) - {plain}
    init = torch.load(started / "init.pt", weights_only=True)
    assert all(torch.equal(init[k], trained[k]) for k in trained)
    config = json.loads((started / "config.json").read_text())
    assert config["model"]["weights"] == str(tmp_path / "pretrained.pt") and len(config["model"]["weights_digest"]) == 16

    # the same bytes elsewhere are the same run; other bytes another
    shutil.copy(tmp_path / "pretrained.pt", tmp_path / "copy.pt")
    capsys.readouterr()
    assert main(base + ["--model.weights", str(tmp_path / "copy.pt"), "--dry-run"]) == 0
    assert f"run directory: {started}" in capsys.readouterr().out
    torch.save({k: v + 1 for k, v in trained.items()}, tmp_path / "other.pt")
    assert main(base + ["--model.weights", str(tmp_path / "other.pt"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run directory:" in out and str(started) not in out and str(plain) not in out
    other_run = out.strip().splitlines()[-1]
    # other weights over a stored config's: named by the new file, not the stored digest
    assert main(base + ["--config", str(started / "config.json"), "--model.weights", str(tmp_path / "other.pt"),
                        "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == other_run


def test_model_weights_saved_from_a_compiled_ddp_model_start_the_same_run_as_plain_ones(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["lottery", "--levels", "0", "--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "2it",
            "--runs-dir", str(runs), "--progress", "none"]
    assert main(base) == 0
    (plain,) = runs.iterdir()
    trained = torch.load(plain / "level_0" / "final.pt", weights_only=True)
    torch.save({f"_orig_mod.module.{k}": v for k, v in trained.items()}, tmp_path / "wrapped.pt")  # compile(DDP(m))
    assert main(base + ["--model.weights", str(tmp_path / "wrapped.pt")]) == 0
    (started,) = set(runs.iterdir()) - {plain}
    init = torch.load(started / "init.pt", weights_only=True)
    assert set(init) == set(trained) and all(torch.equal(init[k], trained[k]) for k in trained)


def test_model_weights_that_do_not_fit_are_one_line_errors(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["train", "--preset", "digits_mlp", "--model.hidden", "16", "--train.steps", "2it", "--runs-dir", str(runs)]
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    torch.save({"state": TokenNet()}, tmp_path / "pickled.pt")  # a module, not tensors: not read weights-only
    cases = [("missing.pt", "model.weights: " + str(tmp_path / "missing.pt") + " does not exist"),
             ("wrong.pt", "does not fit the model"),
             ("pickled.pt", "is not a state dict readable weights-only"),
             ("garbage.safetensors", "is not a safetensors file")]
    (tmp_path / "garbage.safetensors").write_bytes(b"\x07 not a safetensors header")
    for name, expected in cases:
        assert main(base + ["--model.weights", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("ticketlab: error: ") and expected in err and "\n" not in err, err
    assert not runs.exists() or not any(runs.iterdir())  # refused before a run directory was made


def test_model_weights_too_large_to_read_name_memory_not_a_bad_file(tmp_path, capsys, monkeypatch):
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp_path / "big.pt")

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(torch, "load", out_of_memory)
    args = ["train", "--preset", "digits_mlp", "--model.weights", str(tmp_path / "big.pt"), "--runs-dir",
            str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "not enough memory to read" in err and "not a state dict" not in err and "\n" not in err, err
