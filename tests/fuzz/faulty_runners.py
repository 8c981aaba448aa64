"""Plug-in runners that misbehave in every way a native library can, for the isolation tests.

Each is an honest numpy LayerNorm (float64 math, outputs in the case's carrier dtype) until its fault
fires. A fault fires on every case, only on cases whose attr `eps` equals the runner's trigger eps
(`.sometimes`, so tests can interleave good and bad cases), or on about a third of the cases chosen
by content hash (`.often`, for campaigns). Load with the spec
``tests.fuzz.faulty_runners:runners``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import numpy as np

from fuzz.runners.base import Conventions, Runner, framework_call

TRIGGER_EPS = 0.0625


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

    def __init__(self, fault: str, *, sometimes: bool = False, often: bool = False):
        self.fault = fault
        self.sometimes = sometimes
        self.often = often
        self.id = f"faulty.{fault}" + (".sometimes" if sometimes else "") + (".often" if often else "")
        self._leak = []

    def version(self) -> str:
        return "0.0-test"

    def fires(self, case) -> bool:
        if self.often:  # about one case in three, decided by the case's content hash
            return int(case.id, 16) % 3 == 0
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
        if f == "hang":
            time.sleep(3600)
        if f == "oom":
            hog = []
            while True:  # allocate and touch 64 MiB at a time until the limit kills us
                hog.append(np.ones(8 * 1024 * 1024))
        if f == "leak":
            self._leak.append(np.ones(4 * 1024 * 1024))  # 32 MiB per case, never freed
            return layer_norm_outputs(case)
        if f == "raise":
            with framework_call():
                raise RuntimeError("faulty kernel: <script>alert(1)</script> & friends")
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
        elif f == "kill_self":
            os.kill(os.getpid(), signal.SIGKILL)
        return out


FAULTS = ("segfault", "abort", "exit", "hang", "oom", "leak", "raise", "internal", "wrong_shape", "wrong_dtype",
          "not_array", "unknown_output", "kill_self")


def runners():
    return ([FaultyRunner(f) for f in FAULTS] + [FaultyRunner(f, sometimes=True) for f in FAULTS]
            + [FaultyRunner(f, often=True) for f in FAULTS] + [FaultyRunner("none")])
