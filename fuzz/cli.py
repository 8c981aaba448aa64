"""The `normfuzz` command line: one function per subcommand, all registered in `COMMANDS`.

Exit codes: 0 success, 1 a command's own failure (`CommandError`, e.g. findings or a bad file),
2 usage error (argparse's message, no traceback), 3 internal error (a bug in normfuzz: message and
traceback on stderr), 130 interrupted.

To add a subcommand, write `_configure_<name>(parser)` (its arguments) and `_run_<name>(args) -> int`,
and add one `Command` line to `COMMANDS`. Import heavy or optional packages inside `_run_<name>`, so
that `normfuzz --help` and the other commands stay fast and work without them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

PROG = "normfuzz"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An expected failure a command reports to the user as `normfuzz: error: <message>` (exit 1)."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and the function that runs it."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def version() -> str:
    """The installed distribution's version, or `fuzz.__version__` when running from a source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("normfuzz")
    except PackageNotFoundError:
        from fuzz import __version__

        return __version__


# --------------------------------------------------------------------------------------------------
# bugzoo

_VARIANT_FIELDS = ("name", "op", "mode", "wrong", "trigger", "references")


def _configure_bugzoo(parser: argparse.ArgumentParser) -> None:
    form = parser.add_mutually_exclusive_group()
    form.add_argument("-v", "--verbose", action="store_true", help="show every field of each variant")
    form.add_argument("--json", action="store_true", help="print a JSON list of the variants")


def _run_bugzoo(args: argparse.Namespace) -> int:
    import bugzoo

    variants = [_variant_record(v) for v in bugzoo.VARIANTS]
    out = sys.stdout
    if args.json:
        json.dump(variants, out, indent=2)
        out.write("\n")
    elif args.verbose:
        for i, v in enumerate(variants):
            if i:
                out.write("\n")
            out.write(f"{v['name']}\n")
            for key in ("op", "mode", "wrong", "trigger"):
                out.write(f"  {key + ':':<11} {v[key]}\n")
            out.write("  references:" + ("" if v["references"] else " (none)") + "\n")
            for ref in v["references"]:
                out.write(f"    - {ref}\n")
    else:
        columns = ("name", "op", "mode", "trigger")
        rows = [columns] + [tuple(v[c] for c in columns) for v in variants]
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
            out.write("  ".join(cells).rstrip() + "\n")
        out.write(f"{len(variants)} variant{'s' if len(variants) != 1 else ''}\n")
    return EXIT_OK


def _variant_record(variant: object) -> dict[str, object]:
    """The metadata of one `bugzoo.VARIANTS` entry as plain data (an AttributeError is a bugzoo bug)."""
    record: dict[str, object] = {key: str(getattr(variant, key)) for key in _VARIANT_FIELDS[:-1]}
    record["references"] = [str(ref) for ref in getattr(variant, "references")]
    return record


# --------------------------------------------------------------------------------------------------
# backends


def _configure_backends(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runner", action="append", default=[], metavar="MODULE:FACTORY",
                        help="also load the runners of this plug-in factory (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")
    parser.add_argument("--matrix", action="store_true",
                        help="print each runner's op/mode x dtype support matrix with reasons")


def _runner_listing(runner) -> dict[str, object]:
    """Availability, version and support matrix of one runner (imports its framework if present)."""
    reason = runner.available()
    version_ = ""
    if reason is None:
        try:
            version_ = runner.version()
        except Exception as exc:  # noqa: BLE001 - a framework that fails to import is unavailable
            reason = f"{runner.framework_module} failed to import: {type(exc).__name__}: {exc}"
    matrix = {}
    for op, modes in sorted(runner.ops.items()):
        for mode in modes:
            matrix[f"{op}/{mode}"] = {dt: runner.supports(op, mode, dt, {}) for dt in
                                      ("float16", "bfloat16", "float32", "float64")}
    return {"id": runner.id, "framework": runner.framework, "available": reason is None,
            "reason": reason or "", "version": version_, "matrix": matrix,
            "conventions": runner.conventions.to_dict()}


def _run_backends(args: argparse.Namespace) -> int:
    from fuzz.runners import RunnerSpecError, discover

    broken: dict[str, str] = {}
    try:
        found = discover(args.runner, broken=broken)
    except RunnerSpecError as exc:
        raise CommandError(str(exc)) from exc
    rows = [dict(_runner_listing(r), factory=spec) for spec, r in
            sorted(found.values(), key=lambda sr: sr[1].id)]
    out = sys.stdout
    if args.json:
        json.dump({"runners": rows, "broken_factories": broken}, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    for spec, why in sorted(broken.items()):
        out.write(f"factory {spec} failed to load: {why}\n")
    short = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
    for r in rows:
        state = f"available  {r['framework']} {r['version']}" if r["available"] else f"UNAVAILABLE  {r['reason']}"
        n_ok = sum(v is None for m in r["matrix"].values() for v in m.values())
        out.write(f"{r['id']:<24} {state}  ({n_ok} op/mode/dtype combinations; factory {r['factory']})\n")
        if args.matrix:
            for key, per in r["matrix"].items():
                cells = " ".join(f"{short[d]}:{'yes' if why is None else 'no'}" for d, why in per.items())
                out.write(f"    {key:<34} {cells}\n")
                for d, why in per.items():
                    if why is not None and not why.startswith(f"{r['id']} has no code path"):
                        out.write(f"        {short[d]}: {why}\n")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# The one place subcommands are registered (campaign, repro, selftest, report, backends go here).

COMMANDS: tuple[Command, ...] = (
    Command("bugzoo", "list the bug zoo's known-buggy variants", _configure_bugzoo, _run_bugzoo),
    Command("backends", "list every runner: availability, framework version, supported ops/modes/dtypes",
            _configure_backends, _run_backends),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Differential fuzzer for normalization layers (BatchNorm, LayerNorm, ...)."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `normfuzz` with `argv` (default: `sys.argv[1:]`) and return the exit code."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # plug-in factories are found from the current folder, as with `python -m`
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed its message
        return _exit_code(exit_.code)
    try:
        return args._run(args)
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `normfuzz bugzoo | head`); silence the flush at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout is not a real file (e.g. captured)
            pass
        return EXIT_FAILURE
    except Exception as exc:
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return EXIT_INTERNAL


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("message") convention
    return EXIT_FAILURE
