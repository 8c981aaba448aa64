"""The oracle's working precision: float64 for cases in float32 and narrower formats, EXT otherwise.

`oracles.evaluate` works in numpy.float64 when every format of the case's precision and every input
array is float32 or narrower (`oracles.registry.working_type`), under a range guard that redoes the
case in EXT (numpy.longdouble) if an intermediate leaves float64's normal range; float64 cases stay
in EXT. These tests check:

- the type: every output and bound of every (op, mode) is float64 for float16/bfloat16/float32
  cases and longdouble for float64 cases. One leftover EXT constant in the oracle would turn a
  float64 evaluation into a longdouble one silently (numpy promotes float64 * longdouble scalar to
  longdouble); `working=numpy.float64` (no guard) and the default (guarded) are both checked, so a
  range-guard fallback and a promotion are told apart.
- agreement: float64 and EXT evaluations of the same float16/bfloat16/float32 cases have the same
  NaN/inf patterns (references and bounds, zero bounds included), and
      |ref64 - ref_EXT| <= TOL * bound_EXT,     |bound64 - bound_EXT| <= TOL * bound_EXT.
  TOL = 2**-27 = 8 * 2**-30. The unit 2**-30 = 2**-53 / (2 * 2**-24): a float64 rounding of a
  centered value x - mu (or of y, or of a mean) relative to the smallest rounding term the model
  charges for that value, g(2, u_e) (|x| + |mu|) with u_e = 2**-24 (float32, also the half formats'
  elementwise format). Bounds inherit it too: the terms proportional to |c| = |x - mu| (e.g.
  rho_r' |c| ... of the gradients) come with a companion term in Dc >= g(2, u_e)(|x| + |mu|).
  Measured over 20,000 drawn cases: references <= 6.2e-10 (0.67 units), bounds <= 9.8e-10 (1.05
  units; `NORMFUZZ_NIGHTLY=1 pytest tests/oracles/test_working_precision.py -s` prints them).
  (A relative 1e-12 of the bound is below what any float64 evaluation can reach: rounding
  y to float64 alone is up to ~2**-30 of y's bound. With EXT the same quantity is ~2**-41.)
- the guard: a case whose float64 intermediates leave the normal range (r**3 below 2**-1022 for
  eps = 1e300) is evaluated in EXT, bit for bit what `working=numpy.longdouble` gives.
- the selection rules and the `working` context of the typed functions.

Cases come from `fuzz.strategies.case_specs` + `materialize` (every regime), drawn by Hypothesis
with derandomize=True; NORMFUZZ_NIGHTLY=1 draws 10x more.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import oracles
from fuzz.strategies import applicable_regimes, case_specs, materialize
from oracles import dtypes, registry
from oracles.errormodel import Precision
from oracles.errors import OracleInputError

NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"
NARROW = ("float16", "bfloat16", "float32")
TOL = 2.0**-27  # module docstring
PAIRS = registry.modes()


#: worst (|ref64 - ref_ext| / bound_ext, |bound64 - bound_ext| / bound_ext) seen per dtype, with the case
WORST: dict[str, dict[str, tuple[float, str]]] = {d: {"reference": (0.0, ""), "bound": (0.0, "")} for d in NARROW}
CASES: dict[str, int] = {d: 0 for d in NARROW}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nfloat64 vs EXT evaluations, worst difference / EXT bound per dtype (limit {TOL:.3e} = 8 * 2**-30):")
    for d in NARROW:
        for what, (r, label) in WORST[d].items():
            print(f"  {d:9s} {what:9s} {r:.3e} ({r / 2.0**-30:.2f} * 2**-30) over {CASES[d]} cases; worst {label}")


def _record(dtype: str, what: str, value: float, label: str) -> None:
    if value > WORST[dtype][what][0]:
        WORST[dtype][what] = (value, label)


def _settings(n: int):
    return settings(max_examples=n * (10 if NIGHTLY else 1), derandomize=True, deadline=None,
                    database=None, suppress_health_check=list(HealthCheck))


def _evaluate(case, **kw):
    return oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), case.dtype, **kw)


def _leaves_float64(case) -> bool:
    """Whether an intermediate of the case's float64 evaluation leaves float64's normal range (the
    range guard then evaluates the case in EXT)."""
    try:
        with dtypes.range_guard():
            _evaluate(case, working=np.float64)
    except FloatingPointError:
        return True
    return False


def _arrays(ev):
    return {f"{kind} {k}": a for kind, d in (("output", ev.outputs), ("bound", ev.bounds)) for k, a in d.items()}


# --------------------------------------------------------------------------------------------------
# the working type of every (op, mode)


@pytest.mark.parametrize("dtype", NARROW + ("float64",))
@pytest.mark.parametrize("op,mode", PAIRS, ids=[f"{o}-{m}" for o, m in PAIRS])
@_settings(3)
@given(data=st.data())
def test_every_output_and_bound_has_the_working_type(op, mode, dtype, data):
    """float64 for float16/bfloat16/float32 cases, longdouble for float64 cases, in every mode."""
    regimes = [r for r in applicable_regimes(op, mode) if r not in ("invalid", "long")]
    spec = data.draw(case_specs(ops=[op], modes=[mode], dtypes=[dtype], regimes=regimes, max_elements=64))
    case = materialize(spec)
    want = np.float64 if case.dtype in NARROW else np.longdouble
    got = {k: a.dtype for k, a in _arrays(_evaluate(case)).items()}
    assert got and all(t == want for t in got.values()), (
        f"{case.summary()} ({spec.regime}): expected {np.dtype(want).name} everywhere, got {got}")
    if case.dtype in NARROW:
        # unguarded float64: a longdouble array here is a promotion by a leftover EXT constant,
        # not a range-guard fallback
        forced = {k: a.dtype for k, a in _arrays(_evaluate(case, working=np.float64)).items()}
        assert all(t == np.float64 for t in forced.values()), f"{case.summary()}: {forced}"


# --------------------------------------------------------------------------------------------------
# float64 and EXT evaluations agree


@_settings(500)
@given(spec=case_specs(dtypes=list(NARROW), max_elements=256, max_long_elements=8192))
def test_float64_and_ext_evaluations_agree(spec):
    case = materialize(spec)
    try:
        fast = _evaluate(case)
    except OracleInputError as e:
        with pytest.raises(OracleInputError) as in_ext:
            _evaluate(case, working=np.longdouble)
        assert str(in_ext.value) == str(e)
        return
    ext = _evaluate(case, working=np.longdouble)
    what = f"{case.summary()} ({spec.regime}, seed {spec.seed})"
    if _leaves_float64(case):
        # the guard's case (e.g. a subnormal momentum 5e-324: w * batch underflows): evaluated in
        # EXT, bit for bit the EXT evaluation, and nothing to compare
        for k, a in _arrays(fast).items():
            assert a.dtype == np.longdouble, f"{what} {k}: the guard fired, yet {a.dtype}"
            assert np.array_equal(a, _arrays(ext)[k], equal_nan=True), f"{what} {k}: not the EXT evaluation"
        return
    CASES[case.dtype] += 1
    assert set(fast.outputs) == set(ext.outputs) and set(fast.bounds) == set(ext.bounds), what
    for k in ext.outputs:
        r64, b64 = fast.outputs[k], fast.bounds[k]
        rx, bx = ext.outputs[k], ext.bounds[k]
        assert r64.dtype == b64.dtype == np.float64, f"{what} {k}: not evaluated in float64"
        assert r64.shape == rx.shape and b64.shape == bx.shape, f"{what} {k}: shapes"
        r64, b64 = r64.astype(np.longdouble), b64.astype(np.longdouble)
        assert np.array_equal(np.isnan(r64), np.isnan(rx)), f"{what} {k}: NaN pattern of the references"
        inf = np.isinf(rx) | np.isinf(r64)
        assert np.array_equal(np.where(inf, r64, 0), np.where(inf, rx, 0)), f"{what} {k}: infinite references"
        assert np.array_equal(np.isinf(b64), np.isinf(bx)), f"{what} {k}: unconstrained elements differ"
        assert np.array_equal(b64 == 0, bx == 0), f"{what} {k}: zero (pinned) bounds differ"
        fin = np.isfinite(bx) & np.isfinite(rx)
        with np.errstate(invalid="ignore"):
            ref_err = np.where(fin, np.abs(r64 - rx), 0)
            bound_err = np.where(np.isfinite(bx), np.abs(b64 - bx), 0)
        tol = TOL * np.where(np.isfinite(bx), bx, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, err in (("reference", ref_err), ("bound", bound_err)):
                frac = np.where(err > 0, err / bx, 0)
                _record(case.dtype, name, float(np.max(frac, initial=0)), f"{k} of {what}")
        i = np.unravel_index(np.argmax(ref_err - tol), np.shape(tol)) if tol.ndim else ()
        assert np.all(ref_err <= tol), (
            f"{what} {k}{list(i)}: |ref64 - ref_ext| = {ref_err[i]!r} > {TOL} * bound {bx[i]!r}")
        j = np.unravel_index(np.argmax(bound_err - tol), np.shape(tol)) if tol.ndim else ()
        assert np.all(bound_err <= tol), (
            f"{what} {k}{list(j)}: bound64 {b64[j]!r} vs bound_ext {bx[j]!r}: relative > {TOL}")


# --------------------------------------------------------------------------------------------------
# the range guard


def _layer_norm_case(mode: str, eps: float):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    t = rng.standard_normal((3, 16)).astype(np.float32)
    inputs = {"x": x, "forward": {}, "vjp": {"dy": t}, "jvp": {"tx": t}}
    return {"x": x, **inputs[mode]}, {"eps": eps, "normalized_ndim": 1}


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_a_case_leaving_float64s_range_is_evaluated_in_ext(mode):
    """eps = 1e300: r = 1e-150 and the gradients' r**3 = 1e-450 underflows float64 (not EXT)."""
    inputs, attrs = _layer_norm_case(mode, 1e300)
    ev = oracles.evaluate("layer_norm", mode, inputs, attrs, "float32")
    ext = oracles.evaluate("layer_norm", mode, inputs, attrs, "float32", working=np.longdouble)
    for k, a in _arrays(ev).items():
        assert a.dtype == np.longdouble, k
        assert np.array_equal(a, _arrays(ext)[k], equal_nan=True), k
    # the guard is what decided: float64 under it raises
    with dtypes.range_guard(), pytest.raises(FloatingPointError):
        oracles.evaluate("layer_norm", mode, inputs, attrs, "float32", working=np.float64)


def test_the_same_case_with_an_ordinary_eps_stays_in_float64():
    inputs, attrs = _layer_norm_case("vjp", 1e-5)
    ev = oracles.evaluate("layer_norm", "vjp", inputs, attrs, "float32")
    assert {a.dtype for a in _arrays(ev).values()} == {np.dtype(np.float64)}


def test_the_guard_leaves_ieee_infinities_and_nans_alone():
    """Non-finite inputs propagate by IEEE rules (no overflow flag): still float64, same result."""
    x = np.array([[1.0, np.inf, 2.0, 3.0], [np.nan, 1.0, 2.0, 4.0], [1.0, 2.0, 3.0, 5.0]], np.float32)
    dy = np.ones_like(x)
    attrs = {"eps": 1e-5, "normalized_ndim": 1}
    ev = oracles.evaluate("layer_norm", "vjp", {"x": x, "dy": dy}, attrs, "float32")
    ext = oracles.evaluate("layer_norm", "vjp", {"x": x, "dy": dy}, attrs, "float32", working=np.longdouble)
    assert {a.dtype for a in _arrays(ev).values()} == {np.dtype(np.float64)}
    for k, a in _arrays(ev).items():
        b = _arrays(ext)[k]
        assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(np.isinf(a), np.isinf(b)), k


# --------------------------------------------------------------------------------------------------
# selection rules and the working context


@pytest.mark.parametrize("precision,expected", [
    (Precision.of("float32"), np.float64),
    (Precision.of("float16"), np.float64),
    (Precision.of("bfloat16", accum="bfloat16"), np.float64),
    (Precision.of("float64"), np.longdouble),
    (Precision.of("float32", accum="float64"), np.longdouble),     # a float64 accumulator
    (Precision.of("float16", elementwise="float64"), np.longdouble),
    (Precision.of("float32", eps_format="float64"), np.longdouble),
])
def test_working_type_follows_the_finest_format(precision, expected):
    x = np.ones((2, 3), np.float32)
    assert precision.working_type is expected
    assert registry.working_type(precision, {"x": x}) is expected
    ev = oracles.evaluate("layer_norm", "forward", {"x": x}, {"eps": 1e-5, "normalized_ndim": 1}, precision)
    assert ev.outputs["y"].dtype == expected


def test_inputs_stored_wider_than_float32_are_evaluated_in_ext():
    """A float32 case given float64 arrays (hand-written data) may hold values outside float32."""
    x = np.array([[1.0, 2.0, 3.0]])
    p = Precision.of("float32")
    assert registry.working_type(p, {"x": x}) is np.longdouble
    assert registry.working_type(p, {"x": x.astype(np.float32)}) is np.float64
    ev = oracles.evaluate("layer_norm", "forward", {"x": x}, {"eps": 1e-5, "normalized_ndim": 1}, "float32")
    assert ev.outputs["y"].dtype == np.longdouble


def test_typed_functions_work_in_ext_unless_told():
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    assert dtypes.work() is np.longdouble
    assert oracles.layer_norm(x, eps=1e-5, normalized_ndim=1).y.dtype == np.longdouble
    with oracles.working(np.float64):
        assert dtypes.work() is np.float64
        r = oracles.layer_norm(x, eps=1e-5, normalized_ndim=1)
        assert r.y.dtype == r.mean.dtype == r.rstd.dtype == np.float64
    assert dtypes.work() is np.longdouble


@pytest.mark.parametrize("bad", [np.float32, np.float16, "float32", int, None])
def test_working_rejects_other_types(bad):
    with pytest.raises(OracleInputError, match="working"):
        with oracles.working(bad):
            pass
    if bad is None:
        return  # evaluate's working=None is the automatic choice
    with pytest.raises(OracleInputError, match="working"):
        oracles.evaluate("layer_norm", "forward", {"x": np.ones((1, 2), np.float32)},
                         {"eps": 1e-5, "normalized_ndim": 1}, "float32", working=bad)


def test_error_ratio_judges_in_the_references_type():
    ref = np.array([1.0, 2.0, np.nan])
    bound = np.array([0.5, np.inf, 0.0])
    actual = np.array([1.25, 7.0, np.nan], np.float32)
    r64 = oracles.error_ratio(actual, ref, bound, "float32")
    rx = oracles.error_ratio(actual, ref.astype(np.longdouble), bound.astype(np.longdouble), "float32")
    assert r64.dtype == np.float64 and rx.dtype == np.longdouble
    assert list(r64) == list(rx) == [0.5, 0.0, 0.0]


# --------------------------------------------------------------------------------------------------
# timings (not a test): .venv/bin/python -m tests.oracles.test_working_precision


def _timings(repeats: int = 3) -> None:
    """Best-of-`repeats` seconds of `oracles.evaluate` on ~1M-element float32 cases, in EXT
    (working=numpy.longdouble), in float64 with the error model's numpy code only (the fused kernels
    of oracles/_fused.py disabled) and in float64 as campaigns run it (the default); then
    `error_ratio` of a float32 output against the float64 reference, numpy code and kernel."""
    import time

    from oracles import _fused
    from oracles.errormodel import error_ratio

    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def best(fn):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    ln = dict(eps=1e-5, normalized_ndim=1)
    cases = [
        ("layer_norm", "forward", dict(x=f32(256, 4096), gamma=f32(4096), beta=f32(4096)), ln),
        ("layer_norm", "vjp", dict(x=f32(256, 4096), gamma=f32(4096), beta=f32(4096), dy=f32(256, 4096)), ln),
        ("layer_norm", "jvp", dict(x=f32(256, 4096), gamma=f32(4096), beta=f32(4096), tx=f32(256, 4096),
                                   tgamma=f32(4096), tbeta=f32(4096)), ln),
        ("batch_norm", "training", dict(x=f32(64, 16, 32, 32), gamma=f32(16), beta=f32(16),
                                        running_mean=f32(16), running_var=np.abs(f32(16))), dict(eps=1e-5)),
        ("group_norm", "forward", dict(x=f32(16, 64, 32, 32), gamma=f32(64), beta=f32(64)),
         dict(eps=1e-5, num_groups=8)),
        ("rms_norm", "forward", dict(x=f32(256, 4096), weight=f32(4096)), ln),
    ]
    fused = _fused.kernels() is not None
    print(f"{'case':46s} {'EXT':>8s} {'float64':>8s} {'fused':>8s} {'EXT/f64':>8s} {'f64/fused':>9s}")
    for op, mode, inputs, attrs in cases:
        def run(working=None):
            return lambda: oracles.evaluate(op, mode, inputs, attrs, "float32", working=working)
        run()()  # (first use: the kernels' compilation or cache load)
        t_ext = best(run(np.longdouble))
        with _fused.disabled():
            t_np = best(run())
        t_fu = best(run()) if fused else float("nan")
        shapes = " ".join(f"{k}{list(v.shape)}" for k, v in inputs.items() if v.ndim > 1)
        print(f"{op + ' ' + mode + ' ' + shapes:46s} {t_ext:7.3f}s {t_np:7.3f}s {t_fu:7.3f}s "
              f"{t_ext / t_np:7.1f}x {t_np / t_fu:8.1f}x")
    ref = rng.standard_normal((256, 4096))
    bound = np.abs(ref) * 1e-7
    actual = ref.astype(np.float32)
    error_ratio(actual, ref, bound, "float32")
    with _fused.disabled():
        t_np = best(lambda: error_ratio(actual, ref, bound, "float32"))
    t_fu = best(lambda: error_ratio(actual, ref, bound, "float32")) if fused else float("nan")
    print(f"{'error_ratio float32 output [256, 4096]':46s} {'':8s} {t_np:7.3f}s {t_fu:7.3f}s {'':8s} {t_np / t_fu:8.1f}x")


if __name__ == "__main__":
    _timings()
