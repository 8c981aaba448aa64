"""Shared test harness for runners: run a case in-process and judge it against the oracle.

In-process on purpose: these tests check what a runner computes; isolation (worker processes) has
its own tests. A runner's framework is imported once per runner (`setup`), as the worker does.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

import numpy as np
import pytest

import oracles
from fuzz.case import Case
from fuzz.runners.base import Runner, Unsupported
from oracles.dtypes import round_to

_READY: set[int] = set()


def require_framework(module: str) -> None:
    """Skip with a message when `module` is not installed; in CI (CI=true) fail instead, since CI
    installs all three frameworks and must not silently skip their tests."""
    import os

    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed, but CI must test every backend")
        pytest.skip(f"{module} is not installed")


def rounded(dtype: str, a) -> np.ndarray:
    """`a` rounded to format `dtype`, in its carrier dtype."""
    return round_to(dtype, np.asarray(a, dtype=np.float64))


def make_case(op: str, mode: str, dtype: str, inputs: Mapping[str, Any], attrs: Mapping[str, Any]) -> Case:
    """A Case with every float input rounded to `dtype` (integer arrays kept)."""
    ins = {k: (rounded(dtype, v) if np.asarray(v).dtype.kind == "f" else np.asarray(v)) for k, v in inputs.items()}
    return Case(op=op, mode=mode, dtype=dtype, inputs=ins, attrs=dict(attrs))


def run_inprocess(runner: Runner, case: Case) -> dict[str, np.ndarray]:
    """The runner's outputs for `case` (calls `setup` once per runner instance)."""
    if id(runner) not in _READY:
        runner.setup()
        _READY.add(id(runner))
    reason = runner.supports(case.op, case.mode, case.dtype, case.attrs)
    if reason is not None:
        raise Unsupported(reason)
    return runner.run(case)


def judge(runner: Runner, case: Case, outputs: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """max error/bound per output the runner returned, with the runner's declared accumulation."""
    outputs = run_inprocess(runner, case) if outputs is None else outputs
    prec = runner.conventions_for(case.op, case.attrs).precision(case.dtype)
    ev = oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), prec)
    missing = sorted(set(ev.outputs) - set(outputs))
    extra = sorted(set(outputs) - set(ev.outputs))
    assert not extra, f"{runner.id} returned outputs {extra} the oracle does not define"
    out = {}
    for k, v in outputs.items():
        v = np.asarray(v)
        assert v.shape == ev.outputs[k].shape, f"{runner.id} {k}: shape {v.shape}, oracle {ev.outputs[k].shape}"
        r = oracles.error_ratio(v, ev.outputs[k], ev.bounds[k], case.dtype)
        out[k] = float(np.max(r)) if r.size else 0.0
    out["_missing"] = missing  # type: ignore[assignment]
    return out


def assert_agrees(runner: Runner, case: Case) -> None:
    """Every output within the error bound (ratio <= 1); the message names the worst element."""
    outputs = run_inprocess(runner, case)
    prec = runner.conventions_for(case.op, case.attrs).precision(case.dtype)
    ev = oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), prec)
    for k, v in outputs.items():
        assert k in ev.outputs, f"{runner.id} returned {k!r}, the oracle defines {sorted(ev.outputs)}"
        v = np.asarray(v)
        assert v.shape == ev.outputs[k].shape, f"{runner.id} {case.summary()} {k}: shape {v.shape} != {ev.outputs[k].shape}"
        r = oracles.error_ratio(v, ev.outputs[k], ev.bounds[k], case.dtype)
        if r.size and np.max(r) > 1:
            i = np.unravel_index(int(np.argmax(r)), r.shape)
            raise AssertionError(
                f"{runner.id} {case.summary()} output {k!r}: error/bound {float(r[i]):.3g} at {i}: "
                f"got {v[i]!r}, reference {float(ev.outputs[k][i])!r}, bound {float(ev.bounds[k][i]):.3g}")


# well-conditioned value generators shared by the runners' case grids (seeded by the case's key)


def case_rng(*key) -> np.random.Generator:
    """A generator seeded by `key` (stable across runs and processes)."""
    import zlib

    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def draw_x(rng, shape, loc=0.5):
    return rng.normal(loc, 1.0, size=shape)


def draw_gamma(rng, shape):
    """|gamma| in [0.5, 1.5] with random signs: well away from 0."""
    return rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def draw_beta(rng, shape):
    return rng.normal(0.0, 1.0, size=shape)
