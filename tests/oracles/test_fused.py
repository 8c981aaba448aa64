"""The fused float64 kernels (oracles/_fused.py) give bitwise the numpy code's results.

Each kernel transcribes a stretch of the error model's numpy code; these tests run both on the
campaign's own generated cases (every op, mode, dtype and value regime, packed families included)
and on hand-made edge cases (NaN, infinities, overflowing sets, given statistics), and require the
same bits: the references, every bound, every error ratio and every `check_output` field.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import oracles
from fuzz.compare import check_output
from fuzz.strategies import case_specs, materialize_family
from oracles import _fused
from oracles.errormodel import Precision, error_ratio

pytestmark = pytest.mark.skipif(not _fused.available(), reason="numba not installed")

PRECISIONS = [Precision.of("float32"), Precision.of("float32", ftz=True), Precision.of("float16"),
              Precision.of("bfloat16"), Precision.of("float16", accum="float16")]


def _same(a, b) -> bool:
    """Same shape, dtype and values, signed zeros told apart (NaN payloads aside)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=True):
        return False
    num = ~np.isnan(a)
    return bool(np.array_equal(np.signbit(a[num]), np.signbit(b[num])))


def _same_check(c1, c0) -> bool:
    d1, d0 = c1.to_dict(), c0.to_dict()
    return d1.keys() == d0.keys() and all(
        d1[k] == d0[k] or (isinstance(d1[k], float) and math.isnan(d1[k]) and math.isnan(d0[k])) for k in d0)


def _evaluate(case, p):
    try:
        return oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), p)
    except oracles.OracleInputError:
        return None


def _check_both(case, p):
    fused = _evaluate(case, p)
    with _fused.disabled():
        plain = _evaluate(case, p)
    assert (fused is None) == (plain is None)
    if fused is None:
        return 0
    assert fused.outputs.keys() == plain.outputs.keys() and fused.bounds.keys() == plain.bounds.keys()
    for k in plain.outputs:
        assert _same(fused.outputs[k], plain.outputs[k]), (case.op, case.mode, k, "output")
    for k in plain.bounds:
        assert _same(fused.bounds[k], plain.bounds[k]), (case.op, case.mode, k, "bound")
        # an "implementation" near the reference, with some NaN/inf and a far-off element
        ref, bound = plain.outputs[k], plain.bounds[k]
        rng = np.random.default_rng(ref.size)
        with np.errstate(over="ignore", invalid="ignore"):  # near float32's maximum: inf
            actual = (ref * (1 + rng.normal(0, 1e-6, ref.shape))).astype(np.float32)
            flat = actual.reshape(-1)
            if flat.size > 3:
                flat[0], flat[1], flat[2] = np.nan, np.inf, flat[2] * 3 + 1
        for dtype in ("float32", "float16"):
            r1 = error_ratio(actual, ref, bound, dtype)
            with _fused.disabled():
                r0 = error_ratio(actual, ref, bound, dtype)
                c0 = check_output(k, actual, ref, bound, dtype)
            assert _same(r1, r0), (case.op, case.mode, k, "ratio")
            c1 = check_output(k, actual, ref, bound, dtype)
            assert _same_check(c1, c0), (k, c1, c0)
    return 1


@pytest.mark.parametrize("op,mode", oracles.modes())
def test_fused_kernels_give_the_numpy_results_bitwise_on_campaign_cases(op, mode):
    done = []

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(spec=case_specs(ops=[op], modes=[mode], dtypes=["float32", "float16", "bfloat16"]),
           family=st.sampled_from([1, 3]), which=st.integers(0, len(PRECISIONS) - 1))
    def check(spec, family, which):
        for case in materialize_family(spec, family):
            done.append(_check_both(case, PRECISIONS[which]))

    check()
    assert sum(done) >= 20  # evaluated cases (the rest: inputs the oracle rejects)


def _rms_case(x, weight=None, eps=1e-5):
    class C:
        op, mode = "rms_norm", "forward"
        inputs = {"x": np.asarray(x, np.float32)} | ({} if weight is None else {"weight": np.asarray(weight, np.float32)})
        attrs = {"eps": eps, "normalized_ndim": 1}
    return C


def _ln_case(x, eps=1e-5, gamma=None, beta=None):
    class C:
        op, mode = "layer_norm", "forward"
        inputs = {"x": np.asarray(x, np.float32)}
        attrs = {"eps": eps, "normalized_ndim": 1}
    if gamma is not None:
        C.inputs["gamma"] = np.asarray(gamma, np.float32)
        C.inputs["beta"] = np.asarray(beta, np.float32)
    return C


F32MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("case", [
    _ln_case([[1, 2, np.nan, 4], [1, 2, 3, 4]]),                     # NaN rule (a centered set)
    _ln_case([[1, 2, np.inf, 4], [1, 2, 3, 4]]),                     # inf in a centered set
    _rms_case([[1, 2, np.inf, 4], [1, 2, 3, 4]]),                    # inf in an uncentered set: r = 0
    _ln_case([[3e38, -3e38, 1e38, 0.5], [1e-45, 0, -1e-45, 1e-45]]),  # overflowing sums; subnormals
    _ln_case([[5, 5, 5, 5], [0, 0, 0, 0]], eps=0.0),                 # zero variance, eps 0: r = inf
    _ln_case([[1, 2, 3, 4]] * 2, gamma=[F32MAX, 1, -0.0, np.nan], beta=[0, np.inf, 1, 2]),  # odd parameters
    _rms_case([[1e-30, 2e-30, -1e-30]], weight=[1e30, F32MAX, 1e-38], eps=1e-38),  # the folded form
])
def test_fused_kernels_give_the_numpy_results_bitwise_on_edge_cases(case):
    for p in PRECISIONS:
        assert _check_both(case, p)


def test_batch_norm_inference_with_far_running_stats_is_the_same_in_both():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(0, 1e38, (2, 3, 4)).astype(np.float32),
              "running_mean": np.array([-3e38, 0, 1], np.float32), "running_var": np.array([0, 1e-30, 1], np.float32),
              "gamma": np.array([1e-30, 1, 2], np.float32), "beta": np.zeros(3, np.float32)}

    class C:
        op, mode, attrs = "batch_norm", "inference", {"eps": 1e-38}
    C.inputs = inputs
    assert _check_both(C, Precision.of("float32"))


@pytest.mark.parametrize("shape", [(3,), (2, 1, 2, 1, 2, 3)])  # a compiled loop; the ufunc (> 4 axes)
def test_a_kernel_reports_its_floating_point_flags_to_numpy_errstate_as_the_range_guard_needs(shape):
    k = _fused.kernels()
    tiny, one = np.full(shape, 1e-300), np.ones(shape)
    with np.errstate(under="raise"), pytest.raises(FloatingPointError, match="underflow"):
        k.ratio(tiny, 0 * one, 1e10 * one, 3.4e38)          # 1e-310: subnormal
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        k.ratio(1e300 * one, 0 * one, 1e-10 * one, 3.4e38)   # 1e310: inf
    with np.errstate(under="warn"), pytest.warns(RuntimeWarning, match="underflow"):
        k.ratio(tiny, 0 * one, 1e10 * one, 3.4e38)
    with np.errstate(under="ignore", over="raise"):
        assert np.all(k.ratio(tiny, 0 * one, 1e10 * one, 3.4e38) == 1e-310)


def test_the_kernels_are_not_used_for_ext_evaluations_or_when_disabled(monkeypatch):
    assert _fused.active(np.float64)
    assert not _fused.active(oracles.EXT)
    with _fused.disabled():
        assert not _fused.active(np.float64)
    monkeypatch.setenv(_fused.DISABLE_ENV, "1")
    assert not _fused.active(np.float64)
    monkeypatch.setenv(_fused.DISABLE_ENV, "0")
    assert _fused.active(np.float64)


def test_error_ratio_rules_hold_in_the_kernel():
    actual = np.array([np.nan, np.nan, 1.0, np.inf, np.inf, -np.inf, 2.0, 1.0, 5.0])
    ref = np.array([np.nan, 1.0, np.nan, 3.3e38, 1.0, -np.inf, 1.0, 1.0, 1.0])
    bound = np.array([0.0, 1.0, 1.0, 1e38, 1.0, 0.0, np.inf, 0.0, 2.0])
    got = error_ratio(actual, ref, bound, "float32")
    # both NaN; NaN on one side (twice); inf within reach of the threshold; inf beyond the bound;
    # equal infinities; unconstrained; zero error; an ordinary ratio
    assert got.tolist() == [0.0, math.inf, math.inf, 0.0, math.inf, 0.0, 0.0, 0.0, 2.0]
    with _fused.disabled():
        assert error_ratio(actual, ref, bound, "float32").tolist() == got.tolist()


def test_check_output_reports_the_same_worst_element_and_counts_in_both():
    ref = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, np.inf]])
    bound = np.array([[1.0, 0.5, np.inf, np.nan, 1.0, 0.0]])
    for actual in (np.array([[2.0, 2.5, 9.0, 4.0, 7.0, np.inf]], np.float32),   # ratio 1 exactly, NaN ratio
                   np.array([[2.0, 2.5, 9.0, 4.5, 7.0, 1.0]], np.float16),      # finite where ref is inf
                   np.array([[1.0, 2.0, np.nan, 4.0, 5.0, np.inf]], np.float32)):
        c1 = check_output("y", actual, ref, bound, "float32")
        with _fused.disabled():
            c0 = check_output("y", actual, ref, bound, "float32")
        assert _same_check(c1, c0), (c1, c0)
    assert c1.exceeding == 0 and c1.unconstrained == 1 and c1.max_ratio == 0.0
    c = check_output("y", np.array([[2.0, 2.5, 9.0, 4.0, 7.0, np.inf]], np.float32), ref, bound, "float32")
    assert (c.exceeding, c.worst_index, c.unconstrained, c.pattern_mismatches) == (1, (0, 4), 1, 0)
