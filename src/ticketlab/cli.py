"""Command line: parse arguments into a config, call the method, print where the run is. Nothing else.

The run commands come from the method registry (`ticketlab.method`): each gets the flags of its config
class, the core sections and its own (``--train.lr``, ``--lottery.retrain``; dashes and underscores are
interchangeable), its extra flags and the runtime flags. Resolution: preset, then ``--config FILE``, then
flags. ``--help`` is answered after parsing, so ``--preset X --help`` shows the values the preset
resolves to. ``ticketlab --help`` and ``--version`` are answered from the table of commands
(`ticketlab.method_help`, `TOOL_COMMANDS`) without importing the methods, and so without torch.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from ticketlab.config import (SECTION_OWNERS, RunConfig, drop_idle_sections, get_path, iter_fields, load_config_file,
                              method_sections)
from ticketlab.errors import ConfigError, TicketlabError
from ticketlab.fields import nested_keys
from ticketlab.method import METHODS, Method, compose_config, options_of
from ticketlab.method_help import METHOD_HELP
from ticketlab.presets import get_preset
from ticketlab.steps import Steps
from ticketlab.version import __version__
from ticketlab.resources import check_threads
from ticketlab.user_modules import import_user_module

RUNTIME = ("runs_dir", "device", "threads", "dry_run", "progress", "log", "imports", "help")
RUNS_DIR_HELP = "parent folder of run directories (default: runs)"
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps (default: auto)"
THREADS_HELP = "CPU threads for torch (default: torch's)"


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
            close = close_flags(flag, flags)
            if close:
                hint = f" (did you mean {' or '.join(close)}?)"
                break
        self.exit(2, f"ticketlab: error: {message}{hint}; see `{self.prog} --help`\n")


def close_flags(flag: str, flags: List[str]) -> List[str]:
    """The flags ``flag`` was probably meant to be: those ending in its name (``--lr`` -> ``--train.lr``),
    else the closest by spelling, whole or by the name after the section."""
    def leaf(name: str) -> str:
        return name.lstrip("-").split(".")[-1].replace("-", "_")

    canonical = list(dict.fromkeys(f for f in flags if "-" not in f.lstrip("-").split(".")[-1] or "." not in f))
    same = [f for f in canonical if leaf(f) == leaf(flag) and f != flag]
    if same:
        return same[:3]
    close = difflib.get_close_matches(flag, flags, n=1)
    if close:
        return close
    by_leaf = difflib.get_close_matches(leaf(flag), [leaf(f) for f in canonical], n=1)
    return [f for f in canonical if by_leaf and leaf(f) == by_leaf[0]][:3]


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


def choices_of(tp: Any) -> tuple:
    """The fixed values a field of type ``tp`` takes (``Literal``, possibly ``Optional``), else ()."""
    if typing.get_origin(tp) is typing.Union:
        return choices_of(next(a for a in typing.get_args(tp) if a is not type(None)))
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else ()


def metavar_of(tp: Any) -> str:
    """What a field's value looks like on the command line: ``{sgd,adam,adamw}``, ``INT``, ``STEPS,...``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return metavar_of(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return "{" + ",".join(str(a) or "''" for a in args) + "}"
    if origin is tuple:
        return f"{metavar_of(args[0])},..."
    return {Steps: "STEPS", bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}.get(tp, "VALUE")


def describe_field(tp: Any, help_text: str) -> str:
    """A field's help line, with its choices when it has fixed ones."""
    choices = choices_of(tp)
    if not choices:
        return help_text
    return f"{help_text}; one of: {', '.join(str(c) or repr(c) for c in choices)}"


def integer(low: int = 0, high: int = 2**63 - 1):
    """An argparse type: an integer in [low, high] written in ASCII digits (``int`` also takes ``"٣"``)."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*[+-]?[0-9]{1,20}\s*", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer in [{low}, {high}]")
        return int(text)

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse



def _flag_names(dotted: str) -> List[str]:
    return [f"--{dotted}"] + ([f"--{dotted.replace('_', '-')}"] if "_" in dotted else [])


def _field_types(config_cls: type) -> Dict[str, Any]:
    return {dotted: tp for dotted, tp, _ in iter_fields(config_cls)}


def flag_help(flag, config_cls: type) -> str:
    """A method flag's help line; an alias of a field also names the field's choices."""
    if not flag.field:
        return flag.help
    return describe_field(_field_types(config_cls)[flag.field], flag.help)


def flag_metavar(flag, config_cls: type) -> Optional[str]:
    if flag.metavar:
        return flag.metavar
    return metavar_of(_field_types(config_cls)[flag.field]) if flag.field else flag.dest.upper()


def add_method_flags(parser: argparse.ArgumentParser, method: Method) -> None:
    if len(method.choices) > 1:
        parser.add_argument("--variant", choices=method.choices, default=None, metavar="NAME",
                            help=f"{', '.join(method.choices)} (default: the preset's, else {method.choices[0]})")
    for flag in method.flags:
        metavar, text = flag_metavar(flag, method.config), flag_help(flag, method.config)
        if flag.field:
            parser.add_argument(flag.name, dest=f"cfg:{flag.field}", default=argparse.SUPPRESS, metavar=metavar,
                                help=text)
        else:
            parser.add_argument(flag.name, dest=flag.dest, type=integer() if flag.type is int else flag.type,
                                default=flag.default, metavar=metavar, help=text)


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    parser.add_argument("--preset", metavar="NAME", help="named starting config (`ticketlab list presets`)")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON file of fields, applied after the preset")
    parser.add_argument("--seed", dest="cfg:seed", metavar="INT", default=argparse.SUPPRESS,
                        help="master seed (default 0)")
    for dotted, tp, field in iter_fields(config_cls):
        if dotted in ("method", "seed"):
            continue
        parser.add_argument(*_flag_names(dotted), dest=f"cfg:{dotted}", metavar=metavar_of(tp),
                            default=argparse.SUPPRESS, help=describe_field(tp, field.metadata.get("help", "")))


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (not part of the run hash)")
    group.add_argument("--runs-dir", default="runs", metavar="DIR", help=RUNS_DIR_HELP)
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    group.add_argument("--threads", type=integer(1), default=None, metavar="N", help=THREADS_HELP)
    group.add_argument("--dry-run", action="store_true", help="print the resolved config and run directory, then stop")
    group.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                       help="progress output (default: a bar on a terminal, plain lines otherwise)")
    group.add_argument("--log", action="append", default=[], metavar="TRACKER",
                       help="also send every metric to tensorboard or wandb (repeatable, or comma-separated)")
    group.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="import MODULE (or a .py file) first, so the models, data sets and methods it "
                            "registers can be named (repeatable; any command)")
    group.add_argument("-h", "--help", action="store_true", help="show this help: every flag with its resolved value")


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
    """A run command's help: every field with the value it resolves to, then the command's own options
    and the runtime flags, each with its description."""
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}

    def row(action: argparse.Action) -> str:
        names = ", ".join(action.option_strings) if action.dest == "help" else action.option_strings[0]
        metavar = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices
                                     else action.dest.upper() if action.nargs != 0 else "")
        shown = f"{names} {metavar}" if metavar else names
        return f"  {shown:<28} {action.help}"

    print(parser.format_usage().strip())
    print(f"\n{parser.description}\n\nconfig fields (current value shown; set with --FIELD VALUE):")
    for dotted, tp, field in iter_fields(type(config)):
        if dotted == "method":
            continue
        value = get_path(config, dotted)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        print(f"  --{dotted:<26} {str(shown):<14} {describe_field(tp, field.metadata.get('help', ''))}")
    options = (["--variant"] if len(method.choices) > 1 else []) + [f.name for f in method.flags]
    if options:
        print(f"\n{method.name} options:")
        for name in options:
            print(row(actions[name]))
    print("\nruntime (not part of the run hash):")
    for action in [a for a in parser._actions if a.dest in RUNTIME] + [actions["--preset"], actions["--config"]]:
        print(row(action))
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
    from ticketlab import distributed
    from ticketlab.heap import steady_heap

    steady_heap()  # a steady C heap: CPU steps page-fault no buffers back in (a few % of a LeNet job)
    device = args.device
    if distributed.launched():
        if not method.distributed:
            raise ConfigError(f"`ticketlab {method.name}` does not run under torchrun; run it as one process")
        device = distributed.setup(args.device)
    from ticketlab.train.trackers import make_trackers

    trackers = make_trackers(args.log) if distributed.is_writer() else []
    ctx = RunContext(args.runs_dir, device, args.threads, progress_mode(args.progress), ["ticketlab", *argv],
                     trackers=trackers)
    from ticketlab import runlock

    with runlock.session():  # the run stays locked until its report and plots are written
        try:
            path = method.run(config, options, ctx)
        finally:
            for tracker in trackers:
                tracker.close()
        if distributed.is_writer():
            print(method.show(path) if method.show else report_table(path))
            print(f"run directory: {path}")
    # The ranks leave together: a rank that tore down its process group while rank 0 still drew the report
    # sometimes aborted at exit inside gloo ("terminate called without an active exception").
    distributed.barrier()
    return 0


def report_table(path: Path) -> str:
    """What a run command prints by default: the report of its run directory, with its plots in
    ``report/`` (PNG) drawn again only when a result is newer than them (`ticketlab report` always draws,
    PNG and SVG)."""
    from ticketlab.analysis.report import plots_current, report_main

    out_dir = Path(path) / "report"
    return report_main([str(path)], fmt="terminal", out_dir=None if plots_current(path, out_dir) else out_dir,
                       svg=None)  # PNG previews; an SVG that `ticketlab report` wrote is kept current


def cmd_runs(args: argparse.Namespace) -> int:
    from ticketlab.runs import clean_runs, find_runs, remove_run, resolve_run

    runs_dir = Path(args.runs_dir)
    if args.action == "list":
        print(runs_table(find_runs(runs_dir), runs_dir))
        return 0
    if args.action == "clean":
        print(clean_report(*clean_runs(runs_dir)))
        return 0
    if not args.run:
        raise TicketlabError(f"`ticketlab runs {args.action}` needs a RUN (name, hash prefix or path)")
    path = resolve_run(runs_dir, args.run, exact=args.action == "rm")
    if args.action == "show":
        print(json.dumps(run_details(path), indent=2))
    else:
        remove_run(path)
        print(f"removed {path}")
    return 0


def clean_report(freed, busy) -> str:
    """What `ticketlab runs clean` prints: every file removed with its size, the total, the runs in use."""
    from ticketlab.leftovers import megabytes

    lines = [f"removed {path} ({megabytes(size)})" for path, size in freed]
    lines.append(f"freed {megabytes(sum(size for _, size in freed))} in {len(freed)} file(s) or folder(s)")
    if busy:
        lines.append(f"skipped {len(busy)} run(s) in use: {', '.join(p.name for p in busy)}")
    return "\n".join(lines)


def runs_table(paths: List[Path], runs_dir: Path) -> str:
    """`ticketlab runs list`: one row per run, named by its path below ``runs_dir``."""
    from ticketlab.analysis.table import render_table
    from ticketlab.runs import latest_test_accuracy, load_config, run_status, trunk_levels

    rows = []
    for path in paths:
        name = str(path.relative_to(runs_dir))
        try:
            acc, config = latest_test_accuracy(path), load_config(path)
            data, model, seed, status = config.data.dataset, config.model.name, config.seed, run_status(path)
        except TicketlabError as exc:
            raw = _raw_config(path)
            if raw is None:
                rows.append([name, "-", "-", "-", "-", "unreadable config.json or summary", "-"])
                continue
            data, model = raw.get("data", {}).get("dataset", "-"), raw.get("model", {}).get("name", "-")
            seed, acc = raw.get("seed", "-"), None
            status = f"{run_status(path)} (config not readable here: {str(exc)[:40]}...)"
        levels = len(trunk_levels(path))
        rows.append([name, data, model, seed, levels or "-", status, "-" if acc is None else f"{100 * acc:.2f}"])
    if not rows:
        return f"no runs in {runs_dir} or below it"
    return render_table(["run", "data", "model", "seed", "levels", "status", "test %"], rows)


def run_details(path: Path) -> Dict[str, Any]:
    """`ticketlab runs show`: the config and manifest, the run's own summary if it has one, and the
    results of its finished phases (a lottery run's levels and branches)."""
    from ticketlab.io import read_json
    from ticketlab.runs import TRUNK, phase_rows, run_status

    details: Dict[str, Any] = {"path": str(path), "status": run_status(path),
                               "config": read_json(path / "config.json")}
    for name in ("manifest", "summary"):
        if (path / f"{name}.json").exists():
            details[name] = read_json(path / f"{name}.json")
    keys = ("final_test_accuracy", "test_accuracy_at_best_val", "steps")
    phases = sorted(phase_rows(path), key=lambda item: (item[1]["row"].get("level", 0),
                                                         item[1]["row"].get("branch") != TRUNK, str(item[0])))
    details["phases"] = [{"phase": str(folder.relative_to(path)) if folder != path else ".",
                          "level": s["row"].get("level"), "branch": s["row"].get("branch"),
                          "density": s.get("density", s["row"].get("density")), **{k: s.get(k) for k in keys}}
                         for folder, s in phases]
    return details


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
                      args.threads, args.partition, args.gpus_per_job, args.time, imports=args.imports)


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


def method_helps() -> Dict[str, str]:
    """Run commands and their help lines: the built-in ones, then any other method registered so far
    (without importing the built-in methods' modules)."""
    return {**METHOD_HELP, **{name: method.help for name, method in METHODS.registered().items()}}


def add_runs_flags(runs: argparse.ArgumentParser) -> None:
    runs.add_argument("action", choices=["list", "show", "rm", "clean"],
                      help="list: the runs below --runs-dir; show: one run's config, manifest and results; "
                           "rm: delete one run directory; clean: remove the temporary files and stale "
                           "checkpoints killed runs left behind")
    runs.add_argument("run", nargs="?", help="run name, hash prefix or path (show); full name or path (rm)")
    runs.add_argument("--runs-dir", default="runs", metavar="DIR", help=RUNS_DIR_HELP)


def add_sweep_flags(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument("study", help="the study file (TOML; see the README's `ticketlab sweep` section)")
    sweep.add_argument("--runs-dir", default="runs", metavar="DIR", help=RUNS_DIR_HELP)
    sweep.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                       help="local: a pool of worker processes (default); slurm: array jobs through submitit; "
                            "submitit-local: submitit's local executor, the SLURM path on this machine")
    sweep.add_argument("--workers", type=integer(1, 4096), default=2, metavar="N",
                       help="runs at once: local processes, or the array's parallelism on SLURM (default 2)")
    sweep.add_argument("--threads", type=integer(1), default=1, metavar="N", help="CPU threads of each run (default 1)")
    sweep.add_argument("--device", default="auto", help=DEVICE_HELP)
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and which are finished, then stop")
    sweep.add_argument("--partition", metavar="NAME", help="SLURM partition (default: the cluster's)")
    sweep.add_argument("--gpus-per-job", type=integer(0, 1024), default=0, metavar="N", help="GPUs of each SLURM job (default 0)")
    sweep.add_argument("--time", type=integer(1), default=60, metavar="MINUTES", help="time limit of each job (default 60)")


def add_report_flags(report: argparse.ArgumentParser) -> None:
    report.add_argument("runs", nargs="+", metavar="RUN", help="run directories, folders holding them, or study "
                                                               "folders (runs/studies/NAME)")
    report.add_argument("--format", choices=["terminal", "md", "csv", "json"], default="terminal",
                        help="table format (default: terminal)")
    report.add_argument("--plot", metavar="PATH", help="path (stem, .png or .svg) of the accuracy-vs-density plot")
    report.add_argument("--curves", metavar="PATH", help="path (stem, .png or .svg) of the training-curve plot")
    report.add_argument("--out", metavar="DIR", help="folder for both plots (default: <first RUN>/report)")
    report.add_argument("--metric", choices=["final", "best"], default="final",
                        help="plotted accuracy: final test, or test at the best validation evaluation")
    report.add_argument("--no-plots", action="store_true", help="print the table only")


def add_eval_flags(scorer: argparse.ArgumentParser) -> None:
    scorer.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or folders holding them")
    scorer.add_argument("--corruptions", default="all", metavar="NAMES",
                        help="names, comma-separated, or all (default; `ticketlab list corruptions`)")
    scorer.add_argument("--severity", default="1-5", metavar="LEVELS",
                        help="severities in 1..5: 1-5 (default), 3 or 1,3")
    scorer.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="each phase's final or best-validation weights")
    scorer.add_argument("--seed", type=integer(0, 2**64 - 1), default=0, metavar="INT",
                        help="seed of the generated corruptions (default 0)")
    scorer.add_argument("--device", default="auto", help=DEVICE_HELP)
    scorer.add_argument("--threads", type=integer(1), default=None, metavar="N", help=THREADS_HELP)


def add_export_flags(exporter: argparse.ArgumentParser) -> None:
    exporter.add_argument("run", help="run directory")
    exporter.add_argument("--format", choices=["safetensors", "sparse", "structured", "torch-prune"],
                          default="safetensors", help="safetensors: kept weights and a bitmap (default); sparse: CSR "
                          "Linear layers where they are faster; structured: an MLP without dead neurons; "
                          "torch-prune: torch.nn.utils.prune's weight_orig and weight_mask")
    exporter.add_argument("--level", type=integer(), default=None, metavar="K",
                          help="the trunk level to export (default: the last)")
    exporter.add_argument("--out", metavar="FILE",
                          help="output file (default: RUN/export/level_<k>_<format>.safetensors)")
    exporter.add_argument("--batch", type=integer(1), default=256, metavar="N",
                          help="the batch size sparse layers are chosen for (256)")
    exporter.add_argument("--checkpoint", choices=["final", "best"], default="final",
                          help="final or best-validation weights")
    exporter.add_argument("--threads", type=integer(1), default=None, metavar="N", help=THREADS_HELP)


def add_list_flags(lister: argparse.ArgumentParser) -> None:
    lister.add_argument("what", choices=["presets", "models", "datasets", "methods", "corruptions"],
                        help="what to list")


# The CLI's own commands (`ticketlab.method.RESERVED_COMMANDS`): help line and flags.
TOOL_COMMANDS = {
    "runs": ("list, show or remove run directories, or clean up after killed runs", add_runs_flags),
    "sweep": ("run a study file: a grid of runs over fields, seeds and methods", add_sweep_flags),
    "report": ("tables and plots of finished runs (seeds averaged)", add_report_flags),
    "eval": ("score finished runs' models on corrupted test data", add_eval_flags),
    "export": ("a finished run's ticket as a compressed, CSR-sparse, smaller or torch-prune model (safetensors "
               "files)", add_export_flags),
    "list": ("list presets, models, data sets, methods or corruptions", add_list_flags),
}


def build_parser(methods: bool = True) -> argparse.ArgumentParser:
    """The parser of every command; ``methods=False``: the run commands without their flags (enough for
    ``ticketlab --help`` and ``--version``, and needs neither the method modules nor torch)."""
    if methods:
        import ticketlab.methods  # noqa: F401  (registers the built-in methods)

    parser = OneLineParser(prog="ticketlab", description="Find, train and study sparse subnetworks.")
    parser.add_argument("--version", action="version", version=f"ticketlab {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, text in method_helps().items():
        p = sub.add_parser(name, help=text, description=text, add_help=False, allow_abbrev=False)
        if methods:
            method = METHODS.get(name)
            add_method_flags(p, method)
            add_config_flags(p, method.config)
            add_runtime_flags(p)
    for name, (text, add_flags) in TOOL_COMMANDS.items():
        add_flags(sub.add_parser(name, help=text, description=text))
    return parser


def take_imports(argv: List[str]) -> "tuple[List[str], List[str]]":
    """``argv`` without its ``--import MODULE`` / ``--import=MODULE`` flags, and those modules."""
    rest, modules, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--import":
            if i + 1 >= len(argv):
                raise ConfigError("--import needs a MODULE (a module name such as mypkg.models, or a .py file)")
            modules.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest, modules


def entry() -> int:
    """The ``ticketlab`` command (and ``python -m ticketlab``): `main`, then its objects are left out of
    the interpreter's last garbage collection (``gc.freeze``). That collection only frees memory that the
    system takes back anyway when the process ends, and it took 0.3-0.9 s of every command. Every file is
    closed by then: writes are atomic and the trackers are closed."""
    import gc

    code = main()
    gc.freeze()
    return code


def main(argv: Optional[List[str]] = None) -> int:
    from ticketlab.logs import show_messages

    show_messages()
    argv = list(sys.argv[1:] if argv is None else argv)
    distributed = None  # imported (with torch) once a command runs: `--help` and `--version` need neither
    try:  # the user's modules too: their errors are one line, Ctrl-C while they import exits 130
        parse_argv, modules = take_imports(argv)
        for module in modules:
            import_user_module(module)
        parser = build_parser(methods=bool(parse_argv) and parse_argv[0] not in ("-h", "--help", "--version"))
        try:  # argparse ends with SystemExit on bad flags (2) and on the top-level --help (0): return the code
            args, extra = parser.parse_known_args(parse_argv)
            sub = parser._subparsers._group_actions[0].choices[args.command]
            if extra:
                sub.error(f"unrecognized arguments: {' '.join(extra)}")
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 2
        args.imports = modules  # taken out before parsing; sweep workers import them again
        from ticketlab import distributed

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
    except BrokenPipeError:  # the reader went away (`ticketlab runs show X | head`): nothing is wrong
        _silence_stdout()
        return 0
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"ticketlab: error: {one_line(exc.strerror or exc)}{one_line(where)}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticketlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if distributed is not None:
            distributed.teardown()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not fail on the closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (captured output)
        pass


if __name__ == "__main__":
    sys.exit(main())
