"""Plug-in runners that misbehave in every way a native library can, for the isolation tests.

Each is an honest numpy LayerNorm (float64 math, outputs in the case's carrier dtype) until its fault
fires. A fault fires on every case, only on cases whose attr `eps` equals the runner's trigger eps
(`.sometimes`, so tests can interleave good and bad cases), on about a third of the cases chosen
by content hash (`.often`, for campaigns), with probability `FLAKY_P` drawn from a random generator
seeded with (`FLAKY_SEED`, case id) (`.flaky`: random-looking, yet the same case always does the
same, so a test can predict which cases fire), or on every third case the worker process runs
(`.stateful`: the failure depends on the worker's history, not on the case, like a native library
with corrupted state; replaying the case in a fresh worker does not fail). Load with the spec
``tests.fuzz.faulty_runners:runners``.

Faults: segfault, abort, exit (os._exit(7)), sys_exit (SystemExit(5) from the framework), kill_self
(SIGKILL), random_signal (one of several fatal signals), close_pipes (closes every inherited file
descriptor, so the worker can no longer answer), spawn_then_crash (starts a grandchild process that would
live an hour, then segfaults), hang, oom (allocates until the memory limit), leak (32 MiB per case) and
leak_slow (8 MiB per case), never freed, raise (a RuntimeError with markup), random_exception (an
exception type and message drawn per case: builtins, custom classes, unencodable and odd Unicode, a
megabyte of text, non-str arguments, a chain, a BaseException), unprintable_exception (an exception whose
str() itself raises), internal (a bug in the runner's own code), wrong_shape, wrong_dtype, not_array,
unknown_output, wrong_type (a return value of a type drawn per case: None, str, object or complex arrays,
non-str keys, a 0-d scalar, ...), noisy (an honest runner that writes a lot to stdout and stderr), and
none (honest).
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from fuzz.runners.base import Conventions, Runner, framework_call

TRIGGER_EPS = 0.0625
FLAKY_P = 0.25
FLAKY_SEED = 20240607
#: Marker argument of the grandchild that `spawn_then_crash` leaves behind (tests look for it).
ORPHAN_MARKER = "normfuzz-faulty-orphan"


def case_rng(case, salt: str = "") -> random.Random:
    """A random generator seeded with the case's content: the same case draws the same values."""
    return random.Random(f"{FLAKY_SEED}:{salt}:{case.id}")


def flaky_fires(case) -> bool:
    """Whether a `.flaky` fault fires on `case` (probability FLAKY_P, seeded by the case id)."""
    return case_rng(case, "flaky").random() < FLAKY_P


class CustomFrameworkError(Exception):
    """A framework's own exception class."""


class _Weird_Error_With_Markup_éß(Exception):  # noqa: N801 - odd but legal identifier
    pass


class UnprintableError(Exception):
    """An exception whose str() raises (some C extensions' exceptions do)."""

    def __str__(self):
        raise RuntimeError("__str__ of UnprintableError failed")


class NotAnException(BaseException):
    """A BaseException that is not an Exception (like GeneratorExit)."""


#: (kind, maker) of the exceptions `random_exception` raises; the kind is drawn per case.
EXCEPTIONS = (
    ("value", lambda: ValueError("normalized_shape mismatch: expected [3] got [4]")),
    ("runtime", lambda: RuntimeError("CUDA error: an illegal memory access was encountered")),
    ("type", lambda: TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")),
    ("zero_division", lambda: ZeroDivisionError("float division by zero")),
    ("memory", lambda: MemoryError("std::bad_alloc")),
    ("recursion", lambda: RecursionError("maximum recursion depth exceeded")),
    ("overflow", lambda: OverflowError("int too large to convert to float")),
    ("assertion", lambda: AssertionError()),
    ("key", lambda: KeyError(("x", 0))),
    ("os", lambda: OSError(28, "No space left on device")),
    ("unicode_decode", lambda: UnicodeDecodeError("utf-8", b"\xff\xfe", 0, 1, "invalid start byte")),
    ("custom", lambda: CustomFrameworkError("kernel <b>failed</b> & \"quotes\" 'single'")),
    ("odd_class", lambda: _Weird_Error_With_Markup_éß("<img src=x onerror=alert(1)>")),
    ("surrogate", lambda: ValueError("path /tmp/\udcff\udcfe and a lone \ud800 surrogate")),
    ("control", lambda: ValueError("nul \x00 bell \x07 escape \x1b[31m red \x1b[0m rtl \u202e txet")),
    ("emoji", lambda: ValueError("\U0001F4A5 \u0000 \ufeff zero\u200bwidth \U0010FFFF")),
    ("huge", lambda: RuntimeError("<script>alert(1)</script>" * 40_000)),  # about a megabyte
    ("non_str_args", lambda: ValueError(1.5, None, b"\xff", ("nested",))),
    ("chained", lambda: _chained()),
    ("base", lambda: NotAnException("not an Exception subclass")),
)


def _chained() -> Exception:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("middle") from inner
    except ValueError as middle:
        return RuntimeError("outer while handling middle")


def exception_kind(case) -> str:
    """The kind of exception `random_exception` raises on `case`."""
    return EXCEPTIONS[case_rng(case, "exception").randrange(len(EXCEPTIONS))][0]


#: Fatal signals `random_signal` draws from (per case).
SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGKILL,
           signal.SIGTERM, signal.SIGUSR1, signal.SIGRTMIN + 3)  # a real-time signal has no Signals name


def signal_of(case) -> int:
    """The signal `random_signal` sends itself on `case`."""
    return int(SIGNALS[case_rng(case, "signal").randrange(len(SIGNALS))])


#: Return values `wrong_type` draws from (per case), given the honest outputs.
WRONG_TYPES = (
    ("none", lambda out: None),
    ("str", lambda out: "y"),
    ("list_of_arrays", lambda out: list(out.values())),
    ("tuple", lambda out: tuple(out.items())),
    ("int_key", lambda out: {1: out["y"]}),
    ("object_array", lambda out: {**out, "y": out["y"].astype(object)}),
    ("complex_array", lambda out: {**out, "y": out["y"].astype(np.complex64)}),
    ("string_array", lambda out: {**out, "y": out["y"].astype(str)}),
    ("structured", lambda out: {**out, "y": np.zeros(out["y"].shape, dtype=[("a", "<f4"), ("b", "<i4")])}),
    ("datetime", lambda out: {**out, "y": np.zeros(out["y"].shape, dtype="datetime64[s]")}),
    ("scalar", lambda out: {**out, "y": np.float32(1.0)}),
    ("bool_array", lambda out: {**out, "y": out["y"] > 0}),
    ("nested_dict", lambda out: {"y": {"y": out["y"]}}),
    ("empty_dict", lambda out: {}),
)


def wrong_type_kind(case) -> str:
    return WRONG_TYPES[case_rng(case, "type").randrange(len(WRONG_TYPES))][0]


def layer_norm_outputs(case) -> dict[str, np.ndarray]:
    """Honest float64 LayerNorm over the last `normalized_ndim` dims, rounded to the carrier."""
    x = case.inputs["x"].astype(np.float64)
    axis = case.attrs.get("axis")
    k = case.attrs.get("normalized_ndim", 1) if axis is None else x.ndim - axis % x.ndim
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + case.attrs["eps"])
    y = (x - mu) * rstd
    if "gamma" in case.inputs:
        y = y * case.inputs["gamma"].astype(np.float64)
    if "beta" in case.inputs:
        y = y + case.inputs["beta"].astype(np.float64)
    lead = x.shape[: x.ndim - k]
    carrier = case.inputs["x"].dtype
    return {"y": y.astype(carrier), "mean": mu.reshape(lead), "rstd": rstd.reshape(lead)}


class FaultyRunner(Runner):
    framework = "faulty"
    ops = {"layer_norm": ("forward",)}
    dtypes = ("float32", "float64")
    conventions = Conventions(default_eps=1e-5, sources=("tests/fuzz/faulty_runners.py",))

    def __init__(self, fault: str, *, sometimes: bool = False, often: bool = False, flaky: bool = False,
                 stateful: bool = False):
        self.fault = fault
        self.sometimes = sometimes
        self.often = often
        self.flaky = flaky
        self.stateful = stateful
        self.id = (f"faulty.{fault}" + (".sometimes" if sometimes else "") + (".often" if often else "")
                   + (".flaky" if flaky else "") + (".stateful" if stateful else ""))
        self._leak = []
        self._calls = 0

    def version(self) -> str:
        return "0.0-test"

    def fires(self, case) -> bool:
        if self.often:  # about one case in three, decided by the case's content hash
            return int(case.id, 16) % 3 == 0
        if self.flaky:  # probability FLAKY_P, seeded by the case id
            return flaky_fires(case)
        if self.stateful:  # every third case of this worker process, whatever the case
            self._calls += 1
            return self._calls % 3 == 0
        return not self.sometimes or case.attrs.get("eps") == TRIGGER_EPS

    def run(self, case):
        if not self.fires(case):
            return layer_norm_outputs(case)
        f = self.fault
        if f == "segfault":
            ctypes.string_at(0)  # SIGSEGV
        if f == "abort":
            os.abort()
        if f == "exit":
            os._exit(7)
        if f == "sys_exit":
            with framework_call():
                sys.exit(5)
        if f == "random_signal":
            os.kill(os.getpid(), signal_of(case))
            time.sleep(5)  # a signal is delivered at once; never reached
        if f == "close_pipes":
            os.closerange(3, 1024)
            return layer_norm_outputs(case)
        if f == "spawn_then_crash":
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", ORPHAN_MARKER],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ctypes.string_at(0)
        if f == "hang":
            time.sleep(3600)
        if f == "oom":
            hog = []
            while True:  # allocate and touch 64 MiB at a time until the limit kills us
                hog.append(np.ones(8 * 1024 * 1024))
        if f == "leak":
            self._leak.append(np.ones(4 * 1024 * 1024))  # 32 MiB per case, never freed
            return layer_norm_outputs(case)
        if f == "leak_slow":
            self._leak.append(np.ones(1024 * 1024))  # 8 MiB per case, never freed
            return layer_norm_outputs(case)
        if f == "raise":
            with framework_call():
                raise RuntimeError("faulty kernel: <script>alert(1)</script> & friends")
        if f == "unprintable_exception":
            with framework_call():
                raise UnprintableError()
        if f == "random_exception":
            make = dict(EXCEPTIONS)[exception_kind(case)]
            with framework_call():
                raise make()
        if f == "noisy":
            os.write(1, b"stdout noise \x00\xff\n" * 50_000)
            os.write(2, b"stderr noise \x1b[31m\xff\n" * 50_000)
            return layer_norm_outputs(case)
        if f == "internal":
            raise KeyError("a bug in the runner's own code")
        out = layer_norm_outputs(case)
        if f == "wrong_shape":
            out["y"] = out["y"][..., :-1]
        elif f == "wrong_dtype":
            out["y"] = out["y"].astype(np.int32)
        elif f == "not_array":
            out["y"] = out["y"].tolist()
        elif f == "unknown_output":
            out["z"] = out["y"]
        elif f == "wrong_type":
            return dict(WRONG_TYPES)[wrong_type_kind(case)](out)
        elif f == "kill_self":
            os.kill(os.getpid(), signal.SIGKILL)
        return out


FAULTS = ("segfault", "abort", "exit", "hang", "oom", "leak", "raise", "internal", "wrong_shape", "wrong_dtype",
          "not_array", "unknown_output", "kill_self", "sys_exit", "random_signal", "close_pipes", "spawn_then_crash",
          "leak_slow", "random_exception", "unprintable_exception", "wrong_type", "noisy")


def runners():
    return ([FaultyRunner(f) for f in FAULTS] + [FaultyRunner(f, sometimes=True) for f in FAULTS]
            + [FaultyRunner(f, often=True) for f in FAULTS] + [FaultyRunner(f, flaky=True) for f in FAULTS]
            + [FaultyRunner(f, stateful=True) for f in FAULTS] + [FaultyRunner("none")])
