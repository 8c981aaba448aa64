"""Compare one runner's outcome with the oracle through the error model: the `Verdict`.

The reference comes from `oracles.evaluate` with the runner's declared precision (accumulation and
elementwise formats), so each output element is judged by error/bound (<= 1: agreement). A case the
oracle rejects (`OracleInputError`) is an invalid input: a runner that raises agrees, one that returns
outputs "accepted invalid input".

Categories (one per verdict):
    agree             every returned output within its bound (or both sides rejected the input)
    mismatch          some element's error exceeds its bound (triage explains it further)
    nan_pattern       NaN/Inf where the oracle has a finite value, or finite where it has NaN
    raised            the framework raised where the oracle defines a result
    accepted_invalid  the framework returned outputs for an input the oracle rejects
    crash, timeout    the worker died / did not answer (see the Outcome)
    bad_output        the runner returned something that is not a valid output
    unsupported       the runner cannot express the case (coverage, not a finding)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

import oracles
from oracles import _fused
from oracles.errormodel import Precision, error_ratio
from oracles.errors import OracleInputError

from .outcome import Outcome

CATEGORIES = ("agree", "mismatch", "nan_pattern", "raised", "accepted_invalid", "crash", "timeout",
              "bad_output", "unsupported")
FINDING_CATEGORIES = CATEGORIES[1:-1]


@dataclass(frozen=True)
class Reference:
    """The oracle's answer for one case at one precision: an Evaluation, or the rejection."""

    evaluation: oracles.Evaluation | None
    rejection: OracleInputError | None = None


def reference(case, precision: Precision) -> Reference:
    """Evaluate the oracle on `case`; an OracleInputError becomes a rejection, not an exception."""
    try:
        return Reference(oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), precision))
    except OracleInputError as e:
        return Reference(None, e)


@dataclass(frozen=True)
class OutputCheck:
    """One output's comparison: worst error/bound, where, and how many elements of which kind."""

    name: str
    max_ratio: float
    worst_index: tuple[int, ...]
    actual: float
    expected: float
    bound: float
    pattern_mismatches: int
    exceeding: int
    unconstrained: int
    elements: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Verdict:
    """The comparison of one outcome with the oracle."""

    runner: str
    case_id: str
    status: str
    category: str
    max_ratio: float = 0.0
    worst_output: str = ""
    checks: tuple[OutputCheck, ...] = ()
    rejection: str = ""            # the oracle's rejection message for an invalid input
    rejected_parameter: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_finding(self) -> bool:
        return self.category in FINDING_CATEGORIES

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("runner", "case_id", "status", "category", "max_ratio",
                                            "worst_output", "rejection", "rejected_parameter")}
        d["checks"] = [c.to_dict() for c in self.checks]
        d["details"] = dict(self.details)
        return d


def check_output(name: str, actual: np.ndarray, ref: np.ndarray, bound: np.ndarray, dtype: str) -> OutputCheck:
    """Judge one output array (shapes must match; the caller checks)."""
    ratio = error_ratio(actual, ref, bound, dtype)
    if ratio.size == 0:
        return OutputCheck(name, 0.0, (), 0.0, 0.0, 0.0, 0, 0, 0, 0)
    if ratio.dtype == np.float64 and _fused.active(np.float64):
        return _check_output_fused(name, actual, ref, bound, ratio)
    a = np.asarray(actual).astype(np.asarray(ref).dtype)  # the oracle's working type (float64 or EXT)
    constrained = ~np.isinf(bound)  # an unconstrained element agrees whatever it holds (error_ratio)
    if np.isfinite(a).all() and np.isfinite(ref).all():
        mismatches = 0  # every term of the pattern below needs a NaN or an infinity
    else:
        mismatches = _pattern_mismatches(a, ref, ratio, constrained)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return OutputCheck(name, float(ratio[i]), tuple(int(k) for k in i), float(a[i]), float(ref[i]), float(bound[i]),
                       mismatches, int((ratio > 1).sum()), int((~constrained).sum()), int(ratio.size))


def _pattern_mismatches(a: np.ndarray, ref: np.ndarray, ratio: np.ndarray, constrained: np.ndarray) -> int:
    """Constrained elements whose NaN/Inf pattern differs: NaN on one side only, an infinite output
    beyond its bound where the reference is finite, a finite output where the reference is infinite."""
    with np.errstate(invalid="ignore"):
        pattern = constrained & ((np.isnan(a) ^ np.isnan(ref))
                                 | (~np.isfinite(a) & np.isfinite(ref) & (ratio > 1))
                                 | (np.isfinite(a) & np.isinf(ref)))
    return int(pattern.sum())


def _check_output_fused(name, actual, ref, bound, ratio) -> OutputCheck:
    """`check_output` in float64 with the counts of one pass of `oracles._fused` (same results)."""
    shape = ratio.shape
    a, ref, bound = (np.broadcast_to(np.asarray(v), shape) for v in (actual, ref, bound))
    if a.dtype.itemsize < 4:
        a = a.astype(np.float32)  # exact; numba has no float16 arithmetic
    imax, exceeding, unconstrained, finite = _fused.kernels().summary(
        ratio.ravel(), np.ravel(bound), np.ravel(a), np.ravel(ref))
    mismatches = 0
    if not finite:
        a64 = a.astype(np.float64)
        mismatches = _pattern_mismatches(a64, ref, ratio, ~np.isinf(bound))
    i = np.unravel_index(int(imax), shape)
    return OutputCheck(name, float(ratio[i]), tuple(int(k) for k in i), float(a[i]), float(ref[i]), float(bound[i]),
                       mismatches, int(exceeding), int(unconstrained), int(ratio.size))


def compare(case, outcome: Outcome, ref: Reference) -> Verdict:
    """The verdict for one outcome (see the module docstring for the categories)."""
    base = dict(runner=outcome.runner, case_id=case.id, status=outcome.status)
    rejected = ref.evaluation is None
    rej = dict(rejection=str(ref.rejection), rejected_parameter=ref.rejection.parameter) if rejected else {}
    st = outcome.status
    if st == "UNSUPPORTED":
        return Verdict(category="unsupported", details={"reason": outcome.detail}, **base, **rej)
    if st == "CRASHED":
        return Verdict(category="crash", details={"detail": outcome.detail}, **base, **rej)
    if st == "TIMEOUT":
        return Verdict(category="timeout", details={"detail": outcome.detail}, **base, **rej)
    if st == "BAD_OUTPUT":
        return Verdict(category="bad_output", details={"detail": outcome.detail}, **base, **rej)
    if st == "RAISED":
        cat = "agree" if rejected else "raised"
        return Verdict(category=cat, details={"error_type": outcome.error_type, "error": outcome.error},
                       **base, **rej)
    if rejected:
        return Verdict(category="accepted_invalid", **base, **rej)
    ev = ref.evaluation
    checks = []
    for name, actual in outcome.outputs.items():
        if name not in ev.outputs:
            return Verdict(category="bad_output", details={
                "detail": f"output {name!r} is not an output of {case.op}/{case.mode}"}, **base)
        if tuple(np.shape(actual)) != ev.outputs[name].shape:
            return Verdict(category="bad_output", details={
                "detail": f"output {name!r} has shape {tuple(np.shape(actual))}, expected {ev.outputs[name].shape}"},
                **base)
        checks.append(check_output(name, actual, ev.outputs[name], ev.bounds[name], case.dtype))
    if not checks:
        return Verdict(category="bad_output", details={"detail": "no outputs returned"}, **base)
    worst = max(checks, key=lambda c: c.max_ratio)
    if any(c.pattern_mismatches for c in checks):
        cat = "nan_pattern"
        worst = max(checks, key=lambda c: (c.pattern_mismatches > 0, c.max_ratio))
    elif worst.max_ratio > 1:
        cat = "mismatch"
    else:
        cat = "agree"
    return Verdict(category=cat, max_ratio=worst.max_ratio, worst_output=worst.name, checks=tuple(checks), **base)
