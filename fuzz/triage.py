"""Triage: turn a disagreeing verdict into a `Finding` with an explanation and a bucket key.

Explanations, tried in order for a mismatch or a NaN-pattern difference:
1. a **bug-zoo signature**: every applicable variant of `bugzoo` is evaluated on the case in the
   case's format; the runner's outputs are compared with the variant's through the oracle's bounds,
   and the closest variant whose outputs the runner matches (error/bound <= 1 on every output both
   define) explains the finding;
2. a **declared convention** of the runner (`Conventions`): e.g. an eps below the path's documented
   minimum (`min_eps`) that the framework clamps; subnormal inputs read as zero by a path that
   declares flush-to-zero (`flush_subnormals`); a documented refusal of a batch of one;
3. otherwise **precision** (mismatch) or **nan_pattern**, with error/bound and the worst output.
Crashes, timeouts, raised exceptions, accepted invalid inputs and bad outputs are findings of their
category. The bucket key uses structured fields only: (op, mode, runner, category, signature, dtype);
the signature is the variant or convention name, the worst output, the exception type, the signal or
exit code, or the rejected parameter, never message text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

import oracles
from oracles.errormodel import error_ratio
from oracles.errors import OracleInputError

from .compare import Reference, Verdict, compare, reference
from .outcome import Outcome
from .runners.base import Conventions
from .store import bucket_key  # noqa: F401 - the one definition of a bucket key, re-exported

#: A variant explains a discrepancy when the runner's outputs are within this many bounds of it.
MATCH = 1.0

#: A case is evidence for a variant only where the variant departs from the oracle by more than
#: this many bounds. An honest implementation reaches up to 1 (calibration: 0.99999), so a variant
#: within 2 bounds of the oracle is, on that element, as close to right as a runner that is barely
#: out of its bound; matching it there says nothing about which bug the runner has (measured: Keras
#: RMSNormalization's flushed -0, 1.04 bounds off, was labelled rms_norm_subtracts_mean, which is
#: 0 on rows of one element and 1.04 bounds off too).
EVIDENCE = 2.0


@dataclass(frozen=True)
class Finding:
    """A triaged disagreement: what, where, why, and its bucket's key fields."""

    runner: str
    case_id: str
    op: str
    mode: str
    dtype: str
    regime: str
    category: str
    signature: str
    explanation: str
    max_ratio: float
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        return (self.op, self.mode, self.runner, self.category, self.signature, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["details"] = dict(self.details)
        return d


def _variant_score(variant, case, outcome: Outcome, ref: Reference) -> float | None:
    """max error/bound of the runner's outputs against a variant's, or None when the variant does
    not apply or the case holds no evidence for it.

    Evidence: an element where the variant departs from the oracle (error/bound > `EVIDENCE`) and both the
    runner's and the variant's values are finite. A coincidence of NaNs alone (a runner that
    overflows to NaN, a variant that divides 0 by 0) explains nothing, except for the variants whose
    very nature is a NaN pattern (trigger regime nonfinite_in_one_set)."""
    import bugzoo

    nan_nature = _nan_natured(variant)
    try:
        outs = variant.evaluate(case.mode, dict(case.inputs), dict(case.attrs), case.dtype)
    except (bugzoo.NotApplicable, OracleInputError):
        return None
    ev = ref.evaluation
    worst, compared, evidence = 0.0, 0, 0
    for name, actual in outcome.outputs.items():
        if name not in outs or name not in ev.bounds or np.shape(outs[name]) != np.shape(actual):
            continue
        r = error_ratio(actual, outs[name], ev.bounds[name], case.dtype)
        worst = max(worst, float(np.max(r)) if r.size else 0.0)
        compared += 1
        departs = error_ratio(outs[name], ev.outputs[name], ev.bounds[name], case.dtype) > EVIDENCE
        if not nan_nature:
            departs &= np.isfinite(np.asarray(actual, dtype=float)) & np.isfinite(np.asarray(outs[name], dtype=float))
        evidence += int(departs.sum())
    if not compared or not evidence:
        return None
    return worst


def _nan_natured(variant) -> bool:
    """Whether a variant's very nature is a NaN pattern (a coincidence of NaNs is evidence for it)."""
    return variant.trigger_regime == "nonfinite_in_one_set"


def closest_variant(case, outcome: Outcome, ref: Reference) -> tuple[str, float, str] | None:
    """(name, score, what is wrong) of the closest bug-zoo variant, or None if none applies.

    A runner output without a finite value holds no evidence for a variant that is not NaN-natured
    (`_variant_score`), so only the NaN-natured ones are evaluated then."""
    import bugzoo

    best = None
    finite = any(np.isfinite(np.asarray(a, dtype=float)).any() for a in outcome.outputs.values())
    with bugzoo.shared_references():  # (the variants' correct evaluations of the case, made once)
        for v in bugzoo.variants_for(case.op, case.mode, case.dtype):
            if not finite and not _nan_natured(v):
                continue
            s = _variant_score(v, case, outcome, ref)
            if s is not None and (best is None or s < best[1]):
                best = (v.name, s, v.wrong)
    return best


def _convention_explanation(case, outcome: Outcome, verdict: Verdict, conv: Conventions,
                            precision) -> tuple[str, str] | None:
    """(signature, explanation) when a declared convention accounts for the verdict."""
    eps = case.attrs.get("eps")
    if verdict.category in ("mismatch", "nan_pattern") and conv.min_eps is not None and eps is not None \
            and float(eps) < conv.min_eps:
        worst = _worst_ratio(case, outcome, dict(case.inputs), dict(case.attrs, eps=conv.min_eps), precision)
        if worst is None:
            return None
        if worst <= MATCH:
            return ("convention:min_eps",
                    f"the path clamps eps={eps:g} to its documented minimum {conv.min_eps:g} "
                    f"(error/bound {worst:.3g} against the oracle at the clamped eps)")
    if verdict.category in ("mismatch", "nan_pattern") and conv.flush_subnormals:
        daz = _denormals_are_zero(case)
        if daz is not None:
            flushed, n = daz
            worst = _worst_ratio(case, outcome, flushed, dict(case.attrs), precision)
            if worst is not None and worst <= MATCH:
                return ("convention:flush_subnormals",
                        f"the path reads subnormal inputs as zero (denormals-are-zero, declared with "
                        f"flush-to-zero): {n} subnormal input value(s); error/bound {worst:.3g} against the "
                        f"oracle on the inputs read that way")
    if verdict.category == "raised" and conv.min_eps is not None and eps is not None and float(eps) < conv.min_eps:
        return ("convention:min_eps", f"the path documents that eps must be at least {conv.min_eps:g} "
                                      f"(it raises for eps={eps:g})")
    if verdict.category == "raised" and conv.batch_of_one == "raises" and _reduction_size(case) == 1:
        return ("convention:batch_of_one", "the path documents that a reduction set of one element raises")
    return None


def _worst_ratio(case, outcome: Outcome, inputs: Mapping, attrs: Mapping, precision) -> float | None:
    """The largest error/bound of the runner's outputs against the oracle evaluated on `inputs`
    and `attrs` (a convention's reading of the case), inf when no output compares; None when the
    oracle rejects that reading."""
    try:
        ev = oracles.evaluate(case.op, case.mode, inputs, attrs, precision)
    except OracleInputError:
        return None
    return max((float(np.max(error_ratio(a, ev.outputs[k], ev.bounds[k], case.dtype)))
                for k, a in outcome.outputs.items() if k in ev.outputs and np.size(a)), default=np.inf)


def _denormals_are_zero(case) -> tuple[dict, int] | None:
    """(the case's inputs with every subnormal value read as zero, how many), as a CPU in
    denormals-are-zero mode reads the operands of its arithmetic; None when no input holds a
    subnormal. For float32, bfloat16 (computed in float32) and float64 cases only: float16 values
    are widened to float32 before arithmetic, where none of them is subnormal.

    Why a convention and not a bound: the error model's FTZ precision raises every underflow floor
    to the smallest normal number, but an input read as zero moves the output by up to
    |gamma| r tiny, which the floors do not scale by r (docs/error-model.md, "Known gap")."""
    if case.dtype not in ("float32", "bfloat16", "float64"):
        return None
    tiny = np.finfo(np.float64 if case.dtype == "float64" else np.float32).tiny
    out, n = {}, 0
    for k, a in case.inputs.items():
        a = np.asarray(a)
        if a.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                sub = (a != 0) & (np.abs(a) < tiny)
            if sub.any():
                n += int(sub.sum())
                a = np.where(sub, np.copysign(np.zeros_like(a), a), a)
        out[k] = a
    return (out, n) if n else None


def _reduction_size(case) -> int | None:
    """Elements per reduction set of a case whose op computes statistics (None if it has none)."""
    if case.op == "batch_norm" and not case.mode.startswith("training"):
        return None
    d = oracles.OPS[case.op]
    inputs = dict(case.inputs)
    if "xs" in inputs:
        inputs["x"] = inputs.pop("xs")[0]
    try:
        v = d.make_view(inputs, case.attrs)
    except (OracleInputError, KeyError):
        return None
    n = 1
    for a in v.norm.axes:
        n *= v.x.shape[a]
    return n


def triage(case, outcome: Outcome, verdict: Verdict, *, conventions: Conventions, precision,
           ref: Reference, regime: str = "") -> Finding | None:
    """The finding for a verdict, or None when it is agreement or coverage information."""
    if not verdict.is_finding:
        return None
    common = dict(runner=outcome.runner, case_id=case.id, op=case.op, mode=case.mode, dtype=case.dtype,
                  regime=regime, category=verdict.category, max_ratio=verdict.max_ratio)
    details: dict[str, Any] = {"verdict": verdict.to_dict()}
    cat = verdict.category
    conv = _convention_explanation(case, outcome, verdict, conventions, precision)
    if conv is not None:
        return Finding(signature=conv[0], explanation=conv[1], details=details, **common)
    if cat in ("mismatch", "nan_pattern"):
        best = closest_variant(case, outcome, ref)
        if best is not None:
            details["closest_variant"] = {"name": best[0], "score": best[1]}
            if best[1] <= MATCH:
                return Finding(signature=best[0], details=details, **common, explanation=(
                    f"matches bug-zoo variant {best[0]}: {best[2]} (error/bound {best[1]:.3g} against the "
                    f"variant, {verdict.max_ratio:.3g} against the oracle)"))
        if cat == "mismatch":
            common["category"] = "precision"
            w = next(c for c in verdict.checks if c.name == verdict.worst_output)
            return Finding(signature=verdict.worst_output, details=details, **common, explanation=(
                f"{verdict.worst_output}: error/bound {verdict.max_ratio:.3g} at {list(w.worst_index)} "
                f"(got {w.actual:.9g}, reference {w.expected:.9g}, bound {w.bound:.3g}); "
                f"{w.exceeding} of {w.elements} elements exceed their bound; no bug-zoo variant or "
                f"declared convention explains it"))
        w = next(c for c in verdict.checks if c.name == verdict.worst_output)
        return Finding(signature=verdict.worst_output, details=details, **common, explanation=(
            f"{verdict.worst_output}: {w.pattern_mismatches} of {w.elements} elements differ in their "
            f"NaN/Inf pattern from the oracle (e.g. at {list(w.worst_index)}: got {w.actual!r}, reference "
            f"{w.expected!r})"))
    if cat == "raised":
        return Finding(signature=outcome.error_type or "unknown", details=details, **common, explanation=(
            f"raised {outcome.error_type} where the oracle defines a result: {outcome.error}"))
    if cat == "accepted_invalid":
        return Finding(signature=verdict.rejected_parameter, details=details, **common, explanation=(
            f"returned outputs for an input the oracle rejects: {verdict.rejection}"))
    if cat == "crash":
        if outcome.detail.startswith("out of memory"):
            sig = "out_of_memory"  # killed by normfuzz's memory limit, not by the framework
        else:
            sig = f"signal {outcome.signal}" if outcome.signal else f"exit {outcome.exit_code}"
        return Finding(signature=sig, details=details, **common, explanation=outcome.detail)
    if cat == "timeout":
        return Finding(signature="timeout", details=details, **common, explanation=outcome.detail)
    return Finding(signature="bad_output", details=details, **common, explanation=verdict.details.get("detail", ""))


def judge(case, outcome: Outcome, conventions: Conventions, *, regime: str = "",
          ref: Reference | None = None) -> tuple[Verdict, Finding | None]:
    """compare + triage for one outcome (the oracle evaluated at the runner's declared precision)."""
    precision = conventions.precision(case.dtype)
    ref = reference(case, precision) if ref is None else ref
    verdict = compare(case, outcome, ref)
    return verdict, triage(case, outcome, verdict, conventions=conventions, precision=precision, ref=ref,
                           regime=regime)
