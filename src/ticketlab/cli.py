"""Command line: parse arguments into a config, call the method, print where the run is. Nothing else.

Config flags are generated from the dataclass tree (``--train.lr``, ``--data.noise_rate``; dashes and
underscores are interchangeable). Resolution: preset, then ``--config FILE``, then flags. ``--help``
is answered after parsing, so ``--preset X --help`` shows the values the preset resolves to.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ticketlab.config import RST_VARIANTS, RunConfig, get_path, iter_fields, load_config_file, merge
from ticketlab.errors import TicketlabError

RUN_COMMANDS = {
    "train": "train one model (dense, or sparse with --prune.density < 1)",
    "lottery": "iterative magnitude pruning: train levels 0..N with rewinding, lr-rewinding, finetuning or scratch",
    "branch": "ablations on a finished lottery trunk: retrain, reinit, random-prune, oneshot",
    "rst": "Dual Lottery Ticket: RST / RST_Iter on a random sparse network, L1 / L1_Iter / IMP baselines",
}
# A command with variants maps to a tuple: --variant picks one, else the preset's or file's method, else the first.
METHOD_OF = {"train": "train", "lottery": "lottery", "branch": "lottery", "rst": RST_VARIANTS}


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line with the closest flag and where to look, exit status 2."""

    def error(self, message: str):
        import difflib
        import re

        hint = ""
        unknown = re.findall(r"(--[\w.\-]+)", message) if "unrecognized" in message else []
        flags = [s for a in self._actions for s in a.option_strings]
        for flag in unknown:
            close = difflib.get_close_matches(flag, flags, n=1)
            if close:
                hint = f" (did you mean {close[0]}?)"
                break
        self.exit(2, f"ticketlab: error: {message}{hint}; see `{self.prog} --help`\n")


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) or str(tp)
    return text.replace("typing.", "").replace("ticketlab.steps.", "")


def add_method_flags(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "lottery":
        parser.add_argument("--levels", type=int, default=1, help="train levels 0..N (N prunings); default 1")
        parser.add_argument("--retrain", dest="cfg:lottery.retrain", default=argparse.SUPPRESS,
                            help="rewind, lr-rewind, finetune or scratch (same as --lottery.retrain)")
        parser.add_argument("--rewind", dest="cfg:lottery.rewind", default=argparse.SUPPRESS,
                            help="rewind step, e.g. 1000it or 2ep (same as --lottery.rewind)")
    if command == "branch":
        from ticketlab.config import BranchConfig

        parser.add_argument("--levels", required=True, help="finished trunk levels, e.g. 1,3-5")
        parser.add_argument("--branch", dest="br:name", default=argparse.SUPPRESS,
                            help="retrain, reinit, random-prune or oneshot (same as --branch.name)")
        for dotted, tp, field in iter_fields(BranchConfig, "branch."):
            flags = [f"--{dotted}"] + ([f"--{dotted.replace('_', '-')}"] if "_" in dotted else [])
            parser.add_argument(*flags, dest=f"br:{dotted[7:]}", metavar=_type_name(tp).upper()[:12],
                                default=argparse.SUPPRESS, help=field.metadata.get("help", ""))
    if command == "rst":
        parser.add_argument("--variant", choices=RST_VARIANTS, default=None,
                            help="rst (default), rst-iter, l1, l1-iter or l1-lth; ratios are fractions PRUNED")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="named starting config (`ticketlab list presets`)")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON file of fields, applied after the preset")
    parser.add_argument("--seed", dest="cfg:seed", metavar="INT", default=argparse.SUPPRESS,
                        help="master seed (default 0)")
    for dotted, tp, field in iter_fields():
        if dotted in ("method", "seed"):
            continue
        flags = [f"--{dotted}"] + ([f"--{dotted.replace('_', '-')}"] if "_" in dotted else [])
        parser.add_argument(*flags, dest=f"cfg:{dotted}", metavar=_type_name(tp).upper()[:12],
                            default=argparse.SUPPRESS, help=field.metadata.get("help", ""))


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (not part of the run hash)")
    group.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default: runs)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    group.add_argument("--dry-run", action="store_true", help="print the resolved config and run directory, then stop")
    group.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                       help="progress output (default: a bar on a terminal, plain lines otherwise)")
    group.add_argument("-h", "--help", action="store_true", help="show fields with their resolved defaults")


def resolve_config(args: argparse.Namespace, method) -> RunConfig:
    from ticketlab.presets import get_preset

    config = get_preset(args.preset) if args.preset else RunConfig()
    if args.config:
        config = merge(config, load_config_file(args.config))
    overrides: Dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg:"):
            node = overrides
            *parents, leaf = key[4:].split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    config = merge(config, overrides)
    if not isinstance(method, str):
        method = getattr(args, "variant", None) or (config.method if config.method in method else method[0])
    return merge(config, {"method": method})


def print_config_help(parser: argparse.ArgumentParser, config: RunConfig) -> None:
    print(parser.format_usage().strip())
    print(f"\n{parser.description}\n\nconfig fields (current value shown; set with --FIELD VALUE):")
    for dotted, tp, field in iter_fields():
        if dotted == "method":
            continue
        value = get_path(config, dotted)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        print(f"  --{dotted:<26} {str(shown):<14} {field.metadata.get('help', '')}")
    runtime = [a for a in parser._actions if a.dest in ("runs_dir", "device", "threads", "dry_run", "progress")]
    print("\nruntime (not part of the run hash):")
    for action in runtime:
        print(f"  {action.option_strings[0]:<28} {action.help}")
    print("  --preset NAME / --config FILE   starting point; flags override both")


def progress_mode(flag: str):
    """The trainer's progress setting: None (auto), True (bar), "lines" or False (none)."""
    return {"auto": None, "bar": True, "lines": "lines", "none": False}[flag]


def branch_config(args: argparse.Namespace):
    from ticketlab.config import BranchConfig, from_mapping

    return from_mapping(BranchConfig, {k[3:]: v for k, v in vars(args).items() if k.startswith("br:")}, "branch.")


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: List[str]) -> int:
    from ticketlab.methods import RunContext

    config = resolve_config(args, METHOD_OF[args.command])
    branch = branch_config(args) if args.command == "branch" else None
    if args.help:
        print_config_help(parser, config)
        return 0
    run_path = Path(args.runs_dir) / config.run_name
    if args.dry_run:
        print(config.to_json())
        if branch is not None:
            from ticketlab.config import to_jsonable

            print(json.dumps({"branch": to_jsonable(branch)}, indent=2))
        print(f"run directory: {run_path}")
        return 0
    ctx = RunContext(args.runs_dir, args.device, args.threads, progress_mode(args.progress), ["ticketlab", *argv])
    if args.command == "train":
        from ticketlab.methods import run_train

        run, summary = run_train(config, ctx)
        print(format_summary(summary))
        print(f"run directory: {run.path}")
        return 0
    from ticketlab.analysis.report import report_main

    if args.command == "lottery":
        from ticketlab.methods.lottery import run_lottery

        path, _ = run_lottery(config, args.levels, ctx)
    elif args.command == "rst":
        from ticketlab.methods.rst import run_rst

        path, _ = run_rst(config, ctx)
    else:
        from ticketlab.methods.branches import parse_levels, run_branches

        path = run_branches(config, branch, parse_levels(args.levels), ctx)
    print(report_main([str(path)], fmt="terminal", out_dir=path / "report"))
    print(f"run directory: {path}")
    return 0


def format_summary(summary: Dict[str, Any]) -> str:
    from ticketlab.analysis.table import render_table

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

    final = summary.get("final", {})
    rows = [[split, pct(final.get(split, {}).get("accuracy")), f"{final[split]['loss']:.4f}" if split in final else "-"]
            for split in ("val", "test") if split in final]
    rows.append(["test @ best val", pct(summary.get("test_accuracy_at_best_val")), "-"])
    table = render_table(["split", "accuracy %", "loss"], rows)
    return f"{table}\ndensity {100 * summary['density']:.2f}%, {summary['steps']} steps, {summary['train_seconds']:.1f} s"


def cmd_runs(args: argparse.Namespace) -> int:
    from ticketlab.analysis.table import render_table
    from ticketlab.io import read_json
    from ticketlab.runs import find_runs, load_config, remove_run, resolve_run, run_status

    runs_dir = Path(args.runs_dir)
    if args.action == "list":
        rows = []
        for path in find_runs(runs_dir):
            try:
                config = load_config(path)
            except TicketlabError:
                rows.append([path.name, "-", "-", "unreadable config.json", "-"])
                continue
            summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
            acc = summary.get("final_test_accuracy")
            rows.append([path.name, config.data.dataset, config.model.name, run_status(path),
                         "-" if acc is None else f"{100 * acc:.2f}"])
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


def cmd_report(args: argparse.Namespace) -> int:
    from ticketlab.analysis.report import report_main

    out_dir = None if args.no_plots else (args.out or Path(args.runs[0]) / "report")
    print(report_main(args.runs, fmt=args.format, plot=args.plot, curves=args.curves, out_dir=out_dir,
                      metric=args.metric))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "presets":
        from ticketlab.presets import describe_presets

        for name, text in describe_presets().items():
            print(f"{name:<28} {text}")
    elif args.what == "models":
        from ticketlab.models import MODELS

        print("\n".join(MODELS.names()))
    else:
        from ticketlab.data import DATASETS

        print("\n".join(DATASETS.names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ticketlab", description="Find, train and study sparse subnetworks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, text in RUN_COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text, add_help=False, allow_abbrev=False)
        add_method_flags(p, name)
        add_config_flags(p)
        add_runtime_flags(p)
    runs = sub.add_parser("runs", help="list, show or remove run directories")
    runs.add_argument("action", choices=["list", "show", "rm"])
    runs.add_argument("run", nargs="?", help="run name, hash prefix or path (show); full name or path (rm)")
    runs.add_argument("--runs-dir", default="runs")
    report = sub.add_parser("report", help="tables and plots of finished runs (seeds averaged)")
    report.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    report.add_argument("--format", choices=["terminal", "md", "csv", "json"], default="terminal")
    report.add_argument("--plot", help="path (stem, .png or .svg) of the accuracy-vs-density plot")
    report.add_argument("--curves", help="path (stem, .png or .svg) of the training-curve plot")
    report.add_argument("--out", help="folder for both plots (default: <first RUN>/report)")
    report.add_argument("--metric", choices=["final", "best"], default="final",
                        help="plotted accuracy: final test, or test at the best validation evaluation")
    report.add_argument("--no-plots", action="store_true", help="print the table only")
    lister = sub.add_parser("list", help="list presets, models or data sets")
    lister.add_argument("what", choices=["presets", "models", "datasets"])
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]
    if extra:
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in RUN_COMMANDS:
            return cmd_run(args, sub, argv)
        if args.command == "runs":
            return cmd_runs(args)
        if args.command == "report":
            return cmd_report(args)
        return cmd_list(args)
    except TicketlabError as exc:
        print(f"ticketlab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"ticketlab: error: {exc.strerror or exc}{where}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticketlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
