"""The isolated worker: one process running one runner, case after case (`python -m fuzz.worker`).

Started by `fuzz.isolation.Worker` with two pipe file descriptors (requests in, replies out) and the
runner's factory spec and id. It imports the factory, calls the runner's `setup()`, then answers
each request. Replies: OK with outputs, RAISED (framework exception: type and message), UNSUPPORTED
(reason), BAD_OUTPUT (the runner returned a non-array or unknown kind of value), INTERNAL (a bug of
normfuzz or of the runner's own code outside `framework_call`: traceback included; the parent raises).
A `SystemExit` from the runner (a framework calling `sys.exit`) ends the worker with its exit code,
as `exit()` in a native library would; the parent reports it as a CRASHED outcome.

A request holds one case, or a batch of cases (`Worker.run_batch`): the worker runs each of them
alone, one framework call each, in order, and sends one BATCH reply with every case's answer. A
batch saves the round trip per case (on one core, ~0.25 ms of switching between the two processes,
more than a small case's framework call); what a case of it does to the worker (a crash, a hang)
the parent finds out by running the batch's cases one at a time again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import numpy as np


def _check_outputs(outputs) -> str | None:
    if isinstance(outputs, dict):  # numpy scalars (a 0-d result indexed out) are 0-d arrays
        for k, v in list(outputs.items()):
            if isinstance(v, np.generic):
                outputs[k] = np.asarray(v)
    if not isinstance(outputs, dict):
        return f"run() returned {type(outputs).__name__}, expected dict of output name -> numpy array"
    for k, v in outputs.items():
        if not isinstance(k, str):
            return f"output name {k!r} is not a string"
        if not isinstance(v, np.ndarray):
            return f"output {k!r} is {type(v).__name__}, expected numpy.ndarray"
        if v.dtype.kind not in "fiub":
            return f"output {k!r} has dtype {v.dtype}, expected a numeric dtype"
    return None


def _exit_like(code) -> None:
    """End the worker at once with the status `sys.exit(code)` would give (the parent reports the
    exit code as a CRASHED outcome); no cleanup runs that could hang."""
    if code is None:
        os._exit(0)
    if isinstance(code, int):
        os._exit(code & 0xFF)
    try:
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)


def serve(spec: str, runner_id: str, fd_in: int, fd_out: int) -> int:
    from fuzz.case import Case
    from fuzz.runners import load_factory
    from fuzz.runners.base import FrameworkRaised
    from fuzz.wire import PeerClosed, batch, read_message, unbatch, write_message

    def internal(msg: str) -> None:
        write_message(fd_out, {"status": "INTERNAL", "error": msg})

    try:
        runners = {r.id: r for r in load_factory(spec)}
        if runner_id not in runners:
            internal(f"factory {spec} has no runner {runner_id!r} (has {sorted(runners)})")
            return 3
        runner = runners[runner_id]
        runner.setup()
        version = runner.version()
    except FrameworkRaised as e:
        write_message(fd_out, {"status": "SETUP_RAISED", "error_type": e.exc_type, "error": e.message})
        return 0
    except BaseException:  # noqa: BLE001
        internal(traceback.format_exc())
        return 3
    write_message(fd_out, {"status": "READY", "version": version, "pid": os.getpid()})
    while True:
        try:
            header, arrays = read_message(fd_in)
        except PeerClosed:
            return 0
        if header.get("cmd") == "exit":
            return 0
        if "cases" not in header:
            reply, outputs = _answer(runner, Case, header.get("case"), arrays)
            write_message(fd_out, reply, outputs)
            continue
        # a batch: each case run alone (its own framework call), one reply for all; arrays are
        # named "<index>/<name>" (`fuzz.isolation.Worker.run_batch`)
        replies, outs = [], []
        try:
            parts = unbatch(arrays, len(header["cases"]))
        except BaseException:  # noqa: BLE001 - a malformed request is normfuzz's bug
            internal(traceback.format_exc())
            continue
        for i, (meta, mine) in enumerate(zip(header["cases"], parts)):
            reply, outputs = _answer(runner, Case, meta, mine)
            if reply["status"] == "INTERNAL":
                write_message(fd_out, {**reply, "index": i})
                break
            replies.append(reply)
            outs.append(outputs)
        else:
            write_message(fd_out, {"status": "BATCH", "replies": replies}, batch(outs))


def _answer(runner, case_type, meta, arrays) -> tuple[dict, dict]:
    """(reply header, output arrays) for one case: OK, RAISED, UNSUPPORTED, BAD_OUTPUT or INTERNAL.
    A `SystemExit` from the runner ends the worker (CRASHED for the parent)."""
    from fuzz.runners.base import FrameworkRaised, Unsupported

    t0 = time.perf_counter()
    try:
        case = case_type.from_wire(meta, arrays, check_id=False)
        try:
            outputs = runner.run(case)
        except Unsupported as e:
            return {"status": "UNSUPPORTED", "detail": str(e), "seconds": time.perf_counter() - t0}, {}
        except FrameworkRaised as e:
            return {"status": "RAISED", "error_type": e.exc_type, "error": e.message,
                    "seconds": time.perf_counter() - t0}, {}
        except SystemExit as e:  # the framework exited the process, as exit() in C would: CRASHED
            _exit_like(e.code)
        seconds = time.perf_counter() - t0
        bad = _check_outputs(outputs)
        if bad:
            return {"status": "BAD_OUTPUT", "detail": bad, "seconds": seconds}, {}
        return {"status": "OK", "seconds": seconds}, outputs
    except BaseException:  # noqa: BLE001 - anything else is ours (or the runner author's)
        return {"status": "INTERNAL", "error": traceback.format_exc()}, {}


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel SIGKILL this worker when the campaign process that started it dies
    (even by SIGKILL), so that a hung or memory-eating worker never outlives its campaign."""
    if parent <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the campaign died before the request took effect
        os._exit(0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", required=True)
    p.add_argument("--runner", required=True)
    p.add_argument("--fd-in", type=int, required=True)
    p.add_argument("--fd-out", type=int, required=True)
    p.add_argument("--memory-mb", type=int, default=0)
    p.add_argument("--parent-pid", type=int, default=0)
    a = p.parse_args(argv)
    _die_with_parent(a.parent_pid)
    if a.memory_mb:
        import resource

        lim = a.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    return serve(a.spec, a.runner, a.fd_in, a.fd_out)


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown: a worker holds nothing to save, and unloading
    # TensorFlow or Keras took ~0.4 s of CPU per worker at every close or recycle.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
