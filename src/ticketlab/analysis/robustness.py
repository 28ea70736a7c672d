"""`ticketlab eval`: score finished runs' models on corrupted test data.

For every result phase of the given runs (the rows `ticketlab report` shows) the phase's ``final.pt`` (or
``best.pt``) is loaded into the run's model and scored on the clean test split and on every requested
corruption at every requested severity: the published CIFAR-10-C / CIFAR-100-C files when they are under
the data set's folder (``CIFAR-10-C/<name>.npy``), else the corruption generated from the clean test
images (`ticketlab.data.corruptions`, seeded). The scores go to ``corruptions.json`` beside the phase's
summary; `ticketlab report` then shows the mean corrupted accuracy per row.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch

from ticketlab.analysis.rows import find_run_dirs
from ticketlab.analysis.table import render_table
from ticketlab.data import load_data, resolve_root
from ticketlab.data.corruptions import CORRUPTIONS, corrupt, load_published
from ticketlab.errors import CheckpointError, ConfigError, TicketlabError
from ticketlab.io import load_torch, write_json
from ticketlab.models import build_model
from ticketlab.runs import load_config, phase_rows
from ticketlab.train import evaluate, weights_path

RESULT = "corruptions.json"
PUBLISHED = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
PUBLISHED_NAMES = {"jpeg": "jpeg_compression"}  # the published files' names where they differ


def parse_corruptions(text: str) -> List[str]:
    names = list(CORRUPTIONS) if text.strip() in ("all", "") else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--corruptions {text!r} names none; give all or names from: {', '.join(CORRUPTIONS)}")
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"unknown corruption(s) {', '.join(unknown)}; choose from: all, {', '.join(CORRUPTIONS)}")
    return names


def parse_severities(text: str) -> List[int]:
    """``"1-5"``, ``"3"`` or ``"1,3"`` -> severities in 1..5."""
    out = set()
    try:
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            low, _, high = part.partition("-")
            out.update(range(int(low), int(high or low) + 1))
    except ValueError:
        out = set()
    if not out or min(out) < 1 or max(out) > 5:
        raise ConfigError(f"--severity {text!r} must name severities in 1..5, e.g. 1-5, 3 or 1,3")
    return sorted(out)


class CorruptedTests:
    """A run's test split under each (corruption, severity), made once and shared by its rows."""

    def __init__(self, config, data, seed: int):
        self.config, self.data, self.seed = config, data, seed
        self.cache: Dict[Tuple[str, int], Tuple[torch.Tensor, torch.Tensor, str]] = {}

    def get(self, name: str, severity: int) -> Tuple[torch.Tensor, torch.Tensor, str]:
        if (name, severity) not in self.cache:
            self.cache[name, severity] = self._make(name, severity)
        return self.cache[name, severity]

    def _make(self, name: str, severity: int):
        data, norm = self.data, self.data.normalisation
        if norm is None:
            raise ConfigError("corrupted evaluation needs the data's normalisation (a data set loaded by ticketlab)")
        root = resolve_root(self.config.data.dataset, self.config.data.root)
        published, file = PUBLISHED.get(self.config.data.dataset), PUBLISHED_NAMES.get(name, name)
        if published and root is not None and (Path(root) / published / f"{file}.npy").is_file():
            pixels, labels = load_published(Path(root) / published, file, severity)
            shape = (1, -1, 1, 1)
            mean, std = (torch.tensor(v, dtype=torch.float32).view(shape) for v in norm)
            return ((pixels - mean) / std).to(data.test.x.device), labels.to(data.test.y.device), "published"
        if not isinstance(data.test.x, torch.Tensor):
            raise ConfigError("corrupted evaluation needs the test split in memory; this run streams its image "
                              "folder (--data.stream): score it in Python on a decoded test set")
        x = corrupt(data.test.x, norm[0], norm[1], name, severity, self.seed)
        return x, data.test.y, "generated"


def evaluate_run(run: Path, names: Sequence[str], severities: Sequence[int], checkpoint: str = "final",
                 device: str = "cpu", seed: int = 0) -> List[Dict[str, Any]]:
    """Score every result phase of ``run``; writes each phase's ``corruptions.json`` and returns them."""
    config = load_config(run)
    data = load_data(config.data, noise_seed=config.noise_seed, device=device)
    tests = CorruptedTests(config, data, seed)
    out = []
    for folder, summary in phase_rows(run):
        path = weights_path(folder, checkpoint)
        if not path.exists():
            raise CheckpointError(f"{path} is missing: this phase keeps no weights to score")
        model = build_model(config.model, data.input_shape, data.num_classes, seed=0)
        try:
            model.load_state_dict(load_torch(path))
        except RuntimeError:
            raise CheckpointError(f"{path} does not fit the model of {run / 'config.json'} (a run made from a "
                                  "user's own module?); score it in Python with ticketlab.data.corruptions") from None
        model = model.to(device)
        scores = {"checkpoint": path.stem, "seed": seed, "clean": evaluate(model, data.test.x, data.test.y)["accuracy"],
                  "corruptions": {}, "source": {}}
        for name in names:
            for severity in severities:
                x, y, source = tests.get(name, severity)
                scores["corruptions"].setdefault(name, {})[str(severity)] = evaluate(model, x, y)["accuracy"]
                scores["source"][name] = source
        scores["mean"] = statistics.fmean(v for by in scores["corruptions"].values() for v in by.values())
        write_json(folder / RESULT, scores)
        out.append({"folder": folder, "row": summary["row"], **scores})
    return out


def eval_main(paths: Sequence[str], corruptions: str = "all", severity: str = "1-5", checkpoint: str = "final",
              device: str = "cpu", seed: int = 0) -> str:
    names, severities = parse_corruptions(corruptions), parse_severities(severity)
    runs = find_run_dirs(paths)
    if not runs:
        raise TicketlabError(f"no runs under {', '.join(map(str, paths))}")
    lines = []
    for run in runs:
        for r in evaluate_run(run, names, severities, checkpoint, device, seed):
            row = r["row"]
            per = [f"{100 * statistics.fmean(by.values()):.1f}" for by in r["corruptions"].values()]
            lines.append([f"{run.name}/{r['folder'].relative_to(run)}", row["level"], row["branch"],
                          f"{100 * r['clean']:.2f}", f"{100 * r['mean']:.2f}", *per])
    return render_table(["phase", "level", "branch", "clean test %", "corrupted test %", *names], lines)


__all__ = ["evaluate_run", "eval_main", "parse_corruptions", "parse_severities", "RESULT"]
