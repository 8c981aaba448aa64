"""Run a runner in a long-lived worker subprocess, so that nothing it does can kill the campaign.

`Worker(spec, runner_id).run(case)` always returns an `Outcome`: a segfault or abort (CRASHED with
the signal), an exit of the worker (CRASHED with the exit code), a hang past the per-case timeout
(TIMEOUT), or resident memory above the limit (CRASHED, detail "out of memory ...") each become the
outcome of that case, and the worker is restarted before the next one. A framework exception is a
RAISED outcome. An error of normfuzz itself (or of a runner's own code outside `framework_call`) is
raised as `InternalError`: it is a bug to fix, not a finding. Text coming back from the worker (error
type, message, detail) is made valid UTF-8 (lone surrogates escaped), so that no framework message can
break the store or a report downstream. On Linux a worker is killed by the kernel when the process
that started it dies, even by SIGKILL, so a hung worker never outlives a killed campaign.

`Worker.run_batch(cases)` sends several cases in one request and reads one answer: the worker still
runs each case alone (one framework call each), and each outcome is what `run` gives it, since a batch
that does not come back whole is run again one case per request.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal as _signal
import subprocess
import sys
import tempfile
import time
from typing import Mapping

import numpy as np

from .importpath import import_path
from .outcome import Outcome
from .wire import PeerClosed, WireError, batch, read_message, unbatch, write_message

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Worker recycling (memory that grows with the cases seen: tf.function and Keras layer caches, ORT
#: sessions, a framework's own caches): after WARM_CALLS answers a worker's resident memory is its
#: baseline; when it exceeds the baseline by RECYCLE_GROWTH (relative) and by RECYCLE_MIN_BYTES the
#: worker exits after the answer and the next case starts a fresh one. Measured on TF/Keras workers:
#: +120 MiB/min without it (TensorFlow keeps every traced function's graph in its runtime, whether
#: or not our LRU still holds the tf.function). A campaign's memory is the sum of ~12 workers per
#: job that each saw-tooth between their baseline and the threshold, so the threshold is what the
#: campaign grows by after its first minute: at 30% / 128 MiB a 10-minute default campaign
#: (`--jobs 2`) grew 25%; at 10% / 32 MiB a 6-minute one grew 5.8% (1 to 6 min) where the former
#: had grown 7% by 3 minutes. The price: a TF worker restarts every few minutes (start-up and
#: re-tracing; the summary's startup_seconds counts the start-ups).
#: The absolute floor spares the small ONNX Runtime workers (~75 MiB, an LRU of sessions): restarting
#: one costs a start-up and every session again.
WARM_CALLS = 100
RECYCLE_GROWTH = 0.1
RECYCLE_MIN_BYTES = 32 << 20


class InternalError(RuntimeError):
    """A bug in normfuzz or in a runner's own code (not the framework under test)."""


class WorkerSetupError(RuntimeError):
    """The worker could not start its runner (framework missing, setup raised, no READY)."""


def _signal_name(sig: int) -> str:
    """SIGSEGV, ..., or SIGRTMIN+k for a real-time signal (which `signal.Signals` does not name)."""
    try:
        return _signal.Signals(sig).name
    except ValueError:
        lo, hi = int(_signal.SIGRTMIN), int(_signal.SIGRTMAX)
        return f"SIGRTMIN+{sig - lo}" if lo <= sig <= hi else f"signal {sig}"


def _clean_text(value) -> str:
    """A worker's text field as a str that any UTF-8 consumer (SQLite, HTML, JSON) accepts: lone
    surrogates (a framework message decoded with surrogateescape) become backslash escapes; a
    value that is not a str (a misbehaving worker) becomes its repr."""
    if not isinstance(value, str):
        value = "" if value is None else repr(value)
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Worker:
    """One isolated worker for one runner.

    timeout: seconds a case may take; startup_timeout: seconds for import and setup;
    memory_mb: resident-memory limit, polled while a case runs (None: no limit);
    rlimit_mb: address-space limit set inside the worker (allocation then fails in the worker).
    """

    def __init__(self, spec: str, runner_id: str, *, timeout: float = 60.0, startup_timeout: float = 180.0,
                 memory_mb: int | None = None, rlimit_mb: int | None = None, env: Mapping[str, str] | None = None,
                 recycle: bool = False):
        self.spec, self.runner_id = spec, runner_id
        self.timeout, self.startup_timeout = timeout, startup_timeout
        self.memory_mb, self.rlimit_mb = memory_mb, rlimit_mb
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.version = ""
        self.restarts = 0
        self._fds: tuple[int, int] | None = None
        self._stderr = None
        self._t0 = 0.0
        self.recycle = recycle          # restart when memory grows (WARM_CALLS, RECYCLE_GROWTH)
        self.recycles = 0
        self._served = 0
        self._exit_requested = False
        self._baseline = 0
        self._tmp: str | None = None  # the worker's TMPDIR while it runs

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the worker and wait for READY; raises WorkerSetupError with the reason."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the worker process without waiting for it (`wait_ready` then does): several
        workers import their frameworks at once."""
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for fd in (req_w, rep_w):
            _widen_pipe(fd)
        self._stderr = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **self.env}
        # A temporary folder of its own, removed when it exits: a worker leaves by os._exit (no atexit
        # handlers), and TensorFlow's autograph writes a file per traced function to the temporary
        # folder that only an atexit handler deletes (2,430 files in /tmp after a day of campaigns).
        self._tmp = tempfile.mkdtemp(prefix="normfuzz-worker-", dir=env.get("TMPDIR") or None)
        env["TMPDIR"] = self._tmp
        # -P: the current folder is not put first (`importpath`: it comes after normfuzz's packages).
        cmd = [sys.executable, "-P", "-m", "fuzz.worker", "--spec", self.spec, "--runner", self.runner_id,
               "--fd-in", str(req_r), "--fd-out", str(rep_w), "--parent-pid", str(os.getpid())]
        if self.rlimit_mb:
            cmd += ["--memory-mb", str(self.rlimit_mb)]
        env["PYTHONPATH"] = os.pathsep.join(import_path([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p],
                                                        os.getcwd()))
        self._exit_requested = False
        self._fds = (req_w, rep_r)
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self._stderr, env=env,
                                         start_new_session=True)
        except BaseException:
            self._kill()  # no process to kill: closes our pipe ends and the stderr file, removes the folder
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)

    def wait_ready(self) -> None:
        """Wait for the READY of a `launch`ed worker; raises WorkerSetupError with the reason."""
        got = self._wait(self.startup_timeout)
        if got is None:
            tail = self._stderr_tail()
            self._kill()
            raise WorkerSetupError(f"worker for {self.runner_id} did not start within "
                                   f"{self.startup_timeout:.0f}s{': ' + tail if tail else ''}")
        if isinstance(got, Outcome):
            raise WorkerSetupError(f"worker for {self.runner_id} died during setup: {got.detail}")
        header, _ = got
        if header["status"] == "SETUP_RAISED":
            self._kill()
            raise WorkerSetupError(f"{self.runner_id} setup raised {header['error_type']}: {header['error']}")
        if header["status"] == "INTERNAL":
            self._kill()
            raise InternalError(f"worker for {self.runner_id} failed to start:\n{header['error']}")
        self.version = header.get("version", "")

    def close(self) -> None:
        """Ask the worker to exit, and kill it if it does not within a second."""
        if self.proc is None:
            return
        try:
            self.request_exit()
            self.proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired, WireError):
            pass
        self._kill()

    def request_exit(self) -> None:
        """Ask the worker to exit without waiting (`close` then waits): several workers tearing
        down their frameworks at once (`close_all`) take as long as the slowest, not the sum."""
        if self.proc is None or self._exit_requested:
            return
        self._exit_requested = True
        try:
            write_message(self._fds[0], {"cmd": "exit"})
        except (OSError, WireError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, _signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._fds:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._stderr is not None:
            self._stderr.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.proc, self._fds, self._stderr = None, None, None

    def _stderr_tail(self, n: int = 2000) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - n))
            return self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    # ---------------------------------------------------------------- one case

    def _death(self, t0: float) -> Outcome:
        """The worker died: collect its exit status as a CRASHED outcome (case id filled by caller)."""
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        tail = self._stderr_tail()
        sig = -rc if rc is not None and rc < 0 else None
        code = rc if rc is not None and rc >= 0 else None
        what = (f"killed by signal {sig} ({_signal_name(sig)})" if sig else f"exited with code {code}")
        self._kill()
        return Outcome(self.runner_id, "", "CRASHED", detail=f"worker {what}" + (f"; stderr: {tail}" if tail else ""),
                       seconds=time.perf_counter() - t0, exit_code=code, signal=sig)

    def _wait(self, timeout: float):
        """Wait for one reply: (header, arrays), or an Outcome for death/timeout/memory, or None on
        timeout (the caller decides what a timeout means)."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        fd = self._fds[1]
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 0.05))
            if ready:
                try:
                    got = read_message(fd)
                except (PeerClosed, WireError):
                    return self._death(t0)
                # Also after a reply: a leak that grows between two quick replies is never caught
                # by the polling below (which runs only while a case takes longer than 50 ms).
                return self._over_memory(t0) or got
            if self.proc.poll() is not None:
                return self._death(t0)
            over = self._over_memory(t0)
            if over is not None:
                return over

    def _over_memory(self, t0: float) -> Outcome | None:
        """A CRASHED outcome (and the worker killed) when its resident memory exceeds the limit."""
        if not self.memory_mb:
            return None
        rss = _rss_bytes(self.proc.pid)
        if rss <= self.memory_mb * 1024 * 1024:
            return None
        self._kill()
        return Outcome(self.runner_id, "", "CRASHED", signal=int(_signal.SIGKILL),
                       detail=f"out of memory: worker resident memory {rss >> 20} MiB exceeded "
                              f"the limit of {self.memory_mb} MiB; killed",
                       seconds=time.perf_counter() - t0)

    def run(self, case, *, expected: Mapping[str, tuple[int, ...]] | None = None) -> Outcome:
        """Run `case`; always an Outcome (see module docstring). `expected` maps output names to
        shapes: an unknown name or a wrong shape is BAD_OUTPUT."""
        failed = self.submit(case)
        return failed if failed is not None else self.collect(case, expected=expected)

    def _ensure_started(self) -> None:
        """Start the worker if it is not running (a restart after a death or a recycle counts in
        `restarts`)."""
        if self.proc is None:
            if self._fds is None and self.version:
                self.restarts += 1
            self.start()

    def submit(self, case) -> Outcome | None:
        """Send `case` to the worker and return at once (the worker computes while the caller does
        other work: the oracle, other runners); `collect` waits for its answer. Returns the
        CRASHED outcome instead when the worker cannot take the case (it died)."""
        self._ensure_started()
        self._t0 = time.perf_counter()
        try:
            meta, arrays = case.to_wire()
            write_message(self._fds[0], {"case": meta}, arrays)
        except (BrokenPipeError, OSError):
            return _with_case(self._death(self._t0), case.id)
        return None

    def collect(self, case, *, expected: Mapping[str, tuple[int, ...]] | None = None) -> Outcome:
        """The outcome of the case last `submit`ted (see `run`)."""
        t0 = self._t0
        got = self._wait(self.timeout - (time.perf_counter() - t0))
        if got is None:
            self._kill()
            return Outcome(self.runner_id, case.id, "TIMEOUT", detail=f"no answer within {self.timeout:g}s; worker killed",
                           seconds=time.perf_counter() - t0)
        if isinstance(got, Outcome):
            return _with_case(got, case.id)
        header, arrays = got
        if header["status"] == "INTERNAL":
            raise InternalError(f"{self.runner_id} on case {case.id} ({case.summary()}):\n{header['error']}")
        if self.recycle:  # (the answer's arrays own their bytes: a restart cannot touch them)
            self._maybe_recycle()
        return self._outcome(case, header, arrays, expected, t0)

    def run_batch(self, cases, expected=None) -> list[Outcome]:
        """The outcomes of `cases`, each run alone (its own framework call, as `run` runs it), sent
        in one request and answered in one reply (`expected`: one mapping or None per case). When
        the batch does not come back whole (the worker crashed, went over its memory limit, or took
        longer than `timeout`, the time one case may take: a caller keeps a batch's work to about
        one packed call's), every case of it is run again with `run`, one request each: each
        outcome is then the case's own (a crash or a hang is that case's, not its batch's)."""
        cases = list(cases)
        expected = [None] * len(cases) if expected is None else list(expected)
        if len(cases) <= 1:
            return [self.run(c, expected=e) for c, e in zip(cases, expected)]
        self._ensure_started()
        t0 = time.perf_counter()
        wires = [c.to_wire() for c in cases]
        try:
            write_message(self._fds[0], {"cases": [m for m, _ in wires]}, batch([a for _, a in wires]))
            got = self._wait(self.timeout)
        except (BrokenPipeError, OSError):
            got = self._death(t0)
        if got is None:
            self._kill()
        if got is None or isinstance(got, Outcome):  # (the worker is gone: `run` starts another)
            return [self.run(c, expected=e) for c, e in zip(cases, expected)]
        header, arrays = got
        if header["status"] == "INTERNAL":
            i = header.get("index")
            c = cases[i] if isinstance(i, int) and 0 <= i < len(cases) else None
            raise InternalError(f"{self.runner_id} on case {c.id} ({c.summary()}) of a batch:\n{header['error']}"
                                if c is not None else f"{self.runner_id} on a batch:\n{header['error']}")
        replies = header.get("replies")
        if header["status"] != "BATCH" or not isinstance(replies, list) or len(replies) != len(cases):
            raise InternalError(f"{self.runner_id} answered a batch of {len(cases)} cases with "
                                f"{json.dumps(header)[:300]}")
        try:
            parts = unbatch(arrays, len(cases))
        except WireError as exc:
            raise InternalError(f"{self.runner_id} answered a batch with {exc}") from None
        if self.recycle:
            self._maybe_recycle(len(cases))
        return [self._outcome(c, h, a, e, t0) for c, h, a, e in zip(cases, replies, parts, expected)]

    def _outcome(self, case, header, arrays, expected, t0: float) -> Outcome:
        """The Outcome of one answer (OK, RAISED, UNSUPPORTED or BAD_OUTPUT) for `case`."""
        status = header["status"]
        secs = float(header.get("seconds", time.perf_counter() - t0))
        if status == "OK":
            bad = _check_expected(arrays, expected, case)
            if bad:
                return Outcome(self.runner_id, case.id, "BAD_OUTPUT", detail=bad, seconds=secs)
            return Outcome(self.runner_id, case.id, "OK", outputs=arrays, seconds=secs)
        return Outcome(self.runner_id, case.id, status, error_type=_clean_text(header.get("error_type", "")),
                       error=_clean_text(header.get("error", "")), detail=_clean_text(header.get("detail", "")),
                       seconds=secs)

    def _maybe_recycle(self, answers: int = 1) -> None:
        """Count answers; past WARM_CALLS, close the worker when its memory grew by RECYCLE_GROWTH
        over its baseline (the next case starts a fresh one: `restarts` counts it)."""
        self._served += answers
        if self._served < WARM_CALLS or self.proc is None:
            return
        rss = _rss_bytes(self.proc.pid)
        if self._served == WARM_CALLS or not self._baseline:
            self._baseline = rss
        elif rss > self._baseline + max(self._baseline * RECYCLE_GROWTH, RECYCLE_MIN_BYTES):
            self.recycles += 1
            self._served, self._baseline = 0, 0
            self.close()


#: Pipe buffer asked for (Linux F_SETPIPE_SZ; an unprivileged process may ask up to
#: /proc/sys/fs/pipe-max-size, 1 MiB by default): a packed case (up to 256 KiB of float32 data plus
#: its other inputs) fits whole, so a write returns without waiting for the worker to read, and on
#: one core the writer is not switched out once per 64 KiB (the default size).
PIPE_BYTES = 1 << 20


def _widen_pipe(fd: int) -> None:
    """Grow the pipe of `fd` to PIPE_BYTES where the OS allows it (else keep its size)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


def close_all(workers) -> None:
    """Close every worker of `workers`, asking all of them to exit first."""
    workers = list(workers)
    for w in workers:
        w.request_exit()
    for w in workers:
        w.close()


def _with_case(o: Outcome, case_id: str) -> Outcome:
    d = {k: getattr(o, k) for k in o.__dataclass_fields__}
    d["case_id"] = case_id
    return Outcome(**d)


def _check_expected(arrays: Mapping[str, np.ndarray], expected, case) -> str | None:
    if expected is None:
        return None
    for k, v in arrays.items():
        if k not in expected:
            return f"output {k!r} is not an output of {case.op}/{case.mode} (expected some of {sorted(expected)})"
        if tuple(v.shape) != tuple(expected[k]):
            return f"output {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k])}"
        if v.dtype.kind != "f":
            return f"output {k!r} has dtype {v.dtype}, expected a floating dtype"
    return None
