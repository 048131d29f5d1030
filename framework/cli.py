"""The ``flashsim`` command line: run, plugins, provenance, conditions."""
from __future__ import annotations

import argparse
import json
import sys
import traceback

import yaml

from . import __version__
from .errors import ConfigurationError, EventError, FlashsimError


def _plugins(args):
    from .registry import Plugins

    return Plugins(extra_plugins=getattr(args, "plugin", None) or (), trace=getattr(args, "trace_plugins", False))


def build_parser(plugins=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsim", description="flashsim: flash simulation for an LHCb-like experiment")
    parser.add_argument("--version", action="version", version=f"flashsim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a job from options files")
    run.add_argument("options", nargs="+", help="YAML options files (merged in order, later wins)")
    run.add_argument("-n", "--num-events", type=int, help="number of events (ApplicationMgr.EvtMax)")
    run.add_argument("--first-event", type=int, help="global number of the first event (ApplicationMgr.FirstEvent)")
    run.add_argument("--seed", type=int, help="job seed (ApplicationMgr.Seed)")
    run.add_argument("--run-number", type=int, help="run number (ApplicationMgr.RunNumber)")
    run.add_argument("--batch-size", type=int, help="events per batch (ApplicationMgr.BatchSize)")
    run.add_argument("-o", "--output", help="output ROOT file (ApplicationMgr.Output)")
    run.add_argument("-j", "--processes", type=int, help="worker processes (ApplicationMgr.Processes)")
    run.add_argument("--set", action="append", default=[], metavar="NAME.PROPERTY=VALUE",
                     help="override a property (parsed by its type); repeatable")
    run.add_argument("--dry-run", action="store_true", help="print the effective configuration and exit")
    run.add_argument("--dump", metavar="FILE.yaml", help="write the effective configuration (re-runnable as is)")
    run.add_argument("--show-dataflow", action="store_true", help="print the data-flow graph and exit")
    run.add_argument("--dataflow-dot", metavar="FILE.dot", help="write the data-flow graph as Graphviz DOT")
    run.add_argument("-p", "--plugin", action="append", default=[], help="extra plugin module to register")
    run.add_argument("--trace-plugins", action="store_true", help="trace pluggy hook calls")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    if plugins is not None:
        plugins.pm.hook.flashsim_add_cli_options(parser=run)

    pl = sub.add_parser("plugins", help="list plugins and components with their properties")
    pl.add_argument("-p", "--plugin", action="append", default=[], help="extra plugin module to register")
    pl.add_argument("-q", "--quiet", action="store_true", help="component names only")

    pv = sub.add_parser("provenance", help="print the provenance stored in an output file")
    pv.add_argument("file")
    pv.add_argument("--json", action="store_true", help="raw JSON")

    sub.add_parser("conditions", help="list the conditions tags")
    return parser


def _overrides(args) -> list[str]:
    ov = []
    mapping = {"num_events": "EvtMax", "first_event": "FirstEvent", "seed": "Seed", "run_number": "RunNumber",
               "batch_size": "BatchSize", "output": "Output", "processes": "Processes"}
    for attr, prop in mapping.items():
        value = getattr(args, attr)
        if value is not None:
            ov.append(f"ApplicationMgr.{prop}={value}")
    return ov + list(args.set)


def cmd_run(args, plugins) -> int:
    from .appmgr import ApplicationMgr
    from .options import load_options
    from .parallel import run_parallel

    options = load_options(args.options)
    overrides = _overrides(args)
    app = ApplicationMgr(options, overrides, plugins, cli_args=args)
    if args.dump:
        with open(args.dump, "w") as f:
            yaml.safe_dump(app.effective_configuration(), f, sort_keys=False)
    if args.dry_run:
        print(yaml.safe_dump(app.effective_configuration(), sort_keys=False), end="")
        return 0
    if args.dataflow_dot:
        with open(args.dataflow_dot, "w") as f:
            f.write(app.dataflow_dot() + "\n")
    if args.show_dataflow:
        print(app.dataflow_text())
        app.check_dataflow()
        return 0
    if args.dump or args.dataflow_dot:
        return 0
    if app.Processes > 1:
        summary = run_parallel(app, args.options, overrides, args.plugin)
        print(f"Events: {summary['events_requested']} requested, {summary['events_processed']} passed, "
              f"{summary['events_failed']} failed in {len(summary['shards'])} shards; wall {summary['wall_seconds']:.2f} s")
        if app.Output:
            print(f"output written to {app.Output}")
    else:
        app.run()
    return 0


def cmd_plugins(args, plugins) -> int:
    for name, dist, version, hooks in plugins.plugin_rows():
        print(f"plugin {name}  [{dist} {version}]  hooks: {', '.join(hooks)}")
    print()
    for type_name, info in sorted(plugins.components.components.items()):
        cls = info.cls
        print(f"{type_name}  — {cls.summary_doc()}  [plugin {info.plugin}, {info.distribution} {info.version}]")
        if args.quiet:
            continue
        for key, prop in cls._properties.items():
            kind = {"input": "Input ", "output": "Output"}.get(prop.kind, "      ")
            tname = getattr(prop.type, "__name__", str(prop.type))
            print(f"    {kind} {key:<24} {tname:<6} = {prop.default!r:<28} {prop.doc}")
    return 0


def cmd_provenance(args) -> int:
    from .output import read_provenance

    prov = read_provenance(args.file)
    if args.json:
        print(json.dumps(prov, indent=1))
    else:
        print(yaml.safe_dump(prov, sort_keys=False), end="")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        plugins = None
        if argv and argv[0] in ("run", "plugins", "conditions"):
            pre = argparse.ArgumentParser(add_help=False)
            pre.add_argument("-p", "--plugin", action="append", default=[])
            pre.add_argument("--trace-plugins", action="store_true")
            known, _ = pre.parse_known_args(argv[1:])
            plugins = _plugins(known)
        parser = build_parser(plugins)
        args = parser.parse_args(argv)
        if args.command == "run":
            return cmd_run(args, plugins)
        if args.command == "plugins":
            return cmd_plugins(args, plugins)
        if args.command == "provenance":
            return cmd_provenance(args)
        if args.command == "conditions":
            for tag in plugins.conditions.tags():
                meta = plugins.conditions.meta(tag)
                flag = " (extrapolation)" if meta["extrapolation"] else ""
                print(f"{tag}{flag}: {meta['description']}  [{meta['provider']}]")
            return 0
        parser.print_help()
        return 2
    except ConfigurationError as exc:
        if debug:
            traceback.print_exc()
        print(f"flashsim: error: {exc}", file=sys.stderr)
        return 2
    except EventError as exc:
        if debug:
            traceback.print_exc()
        print(f"flashsim: job failed: {exc}", file=sys.stderr)
        return 3
    except FlashsimError as exc:
        if debug:
            traceback.print_exc()
        print(f"flashsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flashsim: interrupted; no output file written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
