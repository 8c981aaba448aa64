"""The oracle's own error is at most 1/100 of the bound it judges with, for every dtype it judges.

For every forward op and mode of `oracles.registry` (batch_norm inference/training/training_steps,
layer_norm, group_norm, instance_norm, rms_norm, mvn, l2_normalize, weight_norm) and every judged
format (float16, bfloat16, float32, float64), the inputs are exactly representable in the format
(generated in float64, then `oracles.round_to`; bfloat16 in float32 carriers). `oracles.evaluate`
gives the reference (numpy.longdouble) and the per-element bound for that format; `mpref` (mpmath at
60 digits, written independently from the definitions) gives the value to ~1e-60 relative. The test:

    |oracle - mpref| <= bound / 100      wherever the bound and the reference are finite.

NaN and infinity (see `mpref.compare`): where the oracle says NaN the reference must be NaN or
infinite there (the formula is undefined or infinite: 0 * inf, inf - inf, a NaN input); where the
reference is NaN/inf and the oracle is not NaN, the oracle must equal it unless the bound is +inf;
a +inf bound (no honest implementation is pinned down: e.g. zero variance with eps = 0) skips the
element. Every case must compare at least one element with a finite bound unless it says otherwise,
so no case passes vacuously.

Cases: hostile ones written out (huge mean with a spread of a few ulps, variance equal to eps,
constant slices, float16 values in 60000..65504, subnormals, 256-element reductions, zero/negative/
huge gamma and beta, non-finite inputs), each run through every op family, and Hypothesis-drawn
random small cases (seeded with derandomize=True; NORMFUZZ_NIGHTLY=1 runs 10x more).

`pytest -s` prints the largest observed |oracle - mpref| / bound per dtype.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import oracles
from oracles import round_to
from oracles.dtypes import DEFAULT_ACCUMULATION
from tests.oracles import mpref

DTYPES = ("float16", "bfloat16", "float32", "float64")
LIMIT = 1 / 100  # the oracle's error may use at most this fraction of the bound
NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"
EXAMPLES = 320 if NIGHTLY else 32  # random cases per op/mode (10 of them: 320 by default)

#: worst |oracle - mpref| / bound seen per dtype: (ratio, case label, output name, index)
WORST: dict[str, tuple] = {d: (0.0, "", "", None) for d in DTYPES}
CHECKED: dict[str, int] = {d: 0 for d in DTYPES}


@dataclass(frozen=True)
class OracleCase:
    """One forward case: registry names, complete attrs (every convention spelled out), format."""

    op: str
    mode: str
    inputs: dict
    attrs: dict
    dtype: str
    label: str = ""
    expect_checked: bool = True  # at least one element must have a finite bound

    def summary(self) -> str:
        shapes = " ".join(f"{k}{list(np.shape(v))}" for k, v in self.inputs.items())
        return f"{self.label} {self.op}/{self.mode} {shapes} {self.dtype} {self.attrs}"


def check(case: OracleCase, *, record: bool = True) -> dict[str, mpref.Comparison]:
    """Compare every output of the oracle with mpref; record the worst ratio (unless `record` is
    False: known-discrepancy tests); fail with details."""
    ev = oracles.evaluate(case.op, case.mode, case.inputs, case.attrs, case.dtype)
    ref = mpref.evaluate(case.op, case.mode, case.inputs, case.attrs)
    assert set(ev.outputs) == set(ref), f"{case.summary()}: oracle outputs {sorted(ev.outputs)}, mpref {sorted(ref)}"
    results, problems, checked = {}, [], 0
    for name in ev.outputs:
        c = mpref.compare(ev.outputs[name], ref[name], ev.bounds[name], limit=LIMIT)
        results[name] = c
        checked += c.checked
        problems += [f"  {name}{list(i)}: {why}" for i, why in c.failures[:5]]
        if record and c.worst > WORST[case.dtype][0]:
            WORST[case.dtype] = (c.worst, case.summary(), name, c.worst_index)
    if record:
        CHECKED[case.dtype] += checked
    assert not problems, f"{case.summary()}\n" + "\n".join(problems)
    if case.expect_checked:
        assert checked > 0, f"{case.summary()}: no element had a finite bound (vacuous case)"
    return results


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nworst |oracle - mpmath| / bound per dtype (limit 1/100):")
    for d in DTYPES:
        r, label, name, idx = WORST[d]
        print(f"  {d:9s} {r:.3e}  over {CHECKED[d]} elements; worst at {name}{list(idx or ())} in {label}")


# --------------------------------------------------------------------------------------------------
# building cases

BN_CONVENTIONS = dict(layout="channels_first", momentum=0.1, momentum_on="batch",
                      running_var_estimator="unbiased", num_batches_tracked=0)


def rd(dtype: str, a) -> np.ndarray:
    """Round float64 values to `dtype` (its carrier array)."""
    return round_to(dtype, np.asarray(a, dtype=np.float64))


def family_cases(x, dtype, *, eps, gamma=None, beta=None, label="", expect_checked=True,
                 vacuous_ok=(), uncentered=True, l2_eps=None) -> list[OracleCase]:
    """Every op family on one (N, C, L) array x (already in `dtype`), with per-channel gamma/beta.

    Covers both layouts, both affine granularities, both layer-norm forms, the momentum conventions
    and the eps conventions; uncentered ops (rms, l2, weight norm) are left out when `uncentered` is
    False. `l2_eps` overrides eps for l2_normalize/weight_norm. Every case must check at least one
    element with a finite bound, unless `expect_checked` is False or its op is in `vacuous_ok`.
    """
    n, c, l_ = x.shape
    k = dict(dtype=dtype, label=label, expect_checked=expect_checked)
    p = {} if gamma is None else {"gamma": gamma}
    if beta is not None:
        p["beta"] = beta
    xl = x.astype(np.longdouble)  # no overflow for values near float64's maximum
    with np.errstate(invalid="ignore"):  # NaN/inf inputs give NaN running statistics, as intended
        rm = rd(dtype, np.mean(xl, axis=(0, 2)))
        rv = rd(dtype, np.minimum(np.var(xl, axis=(0, 2)), oracles.DTYPES[dtype].max / 8))
    x_last = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # (N, L, C)
    tile = lambda a: None if a is None else np.ascontiguousarray(np.repeat(a[:, None], l_, axis=1))  # noqa: E731
    ln_p = {name: tile(a) for name, a in p.items()}
    g = 2 if c % 2 == 0 else 1
    out = [
        OracleCase("batch_norm", "inference", {"x": x, "running_mean": rm, "running_var": rv, **p},
                   dict(eps=eps, **BN_CONVENTIONS), **k),
        OracleCase("batch_norm", "training", {"x": x, "running_mean": rm, "running_var": rv, **p},
                   dict(eps=eps, **BN_CONVENTIONS), **k),
        OracleCase("batch_norm", "training", {"x": x_last, **p},
                   dict(eps=eps, **{**BN_CONVENTIONS, "layout": "channels_last"}), **k),
        OracleCase("batch_norm", "training_steps",
                   {"xs": np.stack([x, x[::-1]]), "running_mean": rm, "running_var": rv, **p},
                   dict(eps=eps, **{**BN_CONVENTIONS, "momentum": None, "num_batches_tracked": 2,
                                    "running_var_estimator": "biased"}), **k),
        OracleCase("batch_norm", "training_steps",
                   {"xs": np.stack([x, x]), "running_mean": rm, "running_var": rv, **p},
                   dict(eps=eps, **{**BN_CONVENTIONS, "momentum": 0.99, "momentum_on": "running"}), **k),
        OracleCase("layer_norm", "forward", {"x": x, **ln_p}, dict(eps=eps, normalized_ndim=2), **k),
        OracleCase("layer_norm", "forward", {"x": x}, dict(eps=eps, axis=-1), **k),
        OracleCase("group_norm", "forward", {"x": x, **p},
                   dict(eps=eps, num_groups=g, layout="channels_first", affine="per_channel"), **k),
        OracleCase("group_norm", "forward", {"x": x_last, **{a: v[:g] for a, v in p.items()}},
                   dict(eps=eps, num_groups=g, layout="channels_last", affine="per_group"), **k),
        OracleCase("instance_norm", "forward", {"x": x_last, **p}, dict(eps=eps, layout="channels_last"), **k),
        OracleCase("instance_norm", "forward", {"x": x, **p}, dict(eps=eps, layout="channels_first"), **k),
        OracleCase("mvn", "forward", {"x": x}, dict(eps=eps, axes=(0, 2), eps_mode="outside"), **k),
        OracleCase("mvn", "forward", {"x": x}, dict(eps=eps, axes=(1, 2), eps_mode="inside"), **k),
    ]
    if uncentered:
        le = eps if l2_eps is None else l2_eps
        w = None if gamma is None else rd(dtype, np.resize(gamma.astype(np.float64), l_))
        gn = rd(dtype, np.resize(np.asarray([1.0, -2.0, 0.5]) if gamma is None else gamma.astype(np.float64), n))
        out += [
            OracleCase("rms_norm", "forward", {"x": x, **({} if w is None else {"weight": w})},
                       dict(eps=eps, normalized_ndim=1), **k),
            OracleCase("l2_normalize", "forward", {"x": x}, dict(eps=le, axes=(1, 2), eps_mode="max_norm"), **k),
            OracleCase("l2_normalize", "forward", {"x": x}, dict(eps=le, axes=(-1,), eps_mode="max_sumsq"), **k),
            OracleCase("l2_normalize", "forward", {"x": x}, dict(eps=le, axes=(0,), eps_mode="inside"), **k),
            OracleCase("weight_norm", "forward", {"v": x, "g": gn}, dict(eps=le, dim=0, eps_mode="none"), **k),
            OracleCase("weight_norm", "forward", {"v": x, "g": rd(dtype, np.resize(gn, l_))},
                       dict(eps=le, dim=2, eps_mode="max_norm"), **k),
        ]
    return [dataclasses.replace(c, expect_checked=False) if c.op in vacuous_ok else c for c in out]


def run_all(cases: list[OracleCase]) -> int:
    """Check every case; fail listing the failed ones. Returns the number of elements checked."""
    errors, checked = [], 0
    for case in cases:
        try:
            checked += sum(c.checked for c in check(case).values())
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, f"{len(errors)} of {len(cases)} cases failed:\n" + "\n".join(errors[:8])
    return checked


def affine(dtype, c, rng):
    return rd(dtype, rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)), rd(dtype, rng.normal(size=c))


# --------------------------------------------------------------------------------------------------
# hostile cases


def ulp(dtype: str, value: float) -> float:
    """Spacing of `dtype` at |value| (normal range)."""
    d = oracles.DTYPES[dtype]
    return 2.0 ** (np.floor(np.log2(abs(value))) - (d.p - 1))


UNCENTERED = ("rms_norm", "l2_normalize", "weight_norm")


def largest_mean_values(dtype: str, n: int, k: int, j: np.ndarray) -> np.ndarray:
    """Values near the largest magnitude M for which a spread of k ulps stays computable.

    An honest implementation accumulates in `DEFAULT_ACCUMULATION[dtype]` (float16/bfloat16: float32),
    and the error model leaves a set unconstrained where an intermediate may overflow there: the
    sums n M and the squares of the deviations, up to n (k ulp)**2. So M is the format's maximum when
    that fits (float16, whose accumulator is float32), else the largest power of two with
    n M and n (k ulp(M))**2 below max_acc / 16. Returns M +- j ulp for the offsets j (0 <= j <= k).
    """
    d = oracles.DTYPES[dtype]
    cap = oracles.DTYPES[DEFAULT_ACCUMULATION[dtype]].max / 16
    m_cap = min(cap / n, np.sqrt(cap / (n * k * k)) * 2.0 ** (d.p - 1))
    if d.max <= m_cap:
        return d.max - j * ulp(dtype, d.max)
    m = 2.0 ** np.floor(np.log2(m_cap))
    return m + j * ulp(dtype, m)


@pytest.mark.parametrize("dtype", DTYPES)
def test_largest_mean_with_a_spread_of_a_few_ulps(dtype):
    """Values M + j ulp (j = 0..6, every set holds several j) with the largest M the format allows
    (`largest_mean_values`; float16: 65504 - 32 j): a catastrophic cancellation for the mean and the
    variance. In float32 and float64, which accumulate in themselves, an honest mean's error
    ((2n+2) u M, ~100 ulps) exceeds the spread, so y is unconstrained (with eps = 0) and mvn (y only)
    may have nothing to check; the statistics of the other ops are still checked. Beyond float16,
    M**2 overflows the accumulator, so the uncentered ops (sums of x**2) are unconstrained."""
    rng = np.random.default_rng(1)
    j = rng.integers(0, 7, size=(3, 2, 8)).astype(np.float64)
    vacuous = (UNCENTERED if dtype != "float16" else ()) + (("mvn",) if DEFAULT_ACCUMULATION[dtype] == dtype else ())
    for sign in (1.0, -1.0):
        x = rd(dtype, sign * largest_mean_values(dtype, 48, 6, j))
        assert np.all(np.isfinite(x)) and len(np.unique(x)) == len(np.unique(j)), np.unique(x)
        gam, bet = affine(dtype, 2, rng)
        for eps in (1e-5, 0.0):
            run_all(family_cases(x, dtype, eps=eps, gamma=gam, beta=bet, label=f"largest mean {sign:+}",
                                 vacuous_ok=vacuous))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_mean_small_spread(dtype):
    """float64: mean +-1e8 with standard deviation 1e-3 (condition ~1e11), and 1e150 with a relative
    spread of 1e-10. The other formats: means +2**p and -2**(p-1) (where neighbours are 2 and 1
    apart) with a spread of 4 ulps; float16 also 3e4 (ulp 16). In float32 y and mvn are unconstrained
    (see `test_largest_mean_with_a_spread_of_a_few_ulps`)."""
    rng = np.random.default_rng(2)
    d = oracles.DTYPES[dtype]
    if dtype == "float64":
        means, spreads = (1e8, -1e8, 1e150), (1e-3, 1e-3, 1e140)
    else:
        means = (2.0 ** d.p, -(2.0 ** (d.p - 1))) + ((3e4,) if dtype == "float16" else ())
        spreads = tuple(4 * ulp(dtype, m) for m in means)
    for m, s in zip(means, spreads):
        x = rd(dtype, m + s * rng.normal(size=(4, 2, 6)))
        assert np.all(np.isfinite(x)) and len(np.unique(x)) > 2, (m, s, np.unique(x))
        gam, bet = affine(dtype, 2, rng)
        for eps in (1e-5, 0.0):
            run_all(family_cases(x, dtype, eps=eps, gamma=gam, beta=bet, label=f"mean={m:g} spread={s:g}",
                                 vacuous_ok=("mvn",) if dtype == "float32" else ()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_variance_equal_to_eps(dtype):
    """Sets of +-s around a mean m (so the biased variance is s**2 exactly) with eps = s**2; for
    L2 normalization eps sits exactly on the max() kink (||x|| = eps, sum x**2 = eps)."""
    s = 2.0 ** -5
    sign = np.array([1.0, -1.0, -1.0, 1.0])
    x = np.broadcast_to(sign, (2, 3, 4)) * s + 3.0
    x = rd(dtype, np.concatenate([x, x[:, :, ::-1]], axis=2))  # each batch_norm/instance set balanced
    rng = np.random.default_rng(3)
    gam, bet = affine(dtype, 3, rng)
    cases = family_cases(x, dtype, eps=s * s, gamma=gam, beta=bet, label="var=eps", uncentered=False)
    z = rd(dtype, np.broadcast_to(sign, (2, 3, 4)) * s)  # every set along the last axis: sum z**2 = 4 s**2
    cases += [
        OracleCase("l2_normalize", "forward", {"x": z}, dict(eps=2 * s, axes=(-1,), eps_mode="max_norm"), dtype,
                   "||x||=eps"),
        OracleCase("l2_normalize", "forward", {"x": z}, dict(eps=4 * s * s, axes=(-1,), eps_mode="max_sumsq"), dtype,
                   "sumsq=eps"),
        OracleCase("weight_norm", "forward", {"v": z, "g": rd(dtype, [1.5, -1.0])},
                   dict(eps=12 * s * s, dim=0, eps_mode="max_sumsq"), dtype, "sumsq=eps"),
        OracleCase("rms_norm", "forward", {"x": z}, dict(eps=s * s, normalized_ndim=1), dtype, "ms=eps"),
    ]
    run_all(cases)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("const", [3.0, 0.0, 60000.0])
def test_constant_slices(dtype, const):
    """Every set constant: v = 0. With eps > 0 y = beta exactly; with eps = 0 the formula is 0 * inf
    (NaN): the oracle must say NaN only there, and its bound is +inf (nothing to check, so those
    cases are not required to check an element)."""
    x = rd(dtype, np.full((2, 2, 5), const))
    rng = np.random.default_rng(4)
    gam, bet = affine(dtype, 2, rng)
    cases = family_cases(x, dtype, eps=1e-5, gamma=gam, beta=bet, label=f"const={const:g}",
                         uncentered=const != 0, l2_eps=1e-3)
    cases += family_cases(x, dtype, eps=0.0, gamma=gam, beta=bet, label=f"const={const:g} eps=0",
                          uncentered=False, expect_checked=False)
    run_all(cases)


def test_float16_near_its_maximum():
    """float16 values in 60000..65504 (squares far beyond the format, sums near it)."""
    rng = np.random.default_rng(5)
    for shape in ((2, 2, 6), (1, 4, 16)):
        x = rd("float16", rng.uniform(60000, 65504, size=shape))
        gam, bet = affine("float16", shape[1], rng)
        run_all(family_cases(x, "float16", eps=1e-5, gamma=gam, beta=bet, label="f16 near max"))
        run_all(family_cases(-x, "float16", eps=0.0, label="f16 near -max"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_magnitudes(dtype):
    """Integer multiples of the smallest subnormal (all subnormal), with eps > 0 and eps = 0, and a
    subnormal spread around the smallest normal number."""
    d = oracles.DTYPES[dtype]
    rng = np.random.default_rng(6)
    k = rng.integers(-100, 101, size=(2, 2, 6)).astype(np.float64)
    x = rd(dtype, k * d.eta)
    assert np.all(np.abs(x.astype(np.float64)) < d.tiny) and np.any(x != 0)
    gam, bet = affine(dtype, 2, rng)
    # weight_norm's "none" convention ignores eps: its sum of squares is below the honest floor
    # (n+2) eta of the accumulation, so it is unconstrained (its max_norm case is checked).
    run_all(family_cases(x, dtype, eps=1e-5, gamma=gam, beta=bet, label="subnormal", vacuous_ok=("weight_norm",)))
    # eps = 0: v is far below the honest summation error floor (n+2) eta for the centered ops, so
    # their y/rstd are unconstrained; the mean, the uncentered ops' rstd/y, etc. are still checked.
    run_all(family_cases(x, dtype, eps=0.0, gamma=gam, beta=bet, label="subnormal eps=0", expect_checked=False))
    x2 = rd(dtype, 4 * d.tiny + k * d.eta)
    run_all(family_cases(x2, dtype, eps=0.0, label="tiny normal mean, subnormal spread", expect_checked=False))


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_reductions(dtype):
    """Reduction sets of 256 elements (batch_norm, layer_norm, l2 over (C, L)), offset mean."""
    rng = np.random.default_rng(7)
    x = rd(dtype, 100.0 + rng.normal(size=(2, 2, 128)) * 3)
    gam, bet = affine(dtype, 2, rng)
    run_all(family_cases(x, dtype, eps=1e-5, gamma=gam, beta=bet, label="n=256"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_negative_and_huge_affine_parameters(dtype):
    """gamma and beta zero, negative, and near the format's largest values (y may exceed the format:
    the oracle's y is still a longdouble and must still be accurate)."""
    huge = {"float16": 3e4, "bfloat16": 1e38, "float32": 1e38, "float64": 1e300}[dtype]
    rng = np.random.default_rng(8)
    x = rd(dtype, rng.normal(size=(2, 4, 5)))
    for gam, bet in (([0.0, -1.0, huge, -huge], [huge, -huge, 0.0, -2.5]),
                     ([-huge, 0.0, 0.0, huge], [0.0, 0.0, -huge, huge])):
        run_all(family_cases(x, dtype, eps=1e-5, gamma=rd(dtype, gam), beta=rd(dtype, bet), label="extreme affine"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_inputs(dtype):
    """A NaN, +inf or -inf in some reduction sets (sample 2 and channel 3 stay clean, so every family
    keeps finite sets to check). The exact formula is undefined on every element of such a set for the
    centered ops (inf - inf, or a NaN), and the oracle must say NaN exactly there; BatchNorm inference
    is elementwise. The uncentered ops get only the NaN (for an infinity see
    `test_infinity_in_an_uncentered_set`)."""
    rng = np.random.default_rng(9)
    x = rd(dtype, rng.normal(size=(3, 4, 4)))
    gam, bet = affine(dtype, 4, rng)
    x_nan = x.copy()
    x_nan[0, 0, 1] = np.nan
    x_inf = x_nan.copy()
    x_inf[1, 1, 2] = np.inf
    x_inf[1, 2, 0] = -np.inf
    run_all(family_cases(x_inf, dtype, eps=1e-5, gamma=gam, beta=bet, label="nan/inf", uncentered=False)
            + family_cases(x_nan, dtype, eps=1e-5, gamma=gam, beta=bet, label="nan"))


# Regression: the NaN rule once made a whole uncentered set NaN for an infinity; IEEE (and torch,
# TF) give x_j * (1/sqrt(inf)) = 0 for the finite x_j, NaN at the infinity.


@pytest.mark.parametrize("op", ["l2_normalize", "rms_norm", "weight_norm"])
def test_infinity_in_an_uncentered_set(op):
    x = np.array([[1.0, np.inf, -2.0, 0.5]], dtype=np.float32)
    inputs, attrs = {
        "l2_normalize": ({"x": x}, dict(eps=1e-12, axes=(-1,), eps_mode="max_norm")),
        "rms_norm": ({"x": x}, dict(eps=1e-6, normalized_ndim=1)),
        "weight_norm": ({"v": x, "g": np.array([2.0], dtype=np.float32)}, dict(eps=0.0, dim=0, eps_mode="none")),
    }[op]
    check(OracleCase(op, "forward", inputs, attrs, "float32", "inf in an uncentered set"), record=False)


def test_weight_norm_of_a_vector():
    """Regression: the norm over every dim except dim is, for a 1-D v, the norm over no dim, |v_i|
    (torch._weight_norm gives g * sign(v)); the oracle once normalized the whole vector."""
    v = np.array([3.0, -4.0, 2.0])
    check(OracleCase("weight_norm", "forward", {"v": v, "g": np.array([2.0, 2.0, 2.0])},
                     dict(eps=0.0, dim=0, eps_mode="none"), "float64", "1-D v"), record=False)


# --------------------------------------------------------------------------------------------------
# random cases (Hypothesis draws a seed, sizes and conventions; numpy builds the arrays)

#: log10 ranges of the data's centre and of the spread relative to it, per format; the squares stay
#: far below the accumulator's overflow (where the error model leaves a set unconstrained: the
#: near-overflow region has its own tests above)
RANGES = {"float16": (-3, 4, -3), "bfloat16": (-15, 15, -2), "float32": (-15, 15, -6),
          "float64": (-100, 100, -12)}
EPS_CHOICES = (0.0, 1e-12, 1e-5, 1e-3, 0.1, 1.0)


def data(rng, shape, dtype):
    """Random values in `dtype`: centre +-10**a (or 0), spread 10**b relative to max(|centre|, 1)."""
    lo, hi, rel = RANGES[dtype]
    a = rng.uniform(lo, hi)
    centre = 0.0 if rng.random() < 0.3 else rng.choice([-1, 1]) * 10.0 ** a
    spread = 10.0 ** rng.uniform(rel, 0) * max(abs(centre), 10.0 ** min(a, 0))
    top = oracles.DTYPES[dtype].max / 8
    return rd(dtype, np.clip(centre + spread * rng.normal(size=shape), -top, top))


def params(rng, dtype, shape, present):
    if not present:
        return None
    kind = rng.integers(4)
    if kind == 0:
        v = rng.normal(size=shape)
    elif kind == 1:
        v = rng.choice([0.0, -1.0, 1.0, 2.5], size=shape)
    elif kind == 2:
        v = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3)
    else:
        v = np.ones(shape)
    return rd(dtype, v)


def random_case(op: str, seed: int, dtype: str, dims: list[int], choice: list[int]) -> OracleCase:
    """A case of `op` built from a seed, dims (each 1..4) and convention choices (each 0..7)."""
    rng = np.random.default_rng(seed)
    eps = EPS_CHOICES[choice[0] % len(EPS_CHOICES)]
    layout = ("channels_first", "channels_last")[choice[1] % 2]
    with_p = choice[2] % 3 != 0
    n, c, s1, s2 = dims[0], dims[1] + 1, dims[2], dims[3]
    spatial = (s1,) if choice[3] % 2 else (s1, s2)
    shape_cf = (n, c) + spatial
    shape = shape_cf if layout == "channels_first" else (n,) + spatial + (c,)
    x = data(rng, shape, dtype)
    gb = {k: v for k, v in (("gamma", params(rng, dtype, (c,), with_p)),
                            ("beta", params(rng, dtype, (c,), with_p and choice[4] % 2 == 0))) if v is not None}
    if op.startswith("batch_norm"):
        mode = op.split(":")[1]
        momentum = (0.1, 0.01, 0.9, 0.99, 0.0, 1.0, None)[choice[5] % 7]
        attrs = dict(eps=eps, layout=layout, momentum=momentum, momentum_on=("batch", "running")[choice[6] % 2],
                     running_var_estimator=("biased", "unbiased")[choice[7] % 2], num_batches_tracked=choice[5])
        red = tuple(i for i in range(len(shape)) if i != (1 if layout == "channels_first" else len(shape) - 1))
        if attrs["running_var_estimator"] == "unbiased" and np.prod([shape[i] for i in red]) < 2:
            attrs["running_var_estimator"] = "biased"
        xf = x.astype(np.float64)
        rm = rd(dtype, np.mean(xf, axis=red) + rng.normal(size=c) * np.std(xf))
        rv = rd(dtype, np.minimum(np.var(xf, axis=red) * rng.uniform(0.5, 2, c), oracles.DTYPES[dtype].max / 8))
        inputs = dict(gb)
        if mode == "inference":
            inputs.update(x=x, running_mean=rm, running_var=rv)
        elif mode == "training":
            inputs.update(x=x)
            if choice[4] % 3:
                inputs.update(running_mean=rm, running_var=rv)
        else:
            inputs.update(xs=np.stack([x] + [data(rng, shape, dtype) for _ in range(choice[4] % 3)]),
                          running_mean=rm, running_var=rv)
        return OracleCase("batch_norm", mode, inputs, attrs, dtype, f"seed={seed}", expect_checked=False)
    if op in ("layer_norm", "rms_norm"):
        nd = len(shape)
        k = 1 + choice[5] % nd
        form = dict(normalized_ndim=k) if choice[6] % 2 else dict(axis=(nd - k) - (nd if choice[7] % 2 else 0))
        pshape = shape[nd - k:]
        if op == "layer_norm":
            inputs = {"x": x, **{name: v for name, v in (("gamma", params(rng, dtype, pshape, with_p)),
                                                         ("beta", params(rng, dtype, pshape, choice[4] % 2 == 0)))
                                 if v is not None}}
        else:
            w = params(rng, dtype, pshape, with_p)
            inputs = {"x": x} if w is None else {"x": x, "weight": w}
        return OracleCase(op, "forward", inputs, dict(eps=eps, **form), dtype, f"seed={seed}", expect_checked=False)
    if op == "group_norm":
        groups = [g for g in range(1, c + 1) if c % g == 0]
        g = groups[choice[5] % len(groups)]
        aff = ("per_channel", "per_group")[choice[6] % 2]
        inputs = {"x": x}
        for name, present in (("gamma", with_p), ("beta", with_p and choice[4] % 2 == 0)):
            v = params(rng, dtype, (c if aff == "per_channel" else g,), present)
            if v is not None:
                inputs[name] = v
        return OracleCase(op, "forward", inputs, dict(eps=eps, num_groups=g, layout=layout, affine=aff), dtype,
                          f"seed={seed}", expect_checked=False)
    if op == "instance_norm":
        return OracleCase(op, "forward", {"x": x, **gb}, dict(eps=eps, layout=layout), dtype, f"seed={seed}",
                          expect_checked=False)
    nd = len(shape)
    axes = tuple(i for i in range(nd) if (choice[5] + 1) >> i & 1) or (nd - 1,)
    if op == "mvn":
        mode = ("inside", "outside", "none")[choice[6] % 3]
        return OracleCase(op, "forward", {"x": x}, dict(eps=eps, axes=axes, eps_mode=mode), dtype, f"seed={seed}",
                          expect_checked=False)
    if op == "l2_normalize":
        mode = ("none", "inside", "max_norm", "max_sumsq")[choice[6] % 4]
        if mode.startswith("max") and choice[7] % 2:  # put eps near the data's norm: both branches
            norm = np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=axes))
            eps = float(np.median(norm) if mode == "max_norm" else np.median(norm) ** 2)
        return OracleCase(op, "forward", {"x": x}, dict(eps=eps, axes=axes, eps_mode=mode), dtype, f"seed={seed}",
                          expect_checked=False)
    assert op == "weight_norm"
    dim = choice[5] % nd - (nd if choice[6] % 2 else 0)
    g = params(rng, dtype, (shape[dim],), True)
    if choice[7] % 2:
        g = g.reshape(tuple(shape[dim] if i == dim % nd else 1 for i in range(nd)))
    mode = ("none", "inside", "max_norm", "max_sumsq")[choice[4] % 4]
    return OracleCase(op, "forward", {"v": x, "g": g}, dict(eps=eps, dim=dim, eps_mode=mode), dtype, f"seed={seed}",
                      expect_checked=False)


RANDOM_OPS = ("batch_norm:inference", "batch_norm:training", "batch_norm:training_steps", "layer_norm",
              "rms_norm", "group_norm", "instance_norm", "mvn", "l2_normalize", "weight_norm")


@pytest.mark.parametrize("op", RANDOM_OPS)
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES),
       dims=st.lists(st.integers(1, 4), min_size=4, max_size=4),
       choice=st.lists(st.integers(0, 7), min_size=8, max_size=8))
def test_random_cases(op, seed, dtype, dims, choice):
    check(random_case(op, seed, dtype, dims, choice))


def test_random_cases_are_not_vacuous():
    """The random cases as a whole compare many elements with finite bounds in every format
    (individual cases may be unconstrained, e.g. eps = 0 with a near-constant set)."""
    checked = {d: 0 for d in DTYPES}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        dtype = DTYPES[seed % 4]
        op = RANDOM_OPS[seed % len(RANDOM_OPS)]
        case = random_case(op, seed, dtype, list(rng.integers(1, 5, 4)), list(rng.integers(0, 8, 8)))
        checked[dtype] += sum(c.checked for c in check(case).values())
    assert all(v > 50 for v in checked.values()), checked
