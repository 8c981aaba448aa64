"""Reliability (issue 7): faults of the frameworks, kills of the campaign, a failing environment and
hostile input lose no finding and let nothing in.

- A campaign against plug-in runners that fail in every way a native library can, each only
  sometimes (tests/fuzz/faulty_runners.py), keeps going, records every failure as the right kind of
  finding on exactly the cases where it fired, and its counts add up.
- The campaign process SIGKILLed at moments drawn from a seeded generator (while a worker starts,
  while a bucket shrinks, around commits and checkpoints, after a random delay), then resumed: the
  database stays consistent, nothing committed is lost, nothing is duplicated, the campaign ends
  complete.
- A full disk, a read-only folder and a database locked by another process: `normfuzz` exits 4 with
  a clear message and leaves what it stored intact.
- Hostile case files and databases are refused with a clear message (exit 1 or 2, no traceback)
  before anything is run or allocated; nothing is unpickled; report text stays inert.
- Determinism: the same seed and configuration give the same cases and the same buckets.

Figures for the issue's closing note: run with `-s` and read the lines starting with `reliability:`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.fuzz.faulty_runners as F
from fuzz import cli
from fuzz.campaign import DEFAULT_PACK_ELEMENTS, Campaign, CampaignConfig
from fuzz.case import Case
from fuzz.store import DB_NAME, Store, bucket_id

FAULTY = "tests.fuzz.faulty_runners:runners"
HONEST = "tests.fuzz.honest_runners:runners"
BUGZOO = "fuzz.selftest:runners"
REPO = Path(__file__).resolve().parents[2]


def figure(text: str) -> None:
    """One figure for the issue's closing note (shown with pytest -s)."""
    print(f"\nreliability: {text}")


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def raw(db: Path) -> sqlite3.Connection:
    """A plain read-only SQLite connection, independent of Store."""
    return sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)


def check_consistent(db: Path) -> dict[str, int]:
    """The invariants of a findings database after anything happened to its writer: SQLite's own
    integrity and foreign-key checks, one finding per (case, runner), bucket counts equal to their
    findings, bucket fields unique. Returns findings per runner."""
    with contextlib.closing(raw(db)) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        assert con.execute("SELECT case_id, runner FROM findings GROUP BY case_id, runner "
                           "HAVING count(*) > 1").fetchall() == []
        counts = dict(con.execute("SELECT key, count FROM buckets WHERE count > 0"))
        assert counts == dict(con.execute("SELECT bucket_key, count(*) FROM findings GROUP BY bucket_key"))
        fields = con.execute("SELECT op, mode, runner, category, signature, dtype FROM buckets").fetchall()
        assert len(fields) == len(set(fields)), "a bucket is duplicated"
        return dict(con.execute("SELECT runner, count(*) FROM findings GROUP BY runner"))


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`normfuzz ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class RecordingCampaign(Campaign):
    """A campaign that remembers every case it materializes, in order (with minimize=False: exactly
    the cases it runs and counts)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.cases: list[Case] = []

    def _materialize_family(self, spec):
        cases = super()._materialize_family(spec)
        self.cases.extend(cases)
        return cases


def counts_by_runner(store: Store) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for row in store.counts():
        out[row["runner"]][row["result"]] += row["count"]
    return out


def qualname(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


# --------------------------------------------------------------------------------------------------
# Every fault, only sometimes: the campaign keeps going and records each failure where it happened

#: runner -> (category, signature or a function of the case giving it) of every finding it must
#: make, exactly on the cases where its fault fires (`.often`: a third by content hash; `.flaky`:
#: probability 1/4 from a generator seeded with the case id).
DETERMINISTIC_FAULTS = {
    "faulty.segfault.flaky": ("crash", "signal 11"),
    "faulty.abort.often": ("crash", "signal 6"),
    "faulty.exit.flaky": ("crash", "exit 7"),
    "faulty.sys_exit.often": ("crash", "exit 5"),
    "faulty.kill_self.flaky": ("crash", "signal 9"),
    "faulty.random_signal.often": ("crash", lambda c: f"signal {F.signal_of(c)}"),
    "faulty.close_pipes.flaky": ("crash", "exit 1"),
    "faulty.spawn_then_crash.often": ("crash", "signal 11"),
    "faulty.hang.flaky": ("timeout", "timeout"),
    "faulty.oom.often": ("crash", "out_of_memory"),
    "faulty.raise.flaky": ("raised", "builtins.RuntimeError"),
    "faulty.random_exception.often": ("raised", lambda c: qualname(dict(F.EXCEPTIONS)[F.exception_kind(c)]())),
    "faulty.wrong_shape.flaky": ("bad_output", "bad_output"),
    "faulty.wrong_dtype.often": ("bad_output", "bad_output"),
    "faulty.not_array.flaky": ("bad_output", "bad_output"),
    "faulty.unknown_output.often": ("bad_output", "bad_output"),
    "faulty.wrong_type.flaky": ("bad_output", "bad_output"),
}
#: faults that depend on the worker's history, not on the case
HISTORY_FAULTS = ("faulty.leak", "faulty.leak_slow", "faulty.exit.stateful", "faulty.raise.stateful")
HONEST_FAULTY = ("faulty.none", "faulty.noisy.often")
FAULT_CASES = 24


def orphans() -> list[int]:
    """Pids of grandchildren left by `spawn_then_crash` (they must die with their worker)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if F.ORPHAN_MARKER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
    return found


@pytest.mark.slow
def test_campaign_against_every_fault_keeps_going_and_counts_add_up(tmp_path):
    runners = [*DETERMINISTIC_FAULTS, *HISTORY_FAULTS, *HONEST_FAULTY]
    cfg = CampaignConfig(out=str(tmp_path / "c"), ops=["layer_norm"], modes=["forward"],
                         dtypes=["float32", "float64"], runners=runners, plugins=[FAULTY], timeout=1.0,
                         memory_mb=160, max_cases=FAULT_CASES, seed=1, minimize=False, pack=1)
    # pack=1: these faults fire by case id or by the worker's call count, so a packed call (another
    # case, one more call) would fire them elsewhere; packing has its own tests (test_throughput.py)
    camp = RecordingCampaign(cfg, write_report=False)
    summary = camp.run()
    assert summary["status"] == "finished" and summary["unavailable"] == {}
    assert summary["cases_run"] == FAULT_CASES == len(camp.cases)
    db = tmp_path / "c" / DB_NAME
    check_consistent(db)
    store = Store.open(tmp_path / "c", readonly=True)
    counts = counts_by_runner(store)
    findings: dict[str, list[dict]] = defaultdict(list)
    for f in store.findings():
        findings[f["runner"]].append(f)
    by_id = {r.id: r for r in F.runners()}

    # No case silently dropped: every runner has a result for every case.
    assert {r: sum(counts[r].values()) for r in runners} == {r: FAULT_CASES for r in runners}

    injected = 0
    for rid, (category, signature) in DETERMINISTIC_FAULTS.items():
        fired = [c for c in camp.cases if by_id[rid].fires(c)]
        injected += len(fired)
        assert fired, f"{rid} never fired in {FAULT_CASES} cases: choose another seed"
        # each failure recorded exactly where it happened, as the right kind of finding
        assert {f["case_id"] for f in findings[rid]} == {c.id for c in fired}, rid
        assert counts[rid] == Counter({category: len(fired), "agree": FAULT_CASES - len(fired)}), (rid, counts[rid])
        cases = {c.id: c for c in fired}
        for f in findings[rid]:
            want = signature(cases[f["case_id"]]) if callable(signature) else signature
            assert (f["category"], f["signature"]) == (category, want), (rid, f)
    for f in findings["faulty.oom.often"]:
        assert f["explanation"].startswith("out of memory: worker resident memory"), f

    # History-dependent faults: the leaks are caught by the memory limit, however slow.
    for rid in ("faulty.leak", "faulty.leak_slow"):
        assert counts[rid]["crash"] >= (2 if rid == "faulty.leak" else 1), (rid, counts[rid])
        assert all("out of memory" in f["explanation"] for f in findings[rid]), findings[rid]
    # Every third case of a worker's life fails; a crash restarts the worker (and its count).
    third = {c.id for c in camp.cases[2::3]}
    assert {f["case_id"] for f in findings["faulty.exit.stateful"]} == third
    assert {f["case_id"] for f in findings["faulty.raise.stateful"]} == third
    injected += sum(counts[r]["crash"] + counts[r]["raised"] for r in HISTORY_FAULTS)
    for rid in HONEST_FAULTY:
        assert counts[rid] == Counter({"agree": FAULT_CASES}) and not findings[rid]
    assert not orphans(), "a framework's child process outlived its worker"
    figure(f"fault campaign: {len(runners)} runners, {FAULT_CASES} cases ({len({c.id for c in camp.cases})} "
           f"distinct), {injected} faults injected, {sum(len(v) for v in findings.values())} findings (one per "
           f"case and runner), 0 cases dropped")


def _cases_drawing(kinds, draw) -> dict[str, Case]:
    """A layer_norm case for each kind that `draw(case)` can give."""
    got: dict[str, Case] = {}
    for seed in range(10_000):
        x = np.random.default_rng(seed).normal(size=(2, 5)).astype(np.float32)
        c = Case(op="layer_norm", mode="forward", dtype="float32", inputs={"x": x},
                 attrs={"eps": F.TRIGGER_EPS, "normalized_ndim": 1})
        got.setdefault(draw(c), c)
        if len(got) == len(kinds):
            return got
    raise AssertionError(f"no case draws {set(kinds) - set(got)}")


def test_every_exception_kind_becomes_a_raised_finding_that_stores(tmp_path):
    """Each exception `random_exception` can raise (odd types, unencodable text, a megabyte of
    markup, a BaseException) comes back as RAISED with its type, and stores and reads back."""
    from fuzz.isolation import Worker
    from fuzz.runners.base import Conventions
    from fuzz.triage import judge

    kinds = [k for k, _ in F.EXCEPTIONS]
    cases = _cases_drawing(kinds, F.exception_kind)
    with Worker(FAULTY, "faulty.random_exception.sometimes") as w, Store.create(tmp_path, {"config": {}}) as s:
        for kind, case in cases.items():
            o = w.run(case)
            exc = dict(F.EXCEPTIONS)[kind]()
            assert (o.status, o.error_type) == ("RAISED", qualname(exc)), (kind, o)
            o.error.encode("utf-8")  # valid UTF-8: lone surrogates arrive escaped
            verdict, finding = judge(case, o, Conventions())
            assert finding.category == "raised" and finding.signature == qualname(exc)
            s.record_finding(case, o, finding, verdict)
        assert w.restarts == 0  # the worker survived them all
        stored = {f["case_id"]: f for f in s.findings()}
        assert len(stored) == len(kinds)
        surrogate = stored[cases["surrogate"].id]
        assert "\\ud800" in surrogate["explanation"] and "\\udcff" in surrogate["explanation"]
        control = s.outcomes(cases["control"].id)[0]["error"]
        assert "\x00" in control and "\u202e" in control  # kept verbatim: escaping is the report's job
        huge = s.outcomes(cases["huge"].id)[0]["error"]
        assert len(huge) < 101_000 and huge.endswith("more characters cut by the store]")
    check_consistent(tmp_path / DB_NAME)
    figure(f"exception kinds: {len(kinds)} raised, all RAISED findings, stored and read back")


def test_unprintable_framework_exception_is_a_raised_outcome():
    """An exception whose str() raises inside `framework_call` must still be the framework's RAISED
    outcome, not an internal error that stops the campaign."""
    from fuzz.isolation import Worker

    case = _cases_drawing(["x"], lambda c: "x")["x"]
    with Worker(FAULTY, "faulty.unprintable_exception") as w:
        o = w.run(case)  # (an InternalError here was the bug: framework_call called str(e) unguarded)
    assert o.status == "RAISED" and o.error_type.endswith("UnprintableError")


@pytest.mark.parametrize("fault,kinds,draw", [
    ("wrong_type", [k for k, _ in F.WRONG_TYPES], F.wrong_type_kind),
    ("random_signal", [int(s) for s in F.SIGNALS], F.signal_of),
])
def test_every_wrong_return_and_signal_is_the_right_outcome(fault, kinds, draw):
    from fuzz.isolation import Worker

    cases = _cases_drawing(kinds, draw)
    expected = {"y": (2, 5), "mean": (2,), "rstd": (2,)}
    with Worker(FAULTY, f"faulty.{fault}.sometimes") as w:
        for kind, case in cases.items():
            o = w.run(case, expected=expected)
            if fault == "random_signal":
                assert (o.status, o.signal) == ("CRASHED", kind) and f"signal {kind} (SIG" in o.detail, o
            elif kind == "empty_dict":
                assert o.status == "OK" and not o.outputs  # compare() makes it bad_output: no outputs
            else:
                assert o.status == "BAD_OUTPUT" and o.detail, (kind, o)
    figure(f"{fault}: {len(kinds)} kinds, each the right outcome")


def test_failures_that_do_not_replay_are_kept_unshrunk(tmp_path):
    """Faults that depend on the worker's history (a leak, a failure every third case) do not fail
    again when Hypothesis replays the case to shrink it: the campaign must keep their first case as
    the reproducer and go on (it stopped with FlakyFailure, and lost the reproducer)."""
    runners = ["faulty.none", "faulty.exit.stateful", "faulty.raise.stateful", "faulty.leak",
               "faulty.random_exception.often"]
    cfg = CampaignConfig(out=str(tmp_path / "c"), ops=["layer_norm"], modes=["forward"],
                         dtypes=["float32", "float64"], runners=runners, plugins=[FAULTY], timeout=5.0,
                         memory_mb=160, max_cases=40, seed=3, pack=1)  # (per-case faults: see above)
    summary = Campaign(cfg, write_report=False).run()
    assert summary["status"] == "finished" and summary["cases_run"] == 40
    check_consistent(tmp_path / "c" / DB_NAME)
    store = Store.open(tmp_path / "c", readonly=True)
    assert {r: sum(c.values()) for r, c in counts_by_runner(store).items()} == {r: 40 for r in runners}
    buckets = store.buckets()
    assert {b["runner"] for b in buckets} >= {"faulty.exit.stateful", "faulty.raise.stateful", "faulty.leak"}
    for b in buckets:  # every bucket can be reproduced
        case = store.case(b["min_case_id"])
        assert (case.op, case.mode, case.dtype) == (b["op"], b["mode"], b["dtype"])
        if b["runner"] == "faulty.random_exception.often":  # deterministic: shrunk, still firing
            assert int(case.id, 16) % 3 == 0


def test_budget_running_out_while_shrinking_ends_cleanly(tmp_path):
    """A time budget that ends while a bucket shrinks (here a hang, 0.5 s per try) ends the
    campaign as finished, with the bucket's reproducer (it stopped with FlakyFailure)."""
    cfg = CampaignConfig(out=str(tmp_path / "c"), ops=["layer_norm"], modes=["forward"], dtypes=["float32"],
                         runners=["faulty.none", "faulty.hang.often"], plugins=[FAULTY], timeout=0.5,
                         budget_seconds=3.0, seed=2)
    summary = Campaign(cfg, write_report=False).run()
    assert summary["status"] == "finished"
    (b,) = Store.open(tmp_path / "c", readonly=True).buckets()
    assert b["category"] == "timeout" and b["min_case_id"]


def test_a_killed_campaign_takes_its_hung_workers_with_it(tmp_path):
    """SIGKILL of the campaign while a worker hangs: the worker dies too (it outlived the campaign
    for the hour of its hang)."""
    out = tmp_path / "c"
    p = subprocess.Popen([sys.executable, "-m", "fuzz", "campaign", "--out", str(out), "--runner", FAULTY,
                          "--jobs", "1", "--pack", "1", "--runners", "faulty.hang", "--ops", "layer_norm", "--modes", "forward",
                          "--dtypes", "float32", "--cases", "3", "--timeout", "600", "--quiet", "--no-report"],
                         cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def hung_workers() -> list[int]:
        pids = []
        for pid in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"fuzz.worker" in cmd and b"faulty.hang" in cmd and Path(f"/proc/{pid}/stat").read_text().split(
                        ")")[-1].split()[1] == str(p.pid):
                    pids.append(int(pid))
        return pids

    try:
        deadline = time.monotonic() + 120
        while not hung_workers():
            assert time.monotonic() < deadline and p.poll() is None, "the worker never started"
            time.sleep(0.1)
        worker = hung_workers()[0]
        time.sleep(0.5)  # the case is running (hanging) now
    finally:
        p.kill()
        p.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{worker}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            break  # gone
        if state == "Z":  # dead, waiting to be reaped by its new parent
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the hung worker outlived its killed campaign")


# --------------------------------------------------------------------------------------------------
# SIGKILL at random moments, several times in a row, then resume

# The campaign in a child process, killing itself with SIGKILL at the k-th occurrence of an event.
# Each commit of a finding is printed (as JSON) after it returned, so the test knows what was
# committed before the kill.
KILL_DRIVER = r"""
import json, os, signal, sys

event, k, argv = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
n = [0]

def hit(name):
    if name == event:
        n[0] += 1
        if n[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)

import fuzz.campaign as campaign, fuzz.isolation as isolation, fuzz.store as store

ready = isolation.Worker.wait_ready
def patched_ready(self):
    hit("worker_start")  # the worker process exists (launched); its READY is not read yet
    return ready(self)
isolation.Worker.wait_ready = patched_ready

test = campaign.Campaign._test
def patched_test(self, spec):
    if self.state.target is not None:
        hit("shrink")  # Hypothesis is shrinking a new bucket
    return test(self, spec)
campaign.Campaign._test = patched_test

record = store.Store.record_findings
def patched_record(self, items):
    items = list(items)
    hit("before_record")
    rs = record(self, items)
    for (case, outcome, *_), r in zip(items, rs):
        print(json.dumps(["committed", case.id, outcome.runner, r.bucket_key]), flush=True)
    hit("after_record")
    return rs
store.Store.record_findings = patched_record

for name in ("checkpoint", "set_minimal"):
    def patched(self, *a, _orig=getattr(store.Store, name), _name=name, **kw):
        hit("before_" + _name)
        r = _orig(self, *a, **kw)
        hit("after_" + _name)
        return r
    setattr(store.Store, name, patched)

from fuzz.cli import main
sys.exit(main(argv))
"""

KILL_CASES = 300
KILL_RUNNERS = "faulty.none,faulty.raise.often,faulty.random_exception.often,faulty.wrong_type.flaky"


def kill_schedule(seed: int) -> list[tuple[str, float]]:
    """(event, k) pairs: the k-th occurrence of the event kills the campaign; ('timer', seconds)
    kills it from outside after that delay. Drawn from a seeded generator."""
    rng = random.Random(seed)
    events = [("worker_start", rng.randint(1, 4)), ("shrink", rng.randint(1, 40)),
              ("before_record", rng.randint(1, 30)), ("after_record", rng.randint(1, 30)),
              ("before_checkpoint", rng.randint(1, 3)), ("after_checkpoint", rng.randint(1, 3)),
              ("before_set_minimal", rng.randint(1, 3)), ("after_set_minimal", rng.randint(1, 3)),
              ("timer", rng.uniform(1.0, 4.0)), ("timer", rng.uniform(1.0, 4.0))]
    rng.shuffle(events)
    return events


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
    out = tmp_path / "k"
    db = out / DB_NAME
    argv = ["campaign", "--out", str(out), "--runner", FAULTY, "--runners", KILL_RUNNERS, "--ops", "layer_norm",
            "--modes", "forward", "--dtypes", "float32,float64", "--cases", str(KILL_CASES), "--seed", "5",
            "--quiet", "--no-report", "--jobs", "1", "--pack", "1"]  # (see CAMPAIGN_ARGS)
    committed: dict[tuple[str, str], str] = {}
    kills, log = 0, []
    for event, k in kill_schedule(20240611):
        args = argv + (["--resume"] if db.exists() else [])
        if event == "timer":
            cmd = [sys.executable, "-c", KILL_DRIVER, "none", "0", json.dumps(args)]
        else:
            cmd = [sys.executable, "-c", KILL_DRIVER, event, str(k), json.dumps(args)]
        p = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        try:
            stdout, stderr = p.communicate(timeout=k if event == "timer" else 300)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            stdout, stderr = p.communicate()
        log.append((event, k, p.returncode))
        for line in stdout.splitlines():
            if not line.startswith("["):  # the campaign's own summary, when it finished first
                continue
            row = json.loads(line)
            if row[0] == "committed":
                assert committed.setdefault((row[1], row[2]), row[3]) == row[3]
        if p.returncode != -signal.SIGKILL:
            assert p.returncode in (0, 1), (event, k, stderr[-3000:])
            break  # the campaign finished before the event came
        kills += 1
        assert db.exists() or not committed
        if db.exists():
            check_consistent(db)
            with contextlib.closing(raw(db)) as con:
                stored = {(c, r): key for c, r, key in con.execute("SELECT case_id, runner, bucket_key FROM findings")}
            lost = {f: key for f, key in committed.items() if stored.get(f) != key}
            assert not lost, f"findings committed before the kill at {event} #{k} are gone: {lost}"
    assert kills >= 8, log
    done = subprocess.run([sys.executable, "-m", "fuzz", *argv, "--resume"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    per_runner = check_consistent(db)
    with contextlib.closing(raw(db)) as con:
        stored = {(c, r): key for c, r, key in con.execute("SELECT case_id, runner, bucket_key FROM findings")}
    assert all(stored.get(f) == key for f, key in committed.items())
    store = Store.open(out, readonly=True)
    c = store.campaign()
    assert c["status"] == "finished" and c["cases_run"] == KILL_CASES and c["resumes"] >= kills - 2
    runners = KILL_RUNNERS.split(",")
    assert {r: sum(n.values()) for r, n in counts_by_runner(store).items()} == {r: KILL_CASES for r in runners}
    for b in store.buckets():  # every bucket, even one opened just before a kill, has its reproducer
        case = store.case(b["min_case_id"])
        assert (case.op, case.mode, case.dtype) == (b["op"], b["mode"], b["dtype"])
    for f in store.findings():  # and every finding is a real one
        case = store.case(f["case_id"])
        runner = next(r for r in F.runners() if r.id == f["runner"])
        assert runner.fires(case), f
    figure(f"SIGKILL: {kills} kills survived ({', '.join(e for e, _, _ in log)}), "
           f"{len(committed)} findings committed before kills, 0 lost, {sum(per_runner.values())} at the end")


# --------------------------------------------------------------------------------------------------
# The environment fails: full disk, read-only folder, locked database

CAMPAIGN_ARGS = ["--runner", FAULTY, "--ops", "layer_norm", "--modes", "forward", "--dtypes", "float32,float64",
                 "--runners", "faulty.none,faulty.random_exception.often", "--quiet", "--no-report", "--jobs", "1",
                 "--pack", "1"]
# (--jobs 1: these tests follow one campaign process and its workers; --pack 1: the faults fire by
# case id, which a packed call does not have; --jobs and packing have tests of their own)

# `normfuzz` under a file-size limit (the disk filling up: write() fails with EFBIG, as it would
# with ENOSPC; SIGXFSZ ignored, so the limit is an error and not a kill).
FSIZE_DRIVER = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from fuzz.cli import main
sys.exit(main(sys.argv[2:]))
"""


def snapshot(db: Path) -> dict:
    """Everything a campaign stored, row by row (to show that nothing stored was damaged)."""
    with contextlib.closing(raw(db)) as con:
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}")))
                for t in ("cases", "outcomes", "findings")}


def n_findings(db: Path) -> int:
    with contextlib.closing(raw(db)) as con:
        return con.execute("SELECT count(*) FROM findings").fetchone()[0]


def assert_kept(before: dict, db: Path) -> None:
    check_consistent(db)
    after = snapshot(db)
    for table, rows in before.items():
        assert set(rows) <= set(after[table]), f"rows of {table} changed or vanished"


def environment_error(code: int, err: str, *words: str) -> None:
    assert code == 4, err
    assert err.startswith("normfuzz: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_full_disk_exits_4_and_keeps_what_was_stored(tmp_path):
    out = tmp_path / "c"
    assert run_cli("campaign", "--out", str(out), "--cases", "10", *CAMPAIGN_ARGS)[0] == 1
    before = snapshot(out / DB_NAME)
    limit = (out / DB_NAME).stat().st_size + 100_000
    done = subprocess.run([sys.executable, "-c", FSIZE_DRIVER, str(limit), "campaign", "--out", str(out), "--resume",
                           "--cases", "400"], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    environment_error(done.returncode, done.stderr, str(out / DB_NAME))
    assert "disk is full" in done.stderr or "file size limit" in done.stderr or "I/O error" in done.stderr
    assert_kept(before, out / DB_NAME)
    # With room again, the campaign resumes and completes.
    assert run_cli("campaign", "--out", str(out), "--resume", "--cases", "60", "--quiet", "--no-report")[0] == 1
    assert_kept(before, out / DB_NAME)
    assert Store.open(out, readonly=True).campaign()["status"] == "finished"


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A small tmpfs mounted at `folder` (needs root); skips where mounting is not permitted."""
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the tmpfs variant needs it")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): variant skipped")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_tmpfs_exits_4_and_resumes_when_there_is_room(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "c"
        code, _, err = run_cli("campaign", "--out", str(out), "--cases", "2000", *CAMPAIGN_ARGS)
        environment_error(code, err, "disk is full")
        committed = check_consistent(out / DB_NAME)
        assert sum(committed.values()) >= 5
        before = snapshot(out / DB_NAME)
        with Store.open(out, readonly=True) as s:
            done = (s.progress() or {}).get("cases", 0)
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        code, _, err = run_cli("campaign", "--out", str(out), "--resume", "--cases", str(done + 30), "--quiet",
                               "--no-report")
        assert code == 1, err
        assert_kept(before, out / DB_NAME)
        with Store.open(out, readonly=True) as s:
            assert s.campaign()["status"] == "finished" and s.summary()["cases_run"] == done + 30


@contextlib.contextmanager
def read_only(folder: Path, *inner: Path):
    """Make `folder` (and the `inner` folders in it) read-only: a read-only bind mount of it as root
    (who ignores file modes), else chmod; skips where neither works."""
    if os.geteuid() != 0:
        for f in (folder, *inner):
            f.chmod(0o555)
        try:
            yield
        finally:
            for f in (folder, *inner):
                f.chmod(0o755)
        return
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a folder read-only here: {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        probe = folder / ".probe"
        with contextlib.suppress(OSError):
            probe.touch()
        if probe.exists():
            pytest.skip("a read-only bind mount is still writable here")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False, capture_output=True)


def test_read_only_folder_exits_4_and_changes_nothing(tmp_path):
    out = tmp_path / "c"
    assert run_cli("campaign", "--out", str(out), "--cases", "10", *CAMPAIGN_ARGS)[0] == 1
    digest = hashlib.sha256((out / DB_NAME).read_bytes()).hexdigest()
    bucket = bucket_id(Store.open(out, readonly=True).buckets()[0]["key"])
    with read_only(tmp_path, out):
        code, _, err = run_cli("campaign", "--out", str(tmp_path / "new" / "c"), "--cases", "5", *CAMPAIGN_ARGS)
        environment_error(code, err, "cannot create the campaign folder", "not writable")
        code, _, err = run_cli("campaign", "--out", str(out), "--resume", "--cases", "20")
        environment_error(code, err, str(out / DB_NAME), "not writable")
        # an archived campaign can still be read and reproduced
        code, stdout, err = run_cli("repro", f"{out}/{bucket}", "--runner", FAULTY)
        assert code == 1 and "still reproduces" in stdout, err
    assert hashlib.sha256((out / DB_NAME).read_bytes()).hexdigest() == digest


def test_database_locked_by_another_process_exits_4_promptly(tmp_path):
    out = tmp_path / "c"
    assert run_cli("campaign", "--out", str(out), "--cases", "10", *CAMPAIGN_ARGS)[0] == 1
    before = snapshot(out / DB_NAME)
    # 1. another normfuzz holds the campaign (its writer lock)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fuzz.store import Store; "
                               "s = Store.open(sys.argv[1]); print('ready', flush=True); time.sleep(120)", str(out)],
                              cwd=REPO, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        code, _, err = run_cli("campaign", "--out", str(out), "--resume", "--cases", "20")
        environment_error(code, err, "is being written by another normfuzz process", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    # 2. another program holds an exclusive SQLite lock in the middle of a campaign
    p = subprocess.Popen([sys.executable, "-m", "fuzz", "campaign", "--out", str(out), "--resume", "--cases", "100000"],
                         cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while n_findings(out / DB_NAME) < len(before["findings"]) + 5:
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.2)
        lock = sqlite3.connect(out / DB_NAME, isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        try:
            _, err = p.communicate(timeout=120)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        waited = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    environment_error(p.returncode, err, "the database is locked by another process")
    # one busy timeout (5 s), not one per shrinking step (it took 40 s)
    assert waited < 15, waited
    assert_kept(before, out / DB_NAME)


# --------------------------------------------------------------------------------------------------
# Hostile case files: refused before anything is run or allocated; nothing is unpickled


class _Unpickled:
    """Touches `marker` if it is ever unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _good_case(**kw) -> Case:
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    base = dict(op="layer_norm", mode="forward", dtype="float32", inputs={"x": x, "gamma": np.ones(4, np.float32)},
                attrs={"eps": 1e-5, "normalized_ndim": 1})
    return Case(**{**base, **kw})


def _edit_json(edit):
    def apply(json_path: Path, marker: str) -> None:
        doc = json.loads(json_path.read_text())
        edit(doc)
        json_path.write_text(json.dumps(doc))
    return apply


def _edit_npz(edit):
    def apply(json_path: Path, marker: str) -> None:
        npz = json_path.with_suffix(".npz")
        npz.write_bytes(edit(npz.read_bytes()))
    return apply


def _declare_big(shape, data: int = 16):
    """Metadata and .npy header declare `shape` for x; the member holds `data` bytes of data."""
    def apply(json_path: Path, marker: str) -> None:
        doc = json.loads(json_path.read_text())
        doc["inputs"][0]["shape"] = list(shape)
        json_path.write_text(json.dumps(doc))
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
        with zipfile.ZipFile(json_path.with_suffix(".npz"), "w") as zf:
            zf.writestr("x.npy", header.getvalue() + b"\0" * data)
            zf.writestr("gamma.npy", _npy(np.ones(4, np.float32)))
    return apply


def _npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array(b, a, allow_pickle=True)
    return b.getvalue()


def _pickled_x(json_path: Path, marker: str) -> None:
    evil = np.empty(2, dtype=object)
    evil[:] = [_Unpickled(marker), _Unpickled(marker)]
    with zipfile.ZipFile(json_path.with_suffix(".npz"), "w") as zf:
        zf.writestr("x.npy", _npy(evil))
        zf.writestr("gamma.npy", _npy(np.ones(4, np.float32)))


def _replace_case(**kw):
    """A well-formed case file of a case normfuzz cannot run, in place of the saved one."""
    def apply(json_path: Path, marker: str) -> None:
        saved = _good_case(**kw).save(json_path.parent / "src")
        json_path.write_bytes(saved.read_bytes())
        json_path.with_suffix(".npz").write_bytes(saved.with_suffix(".npz").read_bytes())
    return apply


#: name -> how to spoil a saved case (JSON path, marker path for pickles)
HOSTILE_CASES = {
    "npz empty": _edit_npz(lambda b: b""),
    "npz truncated to 10 bytes": _edit_npz(lambda b: b[:10]),
    "npz truncated to half": _edit_npz(lambda b: b[: len(b) // 2]),
    "npz missing its last byte": _edit_npz(lambda b: b[:-1]),
    "npz bytes flipped": _edit_npz(lambda b: bytes(v ^ 0x5A if i % 7 == 3 else v for i, v in enumerate(b))),
    "npz is random bytes": _edit_npz(lambda b: random.Random(1).randbytes(len(b))),
    "npz is a text file": _edit_npz(lambda b: b"x = 1\n"),
    "object array (pickle) in npz": _pickled_x,
    "object dtype declared": _edit_json(lambda d: d["inputs"][0].update(dtype="|O")),
    "complex dtype declared": _edit_json(lambda d: d["inputs"][0].update(dtype="<c8")),
    "string dtype declared": _edit_json(lambda d: d["inputs"][0].update(dtype="<U3")),
    "big-endian dtype declared": _edit_json(lambda d: d["inputs"][0].update(dtype=">f4")),
    "json is not json": lambda p, m: p.write_text("{'schema': normfuzz"),
    "json is a list": lambda p, m: p.write_text("[1, 2, 3]"),
    "json nested 100000 deep": lambda p, m: p.write_text("[" * 100_000 + "]" * 100_000),
    "json with a 5000-digit int": lambda p, m: p.write_text('{"version": ' + "9" * 5000 + "}"),
    "json not utf-8": lambda p, m: p.write_bytes(b'{"schema": "\xff\xfe"}'),
    "json schema of another tool": _edit_json(lambda d: d.update(schema="onnx.model")),
    "json newer version": _edit_json(lambda d: d.update(version=2)),
    "json missing field": _edit_json(lambda d: d.pop("attrs")),
    "json extra field": _edit_json(lambda d: d.update(__class__="os.system")),
    "json inputs not a list": _edit_json(lambda d: d.update(inputs={"x": 1})),
    "json shape not ints": _edit_json(lambda d: d["inputs"][0].update(shape=["3", 4])),
    "json negative shape": _edit_json(lambda d: d["inputs"][0].update(shape=[-3, -4])),
    "json float attr not hex": _edit_json(lambda d: d["attrs"].update(eps={"float": "0x1.zz"})),
    "json attr is an object": _edit_json(lambda d: d["attrs"].update(eps={"__reduce__": "os.system"})),
    "json id mismatch": _edit_json(lambda d: d["attrs"].update(normalized_ndim=2)),
    "unknown dtype": _edit_json(lambda d: d.update(dtype="float8")),
    "unknown op": _replace_case(op="batchnorm"),
    "unknown mode": _replace_case(mode="sideways"),
    "missing input": _replace_case(inputs={"gamma": np.ones(4, np.float32)}),
    "unknown input": _replace_case(inputs={"x": np.ones((3, 4), np.float32), "bias_": np.ones(4, np.float32)}),
    "unknown attr": _replace_case(attrs={"eps": 1e-5, "normalized_ndim": 1, "exec": "rm -rf /"}),
    "attr of the wrong type": _replace_case(attrs={"eps": "1e-5", "normalized_ndim": 1}),
    "attr absurd": _replace_case(attrs={"eps": 1e-5, "normalized_ndim": 2**62}),
    "gamma of the wrong shape": _replace_case(inputs={"x": np.ones((3, 4), np.float32), "gamma": np.ones(7, np.float32)}),
    "x of integers": _replace_case(inputs={"x": np.ones((3, 4), np.int64)}),
    "x empty": _replace_case(inputs={"x": np.ones((0, 4), np.float32)}),
    "absurd shape 2^40 x 2^40": _edit_json(lambda d: d["inputs"][0].update(shape=[2**40, 2**40])),
    "absurd shape 2^31 cubed": _edit_json(lambda d: d["inputs"][0].update(shape=[2**31] * 3)),
    "1 GiB declared, 16 bytes present": _declare_big([2**14, 2**14]),
    "2 GiB declared over two inputs": _edit_json(lambda d: [e.update(shape=[2**14, 2**14]) for e in d["inputs"]]),
    "zero-size absurd shape": _edit_json(lambda d: d["inputs"][0].update(shape=[0, 2**62])),
    "zero-size absurd shape, header too": _declare_big([0, 2**62], data=0),
}


@pytest.fixture
def no_workers(monkeypatch):
    """Fail loudly if anything would start a worker (run a runner)."""
    started = []
    from fuzz import isolation

    monkeypatch.setattr(isolation.Worker, "start", lambda self: started.append(self.runner_id))
    return started


@pytest.mark.parametrize("name", sorted(HOSTILE_CASES))
def test_repro_refuses_hostile_case_files(name, tmp_path, no_workers):
    json_path = _good_case().save(tmp_path)
    marker = str(tmp_path / "unpickled")
    HOSTILE_CASES[name](json_path, marker)
    for target in (json_path, json_path.with_suffix(".npz")):
        tracemalloc.start()
        try:
            code, out, err = run_cli("repro", str(target), "--runner", FAULTY, "--runners", "faulty.none")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert code in (1, 2), (code, out, err)
        assert "Traceback" not in err and "internal error" not in err, err
        assert err.startswith(("normfuzz: error: ", "normfuzz repro: error: ")), err
        assert str(tmp_path) in err, err  # names the file
        assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"
        assert no_workers == [], "a runner was started on a refused case"
    assert not Path(marker).exists(), "something was unpickled"


def test_hostile_case_files_cover_the_issue():
    names = " ".join(HOSTILE_CASES)
    for kind in ("truncated", "flipped", "pickle", "schema", "unknown op", "unknown dtype", "absurd shape"):
        assert kind in names, kind
    figure(f"hostile case files: {len(HOSTILE_CASES)} kinds x 2 paths (.json, .npz) refused by `normfuzz repro`, "
           f"no traceback, nothing unpickled, < 32 MiB allocated, no runner started")


def test_case_files_written_by_numpy_itself_still_load(tmp_path):
    """The .npz reader that replaced np.load reads what np.savez writes: Fortran-ordered, 0-d,
    empty-shaped and compressed members, with the same values."""
    x = np.asfortranarray(np.random.default_rng(3).normal(size=(3, 4, 2)).astype(np.float32))
    case = Case(op="layer_norm", mode="forward", dtype="float32",
                inputs={"x": x, "step": np.array(7, np.int64), "none": np.zeros((0, 2), np.float32)},
                attrs={"eps": 1e-5})
    json_path = case.save(tmp_path)
    for save in (np.savez, np.savez_compressed):
        save(json_path.with_suffix(".npz"), x=x, step=np.array(7, np.int64), none=np.zeros((0, 2), np.float32))
        loaded = Case.load(json_path)
        assert loaded == case
        np.testing.assert_array_equal(loaded.inputs["x"], x)


def test_repro_still_runs_cases_whose_only_fault_is_an_input_value(tmp_path):
    """The refusal does not reach fuzz cases: a negative running_var (the 'invalid' regime) is run."""
    from fuzz.cli import _refuse_unrunnable

    case = Case(op="batch_norm", mode="inference", dtype="float32",
                inputs={"x": np.ones((2, 3, 4), np.float32), "running_mean": np.zeros(3, np.float32),
                        "running_var": -np.ones(3, np.float32)}, attrs={"eps": 1e-5})
    _refuse_unrunnable(case)  # does not raise


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_every_generated_case_passes_the_repro_check(data):
    """Whatever the strategies generate (every op, mode, regime, invalid included), repro accepts."""
    from fuzz.cli import _refuse_unrunnable
    from fuzz.strategies import case_specs, materialize

    spec = data.draw(case_specs(max_elements=256))
    _refuse_unrunnable(materialize(spec))


# --------------------------------------------------------------------------------------------------
# Hostile databases: refused with a clear message by `campaign --resume` and `repro RUN_DIR/ID`


def _sql(*statements):
    def apply(db: Path) -> None:
        con = sqlite3.connect(db, isolation_level=None)
        for s in statements:
            con.execute(s)
        con.close()
    return apply


def _write(data: bytes):
    return lambda db: db.write_bytes(data)


def _other_app(db: Path) -> None:
    db.unlink()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE buckets (key TEXT)")
    con.execute("PRAGMA application_id = 1234")
    con.commit()
    con.close()


def _flip_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    for i in range(4096 + 200, len(data), 997):
        data[i] ^= 0xFF
    db.write_bytes(bytes(data))


def _folder(db: Path) -> None:
    db.unlink()
    db.mkdir()


#: name -> (damage, refused by resume, refused by repro): whole-file problems are refused by both,
#: without modifying the file; damaged rows by the command that needs them.
HOSTILE_DBS = {
    "newer schema version": (_sql("PRAGMA user_version = 2"), True, True),
    "schema version 0": (_sql("PRAGMA user_version = 0"), True, True),
    "sqlite of another application": (_other_app, True, True),
    "random bytes": (lambda db: db.write_bytes(random.Random(2).randbytes(8192)), True, True),
    "empty file": (_write(b""), True, True),
    "a folder": (_folder, True, True),
    "truncated to half": (lambda db: db.write_bytes(db.read_bytes()[: db.stat().st_size // 2]), True, True),
    "pages flipped": (_flip_pages, True, True),
    "a table dropped": (_sql("DROP TABLE counts"), True, True),
    "config not json": (_sql("UPDATE campaign SET config = '{{{'"), True, False),
    "config a list": (_sql("UPDATE campaign SET config = '[1, 2]'"), True, False),
    "config of the wrong types": (_sql("""UPDATE campaign SET config = '{"max_cases": "x", "seed": []}'"""),
                                  True, False),
    "checkpoint a list": (_sql("UPDATE progress SET state = '[]'"), True, False),
    "checkpoint round not a number": (_sql("""UPDATE progress SET state = '{"round": "x"}'"""), True, False),
    "reproducer missing": (_sql("PRAGMA foreign_keys = OFF", "UPDATE buckets SET min_case_id = 'ffffffffffffffff'"),
                           False, True),
    "stored case of another schema": (_sql("""UPDATE cases SET case_json = '{"schema": "x"}'"""), False, True),
    "stored case not json": (_sql("UPDATE cases SET case_json = '<script>alert(1)</script>'"), False, True),
}


@pytest.fixture(scope="module")
def good_campaign(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("good") / "c"
    assert run_cli("campaign", "--out", str(out), "--cases", "8", *CAMPAIGN_ARGS)[0] == 1
    with Store.open(out, readonly=True) as s:
        return out, bucket_id(s.buckets()[0]["key"])


@pytest.mark.parametrize("name", sorted(HOSTILE_DBS))
def test_hostile_databases_are_refused_with_a_clear_message(name, good_campaign, tmp_path):
    damage, resume_refused, repro_refused = HOSTILE_DBS[name]
    out = tmp_path / "c"
    shutil.copytree(good_campaign[0], out)
    db = out / DB_NAME
    damage(db)
    before = db.read_bytes() if db.is_file() else None
    code, _, err = run_cli("campaign", "--out", str(out), "--resume", "--cases", "12", "--quiet", "--no-report")
    assert "Traceback" not in err and "internal error" not in err, err
    if resume_refused:
        assert code == 1 and err.startswith(f"normfuzz: error: cannot resume {out}: "), err
        assert (db.read_bytes() if db.is_file() else None) == before, "a refused database was modified"
    else:
        assert code in (0, 1), err
    code, out_text, err = run_cli("repro", f"{out}/{good_campaign[1]}", "--runner", FAULTY)
    assert "Traceback" not in err and "internal error" not in err, err
    if repro_refused:
        assert code == 1 and err.startswith("normfuzz: error: ") and str(out) in err, err
    else:
        assert code in (0, 1), err


def test_a_moved_campaign_resumes_where_it_is_now(good_campaign, tmp_path):
    """--resume continues the campaign in --out, not in the folder it was created in (it wrote into
    the original folder, or failed when that was gone)."""
    original = good_campaign[0]
    before = hashlib.sha256((original / DB_NAME).read_bytes()).hexdigest()
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    code, out, err = run_cli("campaign", "--out", str(moved), "--resume", "--cases", "12", "--quiet", "--no-report")
    assert code in (0, 1), err
    assert Store.open(moved, readonly=True).campaign()["cases_run"] == 12
    assert hashlib.sha256((original / DB_NAME).read_bytes()).hexdigest() == before


def test_resume_refuses_a_changed_configuration(good_campaign, tmp_path):
    """The original command line plus --resume continues the campaign; an option that differs from
    the stored configuration (it was silently ignored) is a usage error naming both values."""
    out = tmp_path / "c"
    shutil.copytree(good_campaign[0], out)
    code, _, err = run_cli("campaign", "--out", str(out), "--cases", "12", *CAMPAIGN_ARGS, "--resume")
    assert code in (0, 1), err
    for change, words in ((["--seed", "99"], "--seed 99 (stored: 0)"),
                          (["--ops", "rms_norm"], "--ops ['rms_norm'] (stored: ['layer_norm'])"),
                          (["--no-minimize"], "--no-minimize True (stored: False)"),
                          (["--pack-elements", "100"], f"--pack-elements 100 (stored: {DEFAULT_PACK_ELEMENTS})")):
        code, _, err = run_cli("campaign", "--out", str(out), "--resume", "--cases", "14", *change)
        assert code == 2 and words in err and "only --budget and --cases can change" in err, err
    assert Store.open(out, readonly=True).campaign()["cases_run"] == 12


def test_hostile_databases_cover_the_issue():
    names = " ".join(HOSTILE_DBS)
    for kind in ("newer schema", "another application", "random bytes", "truncated"):
        assert kind in names, kind
    figure(f"hostile databases: {len(HOSTILE_DBS)} kinds, each refused by `campaign --resume` and/or "
           f"`repro RUN_DIR/ID` with a clear message, no traceback")


# --------------------------------------------------------------------------------------------------
# Report text from framework messages stays inert


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> tuple[str, list[str]]:
    """The report page of a campaign whose findings quote every hostile framework message, and
    those messages as stored."""
    reports = pytest.importorskip("reports")
    if not hasattr(reports, "write_report"):
        pytest.skip("reports.write_report is not built yet")
    out = tmp_path_factory.mktemp("report") / "c"
    cfg = CampaignConfig(out=str(out), ops=["layer_norm"], modes=["forward"], dtypes=["float32", "float64"],
                         runners=["faulty.random_exception", "faulty.raise.often", "faulty.wrong_type.often"],
                         plugins=[FAULTY], max_cases=40, seed=4, minimize=False,
                         pack=1)  # the messages are picked by the content of the case a worker gets
    Campaign(cfg, write_report=False).run()
    with Store.open(out, readonly=True) as s:
        texts = [f["explanation"] for f in s.findings()]
    page = reports.write_report(out, out / "report.html").read_bytes().decode("utf-8")  # valid UTF-8
    return page, texts


def test_report_renders_hostile_framework_messages_inert(hostile_report):
    page, texts = hostile_report
    assert any("<img src=x onerror=alert(1)>" in t for t in texts)  # the hostile text is in the store
    assert any("<script>alert(1)</script>" in t for t in texts)
    for evil in ("<script>alert(1)</script>", "<img src=x onerror", "<b>failed</b>"):
        assert evil not in page, f"{evil!r} reached the page unescaped"
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_shows_control_characters_and_bidi_overrides_visibly(hostile_report):
    """NUL, BEL and ESC are parse errors in HTML text, and a right-to-left override reorders what the
    reader sees (a message can spoof its neighbours): the page should show them as visible escapes."""
    page, texts = hostile_report
    assert any("\x00" in t and "\u202e" in t for t in texts)
    raw = sorted({f"U+{ord(ch):04X}" for ch in page if (ord(ch) < 32 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0
                  or 0x202A <= ord(ch) <= 0x202E or 0x2066 <= ord(ch) <= 0x2069})
    assert not raw, f"raw control/bidi characters on the page: {raw}"


# --------------------------------------------------------------------------------------------------
# The CLI's own arguments, fuzzed: every invalid combination is a usage error (exit 2), never a
# traceback. Safe by construction: every drawn argument list carries at least one defect that the
# parser or the up-front validation catches (an unknown flag, a missing value, a malformed value, an
# unknown op, a missing budget, ...), and anything that would do work (create or open a store, start
# a worker, score the bug zoo) is replaced by a tripwire that fails the test. Output folders are
# under a temporary folder that does not exist.


class Tripwire(BaseException):
    """Raised if an invalid command line got as far as doing work (not caught by cli.main)."""


FLAG_VALUES = {  # plausible and implausible values for each flag that takes one
    "--out": ["{tmp}/out", "{tmp}/a b", "{tmp}/x/../y"],
    "--budget": ["90s", "30m", "2h", "10"],
    "--cases": ["1", "5", "100"],
    "--ops": ["layer_norm", "batch_norm,rms_norm", "group_norm"],
    "--modes": ["forward", "training,inference"],
    "--runners": ["faulty.none", "torch.functional"],
    "--runner": [FAULTY],
    "--dtypes": ["float32", "float16,bfloat16"],
    "--regimes": ["typical", "invalid"],
    "--seed": ["0", "-5", "12345678901234567890"],
    "--timeout": ["1", "0.5", "60"],
    "--memory-mb": ["0", "512"],
    "--baseline": ["{tmp}/prev"],
    "--known-issues": ["{tmp}/known.toml"],
    "--variants": ["eps_dropped"],
    "--max-cases": ["10"],
    "--json": ["{tmp}/scores.json"],
    "--emit-script": ["{tmp}/scripts"],
    "--compare": ["{tmp}/prev"],
}

#: (applies to command, argv fragment) defects the CLI must refuse up front
DEFECTS = [
    ("*", ["--frobnicate"]), ("*", ["--no-such-flag", "3"]), ("*", ["-Z"]),
    ("campaign", ["--cases", "0"]), ("campaign", ["--cases", "-3"]), ("campaign", ["--cases", "many"]),
    ("campaign", ["--cases", "1e3"]), ("campaign", ["--budget", "ten minutes"]), ("campaign", ["--budget", "-5m"]),
    ("campaign", ["--budget", "0"]), ("campaign", ["--budget", "inf"]), ("campaign", ["--budget", "nan"]),
    ("campaign", ["--timeout", "nan"]), ("campaign", ["--timeout", "-1"]), ("campaign", ["--timeout", "0"]),
    ("campaign", ["--timeout", "inf"]), ("campaign", ["--memory-mb", "-5"]), ("campaign", ["--memory-mb", "4G"]),
    ("campaign", ["--seed", "one"]), ("campaign", ["--ops", "batchnorm"]), ("campaign", ["--ops", "layer_norm,,x"]),
    ("campaign", ["--modes", "backward"]), ("campaign", ["--dtypes", "float8"]), ("campaign", ["--dtypes", "int32"]),
    ("campaign", ["--regimes", "weird"]), ("campaign", "NO_BUDGET"), ("campaign", "NO_OUT"),
    # found when the campaign selects its runners (a new campaign only; --resume reads the stored ones)
    ("new campaign", ["--runners", "nope"]), ("new campaign", ["--runner", "nomodule"]),
    ("new campaign", ["--runner", "no_such_module_xyz:runners"]), ("new campaign", ["--runner", "fuzz.cli:nothing"]),
    ("repro", ["--timeout", "nan"]), ("repro", ["--timeout", "0"]), ("repro", ["--runner", "nomodule"]),
    ("repro", "NO_TARGET"), ("repro", ["{tmp}/missing/ID"]), ("repro", ["{tmp}/x.json", "{tmp}/y.json"]),
    ("selftest", ["--max-cases", "0"]), ("selftest", ["--variants", "no_such_variant"]),
    ("selftest", ["--ops", "batchnorm"]), ("selftest", ["--seed", "x"]), ("selftest", ["--pack", "0"]),
    ("bugzoo", ["--json", "--verbose"]), ("bugzoo", ["extra"]),
    ("backends", ["--runner", "nomodule"]), ("backends", ["--runner", "no_such_module_xyz:runners"]),
    ("report", "NO_TARGET"),
    ("*", "MISSING_VALUE"), ("*", "UNKNOWN_COMMAND"),
]


def _flags_of(command: str) -> list[tuple[str, bool]]:
    """(option string, takes a value) of each option of a subcommand, read from the parser."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    return [(a.option_strings[-1], a.nargs != 0) for a in sub._actions
            if a.option_strings and a.option_strings[-1] not in ("--help", "-h")]


@st.composite
def invalid_command_lines(draw, tmp: str):
    commands = [c.name for c in cli.COMMANDS]
    command = draw(st.sampled_from(commands))
    flags = _flags_of(command)
    groups: list[list[str]] = []
    for flag, takes_value in draw(st.lists(st.sampled_from(flags), max_size=6, unique=True)):
        if not takes_value:
            groups.append([flag])
        else:
            value = draw(st.sampled_from(FLAG_VALUES.get(flag, ["x", "1"])))
            groups.append([flag, value.format(tmp=tmp)])
    positional = {"repro": [f"{tmp}/nothing/here"], "report": [f"{tmp}/no_campaign"]}.get(command, [])
    if command == "campaign" and not any(g[0] == "--out" for g in groups):
        groups.append(["--out", f"{tmp}/out"])
    resume = any(g[0] == "--resume" for g in groups)
    applicable = [d for c, d in DEFECTS if (c in ("*", command) or (c == "new " + command and not resume))
                  and (d != "MISSING_VALUE" or any(v for _, v in flags))]
    defects = draw(st.lists(st.sampled_from(applicable), min_size=1, max_size=2))
    for defect in defects:
        if defect == "NO_BUDGET":
            groups = [g for g in groups if g[0] not in ("--budget", "--cases", "--resume")]
        elif defect == "NO_OUT":
            groups = [g for g in groups if g[0] != "--out"]
        elif defect == "NO_TARGET":
            positional = []
        elif defect not in ("MISSING_VALUE", "UNKNOWN_COMMAND"):
            # the defect's value is the one that counts (for a repeated option, argparse keeps the last)
            groups = [g for g in groups if g[0] != defect[0] or g[0] == "--runner"]
            groups.append([d.format(tmp=tmp) for d in defect])
    order = draw(st.permutations(range(len(groups))))
    argv = [command] + [t for i in order for t in groups[i]]
    argv[1:1] = positional if draw(st.booleans()) else []
    if positional and positional[0] not in argv:
        argv += positional
    if "MISSING_VALUE" in defects:
        argv.append(draw(st.sampled_from([f for f, v in flags if v])))
    if "UNKNOWN_COMMAND" in defects:
        argv[0] = draw(st.sampled_from(["campain", "Campaign", "run", "--campaign", ""]))
    return argv


@pytest.fixture
def tripwires(monkeypatch):
    import fuzz.selftest
    from fuzz import isolation, store

    def trip(*a, **k):
        raise Tripwire(f"an invalid command line got as far as doing work: {a[1:2]}")

    for owner, name in ((store.Store, "create"), (store.Store, "open"), (isolation.Worker, "start"),
                        (fuzz.selftest, "score")):
        monkeypatch.setattr(owner, name, trip)


def test_cli_arguments_fuzzed_are_usage_errors(tmp_path, tripwires):
    tmp = str(tmp_path / "nothing")
    seen = Counter()

    @settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(invalid_command_lines(tmp))
    def check(argv):
        try:
            code, out, err = run_cli(*argv)
        except Tripwire as exc:
            raise AssertionError(f"{argv}: {exc}") from None
        assert code == 2, (argv, code, out, err)
        assert "Traceback" not in err and out == "", (argv, err)
        assert err.startswith("usage: normfuzz") or err.startswith(f"normfuzz {argv[0]}: error: "), (argv, err)
        assert not os.path.exists(tmp), "an invalid command line created files"
        seen[argv[0]] += 1

    check()
    figure(f"CLI fuzz: {sum(seen.values())} invalid command lines, all exit 2 with a usage message "
           f"({dict(seen)})")


# --------------------------------------------------------------------------------------------------
# Determinism: same seed and configuration, same cases and same buckets


DETERMINISM_RUNNERS = ["honest.naive", "honest.welford_newton", "bugzoo.eps_dropped.layer_norm",
                       "bugzoo.rms_norm_subtracts_mean.rms_norm", "bugzoo.group_norm_interleaved.group_norm",
                       "bugzoo.momentum_inverted.batch_norm"]


def _deterministic_run(out: Path, seed: int, cases: int = 40):
    cfg = CampaignConfig(out=str(out), ops=["layer_norm", "rms_norm", "group_norm", "batch_norm"],
                         dtypes=["float32", "float16"], runners=DETERMINISM_RUNNERS, plugins=[HONEST, BUGZOO],
                         max_cases=cases, seed=seed, max_elements=512, pack=1)
    # (pack=1: 40 cases from 40 examples cover several ops; packed determinism: test_throughput.py)
    camp = RecordingCampaign(cfg, write_report=False)
    camp.run()
    s = Store.open(out, readonly=True)
    return ([c.id for c in camp.cases],
            sorted((b["key"], b["min_case_id"], b["count"]) for b in s.buckets()),
            sorted((f["case_id"], f["runner"], f["category"], f["signature"]) for f in s.findings()),
            s.counts())


@pytest.mark.slow
def test_same_seed_same_cases_and_buckets_over_several_ops(tmp_path):
    a = _deterministic_run(tmp_path / "a", seed=9)
    b = _deterministic_run(tmp_path / "b", seed=9)
    assert a[0] == b[0]  # the same stream of cases, shrinking included
    assert a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
    assert len(a[1]) >= 2, "too few buckets to show anything: choose another seed"
    assert {r["runner"] for r in a[3] if r["result"] == "agree"} >= {"honest.naive", "honest.welford_newton"}
    assert not any(f[1].startswith("honest.") for f in a[2])
    c = _deterministic_run(tmp_path / "c", seed=10, cases=8)
    assert c[0] != a[0][: len(c[0])]  # the seed matters (the comparison above can fail)
    figure(f"determinism: {len(a[0])} cases and {len(a[1])} buckets identical across two runs of seed 9")
