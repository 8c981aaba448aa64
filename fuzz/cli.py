"""The `normfuzz` command line: one function per subcommand, all registered in `COMMANDS`.

Exit codes: 0 success, 1 a command's own failure (`CommandError`, e.g. new buckets, a bug that still
reproduces, a bad file), 2 usage error (argparse's message or a list of valid choices, no traceback),
3 internal error (a bug in normfuzz: message and traceback on stderr), 4 the environment failed
(disk full, read-only folder, database locked by another process), 130 interrupted.

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

from .importpath import import_path

PROG = "normfuzz"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_ENVIRONMENT = 4
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
        raise UsageError(str(exc)) from exc
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
# campaign

_BUDGET_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str) -> float:
    """'90s', '30m', '2h' or plain seconds -> seconds; ValueError with the accepted forms."""
    t = text.strip().lower()
    unit = t[-1] if t and t[-1] in _BUDGET_UNITS else "s"
    num = t[:-1] if t and t[-1] in _BUDGET_UNITS else t
    try:
        value = float(num) * _BUDGET_UNITS[unit]
    except ValueError:
        value = -1.0
    if not (value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid budget {text!r}: expected a positive duration such as 90s, 30m, 2h")
    return value


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected a positive integer")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected a positive number such as 60 or 0.5")
    return v


def _nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected an integer >= 0")
    return v


def _csv(text: str) -> list[str]:
    return [p for p in (x.strip() for x in text.split(",")) if p]


def _configure_campaign(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="campaign folder (database, summary, report)")
    parser.add_argument("--budget", type=parse_budget, metavar="DURATION", help="time budget: 90s, 30m, 2h")
    parser.add_argument("--cases", type=_positive_int, metavar="N", help="stop after N cases")
    parser.add_argument("--ops", type=_csv, default=[], metavar="OP,..", help="ops to fuzz (default: all)")
    parser.add_argument("--modes", type=_csv, default=[], metavar="MODE,..", help="modes (default: all)")
    parser.add_argument("--runners", type=_csv, default=[], metavar="ID,..", help="runner ids (default: all available)")
    parser.add_argument("--runner", action="append", default=[], metavar="MODULE:FACTORY",
                        help="load a plug-in runner factory (repeatable)")
    parser.add_argument("--dtypes", type=_csv, default=[], metavar="DTYPE,..", help="formats (default: all)")
    parser.add_argument("--regimes", type=_csv, default=[], metavar="REGIME,..", help="value regimes (default mix)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (same seed, same cases)")
    parser.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds a case may take in a worker")
    parser.add_argument("--memory-mb", type=_nonnegative_int, default=4096,
                        help="resident memory limit per worker in MiB (0: no limit)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted campaign in --out")
    parser.add_argument("--baseline", metavar="DIR", help="previous campaign: mark buckets new/recurring/fixed")
    parser.add_argument("--known-issues", metavar="FILE", default=DEFAULT_KNOWN_ISSUES,
                        help="TOML file of known issues with upstream links (default: normfuzz's own "
                             "fuzz/known_issues.toml; 'none' for no file)")
    parser.add_argument("--no-minimize", action="store_true", help="keep each new bucket's first case unshrunk")
    parser.add_argument("--jobs", type=_positive_int, default=_cores(), metavar="N",
                        help=f"campaign processes, one per core (default: the usable cores, here {_cores()})")
    parser.add_argument("--pack", type=_positive_int, default=DEFAULT_PACK, metavar="K",
                        help=f"cases drawn per Hypothesis example and evaluated in one framework call when "
                             f"they pack (default {DEFAULT_PACK}; 1: every case alone)")
    parser.add_argument("--pack-elements", type=_positive_int, default=DEFAULT_PACK_ELEMENTS, metavar="N",
                        help=f"the most data elements of one family in all: fewer than --pack members for "
                             f"larger cases (default {DEFAULT_PACK_ELEMENTS})")
    parser.add_argument("--max-elements", type=_positive_int, default=4096, metavar="N",
                        help="the most elements of a case's data input (default 4096; the 'long' regime ignores it)")
    parser.add_argument("--min-elements", type=_positive_int, default=1, metavar="N",
                        help="the fewest elements of a case's data input (large-case campaigns; default 1)")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


DEFAULT_PACK = 64  # fuzz.campaign.DEFAULT_PACK (not imported: the parser must not import numpy)
DEFAULT_PACK_ELEMENTS = 1 << 18  # fuzz.campaign.DEFAULT_PACK_ELEMENTS


def _cores() -> int:
    """The cores this process may run on (its CPU affinity), the default of --jobs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


DEFAULT_KNOWN_ISSUES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "known_issues.toml")


def _validate_selection(args) -> None:
    """Unknown ops, modes, dtypes or regimes are usage errors listing the valid choices."""
    import oracles

    from .strategies import REGIMES

    valid_modes = sorted({m for d in oracles.OPS.values() for m in d.modes})
    for what, given, valid in (("op", args.ops, sorted(oracles.OPS)), ("mode", args.modes, valid_modes),
                               ("dtype", args.dtypes, sorted(oracles.DTYPES)), ("regime", args.regimes, list(REGIMES))):
        bad = [g for g in given if g not in valid]
        if bad:
            raise UsageError(f"unknown {what}{'s' if len(bad) > 1 else ''} {', '.join(bad)}: "
                             f"choose from {', '.join(valid)}")


class UsageError(Exception):
    """A usage error found after parsing (exit 2, message listing the valid choices)."""


class EnvironmentFailure(Exception):
    """The environment failed the command: disk full, read-only folder, locked database (exit 4)."""


def _progress_printer(enabled: bool):
    if not enabled:
        return None

    def show(p: dict) -> None:
        sys.stderr.write(f"\r{p['elapsed']:7.0f}s  {p['cases']:9d} cases  {p['cases_per_second']:8.1f} cases/s  "
                         f"{p['findings']:6d} findings  {p['buckets']:4d} buckets ({p['new_buckets']} new)  ")
        sys.stderr.flush()

    return show


def _resumed_config(stored: object, out: str):
    """The CampaignConfig stored with a campaign, to continue it in `out` (where its folder is now,
    which need not be where it was made). StoreError when the stored configuration does not fit
    CampaignConfig (a damaged or edited database)."""
    import types
    import typing

    from .campaign import LEGACY_PACK_ELEMENTS, CampaignConfig
    from .store import StoreError

    hints = typing.get_type_hints(CampaignConfig)

    def fits(value: object, hint: object) -> bool:
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return any(fits(value, h) for h in typing.get_args(hint))
        if typing.get_origin(hint) is list:
            return isinstance(value, list) and all(isinstance(v, str) for v in value)
        if hint is type(None):
            return value is None
        if hint is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, hint)

    if not isinstance(stored, dict):
        raise StoreError(f"the stored campaign configuration is a {type(stored).__name__}, not an object")
    kept = {k: v for k, v in stored.items() if k in hints and k != "out"}
    if "pack_elements" not in stored:  # stored before --pack-elements existed
        kept["pack_elements"] = LEGACY_PACK_ELEMENTS
    bad = [f"{k}={v!r}" for k, v in kept.items() if not fits(v, hints[k])]
    if bad:
        raise StoreError(f"the stored campaign configuration is damaged: {', '.join(bad)[:300]}")
    return CampaignConfig(out=out, **kept)


def _refuse_changed_settings(args: argparse.Namespace, cfg) -> None:
    """--resume continues a campaign with its stored configuration: repeating the original options is
    fine, changing one (which would be silently ignored) is a usage error; only --budget and --cases
    may change."""
    stored = {"ops": cfg.ops, "modes": cfg.modes, "runners": cfg.runners, "runner": cfg.plugins,
              "dtypes": cfg.dtypes, "regimes": cfg.regimes, "seed": cfg.seed, "timeout": cfg.timeout,
              "memory_mb": cfg.memory_mb, "known_issues": cfg.known_issues, "baseline": cfg.baseline,
              "no_minimize": not cfg.minimize, "pack": cfg.pack, "pack_elements": cfg.pack_elements,
              "max_elements": cfg.max_elements,
              "min_elements": cfg.min_elements}
    default = build_parser().parse_args(["campaign", "--out", args.out])
    def given(name: str):  # as CampaignConfig stores it ('none' is no known-issues file)
        v = getattr(args, name)
        return None if name == "known_issues" and v == "none" else v

    changed = [f"--{name.replace('_', '-')} {getattr(args, name)!r} (stored: {value!r})"
               for name, value in stored.items()
               if getattr(args, name) != getattr(default, name) and given(name) != value]
    if changed:
        raise UsageError(f"--resume continues the campaign in {args.out} with its stored configuration, and "
                         f"{'; '.join(changed)} differ{'s' if len(changed) == 1 else ''} from it: only --budget "
                         f"and --cases can change")


def _run_campaign(args: argparse.Namespace) -> int:
    _validate_selection(args)
    if args.budget is None and args.cases is None and not args.resume:
        raise UsageError("give a budget: --budget DURATION and/or --cases N")
    from .campaign import Campaign, CampaignConfig, checkpoint_state
    from .runners import RunnerSpecError

    out = args.out
    if args.resume:
        from .store import Store, StoreError

        try:
            with Store.open(out, readonly=True) as prev:
                cfg = _resumed_config(prev.campaign()["config"], out)
                checkpoint_state(prev)
        except StoreError as exc:
            raise CommandError(f"cannot resume {out}: {exc}") from exc
        _refuse_changed_settings(args, cfg)
        if args.budget is not None:
            cfg.budget_seconds = args.budget
        if args.cases is not None:
            cfg.max_cases = args.cases
    else:
        if os.path.exists(os.path.join(out, "findings.sqlite")):
            raise UsageError(f"{out} already holds a campaign: use --resume to continue it or another --out")
        cfg = CampaignConfig(out=out, ops=args.ops, modes=args.modes, runners=args.runners, plugins=args.runner,
                             dtypes=args.dtypes, regimes=args.regimes, budget_seconds=args.budget,
                             max_cases=args.cases, seed=args.seed, timeout=args.timeout, memory_mb=args.memory_mb,
                             known_issues=None if args.known_issues == "none" else args.known_issues,
                             baseline=args.baseline,
                             minimize=not args.no_minimize, pack=args.pack, pack_elements=args.pack_elements,
                             jobs=args.jobs,
                             max_elements=args.max_elements, min_elements=args.min_elements)
        if args.min_elements > args.max_elements:
            raise UsageError(f"--min-elements {args.min_elements} exceeds --max-elements {args.max_elements}")
    show = _progress_printer(not args.quiet and sys.stderr.isatty())
    try:
        camp = Campaign(cfg, resume=args.resume, on_progress=show, write_report=not args.no_report)
        summary = camp.run()
    except Exception as exc:
        from .baseline import KnownIssuesError
        from .store import StoreError

        from .campaign import CampaignConfigError

        if isinstance(exc, (RunnerSpecError, KnownIssuesError, CampaignConfigError)):
            raise UsageError(str(exc)) from exc
        if isinstance(exc, StoreError):
            raise EnvironmentFailure(str(exc)) from exc
        raise
    if show:
        sys.stderr.write("\n")
    _print_campaign_summary(summary, out)
    new = summary.get("buckets_by_status", {}).get("new", 0)
    return EXIT_FAILURE if new else EXIT_OK


def _print_campaign_summary(summary: dict, out: str) -> None:
    from .store import bucket_id

    w = sys.stdout.write
    w(f"campaign {summary['status']}: {summary['cases_run']} cases in {summary['seconds']:.0f}s "
      f"({summary['cases_per_second'] or 0:.1f} cases/s), {summary['findings']} findings in "
      f"{summary['buckets']} buckets ({', '.join(f'{n} {s}' for s, n in summary['buckets_by_status'].items() if n)})\n")
    for b in summary.get("bucket_list", []):
        w(f"  [{b['status']}] {bucket_id(b['key'])}  {b['op']}/{b['mode']} {b['runner']} {b['dtype']} "
          f"{b['category']} {b['signature']}  x{b['count']}\n")
    for rid, why in sorted(summary.get("unavailable", {}).items()):  # it compared nothing: say why
        lines = [ln.strip() for ln in str(why).splitlines() if ln.strip()]
        w(f"unavailable: {rid} did not run ({lines[-1] if lines else 'no reason given'})\n")
    for warning in summary.get("warnings", []):
        w(f"warning: {warning}\n")
    w(f"summary: {os.path.join(out, 'summary.json')}\n")

# --------------------------------------------------------------------------------------------------
# repro


def _configure_repro(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="BUCKET_OR_CASE_FILE",
                        help="a case file (.json/.npz), or RUN_DIR/BUCKET_ID (or RUN_DIR/BUCKET_KEY) of a campaign")
    parser.add_argument("--runners", type=_csv, default=[], metavar="ID,..",
                        help="runner ids (default: the bucket's runner, or every runner that supports the case)")
    parser.add_argument("--runner", action="append", default=[], metavar="MODULE:FACTORY",
                        help="load a plug-in runner factory (repeatable)")
    parser.add_argument("--emit-script", metavar="DIR", help="write a standalone script per runner into DIR")
    parser.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds the case may take")
    parser.add_argument("--json", action="store_true", help="print the result rows as JSON")


def _refuse_unrunnable(case, source: str = "") -> None:
    """Refuse (CommandError), before any runner sees it, a case that no campaign generates: one the
    oracle rejects for anything but the values of one of its input arrays. A negative running_var is
    a fuzz case (does the framework refuse it?); an unknown op or mode, a missing or unknown input or
    attr, an attr of the wrong type or an impossible shape is a malformed file, which runners are not
    written to survive."""
    from oracles.errormodel import Precision

    from .compare import reference

    rejection = reference(case, Precision.of(case.dtype)).rejection
    if rejection is not None and rejection.parameter not in case.inputs:
        raise CommandError(f"{source + ': ' if source else ''}case {case.id} ({case.summary()}) is not a case "
                           f"normfuzz can run: the oracle rejects it ({rejection}); nothing was run")


def _resolve_target(target: str):
    """(case, bucket dict or None) for a case file or RUN_DIR/BUCKET_ID."""
    from .case import Case, CaseFormatError
    from .store import Store, StoreError, bucket_id

    p = target.rstrip("/")
    if os.path.isfile(p):
        try:
            return Case.load(p), None
        except CaseFormatError as exc:
            raise CommandError(str(exc)) from exc
    run_dir, _, ident = p.rpartition("/")
    if not run_dir or not os.path.isdir(run_dir):
        raise UsageError(f"{target!r} is neither a case file nor RUN_DIR/BUCKET_ID of a campaign folder")
    try:
        store = Store.open(run_dir, readonly=True)
    except StoreError as exc:
        raise CommandError(str(exc)) from exc
    try:
        buckets = [b for b in store.buckets() if ident in (b["key"], bucket_id(b["key"]))]
        if not buckets:
            raise UsageError(f"no bucket {ident!r} in {run_dir}: choose from "
                             f"{', '.join(bucket_id(b['key']) for b in store.buckets()) or '(none)'}")
        b = buckets[0]
        if not b.get("min_case_id"):
            raise CommandError(f"bucket {ident} has no stored case to reproduce")
        return store.case(b["min_case_id"]), b
    except (StoreError, KeyError) as exc:  # a damaged or edited database
        raise CommandError(f"cannot reproduce {target}: {exc.args[0] if isinstance(exc, KeyError) else exc}") from exc
    finally:
        store.close()


def _run_repro(args: argparse.Namespace) -> int:
    import numpy as np

    from .isolation import Worker, WorkerSetupError
    from .runners import RunnerSpecError, discover
    from .store import bucket_key
    from .triage import judge

    case, bucket = _resolve_target(args.target)
    _refuse_unrunnable(case, args.target)
    try:
        found = discover(args.runner, broken={})
    except RunnerSpecError as exc:
        raise UsageError(str(exc)) from exc
    wanted = args.runners or ([bucket["runner"]] if bucket else sorted(found))
    unknown = [r for r in wanted if r not in found]
    if unknown:
        raise UsageError(f"unknown runner(s) {', '.join(unknown)}: choose from {', '.join(sorted(found))}")
    rows, reproduced = [], False
    print(f"case {case.id}: {case.summary()}")
    for rid in wanted:
        spec, runner = found[rid]
        why = runner.available() or runner.supports(case.op, case.mode, case.dtype, case.attrs)
        if why is not None:
            if args.runners or bucket:
                rows.append({"runner": rid, "status": "UNSUPPORTED", "category": "unsupported", "explanation": why})
            continue
        try:
            with Worker(spec, rid, timeout=args.timeout) as w:
                outcome = w.run(case)
        except WorkerSetupError as exc:
            rows.append({"runner": rid, "status": "UNAVAILABLE", "category": "", "explanation": str(exc)})
            continue
        verdict, finding = judge(case, outcome, runner.conventions_for(case.op, case.attrs))
        max_err = max((float(np.max(np.abs(np.asarray(c.actual) - np.asarray(c.expected)))) for c in verdict.checks
                       if np.isfinite(c.actual) and np.isfinite(c.expected)), default=0.0) if verdict.checks else 0.0
        nan_diff = sum(c.pattern_mismatches for c in verdict.checks)
        hit = finding is not None and (bucket is None or bucket_key(*finding.key) == bucket["key"])
        reproduced |= hit
        rows.append({"runner": rid, "status": outcome.status, "category": finding.category if finding else verdict.category,
                     "max_error": max_err, "ratio": verdict.max_ratio, "nan_differences": nan_diff,
                     "explanation": finding.explanation if finding else "agrees with the oracle"
                     if verdict.category == "agree" else verdict.category,
                     "reproduces": hit})
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        w = sys.stdout.write
        w(f"{'runner':<24} {'status':<11} {'category':<16} {'max error':>10} {'err/bound':>10} {'NaN diff':>8}  explanation\n")
        for r in rows:
            w(f"{r['runner']:<24} {r['status']:<11} {r['category']:<16} {r.get('max_error', 0):>10.3g} "
              f"{r.get('ratio', 0):>10.3g} {r.get('nan_differences', 0):>8}  {r['explanation']}\n")
        if bucket:
            w(f"bucket {bucket['key']}: {'still reproduces' if reproduced else 'does not reproduce'}\n")
    if args.emit_script:
        from .scripts import write_scripts

        note = bucket["key"] if bucket else ""
        paths = write_scripts(case, [found[r][1] for r in wanted if r in found], args.emit_script, note=note)
        for p in paths:
            print(f"wrote {p}")
    return EXIT_FAILURE if reproduced else EXIT_OK


# --------------------------------------------------------------------------------------------------
# selftest


def _configure_selftest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", type=_csv, default=[], metavar="NAME,..", help="bug-zoo variants (default: all)")
    parser.add_argument("--ops", type=_csv, default=[], metavar="OP,..", help="only variants of these ops")
    parser.add_argument("--max-cases", type=_positive_int, default=2000, help="cases allowed per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack", type=_positive_int, default=1, metavar="K",
                        help="the campaigns' --pack (default 1: cases counts distinct cases to detection; "
                             "64, a campaign's default, measures detection through packed calls, cases "
                             "then counting whole families)")
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")


def _run_selftest(args: argparse.Namespace) -> int:
    import bugzoo

    from .selftest import score

    names = {v.name for v in bugzoo.VARIANTS}
    bad = [v for v in args.variants if v not in names]
    if bad:
        raise UsageError(f"unknown variant(s) {', '.join(bad)}: choose from {', '.join(sorted(names))}")
    ops = sorted({v.op for v in bugzoo.VARIANTS})
    bad = [op for op in args.ops if op not in ops]
    if bad:
        raise UsageError(f"unknown op(s) {', '.join(bad)}: choose from {', '.join(ops)}")
    w = sys.stdout.write
    w(f"{'variant':<34} {'op':<14} {'detected':<9} {'cases':>6} {'seconds':>8}\n")

    def show(s) -> None:
        w(f"{s.variant:<34} {s.op:<14} {'yes' if s.detected else 'NO':<9} {s.cases:>6} {s.seconds:>8.1f}"
          + ("" if s.detected else f"   (first finding: {s.first_signature or 'none'})") + "\n")
        sys.stdout.flush()

    scores = score(variants=args.variants or None, ops=args.ops or None, max_cases=args.max_cases,
                   seed=args.seed, pack=args.pack, on_score=show)
    missed = [s for s in scores if not s.detected]
    w(f"{len(scores) - len(missed)} of {len(scores)} variants detected with the right explanation within "
      f"{args.max_cases} cases; median {sorted(s.cases for s in scores)[len(scores) // 2] if scores else 0} cases"
      f"{f' (--pack {args.pack})' if args.pack != 1 else ''}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([s.to_dict() for s in scores], f, indent=2)
    return EXIT_FAILURE if missed else EXIT_OK

# --------------------------------------------------------------------------------------------------
# report


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the campaign folder (holding findings.sqlite)")
    parser.add_argument("--compare", metavar="PREV_RUN_DIR",
                        help="another campaign: bucket statuses new/known/recurring/fixed against its buckets")
    parser.add_argument("--out", metavar="FILE", help="the HTML file to write (default: RUN_DIR/report.html)")


def _run_report(args: argparse.Namespace) -> int:
    from reports import write_report

    from .store import StoreError, database_path

    for what, folder in (("campaign", args.run_dir), ("compared campaign", args.compare)):
        if folder is not None and not database_path(folder).exists():
            raise CommandError(f"{folder}: no findings database here ({what} folder expected, holding "
                               f"findings.sqlite)")
    out = args.out or os.path.join(args.run_dir, "report.html")
    try:
        path = write_report(args.run_dir, out, compare=args.compare)
    except StoreError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise EnvironmentFailure(f"cannot write the report {out}: {exc.strerror or exc}") from exc
    print(f"report: {path}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# The one place subcommands are registered (campaign, repro, selftest, report, backends go here).

COMMANDS: tuple[Command, ...] = (
    Command("bugzoo", "list the bug zoo's known-buggy variants", _configure_bugzoo, _run_bugzoo),
    Command("backends", "list every runner: availability, framework version, supported ops/modes/dtypes",
            _configure_backends, _run_backends),
    Command("campaign", "fuzz the selected ops, runners and formats for a budget; store and triage findings",
            _configure_campaign, _run_campaign),
    Command("repro", "re-run a bucket's minimal case or a case file; emit standalone bug-report scripts",
            _configure_repro, _run_repro),
    Command("selftest", "inject each bug-zoo variant as a runner and measure how fast it is caught",
            _configure_selftest, _run_selftest),
    Command("report", "write a campaign's self-contained HTML report (optionally compared with another campaign)",
            _configure_report, _run_report),
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
    # Plug-in factories are found from the current folder, as with `python -m`, but behind normfuzz's
    # own packages; the --jobs processes inherit this path.
    sys.path[:] = import_path(sys.path, os.getcwd())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: argparse has printed its message
        return _exit_code(exit_.code)
    try:
        return args._run(args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EnvironmentFailure as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
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
