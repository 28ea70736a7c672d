"""Command line: parse arguments into a config, call the method, print where the run is. Nothing else.

The run commands come from the method registry (`ticketlab.method`): each gets the flags of its config
class, the core sections and its own (``--train.lr``, ``--lottery.retrain``; dashes and underscores are
interchangeable), its extra flags and the runtime flags. Resolution: preset, then ``--config FILE``, then
flags. ``--help`` is answered after parsing, so ``--preset X --help`` shows the values the preset
resolves to.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ticketlab import distributed
from ticketlab.config import (SECTION_OWNERS, RunConfig, drop_idle_sections, get_path, iter_fields, load_config_file,
                              method_sections)
from ticketlab.errors import ConfigError, TicketlabError
from ticketlab.fields import nested_keys
from ticketlab.method import METHODS, Method, compose_config, options_of
from ticketlab.presets import get_preset
from ticketlab.resources import check_threads

RUNTIME = ("runs_dir", "device", "threads", "dry_run", "progress")


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line with the closest flag (or the command owning a section), exit status 2."""

    def error(self, message: str):
        message = one_line(message)
        unknown = re.findall(r"(--[\w.\-]+)", message) if "unrecognized" in message else []
        flags = [s for a in self._actions for s in a.option_strings]
        hint = ""
        for flag in unknown:
            owned = _owner_message(flag, self.prog)
            if owned:
                self.exit(2, f"ticketlab: error: {owned}\n")
            close = difflib.get_close_matches(flag, flags, n=1)
            if close:
                hint = f" (did you mean {close[0]}?)"
                break
        self.exit(2, f"ticketlab: error: {message}{hint}; see `{self.prog} --help`\n")


_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines breaks at


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped: an error quotes what was typed, which may hold some."""
    return "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in str(text))


def _owner_message(flag: str, prog: str) -> Optional[str]:
    """For ``--rst.lr_prune`` or ``--levels`` given to another command: the commands it belongs to."""
    if "." in flag:
        section = flag[2:].split(".")[0].replace("-", "_")
        owners, what = SECTION_OWNERS.get(section, []), "a field"
    else:
        owners = [n for n in METHODS.ordered() if flag in {f.name for f in METHODS.get(n).flags}
                  or (flag == "--variant" and len(METHODS.get(n).choices) > 1)]
        what = "an option"
    owners = [o for o in owners if f"ticketlab {o}" != prog]
    if not owners:
        return None
    commands = " or ".join(f"`ticketlab {o}`" for o in owners)
    return f"{flag} is {what} of {commands}, not of `{prog}`; run {commands} to use it"


def integer(low: int = 0, high: int = 2**63 - 1):
    """An argparse type: an integer in [low, high] written in ASCII digits (``int`` also takes ``"٣"``)."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*[+-]?[0-9]{1,20}\s*", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer in [{low}, {high}]")
        return int(text)

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) or str(tp)
    return text.replace("typing.", "").replace("ticketlab.steps.", "")


def _flag_names(dotted: str) -> List[str]:
    return [f"--{dotted}"] + ([f"--{dotted.replace('_', '-')}"] if "_" in dotted else [])


def add_method_flags(parser: argparse.ArgumentParser, method: Method) -> None:
    if len(method.choices) > 1:
        parser.add_argument("--variant", choices=method.choices, default=None,
                            help=f"{', '.join(method.choices)} (default: the preset's, else {method.choices[0]})")
    for flag in method.flags:
        if flag.field:
            parser.add_argument(flag.name, dest=f"cfg:{flag.field}", default=argparse.SUPPRESS,
                                metavar=flag.metavar or None, help=flag.help)
        else:
            parser.add_argument(flag.name, dest=flag.dest, type=integer() if flag.type is int else flag.type,
                                default=flag.default,
                                metavar=flag.metavar or None, help=flag.help)


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    parser.add_argument("--preset", help="named starting config (`ticketlab list presets`)")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON file of fields, applied after the preset")
    parser.add_argument("--seed", dest="cfg:seed", metavar="INT", default=argparse.SUPPRESS,
                        help="master seed (default 0)")
    for dotted, tp, field in iter_fields(config_cls):
        if dotted in ("method", "seed"):
            continue
        parser.add_argument(*_flag_names(dotted), dest=f"cfg:{dotted}", metavar=_type_name(tp).upper()[:12],
                            default=argparse.SUPPRESS, help=field.metadata.get("help", ""))


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (not part of the run hash)")
    group.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default: runs)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    group.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: torch's)")
    group.add_argument("--dry-run", action="store_true", help="print the resolved config and run directory, then stop")
    group.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                       help="progress output (default: a bar on a terminal, plain lines otherwise)")
    group.add_argument("-h", "--help", action="store_true", help="show fields with their resolved defaults")


def resolve_config(args: argparse.Namespace, method: Method) -> RunConfig:
    """Preset (its core sections, plus its own when it is this command's), then file, then flags."""
    for flag, value in (("--preset", args.preset), ("--config", args.config)):
        if value is not None and not value.strip():
            what = "preset name" if flag == "--preset" else "file"
            raise ConfigError(f"{flag} was given an empty name; pass a {what} or leave {flag} out")
    layers: List[Dict[str, Any]] = []
    if args.config is not None:  # other commands' sections at their defaults change nothing (an old config.json)
        layers.append(drop_idle_sections(method.config, load_config_file(args.config)))
    overrides = nested_keys({key[4:]: value for key, value in vars(args).items() if key.startswith("cfg:")})
    config, lost = compose_config(method, args.preset, [*layers, overrides], getattr(args, "variant", None))
    if lost:  # once the config is good: a bad one gets its one-line error alone
        print(f"ticketlab: note: preset {args.preset} is a `ticketlab {type(get_preset(args.preset)).command}` "
              f"preset; `ticketlab {method.name}` uses its core sections, not its {', '.join(lost)} section",
              file=sys.stderr)
    return config


def print_config_help(parser: argparse.ArgumentParser, method: Method, config: RunConfig) -> None:
    print(parser.format_usage().strip())
    print(f"\n{parser.description}\n\nconfig fields (current value shown; set with --FIELD VALUE):")
    for dotted, tp, field in iter_fields(type(config)):
        if dotted == "method":
            continue
        value = get_path(config, dotted)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        print(f"  --{dotted:<26} {str(shown):<14} {field.metadata.get('help', '')}")
    options = [(f.name + (f" {f.metavar}" if f.metavar else ""), f.help) for f in method.flags]
    if len(method.choices) > 1:
        options.insert(0, ("--variant NAME", f"{', '.join(method.choices)} (now: {config.method})"))
    if options:
        print(f"\n{method.name} options:")
        for name, text in options:
            print(f"  {name:<28} {text}")
    print("\nruntime (not part of the run hash):")
    for action in [a for a in parser._actions if a.dest in RUNTIME]:
        print(f"  {action.option_strings[0]:<28} {action.help}")
    print("  --preset NAME / --config FILE   starting point; flags override both")
    owned = sorted(s for s in SECTION_OWNERS if s not in method_sections(method.config))
    if owned:
        print(f"\nsections of other commands ({', '.join(owned)}) are not accepted here")


def progress_mode(flag: str):
    """The trainer's progress setting: None (auto), True (bar), "lines" or False (none)."""
    return {"auto": None, "bar": True, "lines": "lines", "none": False}[flag]


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser, method: Method, argv: List[str]) -> int:
    from ticketlab.methods import RunContext

    config = resolve_config(args, method)
    if args.help:
        print_config_help(parser, method, config)
        return 0
    options = options_of(method, vars(args))
    missing = [f.name for f in method.flags if f.required and options.get(f.dest) is None]
    if missing:
        raise ConfigError(f"`ticketlab {method.name}` needs {', '.join(missing)}; see `ticketlab {method.name} --help`")
    check_threads(args.threads)
    run_path = method.directory(config, Path(args.runs_dir))
    if args.dry_run:
        print(config.to_json())
        print(f"run directory: {run_path}")
        return 0
    device = args.device
    if distributed.launched():
        if not method.distributed:
            raise ConfigError(f"`ticketlab {method.name}` does not run under torchrun; run it as one process")
        device = distributed.setup(args.device)
    ctx = RunContext(args.runs_dir, device, args.threads, progress_mode(args.progress), ["ticketlab", *argv])
    path = method.run(config, options, ctx)
    if distributed.is_writer():
        print(method.show(path) if method.show else report_table(path))
        print(f"run directory: {path}")
    return 0


def report_table(path: Path) -> str:
    """What a run command prints by default: the report of its run directory, with its plots in
    ``report/`` drawn again only when a result is newer than them (`ticketlab report` always draws)."""
    from ticketlab.analysis.report import plots_current, report_main

    out_dir = Path(path) / "report"
    return report_main([str(path)], fmt="terminal", out_dir=None if plots_current(path, out_dir) else out_dir)


def cmd_runs(args: argparse.Namespace) -> int:
    from ticketlab.analysis.table import render_table
    from ticketlab.io import read_json
    from ticketlab.runs import find_runs, latest_test_accuracy, load_config, remove_run, resolve_run, run_status

    runs_dir = Path(args.runs_dir)
    if args.action == "list":
        rows = []
        for path in find_runs(runs_dir):
            try:
                acc = latest_test_accuracy(path)
                config = load_config(path)
                data, model, status = config.data.dataset, config.model.name, run_status(path)
            except TicketlabError as exc:
                raw = _raw_config(path)
                if raw is None:
                    rows.append([path.name, "-", "-", "unreadable config.json or summary", "-"])
                    continue
                data, model = raw.get("data", {}).get("dataset", "-"), raw.get("model", {}).get("name", "-")
                status, acc = f"{run_status(path)} (config not readable here: {str(exc)[:40]}...)", None
            rows.append([path.name, data, model, status, "-" if acc is None else f"{100 * acc:.2f}"])
        print(render_table(["run", "data", "model", "status", "test %"], rows) if rows else f"no runs in {runs_dir}")
        return 0
    if not args.run:
        raise TicketlabError(f"`ticketlab runs {args.action}` needs a RUN (name, hash prefix or path)")
    path = resolve_run(runs_dir, args.run, exact=args.action == "rm")
    if args.action == "show":
        print(json.dumps({"path": str(path), "status": run_status(path), "config": read_json(path / "config.json"),
                          "manifest": read_json(path / "manifest.json"),
                          "summary": read_json(path / "summary.json") if (path / "summary.json").exists() else None},
                         indent=2))
    else:
        remove_run(path)
        print(f"removed {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ticketlab.analysis.robustness import eval_main
    from ticketlab.methods import RunContext

    ctx = RunContext(device=args.device, threads=args.threads)
    print(eval_main(args.runs, args.corruptions, args.severity, args.checkpoint, str(ctx.torch_device), args.seed))
    return 0


def _raw_config(path: Path) -> Optional[Dict[str, Any]]:
    from ticketlab.io import read_json

    try:
        raw = read_json(path / "config.json")
    except TicketlabError:
        return None
    return raw if isinstance(raw, dict) and isinstance(raw.get("data", {}), dict) else None


def cmd_report(args: argparse.Namespace) -> int:
    from ticketlab.analysis.report import report_main
    from ticketlab.sweep.report import is_study, plot_study, study_table

    for flag, value in (("--plot", args.plot), ("--curves", args.curves), ("--out", args.out)):
        check_output_parent(flag, value)
    studies = [p for p in args.runs if is_study(Path(p))]
    runs = [p for p in args.runs if p not in studies]
    for folder in studies:  # a study folder (`ticketlab sweep`): its own table and plot
        print(study_table(Path(folder), "terminal" if args.format == "json" else args.format))
        stem = Path(args.out) / f"{Path(folder).name}_accuracy_vs_cost" if args.out else None
        if not args.no_plots and plot_study(Path(folder), stem) is not None and args.format == "terminal":
            print(f"wrote {stem or Path(folder) / 'accuracy_vs_cost'}.png, .svg")
    if runs:
        out_dir = None if args.no_plots else (args.out or Path(runs[0]) / "report")
        print(report_main(runs, fmt=args.format, plot=args.plot, curves=args.curves, out_dir=out_dir,
                          metric=args.metric))
    return 0


def check_output_parent(flag: str, value: Optional[str]) -> None:
    """An output path must lie in an existing folder (``--out``: the folder itself is made, not its parents),
    so a mistyped path is an error rather than a tree of new folders (at the filesystem root, say)."""
    if value is None:
        return
    parent = Path(value).expanduser().parent
    if not value.strip() or not parent.is_dir():
        raise ConfigError(f"{flag} {value!r}: the folder {str(parent)!r} does not exist; create it first or give a "
                          "path in an existing folder")


def cmd_export(args: argparse.Namespace) -> int:
    from ticketlab.export import export_main
    from ticketlab.methods import RunContext

    check_output_parent("--out", args.out)
    RunContext(device="cpu", threads=args.threads)
    print(export_main(args.run, args.format, args.out, args.level, args.batch, args.checkpoint))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ticketlab.sweep import sweep_main

    check_threads(args.threads)
    return sweep_main(args.study, args.runs_dir, args.executor, args.workers, args.dry_run, args.device,
                      args.threads, args.partition, args.gpus_per_job, args.time)


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "presets":
        from ticketlab.presets import describe_presets

        for name, text in describe_presets().items():
            print(f"{name:<28} {text}")
    elif args.what == "models":
        from ticketlab.models import MODELS

        print("\n".join(MODELS.names()))
    elif args.what == "methods":
        for name in METHODS.ordered():
            print(f"{name:<12} {METHODS.get(name).help}")
    elif args.what == "corruptions":
        from ticketlab.data.corruptions import CORRUPTIONS

        print("\n".join(CORRUPTIONS))
    else:
        from ticketlab.data import DATASETS

        print("\n".join(DATASETS.names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    import ticketlab.methods  # noqa: F401  (registers the built-in methods)

    parser = OneLineParser(prog="ticketlab", description="Find, train and study sparse subnetworks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in METHODS.ordered():
        method = METHODS.get(name)
        p = sub.add_parser(name, help=method.help, description=method.help, add_help=False, allow_abbrev=False)
        add_method_flags(p, method)
        add_config_flags(p, method.config)
        add_runtime_flags(p)
    runs = sub.add_parser("runs", help="list, show or remove run directories")
    runs.add_argument("action", choices=["list", "show", "rm"])
    runs.add_argument("run", nargs="?", help="run name, hash prefix or path (show); full name or path (rm)")
    runs.add_argument("--runs-dir", default="runs")
    sweep = sub.add_parser("sweep", help="run a study file: a grid of runs over fields, seeds and methods")
    sweep.add_argument("study", help="the study file (TOML; see the README's `ticketlab sweep` section)")
    sweep.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default: runs)")
    sweep.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                       help="local: a pool of worker processes (default); slurm: array jobs through submitit; "
                            "submitit-local: submitit's local executor, the SLURM path on this machine")
    sweep.add_argument("--workers", type=integer(1, 4096), default=2,
                       help="runs at once: local processes, or the array's parallelism on SLURM (default 2)")
    sweep.add_argument("--threads", type=integer(1), default=1, help="CPU threads of each run (default 1)")
    sweep.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and which are finished, then stop")
    sweep.add_argument("--partition", help="SLURM partition")
    sweep.add_argument("--gpus-per-job", type=integer(0, 1024), default=0, help="GPUs of each SLURM job (default 0)")
    sweep.add_argument("--time", type=integer(1), default=60, metavar="MINUTES",
                       help="time limit of each job (default 60)")
    report = sub.add_parser("report", help="tables and plots of finished runs (seeds averaged)")
    report.add_argument("runs", nargs="+", help="run directories, folders holding them, or study folders "
                                                "(runs/studies/NAME)")
    report.add_argument("--format", choices=["terminal", "md", "csv", "json"], default="terminal")
    report.add_argument("--plot", help="path (stem, .png or .svg) of the accuracy-vs-density plot")
    report.add_argument("--curves", help="path (stem, .png or .svg) of the training-curve plot")
    report.add_argument("--out", help="folder for both plots (default: <first RUN>/report)")
    report.add_argument("--metric", choices=["final", "best"], default="final",
                        help="plotted accuracy: final test, or test at the best validation evaluation")
    report.add_argument("--no-plots", action="store_true", help="print the table only")
    scorer = sub.add_parser("eval", help="score finished runs' models on corrupted test data")
    scorer.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    scorer.add_argument("--corruptions", default="all", help="names, comma-separated, or all (default)")
    scorer.add_argument("--severity", default="1-5", help="severities in 1..5: 1-5 (default), 3 or 1,3")
    scorer.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="each phase's final or best-validation weights")
    scorer.add_argument("--seed", type=integer(0, 2**64 - 1), default=0,
                        help="seed of the generated corruptions (default 0)")
    scorer.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    scorer.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: torch's)")
    exporter = sub.add_parser("export", help="a finished run's ticket as a compressed, CSR-sparse, smaller or "
                                             "torch-prune model (safetensors files)")
    exporter.add_argument("run", help="run directory")
    exporter.add_argument("--format", choices=["safetensors", "sparse", "structured", "torch-prune"],
                          default="safetensors", help="safetensors: kept weights and a bitmap (default); sparse: CSR "
                          "Linear layers where they are faster; structured: an MLP without dead neurons; "
                          "torch-prune: torch.nn.utils.prune's weight_orig and weight_mask")
    exporter.add_argument("--level", type=integer(), default=None, help="the trunk level to export (default: the last)")
    exporter.add_argument("--out", help="output file (default: RUN/export/level_<k>_<format>.safetensors)")
    exporter.add_argument("--batch", type=integer(1), default=256,
                          help="the batch size sparse layers are chosen for (256)")
    exporter.add_argument("--checkpoint", choices=["final", "best"], default="final",
                          help="final or best-validation weights")
    exporter.add_argument("--threads", type=integer(1), default=None, help="CPU threads for torch (default: torch's)")
    lister = sub.add_parser("list", help="list presets, models, data sets, methods or corruptions")
    lister.add_argument("what", choices=["presets", "models", "datasets", "methods", "corruptions"])
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:  # argparse ends with SystemExit on bad flags (2) and on the top-level --help (0): return the code
        args, extra = parser.parse_known_args(argv)
        sub = parser._subparsers._group_actions[0].choices[args.command]
        if extra:
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if distributed.launched() and args.command not in METHODS:
            raise ConfigError(f"`ticketlab {args.command}` is not a run command: run it without torchrun")
        if args.command in METHODS:
            return cmd_run(args, sub, METHODS.get(args.command), argv)
        if args.command == "runs":
            return cmd_runs(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "eval":
            return cmd_eval(args)
        return cmd_list(args)
    except TicketlabError as exc:
        print(f"ticketlab: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"ticketlab: error: {one_line(exc.strerror or exc)}{one_line(where)}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticketlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
