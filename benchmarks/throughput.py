"""Throughput benchmark of normfuzz: cases per second against the frameworks' own cost and a naive fuzzer.

    .venv/bin/python benchmarks/throughput.py                      # all five ops, both sizes (~25-30 min)
    .venv/bin/python benchmarks/throughput.py --quick              # 2 ops, short budgets (~5 min)
    .venv/bin/python benchmarks/throughput.py --ops layer_norm --sizes small --json bench.json
    .venv/bin/python benchmarks/throughput.py --memory-soak 30m    # resident memory of a long campaign

Everything is measured in one run on one machine, per op, in float32, on three runners (one per
framework): `torch.functional`, `tf.nn` and `ort`. Ops and modes: batch_norm in mode `training`
(batch statistics: the usual training forward; the naive code for it is easy in all three frameworks),
layer_norm, group_norm, instance_norm and rms_norm in mode `forward`. `tf.nn` has no RMSNorm, so
rms_norm uses the `keras` runner (keras.layers.RMSNormalization) instead; the choice is made with the
runners' own `supports(...)` and printed. Regimes: every regime of `fuzz.strategies.REGIMES` but `long`
(which ignores the size bounds). Two size classes:

    small   each case at most 4,096 elements (normfuzz `--max-elements 4096`)
    large   about one million elements (normfuzz `--min-elements 786432 --max-elements 1310720`)

The numbers, per (op, size):

raw floor (ms/case)
    What the three frameworks alone cost per case: the sum over the three runners of the mean seconds
    of one `runner.run(case)` call. Cases are drawn with the campaign's own generator
    (`fuzz.strategies.case_specs(...)` drawn by a seeded Hypothesis `@given` loop that only collects
    specs, then `fuzz.strategies.materialize`, both before any timing), ~200 small or ~10 large. The
    runners come from `fuzz.runners.discover`, run in-process (no worker, no oracle, no comparison),
    after `setup()` and 3 warm-up calls on other cases; each call is timed with `time.perf_counter`.
    A case a runner does not support is skipped for that runner; a call the framework raises in
    counts its time. It runs in a subprocess pinned to one core, like the campaign it is compared with.
    Two passes over the same cases, two figures:
      "1st ms"    the first pass: includes what a runner does once per *kind* of case (a tf.function
                  trace per rank and attribute set, an ONNX Runtime session per graph signature, a
                  Keras layer build), each far dearer than a call (compare the two columns), spread
                  over only ~200 (or ~10) cases;
      "floor ms"  the second pass over the same cases, those caches warm: the framework's steady-state
                  cost per case, which is what a campaign of thousands of cases (or minutes of large
                  ones) pays per case once its workers have seen each kind. This is the raw floor
                  the ratio below uses; a first-pass floor would be inflated by one-time work that
                  a long campaign amortizes, and would flatter normfuzz.

gen ms, oracle ms (per case)
    Measured in the raw floor's process on its cases: drawing one case's arrays (`materialize`) and
    the oracle's references and bounds at each precision the runners declare (summed). A campaign
    pays both for every case; for unpacked (large) cases (gen + oracle + floor) / floor is a lower
    bound on e2e/floor on one core that no plumbing removes.

normfuzz (cases/s, 1 core)
    End-to-end campaign throughput: `normfuzz campaign --jobs 1 ...` (generation, oracle (float64 for
    these float32 cases), the three runners in their isolated workers, comparison through the error model,
    triage, storage in SQLite; `--no-minimize --no-report --quiet`) run as a subprocess for `--budget`
    seconds and pinned to one core (`os.sched_setaffinity`, inherited by its workers). From its
    `summary.json`: cases/s = totals.cases_run / (totals.seconds - totals.startup_seconds), where
    startup_seconds is the time spent starting the worker processes (importing the frameworks); a
    normfuzz that does not report it has it counted as fuzzing time (printed as "startup included").
    A case is one generated input run on every selected runner that supports it.

naive (cases/s, 1 core)
    What someone would write with plain tools: a Hypothesis `@given` test drawing
    `hypothesis.extra.numpy.arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32))` with
    `array_shapes(max_dims=4, max_side=8)` (so at most 4,096 elements), gamma/beta drawn the same way,
    eps from (1e-5, 1e-3, 1e-6), calling torch.nn.functional, TensorFlow ops in eager mode
    (tf.nn.moments + tf.nn.batch_normalization; keras.ops.rms_normalization for RMSNorm) and an ONNX
    Runtime InferenceSession of a one-node model built with onnx.helper (sessions cached by op, rank,
    eps and the op's axis/groups), and comparing each output with a float64 numpy reference by
    `numpy.testing.assert_allclose(rtol=1e-4, atol=1e-5)` (a mismatch is counted and the run goes on).
    Settings: `max_examples=--naive-examples, database=None, deadline=None, derandomize=True`, all
    health checks off. Frameworks are imported, set to one thread each (as normfuzz's runners are:
    threads beyond the one pinned core only compete for it) and called once on a throw-away input
    before the clock starts, mirroring the startup time the campaign's figure excludes. It runs in a
    subprocess of this script pinned to one core. Note what the naive test really draws: `arrays()`
    fills most of an array with one background value (its default `fill`) and draws a few elements
    individually, so most of its inputs are nearly constant; with `fill=st.nothing()` Hypothesis cannot
    generate even a 4,096-element array (every example overruns its choice budget: Unsatisfiable).
    For the same reason there is no naive figure for large cases ("n/a"): a 1M-element `arrays()` draw
    is one fill value plus a few hundred drawn elements, not a fuzzing input, and element-by-element
    drawing cannot produce it at all; the large rows compare normfuzz with the raw floor only.

normfuzz/naive
    The speed-up of normfuzz over the naive fuzzer, both on one core (target, small: >= 20).

e2e/floor
    (1 / normfuzz cases/s) / raw floor (steady state, "floor ms"): end-to-end seconds per case over the
    frameworks' own seconds per case; 1 would mean normfuzz adds nothing to the framework calls
    (target, large: <= 2). The JSON also holds the ratio over the first-pass floor.

jobs2/jobs1
    The speed-up of `normfuzz campaign --jobs 2` pinned to two cores over `--jobs 1` pinned to one
    core *on equal work*, small cases (target: >= 1.7). A campaign's work comes in rounds (200
    Hypothesis examples each, seeded by the round number, so round r runs the same cases whichever
    job runs it), and rounds differ in cost by up to ~10x: one that enters Hypothesis's targeting
    phase hill-climbs (an RMSNorm campaign: 7 rounds in 265 s, 40 s on average, 17,873 of 19,081 draws
    overrunning), one whose cases are findings re-runs, triages and stores each. Comparing throughput
    over a budget therefore compares different rounds: with the same 60 s, one core runs the first
    rounds and two jobs about twice as many (RMSNorm: 1.47), and the same case count is no better
    (2.91: the two jobs' budget cut a slow round short that one core had to run through). So: the `--jobs 2` campaign runs for the budget; a `--jobs 1` campaign then runs as many
    cases (`--cases N`); each campaign's summary.json lists its rounds (totals.rounds: fuzzing seconds,
    cases, ran to its end); over the rounds both ran to their end with the same cases,
    jobs2/jobs1 = 2 x (one core's seconds) / (the two jobs' seconds), each job having run its rounds
    while the other ran its own. The JSON keeps the two throughput ratios as well:
    `jobs_scaling_cases` (cases/s of the two campaigns of N cases) and `jobs_scaling_budget` (cases/s of
    the two campaigns of the budget). n/a when normfuzz has no `--jobs`, reports no rounds, or fewer
    than two cores are available.

peak RSS (MiB)
    The largest sum of VmRSS (/proc/PID/status) over the process and all its descendants, polled every
    0.2 s: the campaign's whole tree (main process and workers) and the naive subprocess. A sum of RSS
    counts pages shared between processes (shared libraries) once per process, so it is an upper bound.

`--memory-soak DURATION` instead runs one campaign with default settings (every available runner, every
op unless `--ops` is given, the default `--jobs`, not pinned) for DURATION, samples the tree's total RSS every 5 s, and reports RSS at
1 minute, at the end of the budget, the maximum, and the growth after the first minute,
(RSS at end - RSS at 1 min) / RSS at 1 min (target < 10%); the samples go to `--samples` (CSV).

The machine (CPU model, cores, RAM), package versions and this command line are printed first; the
final table is printed and, with `--json FILE`, written as JSON. Flags of `normfuzz campaign` that an
older normfuzz lacks (`--jobs`, `--pack`, `--max-elements`, `--min-elements`) are detected with
`normfuzz campaign --help`; the measurements that need them are then n/a or flagged.

Exit status: 0 when every measurement ran (whatever the PASS/FAIL of the targets), 1 when one failed
(it is printed where it happened and at the end, and recorded under "failures" in the JSON).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm")
#: The mode benchmarked per op: batch_norm's training forward (batch statistics), else forward.
MODES = {"batch_norm": "training", "layer_norm": "forward", "group_norm": "forward",
         "instance_norm": "forward", "rms_norm": "forward"}
SIZES = {"small": {"max_elements": 4096, "min_elements": None},
         "large": {"max_elements": 1_310_720, "min_elements": 786_432}}
DTYPE = "float32"
#: Runner per framework; the second TensorFlow runner is used where tf.nn has no code path.
TORCH_RUNNER, TF_RUNNERS, ORT_RUNNER = "torch.functional", ("tf.nn", "keras"), "ort"
DEFAULT_BUDGET = {"small": 60.0, "large": 120.0}
DEFAULT_FLOOR_CASES = {"small": 200, "large": 10}
DEFAULT_NAIVE_EXAMPLES = 500
QUICK = {"ops": ("batch_norm", "layer_norm"), "budget": {"small": 30.0, "large": 30.0},
         "floor_cases": {"small": 50, "large": 3}, "naive_examples": 100}
WARMUP = 3
RSS_INTERVAL = 0.2
SOAK_INTERVAL = 5.0
TARGETS = {"naive_speedup": 20.0, "e2e_over_floor": 2.0, "jobs_scaling": 1.7, "soak_growth_pct": 10.0}
NAIVE_EPS = (1e-5, 1e-3, 1e-6)
NAIVE_LARGE_NA = ("n/a: hypothesis.extra.numpy.arrays() cannot draw a 1M-element fuzzing input (its default "
                  "fill makes the array one background value plus a few hundred drawn elements; drawing "
                  "every element overruns Hypothesis's choice budget even at 4,096 elements)")


def bench_regimes() -> tuple[str, ...]:
    """Every regime of the campaign's generator but "long" (which ignores the size bounds)."""
    from fuzz.strategies import REGIMES

    return tuple(r for r in REGIMES if r != "long")


# ==================================================================================================
# Machine, versions, processes


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores (all, and those this process may use), RAM, OS, Python."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gib = int(line.split()[1]) / 1024**2
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(_usable_cpus()),
            "ram_gib": None if ram_gib is None else round(ram_gib, 1), "os": platform.platform(),
            "python": sys.version.split()[0]}


def versions() -> dict[str, str]:
    """Installed versions of normfuzz, numpy, hypothesis and the frameworks (not imported)."""
    from importlib import metadata

    out = {}
    for key, names in (("normfuzz", ("normfuzz",)), ("numpy", ("numpy",)), ("hypothesis", ("hypothesis",)),
                       ("torch", ("torch",)), ("tensorflow", ("tensorflow-cpu", "tensorflow")),
                       ("keras", ("keras",)), ("onnxruntime", ("onnxruntime",)), ("onnx", ("onnx",))):
        for n in names:
            try:
                out[key] = metadata.version(n)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            out[key] = "not installed"
    return out


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def ops_argument(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The ops of a comma list given to `parser`'s --ops; an unknown op is a usage error."""
    ops = [o for o in text.split(",") if o]
    unknown = sorted(set(ops) - set(MODES))
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}: choose from {', '.join(MODES)}")
    return ops


def two_cpus(script: str, why: str = "") -> list[int] | None:
    """The first two usable cores, or None (with a message on stderr) when there are fewer."""
    cpus = _usable_cpus()
    if len(cpus) < 2:
        print(f"{script}: needs two usable cores{why}", file=sys.stderr)
        return None
    return cpus[:2]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum of VmRSS in bytes, number of processes) over `pid` and all its descendants."""
    kids = _children()
    todo, total, count = [pid], 0, 0
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, ()))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        count += 1
                        break
        except OSError:  # gone meanwhile
            continue
    return total, count


class RSSMonitor(threading.Thread):
    """Polls `tree_rss(pid)` every `interval` seconds until stopped; keeps the peak (and, with
    keep_samples, every sample as (seconds since start, bytes, processes))."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL, *, keep_samples: bool = False):
        super().__init__(daemon=True)
        self.pid, self.interval, self.keep = pid, interval, keep_samples
        self.peak = 0
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while True:
            rss, n = tree_rss(self.pid)
            self.peak = max(self.peak, rss)
            if self.keep and n:
                self.samples.append((time.monotonic() - self._t0, rss, n))
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _pin(cpus: Sequence[int] | None):
    if not cpus:
        return None
    cpus = set(cpus)
    return lambda: os.sched_setaffinity(0, cpus)


def run_monitored(cmd: Sequence[str], *, cpus: Sequence[int] | None, timeout: float,
                  interval: float = RSS_INTERVAL, keep_samples: bool = False,
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd` (cwd: the repository) pinned to `cpus`, polling its process tree's RSS.

    Returns rc (None if killed at `timeout`), stdout, stderr, wall seconds, peak_rss (bytes) and the
    RSS samples. The command runs in its own session; on timeout that process group is killed.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(list(cmd), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_pin(cpus), start_new_session=True, env=env)
    mon = RSSMonitor(proc.pid, interval, keep_samples=keep_samples)
    mon.start()
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process started here
        out, err = proc.communicate()
        rc = None
    finally:
        mon.stop()
    return {"rc": rc, "stdout": out, "stderr": err, "wall": time.monotonic() - t0, "peak_rss": mon.peak,
            "samples": mon.samples}


def _mib(b: float | None) -> float | None:
    return None if b is None else b / 2**20


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1e3


# ==================================================================================================
# Runners and cases


def bench_runners(op: str, mode: str | None = None) -> list[str]:
    """The three runner ids for `op`: torch.functional, tf.nn (keras where tf.nn has no code path
    for the op, as for rms_norm) and ort. Raises RuntimeError when a framework has no such runner."""
    from fuzz.runners import discover

    mode = mode or MODES[op]
    found = discover([], broken={})
    ids = []
    for choices in ((TORCH_RUNNER,), TF_RUNNERS, (ORT_RUNNER,)):
        for rid in choices:
            if rid in found and found[rid][1].supports(op, mode, DTYPE, {}) is None:
                ids.append(rid)
                break
        else:
            raise RuntimeError(f"none of the runners {list(choices)} can run {op}/{mode} {DTYPE}")
    return ids


def spec_kwargs(size: str) -> tuple[dict[str, int], bool]:
    """case_specs size keywords for `size`, and whether min_elements could be applied (an older
    `case_specs` without the keyword gets max_elements only)."""
    from fuzz.strategies import case_specs

    if size not in SIZES:
        raise ValueError(f"size={size!r} is invalid: expected one of {list(SIZES)}")
    kw = {"max_elements": SIZES[size]["max_elements"]}
    lo = SIZES[size]["min_elements"]
    if lo is None:
        return kw, True
    if "min_elements" in inspect.signature(case_specs).parameters:
        kw["min_elements"] = lo
        return kw, True
    return kw, False


def draw_specs(op: str, mode: str, size: str, n: int, seed: int) -> list:
    """n distinct `CaseSpec`s of (op, mode, float32) in the size class, drawn by seeded Hypothesis
    `@given` runs (generate phase only) of the campaign's strategy `fuzz.strategies.case_specs`."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from fuzz.strategies import case_specs

    kw, _ = spec_kwargs(size)
    strategy = case_specs(ops=[op], modes=[mode], dtypes=[DTYPE], regimes=list(bench_regimes()), **kw)
    got: dict[str, Any] = {}
    for r in range(50):
        if len(got) >= n:
            break

        @settings(max_examples=max(n, 10), database=None, deadline=None, derandomize=False,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck), print_blob=False)
        @hseed(seed * 1_000_003 + r)
        @given(strategy)
        def collect(spec):
            if len(got) < n:
                got.setdefault(json.dumps(spec.to_dict(), sort_keys=True), spec)

        collect()
    if len(got) < n:
        raise RuntimeError(f"drew only {len(got)} distinct {op}/{mode} {size} specs of the {n} asked for")
    return list(got.values())


def raw_floor(op: str, size: str = "small", *, cases: int = 200, seed: int = 0, warmup: int = WARMUP,
              runner_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Mean seconds of one `run(case)` call per runner, in this process, and their sum (`floor_s`).

    Cases: `cases` distinct specs of `draw_specs(op, MODES[op], size, ...)` materialized before any
    timing; `warmup` calls per runner on other cases first (drawn with another seed). A runner that
    does not support a case skips it (`supports`, or `Unsupported` from `run`); a framework exception
    counts its time (`raised`). Returns {op, mode, size, cases, elements: {min, mean, max},
    min_elements_applied, runners: {id: {timed, unsupported, raised, mean_s}}, floor_s, generate_s,
    oracle_s}.

    Also the two costs a campaign adds per case that no faster plumbing removes, measured on the
    same cases in the same process: `generate_s`, the mean seconds of `materialize(spec)` (drawing
    every input array of one case), and `oracle_s`, the mean seconds of the oracle's references and
    bounds (`fuzz.compare.reference`) at each distinct precision the runners declare for the case,
    summed, as a campaign evaluates them (after the same on the warm-up cases: the first evaluations
    in a process load the error model's compiled kernels, or compile them once per machine). For unpacked (large) cases generate + oracle + floor is
    a lower bound on a campaign's seconds per case on one core.
    """
    from fuzz.compare import reference
    from fuzz.runners import discover
    from fuzz.runners.base import FrameworkRaised, Unsupported
    from fuzz.strategies import materialize

    mode = MODES[op]
    ids = list(runner_ids) if runner_ids else bench_runners(op, mode)
    found = discover([], broken={})
    runners = {rid: found[rid][1] for rid in ids}
    specs = draw_specs(op, mode, size, cases, seed)
    t = time.perf_counter()
    measured = [materialize(s) for s in specs]
    generate_s = (time.perf_counter() - t) / len(measured)
    warm = [materialize(s) for s in draw_specs(op, mode, size, warmup, seed + 7919)] if warmup else []

    def oracle(cases):
        for case in cases:
            precs = {r.conventions_for(case.op, case.attrs).precision(case.dtype) for r in runners.values()
                     if r.supports(case.op, case.mode, case.dtype, case.attrs) is None}
            for prec in precs:
                reference(case, prec)

    oracle(warm)  # (first use: the error model's compiled kernels load or compile, once per machine)
    t = time.perf_counter()
    oracle(measured)
    oracle_s = (time.perf_counter() - t) / len(measured)
    for r in runners.values():
        r.setup()

    def call(r, case) -> tuple[str, float]:
        if r.supports(case.op, case.mode, case.dtype, case.attrs) is not None:
            return "unsupported", 0.0
        t = time.perf_counter()
        try:
            r.run(case)
            status = "ok"
        except FrameworkRaised:
            status = "raised"
        except Unsupported:
            return "unsupported", 0.0
        return status, time.perf_counter() - t

    for case in warm:
        for r in runners.values():
            call(r, case)
    stats = {rid: {"timed": 0, "unsupported": 0, "raised": 0, "total_s": 0.0, "warm_total_s": 0.0} for rid in ids}
    for key in ("total_s", "warm_total_s"):  # first pass, then the same cases again (caches warm)
        for case in measured:  # interleaved, as a campaign calls them
            for rid, r in runners.items():
                status, dt = call(r, case)
                s = stats[rid]
                s[key] += dt
                if key == "total_s":
                    if status == "unsupported":
                        s["unsupported"] += 1
                    else:
                        s["timed"] += 1
                        s["raised"] += status == "raised"
    for s in stats.values():
        s["mean_s"] = s["total_s"] / s["timed"] if s["timed"] else None
        s["warm_mean_s"] = s["warm_total_s"] / s["timed"] if s["timed"] else None
    sizes = [int(np.prod(next(iter(c.inputs.values())).shape)) for c in measured]

    def total(k):
        means = [s[k] for s in stats.values() if s[k] is not None]
        return float(sum(means)) if means else None

    return {"op": op, "mode": mode, "size": size, "cases": len(measured),
            "elements": {"min": min(sizes), "mean": float(np.mean(sizes)), "max": max(sizes)},
            "min_elements_applied": spec_kwargs(size)[1], "runners": stats,
            "floor_s": total("mean_s"), "floor_warm_s": total("warm_mean_s"), "generate_s": generate_s,
            "oracle_s": oracle_s}


# ==================================================================================================
# The naive baseline


def _naive_reference(op: str, x, gamma, beta, a) -> np.ndarray:
    """float64 numpy reference (two-pass, biased variance) of the naive test's op."""
    x = x.astype(np.float64)
    g = gamma.astype(np.float64)
    b = None if beta is None else beta.astype(np.float64)
    eps = a["eps"]
    if op == "rms_norm":
        axes = tuple(range(x.ndim - a["k"], x.ndim))
        return x / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps) * g
    if op == "layer_norm":
        axes = tuple(range(x.ndim - a["k"], x.ndim))
        pshape = g.shape
    else:
        pshape = (1, -1) + (1,) * (x.ndim - 2)
        axes = {"batch_norm": (0,) + tuple(range(2, x.ndim)), "instance_norm": tuple(range(2, x.ndim))}.get(op)
    if op == "group_norm":
        n, c = x.shape[:2]
        xr = x.reshape(n, a["groups"], -1)
        m = xr.mean(axis=2, keepdims=True)
        v = ((xr - m) ** 2).mean(axis=2, keepdims=True)
        y = ((xr - m) / np.sqrt(v + eps)).reshape(x.shape)
    else:
        m = x.mean(axis=axes, keepdims=True)
        v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
        y = (x - m) / np.sqrt(v + eps)
    return y * g.reshape(pshape) + b.reshape(pshape)


def _naive_strategy(op: str):
    """The naive test's inputs: (x, gamma, beta or None, attrs {eps, k (layer/rms), groups})."""
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import array_shapes, arrays

    floats = st.floats(-1e3, 1e3, width=32)
    min_dims = {"instance_norm": 3, "layer_norm": 1, "rms_norm": 1}.get(op, 2)

    @st.composite
    def cases(draw):
        shape = draw(array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=8))  # <= 4,096
        x = draw(arrays(np.float32, shape, elements=floats))
        a: dict[str, Any] = {"eps": draw(st.sampled_from(NAIVE_EPS))}
        if op in ("layer_norm", "rms_norm"):
            a["k"] = draw(st.integers(1, len(shape)))
            pshape = shape[len(shape) - a["k"]:]
        else:
            pshape = (shape[1],)
        if op == "group_norm":
            c = shape[1]
            a["groups"] = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
        gamma = draw(arrays(np.float32, pshape, elements=floats))
        beta = None if op == "rms_norm" else draw(arrays(np.float32, pshape, elements=floats))
        return x, gamma, beta, a

    return cases()


class _NaiveFrameworks:
    """The three framework calls of the naive test, imported once; ORT sessions cached."""

    def __init__(self):
        import onnx  # noqa: F401
        import onnxruntime as ort
        import tensorflow as tf
        import torch

        torch.set_num_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.torch, self.tf, self.ort = torch, tf, ort
        self.keras = None
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = 1
        self.options.inter_op_num_threads = 1
        self.sessions: dict[tuple, Any] = {}

    def run_torch(self, op, x, gamma, beta, a):
        torch = self.torch
        F = torch.nn.functional
        t = torch.from_numpy(x)
        g = torch.from_numpy(gamma)
        b = None if beta is None else torch.from_numpy(beta)
        if op == "batch_norm":
            y = F.batch_norm(t, None, None, g, b, training=True, eps=a["eps"])
        elif op == "layer_norm":
            y = F.layer_norm(t, gamma.shape, g, b, a["eps"])
        elif op == "group_norm":
            y = F.group_norm(t, a["groups"], g, b, a["eps"])
        elif op == "instance_norm":
            y = F.instance_norm(t, weight=g, bias=b, eps=a["eps"])
        else:
            y = F.rms_norm(t, gamma.shape, g, a["eps"])
        return y.numpy()

    def run_tf(self, op, x, gamma, beta, a):
        tf = self.tf
        eps = a["eps"]
        t = tf.constant(x)
        if op == "rms_norm":
            if self.keras is None:
                import keras

                self.keras = keras
            axis = tuple(range(-a["k"], 0))
            return np.asarray(self.keras.ops.rms_normalization(t, scale=tf.constant(gamma), axis=axis, epsilon=eps))
        bshape = gamma.shape if op == "layer_norm" else (1, -1) + (1,) * (x.ndim - 2)
        g, b = tf.reshape(tf.constant(gamma), bshape), tf.reshape(tf.constant(beta), bshape)
        if op == "group_norm":
            n, c = x.shape[:2]
            xr = tf.reshape(t, (n, a["groups"], -1))
            m, v = tf.nn.moments(xr, axes=[2], keepdims=True)
            y = tf.reshape(tf.nn.batch_normalization(xr, m, v, None, None, eps), x.shape) * g + b
            return y.numpy()
        axes = {"batch_norm": [0] + list(range(2, x.ndim)), "instance_norm": list(range(2, x.ndim)),
                "layer_norm": list(range(x.ndim - a.get("k", 0), x.ndim))}[op]
        m, v = tf.nn.moments(t, axes=axes, keepdims=True)
        return tf.nn.batch_normalization(t, m, v, b, g, eps).numpy()

    def _session(self, op, rank, a):
        key = (op, rank, a["eps"], a.get("k"), a.get("groups"))
        s = self.sessions.get(key)
        if s is not None:
            return s
        from onnx import TensorProto, helper

        f = TensorProto.FLOAT
        dims = [f"d{i}" for i in range(rank)]
        pdims = dims[rank - a["k"]:] if op in ("layer_norm", "rms_norm") else [dims[1]]
        vi = helper.make_tensor_value_info
        ins = [vi("X", f, dims), vi("scale", f, pdims)]
        outs = [vi("Y", f, dims)]
        eps = float(a["eps"])
        if op == "batch_norm":
            ins += [vi("B", f, pdims), vi("mean", f, pdims), vi("var", f, pdims)]
            outs += [vi("running_mean", f, pdims), vi("running_var", f, pdims)]
            node = helper.make_node("BatchNormalization", ["X", "scale", "B", "mean", "var"],
                                    ["Y", "running_mean", "running_var"], epsilon=eps, training_mode=1)
        elif op == "layer_norm":
            ins.append(vi("B", f, pdims))
            node = helper.make_node("LayerNormalization", ["X", "scale", "B"], ["Y"], axis=-a["k"], epsilon=eps)
        elif op == "group_norm":
            ins.append(vi("B", f, pdims))
            node = helper.make_node("GroupNormalization", ["X", "scale", "B"], ["Y"], epsilon=eps,
                                    num_groups=a["groups"])
        elif op == "instance_norm":
            ins.append(vi("B", f, pdims))
            node = helper.make_node("InstanceNormalization", ["X", "scale", "B"], ["Y"], epsilon=eps)
        else:
            node = helper.make_node("RMSNormalization", ["X", "scale"], ["Y"], axis=-a["k"], epsilon=eps)
        opset = 23 if op == "rms_norm" else 21  # GroupNormalization-21: per-channel scale and bias
        model = helper.make_model(helper.make_graph([node], op, ins, outs),
                                  opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 11 if opset >= 23 else 10  # onnx writes a newer IR than onnxruntime 1.31 reads
        s = self.ort.InferenceSession(model.SerializeToString(), self.options, providers=["CPUExecutionProvider"])
        self.sessions[key] = s
        return s

    def run_ort(self, op, x, gamma, beta, a):
        feed = {"X": x, "scale": gamma}
        if beta is not None:
            feed["B"] = beta
        if op == "batch_norm":
            feed["mean"] = np.zeros_like(gamma)
            feed["var"] = np.ones_like(gamma)
        return self._session(op, x.ndim, a).run(["Y"], feed)[0]


def naive_baseline(op: str, size: str = "small", *, examples: int = DEFAULT_NAIVE_EXAMPLES) -> dict[str, Any]:
    """Run the naive Hypothesis fuzzer (module docstring) for `examples` examples of `op`; time it.

    Returns {op, size, examples (bodies run), seconds, cases_per_s, mismatches: {framework: n},
    raised: {framework: n}}. Raises ValueError for a size other than "small" (see NAIVE_LARGE_NA).
    """
    from hypothesis import HealthCheck, given, settings

    if size != "small":
        raise ValueError(f"size={size!r}: the naive baseline exists for 'small' only ({NAIVE_LARGE_NA})")
    if op not in OPS:
        raise ValueError(f"op={op!r} is invalid: expected one of {list(OPS)}")
    fw = _NaiveFrameworks()
    calls = (("torch", fw.run_torch), ("tf", fw.run_tf), ("ort", fw.run_ort))
    mismatches = {name: 0 for name, _ in calls}
    raised = {name: 0 for name, _ in calls}
    count = [0]

    def body(x, gamma, beta, a):
        count[0] += 1
        with np.errstate(all="ignore"):
            ref = _naive_reference(op, x, gamma, beta, a)
        for name, fn in calls:
            try:
                y = fn(op, x, gamma, beta, a)
            except Exception:  # noqa: BLE001 - a naive fuzzer counts the framework's error, goes on
                raised[name] += 1
                continue
            try:
                np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
            except AssertionError:
                mismatches[name] += 1

    # warm-up outside the clock: framework runtimes initialized (an eps no drawn case uses)
    rng = np.random.default_rng(0)
    shape = (2, 4, 3)
    wa = {"eps": 0.5, "k": 1, "groups": 2}
    pshape = (shape[-1],) if op in ("layer_norm", "rms_norm") else (shape[1],)
    body(rng.standard_normal(shape).astype(np.float32), np.ones(pshape, np.float32),
         None if op == "rms_norm" else np.zeros(pshape, np.float32), wa)
    if any(mismatches.values()) or any(raised.values()):  # well-conditioned: every call must agree
        raise RuntimeError(f"the naive baseline's own calls disagree with its reference on a well-conditioned "
                           f"{op} input: assert_allclose failures {mismatches}, raised {raised}")
    count[0] = 0
    mismatches.update({k: 0 for k in mismatches})
    raised.update({k: 0 for k in raised})

    test = settings(max_examples=examples, database=None, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck), print_blob=False)(
        given(_naive_strategy(op))(lambda case: body(*case)))
    t0 = time.perf_counter()
    test()
    seconds = time.perf_counter() - t0
    return {"op": op, "size": size, "examples": count[0], "seconds": seconds,
            "cases_per_s": count[0] / seconds if seconds > 0 else None,
            "mismatches": mismatches, "raised": raised}


# ==================================================================================================
# normfuzz campaigns


def normfuzz_cmd() -> list[str]:
    """The normfuzz command: the console script next to this Python, else `python -m fuzz`."""
    exe = Path(sys.executable).parent / "normfuzz"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fuzz"]


def campaign_flags() -> set[str]:
    """Which of --jobs, --pack, --max-elements, --min-elements `normfuzz campaign` accepts."""
    out = subprocess.run(normfuzz_cmd() + ["campaign", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    return {f for f in ("--jobs", "--pack", "--max-elements", "--min-elements") if f in out.stdout}


def run_campaign(cmd: Sequence[str], out: str, *, cpus: Sequence[int] | None, timeout: float,
                 **monitor: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a `normfuzz campaign` command that writes into `out` (removed afterwards), monitored as
    `run_monitored` does; return (its result, the summary's totals). RuntimeError when the campaign
    fails (exit status other than 0 or 1)."""
    try:
        res = run_monitored(cmd, cpus=cpus, timeout=timeout, **monitor)
        if res["rc"] not in (0, 1):
            raise RuntimeError(f"{' '.join(cmd)} exited with {res['rc']}:\n{(res['stderr'] or '')[-2000:]}")
        with open(Path(out) / "summary.json") as f:
            totals = json.load(f)["totals"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return res, totals


def campaign_throughput(op: str, size: str, *, budget: float, seed: int = 0, jobs: int = 1,
                        cpus: Sequence[int] | None = None, pack: int | None = None,
                        runner_ids: Sequence[str] | None = None, flags: set[str] | None = None,
                        workdir: str | None = None, cases: int | None = None) -> dict[str, Any]:
    """Run `normfuzz campaign` for `budget` seconds (or, with `cases`, for that many cases: `--cases`,
    no budget) on `op` (MODES[op], float32, the three runners, every regime but long) as a subprocess
    pinned to `cpus`; return its throughput.

    Returns {cmd, rc, cases_run, seconds, startup_seconds, startup_reported, fuzzing_seconds, cases_per_s,
    peak_rss_mib, findings, notes} or {na: reason} when this normfuzz lacks a flag the measurement
    needs. Raises RuntimeError when the campaign fails (exit status other than 0 or 1).
    """
    flags = campaign_flags() if flags is None else flags
    mode = MODES[op]
    ids = list(runner_ids) if runner_ids else bench_runners(op, mode)
    notes = []
    out = tempfile.mkdtemp(prefix=f"normfuzz-bench-{op}-{size}-j{jobs}-", dir=workdir)
    limit = ["--cases", str(cases)] if cases is not None else ["--budget", f"{budget:g}s"]
    cmd = normfuzz_cmd() + ["campaign", "--out", out, *limit, "--ops", op, "--modes", mode,
                            "--dtypes", DTYPE, "--runners", ",".join(ids), "--regimes", ",".join(bench_regimes()),
                            "--no-minimize", "--no-report", "--quiet", "--seed", str(seed)]
    if "--jobs" in flags:
        cmd += ["--jobs", str(jobs)]
    elif jobs != 1:
        shutil.rmtree(out, ignore_errors=True)
        return {"na": "n/a: normfuzz campaign has no --jobs"}
    if pack is not None:
        if "--pack" in flags:
            cmd += ["--pack", str(pack)]
        else:
            notes.append("--pack ignored: normfuzz campaign has no --pack")
    lo, hi = SIZES[size]["min_elements"], SIZES[size]["max_elements"]
    if "--max-elements" in flags:
        cmd += ["--max-elements", str(hi)]
    elif hi != 4096:  # the campaign's default max_elements is 4,096
        shutil.rmtree(out, ignore_errors=True)
        return {"na": "n/a: normfuzz campaign has no --max-elements"}
    if lo is not None:
        if "--min-elements" in flags:
            cmd += ["--min-elements", str(lo)]
        else:
            notes.append("normfuzz campaign has no --min-elements: cases of any size up to the maximum")
    # (a --cases campaign on one core runs what two cores ran in the budget: allow for 3x)
    res, totals = run_campaign(cmd, out, cpus=cpus, timeout=(budget if cases is None else 3 * budget) + 900)
    startup = totals.get("startup_seconds")
    if startup is None:
        notes.append("startup included (summary.json has no totals.startup_seconds)")
    fuzzing = totals["seconds"] - (startup or 0.0)
    return {"cmd": " ".join(cmd), "rc": res["rc"], "jobs": jobs, "cpus": list(cpus or []),
            "cases_run": totals["cases_run"], "seconds": totals["seconds"], "startup_seconds": startup or 0.0,
            "startup_reported": startup is not None, "fuzzing_seconds": fuzzing,
            "cases_per_s": totals["cases_run"] / fuzzing if fuzzing > 0 else None,
            "peak_rss_mib": _mib(res["peak_rss"]), "findings": totals.get("findings"),
            "rounds": totals.get("rounds"), "notes": notes}


def round_scaling(one: dict | None, many: dict | None, jobs: int = 2) -> dict[str, Any]:
    """`jobs` cores against one on equal work: over the rounds both campaigns ran to their end with
    the same number of cases (summary.json totals.rounds: round -> [fuzzing seconds, cases,
    complete]; the same seed gives a round the same cases whatever --jobs runs it), the
    speed-up is jobs * (one core's seconds) / (the jobs' seconds): each of the `jobs` jobs ran its
    rounds while the others ran theirs. Returns {scaling, rounds, cases, seconds_one, seconds_many}
    ({scaling: None, ...} when no round compares)."""
    common = sorted((k for k in (one or {}) if k in (many or {}) and one[k][2] and many[k][2]
                     and one[k][1] == many[k][1]), key=int)
    t1 = sum(float(one[k][0]) for k in common)
    tn = sum(float(many[k][0]) for k in common)
    return {"scaling": jobs * t1 / tn if common and tn > 0 else None, "rounds": len(common),
            "cases": sum(int(one[k][1]) for k in common), "seconds_one": t1, "seconds_many": tn}


# ==================================================================================================
# Subprocess measurements (pinned): this script with a hidden mode, printing one JSON line


def _self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _json_tail(res: dict, what: str) -> dict[str, Any]:
    if res["rc"] != 0:
        raise RuntimeError(f"{what} failed (exit status {res['rc']}):\n{(res['stderr'] or '')[-3000:]}")
    lines = [ln for ln in res["stdout"].splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what} printed no result:\n{res['stdout'][-1000:]}\n{res['stderr'][-2000:]}")
    return json.loads(lines[-1])


def floor_subprocess(op: str, size: str, *, cases: int, seed: int, runner_ids: Sequence[str],
                     cpus: Sequence[int]) -> dict[str, Any]:
    res = run_monitored(_self_cmd("--_floor", op, size, "--floor-cases", str(cases), "--seed", str(seed),
                                  "--runners", ",".join(runner_ids)), cpus=cpus, timeout=1800)
    return _json_tail(res, f"raw floor of {op} {size}")


def naive_subprocess(op: str, *, examples: int, cpus: Sequence[int]) -> dict[str, Any]:
    res = run_monitored(_self_cmd("--_naive", op, "small", "--naive-examples", str(examples)), cpus=cpus,
                        timeout=1800)
    out = _json_tail(res, f"naive baseline of {op}")
    out["peak_rss_mib"] = _mib(res["peak_rss"])
    return out


# ==================================================================================================
# The benchmark


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _verdict(value: float | None, target: float, higher: bool) -> str | None:
    if value is None:
        return None
    return "PASS" if (value >= target if higher else value <= target) else "FAIL"


def _log(msg: str) -> None:
    print(msg, flush=True)


def _attempt(what: str, fn, *args, **kw) -> dict[str, Any]:
    """fn(*args, **kw), or {na, error} when the measurement failed (printed at once, loudly; the
    benchmark goes on with the other measurements and exits with status 1)."""
    try:
        return fn(*args, **kw)
    except (RuntimeError, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        _log(f"    FAILED: {what}: {exc}")
        return {"na": "FAILED", "error": f"{what}: {exc}"}


def _floor_line(floor: dict) -> str:
    if "na" in floor:
        return f"    floor {floor['na']}"
    per = ", ".join(
        (f"{rid} {s['warm_mean_s'] * 1e3:.3f} ms (first {s['mean_s'] * 1e3:.3f})" if s["mean_s"] is not None
         else f"{rid} n/a") + f" [{s['timed']} timed, {s['unsupported']} unsupported, {s['raised']} raised]"
        for rid, s in floor["runners"].items())
    return (f"    floor {_fmt(_ms(floor['floor_warm_s']), '.3f')} ms/case, first pass "
            f"{_fmt(_ms(floor['floor_s']), '.3f')} ms/case; {per}; elements {floor['elements']['min']}.."
            f"{floor['elements']['max']}" + ("" if floor["min_elements_applied"] else
                                             " (case_specs has no min_elements: sizes not bounded below)")
            + f"; generation {_fmt(_ms(floor.get('generate_s')), '.3f')} ms/case, oracle "
              f"{_fmt(_ms(floor.get('oracle_s')), '.3f')} ms/case")


def _naive_line(n: dict) -> str:
    if "na" in n:
        return f"    naive {n['na']}"
    return (f"    naive {n['cases_per_s']:.1f} cases/s ({n['examples']} in {n['seconds']:.1f} s; assert_allclose "
            f"failures {n['mismatches']}, raised {n['raised']}); peak RSS {n['peak_rss_mib']:.0f} MiB")


def bench_one(op: str, size: str, a, flags: set[str], cpus: list[int]) -> dict[str, Any]:
    """Every measurement of one (op, size) row; a failed measurement is {na: FAILED, error}."""
    mode = MODES[op]
    ids = bench_runners(op, mode)
    one, two = cpus[:1], cpus[:2]
    row: dict[str, Any] = {"op": op, "mode": mode, "size": size, "runners": ids}
    _log(f"[{op} {size}] raw floor: {a.floor_cases[size]} cases on {', '.join(ids)} (core {one[0]})")
    floor = row["floor"] = _attempt(f"raw floor of {op} {size}", floor_subprocess, op, size,
                                    cases=a.floor_cases[size], seed=a.seed, runner_ids=ids, cpus=one)
    _log(_floor_line(floor))

    if size == "small" and not a.skip_naive:
        _log(f"[{op} {size}] naive baseline: {a.naive_examples} examples (core {one[0]})")
        row["naive"] = _attempt(f"naive baseline of {op}", naive_subprocess, op, examples=a.naive_examples, cpus=one)
        _log(_naive_line(row["naive"]))
    else:
        row["naive"] = {"na": NAIVE_LARGE_NA if size == "large" else "skipped (--skip-naive)"}

    budget = a.budget[size]
    common = dict(budget=budget, seed=a.seed, pack=a.pack, runner_ids=ids, flags=flags, workdir=a.workdir)
    _log(f"[{op} {size}] normfuzz campaign --jobs 1, {budget:g} s (core {one[0]})")
    j1 = row["campaign_j1"] = _attempt(f"campaign --jobs 1 of {op} {size}", campaign_throughput, op, size,
                                       jobs=1, cpus=one, **common)
    _log(_campaign_line(j1))
    if size == "small" and not a.skip_jobs:
        if len(two) < 2:
            row["campaign_j2"] = {"na": "n/a: fewer than two usable cores"}
        else:
            _log(f"[{op} {size}] normfuzz campaign --jobs 2, {budget:g} s (cores {two[0]},{two[1]})")
            row["campaign_j2"] = _attempt(f"campaign --jobs 2 of {op} {size}", campaign_throughput, op, size,
                                          jobs=2, cpus=two, **common)
        _log(_campaign_line(row["campaign_j2"]))
        n2 = row["campaign_j2"].get("cases_run")
        if n2:
            _log(f"[{op} {size}] normfuzz campaign --jobs 1 on the same {n2} cases (core {one[0]})")
            row["campaign_j1_same"] = _attempt(f"campaign --jobs 1 of {op} {size} on --jobs 2's cases",
                                               campaign_throughput, op, size, jobs=1, cpus=one, cases=n2, **common)
        else:
            row["campaign_j1_same"] = {"na": "n/a: no --jobs 2 campaign to compare with"}
        _log(_campaign_line(row["campaign_j1_same"]))
    else:
        row["campaign_j2"] = {"na": "skipped (--skip-jobs)" if size == "small" else "n/a (small cases only)"}
        row["campaign_j1_same"] = dict(row["campaign_j2"])

    nf = j1.get("cases_per_s")
    row["naive_speedup"] = _ratio(nf, row["naive"].get("cases_per_s"))
    row["e2e_over_floor"] = _ratio(_ratio(1.0, nf), floor.get("floor_warm_s"))
    row["e2e_over_floor_first"] = _ratio(_ratio(1.0, nf), floor.get("floor_s"))
    rs = row["jobs_rounds"] = round_scaling(row["campaign_j1_same"].get("rounds"), row["campaign_j2"].get("rounds"))
    row["jobs_scaling"] = rs["scaling"]
    row["jobs_scaling_cases"] = _ratio(row["campaign_j2"].get("cases_per_s"), row["campaign_j1_same"].get("cases_per_s"))
    row["jobs_scaling_budget"] = _ratio(row["campaign_j2"].get("cases_per_s"), nf)
    if rs["rounds"]:
        _log(f"    --jobs 2 over --jobs 1 on {rs['rounds']} equal rounds ({rs['cases']} cases): "
             f"{rs['seconds_one']:.1f} s on one core, {rs['seconds_many']:.1f} s in the two jobs -> "
             f"{_fmt(rs['scaling'], '.2f')}; cases/s over cases/s {_fmt(row['jobs_scaling_cases'], '.2f')} "
             f"(same case count), {_fmt(row['jobs_scaling_budget'], '.2f')} (same budget)")
    row["verdicts"] = {
        "naive_speedup": _verdict(row["naive_speedup"], TARGETS["naive_speedup"], True) if size == "small" else None,
        "e2e_over_floor": _verdict(row["e2e_over_floor"], TARGETS["e2e_over_floor"], False) if size == "large" else None,
        "jobs_scaling": _verdict(row["jobs_scaling"], TARGETS["jobs_scaling"], True) if size == "small" else None,
    }
    return row


def _campaign_line(c: dict) -> str:
    if "na" in c:
        return f"    {c['na']}"
    notes = f" [{'; '.join(c['notes'])}]" if c["notes"] else ""
    return (f"    {_fmt(c['cases_per_s'], '.1f')} cases/s ({c['cases_run']} cases in {c['seconds']:.1f} s, startup "
            f"{c['startup_seconds']:.1f} s, {c['findings']} findings); peak RSS {c['peak_rss_mib']:.0f} MiB{notes}")


def _fmt(v: float | None, spec: str, verdict: str | None = None) -> str:
    s = "n/a" if v is None else format(v, spec)
    return f"{s} {verdict}" if verdict else s


def table(rows: list[dict]) -> str:
    """The final table: one line per (op, size)."""
    head = ("op", "size", "tf runner", "floor ms", "1st ms", "gen ms", "oracle ms", "nf c/s", "naive c/s",
            "nf/naive", "e2e/floor", "j2 c/s", "j1 same c/s", "j2/j1", "RSS nf MiB", "RSS naive")
    lines = []
    for r in rows:
        v = r["verdicts"]
        lines.append((r["op"] + ("" if r["mode"] == "forward" else f" ({r['mode']})"), r["size"], r["runners"][1],
                      _fmt(_ms(r["floor"].get("floor_warm_s")), ".3f"), _fmt(_ms(r["floor"].get("floor_s")), ".3f"),
                      _fmt(_ms(r["floor"].get("generate_s")), ".3f"), _fmt(_ms(r["floor"].get("oracle_s")), ".3f"),
                      _fmt(r["campaign_j1"].get("cases_per_s"), ".1f"),
                      _fmt(r["naive"].get("cases_per_s"), ".1f"),
                      _fmt(r["naive_speedup"], ".1f", v["naive_speedup"]),
                      _fmt(r["e2e_over_floor"], ".2f", v["e2e_over_floor"]),
                      _fmt(r["campaign_j2"].get("cases_per_s"), ".1f"),
                      _fmt(r["campaign_j1_same"].get("cases_per_s"), ".1f"),
                      _fmt(r["jobs_scaling"], ".2f", v["jobs_scaling"]),
                      _fmt(r["campaign_j1"].get("peak_rss_mib"), ".0f"),
                      _fmt(r["naive"].get("peak_rss_mib"), ".0f")))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def summarize_targets(rows: list[dict]) -> dict[str, Any]:
    """Per target: the worst value over the rows it applies to, and PASS/FAIL (None: not measured)."""
    out = {}
    for key, higher, size in (("naive_speedup", True, "small"), ("e2e_over_floor", False, "large"),
                              ("jobs_scaling", True, "small")):
        vals = [r[key] for r in rows if r["size"] == size and r[key] is not None]
        worst = (min(vals) if higher else max(vals)) if vals else None
        out[key] = {"target": (">= " if higher else "<= ") + f"{TARGETS[key]:g}", "worst": worst,
                    "verdict": _verdict(worst, TARGETS[key], higher)}
    return out


def header(a, flags: set[str] | None) -> dict[str, Any]:
    info = {"machine": machine_info(), "versions": versions(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}
    m = info["machine"]
    _log(f"machine: {m['cpu']}, {m['cores']} logical cores ({m['usable_cores']} usable), {m['ram_gib']} GiB RAM; {m['os']}")
    _log("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", python {m['python']}")
    _log(f"command: {info['command']}")
    if flags is not None:
        missing = sorted({"--jobs", "--pack", "--max-elements", "--min-elements"} - flags)
        _log("normfuzz campaign flags: " + (", ".join(sorted(flags)) or "none of the new ones")
             + (f" (missing: {', '.join(missing)})" if missing else ""))
    return info


def run_benchmark(a) -> dict[str, Any]:
    flags = campaign_flags()
    info = header(a, flags)
    cpus = _usable_cpus()
    _log(f"settings: ops {','.join(a.ops)}; sizes {','.join(a.sizes)}; dtype {DTYPE}; regimes "
         f"{','.join(bench_regimes())}; budget {a.budget['small']:g} s small / {a.budget['large']:g} s large; "
         f"floor cases {a.floor_cases['small']}/{a.floor_cases['large']}; naive examples {a.naive_examples}; "
         f"seed {a.seed}; pack {a.pack if a.pack is not None else 'default'}")
    _log("modes: " + ", ".join(f"{op} {MODES[op]}" for op in a.ops) +
         " (batch_norm training: batch statistics, the usual training forward)")
    rows = []
    t0 = time.monotonic()
    for op in a.ops:
        ids = bench_runners(op)
        if ids[1] != "tf.nn":
            _log(f"{op}: tf.nn has no code path for {op}/{MODES[op]}; TensorFlow runner: {ids[1]}")
        for size in a.sizes:
            rows.append(bench_one(op, size, a, flags, cpus))
    _log(f"\ntotal time {time.monotonic() - t0:.0f} s\n")
    _log(table(rows))
    targets = summarize_targets(rows)
    _log("")
    names = {"naive_speedup": "small normfuzz/naive (one core)", "e2e_over_floor": "large end-to-end/raw floor",
             "jobs_scaling": "small jobs2 (2 cores) / jobs1 (1 core), equal rounds"}
    for key, t in targets.items():
        _log(f"target {names[key]} {t['target']}: worst {_fmt(t['worst'], '.2f')} -> {t['verdict'] or 'not measured'}")
    notes = sorted({n for r in rows for c in (r["campaign_j1"], r["campaign_j2"], r["campaign_j1_same"]) for n in c.get("notes", ())})
    for n in notes:
        _log(f"note: {n}")
    if any(r["size"] == "large" for r in rows):
        _log(f"note: naive large {NAIVE_LARGE_NA}")
    failures = [m["error"] for r in rows for k in ("floor", "naive", "campaign_j1", "campaign_j2")
                for m in (r[k],) if "error" in m]
    for f in failures:
        _log(f"FAILED: {f.splitlines()[0]}")
    return {**info, "settings": {"ops": list(a.ops), "sizes": list(a.sizes), "dtype": DTYPE,
                                 "modes": {op: MODES[op] for op in a.ops}, "regimes": list(bench_regimes()),
                                 "budget_s": a.budget, "floor_cases": a.floor_cases,
                                 "naive_examples": a.naive_examples, "seed": a.seed, "pack": a.pack},
            "campaign_flags": sorted(flags), "rows": rows, "targets": targets, "failures": failures}


# ==================================================================================================
# Memory soak


def memory_soak(duration: float, *, seed: int, samples_path: str, ops: Sequence[str] | None,
                workdir: str | None) -> dict[str, Any]:
    """One default campaign for `duration` seconds; its tree's RSS sampled every SOAK_INTERVAL s."""
    out = tempfile.mkdtemp(prefix="normfuzz-soak-", dir=workdir)
    cmd = normfuzz_cmd() + ["campaign", "--out", out, "--budget", f"{duration:g}s", "--quiet", "--seed", str(seed)]
    if ops:
        cmd += ["--ops", ",".join(ops)]
    _log(f"memory soak: {' '.join(cmd)}")
    res, totals = run_campaign(cmd, out, cpus=None, timeout=duration + 1800, interval=SOAK_INTERVAL,
                               keep_samples=True)
    samples = res["samples"]
    Path(samples_path).parent.mkdir(parents=True, exist_ok=True)
    with open(samples_path, "w") as f:
        f.write("seconds,rss_mib,processes\n")
        for t, rss, n in samples:
            f.write(f"{t:.1f},{rss / 2**20:.1f},{n}\n")
    during = [s for s in samples if s[0] <= duration] or samples
    at1 = next((s for s in samples if s[0] >= 60.0), None)
    end = during[-1] if during else None
    growth = None if at1 is None or end is None or end[0] < at1[0] else (end[1] - at1[1]) / at1[1] * 100
    r = {"cmd": " ".join(cmd), "duration_s": duration, "cases_run": totals["cases_run"],
         "seconds": totals["seconds"], "samples": len(samples), "samples_path": samples_path,
         "rss_at_1min_mib": _mib(at1[1]) if at1 else None, "rss_end_mib": _mib(end[1]) if end else None,
         "rss_max_mib": _mib(max(s[1] for s in during)) if during else None,
         "rss_max_overall_mib": _mib(res["peak_rss"]), "growth_after_1min_pct": growth,
         "target": f"< {TARGETS['soak_growth_pct']:g}%",
         "verdict": None if growth is None else ("PASS" if growth < TARGETS["soak_growth_pct"] else "FAIL")}
    _log(f"cases {r['cases_run']} in {r['seconds']:.0f} s; RSS at 1 min {_fmt(r['rss_at_1min_mib'], '.0f')} MiB, "
         f"at the end {_fmt(r['rss_end_mib'], '.0f')} MiB, max {_fmt(r['rss_max_mib'], '.0f')} MiB (with the "
         f"conclusion {_fmt(r['rss_max_overall_mib'], '.0f')} MiB); growth after the first minute "
         f"{_fmt(growth, '.1f')}% (target {r['target']}: {r['verdict'] or 'not measured (under a minute)'})")
    _log(f"samples: {samples_path}")
    return r


# ==================================================================================================
# Command line


def _duration(text: str) -> float:
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip().lower()
    try:
        v = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        v = -1.0
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected e.g. 90, 90s, 30m, 2h")
    return v


def _pair(kind):
    def parse(text: str) -> dict[str, Any]:
        parts = [p for p in text.split(",") if p]
        if len(parts) not in (1, 2):
            raise argparse.ArgumentTypeError(f"{text!r}: expected VALUE or SMALL,LARGE")
        vals = [kind(p) for p in parts]
        return {"small": vals[0], "large": vals[-1]}
    return parse


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return v


def _list(valid: Sequence[str]):
    def parse(text: str) -> list[str]:
        items = [p for p in text.split(",") if p]
        bad = [p for p in items if p not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {', '.join(valid)}")
        return items
    return parse


def parse_args(argv: Sequence[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (benchmarks/throughput.py) for what each number means.")
    p.add_argument("--ops", type=_list(OPS), default=None, help=f"ops (default: all of {','.join(OPS)})")
    p.add_argument("--sizes", type=_list(tuple(SIZES)), default=None, help="size classes (default: small,large)")
    p.add_argument("--budget", type=_pair(_duration), default=None, metavar="S[,L]",
                   help="seconds per normfuzz campaign, small[,large] (default 60,120)")
    p.add_argument("--floor-cases", type=_pair(_positive_int), default=None, metavar="S[,L]",
                   help="cases of the raw floor, small[,large] (default 200,10)")
    p.add_argument("--naive-examples", type=_positive_int, default=None,
                   help=f"examples of the naive baseline (default {DEFAULT_NAIVE_EXAMPLES})")
    p.add_argument("--pack", type=_positive_int, default=None, help="normfuzz campaign --pack K (default: its default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--skip-naive", action="store_true", help="no naive baseline")
    p.add_argument("--skip-jobs", action="store_true", help="no --jobs 2 campaign")
    p.add_argument("--quick", action="store_true",
                   help="~5 minutes: batch_norm and layer_norm, budgets 30/30 s, 50/3 floor cases, 100 naive examples")
    p.add_argument("--workdir", default=None, help="folder for the temporary campaign folders (default: the system's)")
    p.add_argument("--memory-soak", type=_duration, metavar="DURATION", default=None,
                   help="instead: one default campaign for DURATION (e.g. 30m), RSS sampled every 5 s")
    p.add_argument("--samples", default="runs/bench/memory_soak_samples.csv", help="CSV of the soak's RSS samples")
    # hidden: the pinned subprocess measurements
    p.add_argument("--_floor", nargs=2, metavar=("OP", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--_naive", nargs=2, metavar=("OP", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--runners", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    q = a.quick
    a.ops_given = a.ops
    a.ops = a.ops or list(QUICK["ops"] if q else OPS)
    a.sizes = a.sizes or list(SIZES)
    a.budget = a.budget or dict(QUICK["budget"] if q else DEFAULT_BUDGET)
    a.floor_cases = a.floor_cases or dict(QUICK["floor_cases"] if q else DEFAULT_FLOOR_CASES)
    a.naive_examples = a.naive_examples or (QUICK["naive_examples"] if q else DEFAULT_NAIVE_EXAMPLES)
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a._floor:
        op, size = a._floor
        ids = a.runners.split(",") if a.runners else None
        print(json.dumps(raw_floor(op, size, cases=a.floor_cases[size], seed=a.seed, runner_ids=ids)), flush=True)
        return 0
    if a._naive:
        op, size = a._naive
        print(json.dumps(naive_baseline(op, size, examples=a.naive_examples)), flush=True)
        return 0
    status = 0
    if a.memory_soak is not None:
        info = header(a, None)
        result = {**info, "memory_soak": memory_soak(a.memory_soak, seed=a.seed, samples_path=a.samples,
                                                     ops=a.ops_given, workdir=a.workdir)}
    else:
        result = run_benchmark(a)
        status = 1 if result["failures"] else 0
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        _log(f"\nwritten: {a.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
